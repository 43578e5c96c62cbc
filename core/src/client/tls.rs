//! TLS for `tcp://` connections (buildctl's `--tlscacert`, `--tlscert`, `--tlskey`,
//! `--tlsservername`).

use super::transport::TlsOptions;
use crate::error::{Error, ErrorKind, Result};
use tonic::transport::Endpoint;

/// `endpoint` with `tls` applied (unchanged when no TLS setting is given).
pub fn configure(endpoint: Endpoint, _host_port: &str, tls: &TlsOptions) -> Result<Endpoint> {
    if !tls.is_set() {
        return Ok(endpoint);
    }
    Err(Error::new(ErrorKind::Unsupported, "TLS connections are not supported by this build of kiln yet"))
}
