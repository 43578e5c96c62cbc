//! The gRPC channel to a daemon: `unix:///path/to.sock` or `tcp://HOST:PORT` (buildctl's
//! `--addr` forms), optionally with TLS (buildctl's `--tlscacert`, `--tlscert`, `--tlskey`,
//! `--tlsservername`).

use crate::error::{Error, ErrorKind, Result};
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long connecting (and the HTTP/2 handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// TLS settings of a connection (buildctl's flags of the same names).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// `--tlscacert`: the CA the daemon's certificate must chain to (else the system roots).
    pub ca_cert: Option<PathBuf>,
    /// `--tlscert`: the client certificate (PEM), for daemons that require one.
    pub cert: Option<PathBuf>,
    /// `--tlskey`: the client certificate's key (PEM).
    pub key: Option<PathBuf>,
    /// `--tlsservername`: the name the daemon's certificate must carry (default: the host of
    /// the address).
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// True when any TLS setting is given (the connection then uses TLS).
    pub fn is_set(&self) -> bool {
        self.ca_cert.is_some() || self.cert.is_some() || self.key.is_some() || self.server_name.is_some()
    }
}

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// TLS for `tcp://` addresses.
    pub tls: TlsOptions,
}

/// Where a daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAddr {
    /// A unix socket.
    Unix(PathBuf),
    /// `HOST:PORT`.
    Tcp(String),
}

impl std::str::FromStr for DaemonAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<DaemonAddr> {
        if let Some(p) = s.strip_prefix("unix://") {
            if p.is_empty() {
                return Err(Error::option("addr", s, "unix://PATH with a socket path"));
            }
            return Ok(DaemonAddr::Unix(PathBuf::from(p)));
        }
        if let Some(hp) = s.strip_prefix("tcp://") {
            let ok = hp.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(Error::option("addr", s, "tcp://HOST:PORT"));
            }
            return Ok(DaemonAddr::Tcp(hp.to_owned()));
        }
        Err(Error::option("addr", s, "unix:///path/to/socket or tcp://HOST:PORT"))
    }
}

impl std::fmt::Display for DaemonAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            DaemonAddr::Tcp(hp) => write!(f, "tcp://{hp}"),
        }
    }
}

fn unreachable(addr: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Io, format!("cannot reach a BuildKit API daemon at {addr}: {e}"))
}

/// A connected channel to `addr`.
pub async fn channel(addr: &str, opts: &ConnectOptions) -> Result<Channel> {
    let parsed: DaemonAddr = addr.parse()?;
    match parsed {
        DaemonAddr::Unix(path) => {
            if opts.tls.is_set() {
                return Err(Error::option("addr", addr, "TLS applies to tcp:// addresses; a unix socket has none"));
            }
            if !path.exists() {
                return Err(unreachable(addr, format!("{} does not exist (is the daemon running?)", path.display())));
            }
            let connector = tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move { tokio::net::UnixStream::connect(path).await.map(hyper_util::rt::TokioIo::new) }
            });
            let endpoint = Endpoint::from_static("http://kiln.sock")
                .connect_timeout(CONNECT_TIMEOUT)
                .initial_stream_window_size(crate::session::STREAM_WINDOW)
                .initial_connection_window_size(crate::session::CONNECTION_WINDOW)
                .max_frame_size(crate::session::MAX_FRAME);
            tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect_with_connector(connector))
                .await
                .map_err(|_| unreachable(addr, "timed out"))?
                .map_err(|e| unreachable(addr, e))
        }
        DaemonAddr::Tcp(hp) => {
            let scheme = if opts.tls.is_set() { "https" } else { "http" };
            let endpoint = Endpoint::from_shared(format!("{scheme}://{hp}"))
                .map_err(|e| Error::option("addr", addr, format!("tcp://HOST:PORT ({e})")))?
                .connect_timeout(CONNECT_TIMEOUT)
                .initial_stream_window_size(crate::session::STREAM_WINDOW)
                .initial_connection_window_size(crate::session::CONNECTION_WINDOW)
                .max_frame_size(crate::session::MAX_FRAME);
            let endpoint = super::tls::configure(endpoint, &hp, &opts.tls)?;
            tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect())
                .await
                .map_err(|_| unreachable(addr, "timed out"))?
                .map_err(|e| unreachable(addr, e))
        }
    }
}
