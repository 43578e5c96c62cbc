//! TLS for `tcp://` connections (buildctl's `--tlscacert`, `--tlscert`, `--tlskey`,
//! `--tlsservername`), with rustls (ring) as `kiln serve` uses.

use super::transport::TlsOptions;
use crate::error::{Error, Result};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn read(what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("read the {what}"), path, e))
}

/// `endpoint` with `tls` applied (unchanged when no TLS setting is given). `host_port` names
/// the server when `server_name` is not given.
pub fn configure(endpoint: Endpoint, host_port: &str, tls: &TlsOptions) -> Result<Endpoint> {
    if !tls.is_set() {
        return Ok(endpoint);
    }
    let Some(ca) = &tls.ca_cert else {
        return Err(Error::option(
            "tlscacert",
            "",
            "a TLS connection needs the CA certificate (PEM) the daemon's certificate chains to",
        ));
    };
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    let mut cfg = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("CA certificate", ca)?))
        .domain_name(tls.server_name.clone().unwrap_or_else(|| host.to_owned()));
    match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => {
            cfg = cfg.identity(Identity::from_pem(read("client certificate", c)?, read("client key", k)?));
        }
        (None, None) => {}
        (Some(_), None) => return Err(Error::option("tlskey", "", "a client certificate needs its key (tlskey)")),
        (None, Some(_)) => return Err(Error::option("tlscert", "", "a client key needs its certificate (tlscert)")),
    }
    endpoint
        .tls_config(cfg)
        .map_err(|e| Error::option("tlscacert", ca.display().to_string(), format!("a usable TLS setup ({e})")))
}
