//! What a solve's caller grants to or provides for execs: entitlements (`--allow`) and SSH agent
//! sockets (`--ssh`), parsed as buildctl v0.11.6 parses them (cmd/buildctl/build/allow.go,
//! ssh.go, session/sshforward/sshprovider).

use std::path::PathBuf;

use crate::error::{Error, Result};

/// A privilege an op may need that the caller must grant (BuildKit's `entitlements`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entitlement {
    /// `security.insecure`: execs with `security=insecure` (privileged containers).
    SecurityInsecure,
    /// `network.host`: execs with `network=host`.
    NetworkHost,
}

impl Entitlement {
    /// The name buildctl uses (`security.insecure`, `network.host`).
    pub fn as_str(self) -> &'static str {
        match self {
            Entitlement::SecurityInsecure => "security.insecure",
            Entitlement::NetworkHost => "network.host",
        }
    }
}

impl std::fmt::Display for Entitlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Entitlement {
    type Err = Error;

    /// BuildKit's `entitlements.Parse`: exactly `security.insecure` or `network.host`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "security.insecure" => Ok(Entitlement::SecurityInsecure),
            "network.host" => Ok(Entitlement::NetworkHost),
            _ => Err(Error::option(
                "allow",
                s,
                format!("unknown entitlement {s}; accepted: security.insecure, network.host"),
            )),
        }
    }
}

/// The SSH agent id BuildKit uses when none is given.
pub const DEFAULT_SSH_ID: &str = "default";

/// Parses one `--ssh` value as buildctl does: `ID` or `ID=PATH`; an empty id is `default`; no
/// path (or an empty one) means `ssh_auth_sock` (the caller passes `$SSH_AUTH_SOCK`). Several
/// comma-separated paths are accepted by buildctl only for key files, which kiln does not load:
/// kiln forwards exactly one agent socket per id.
pub fn parse_ssh(arg: &str, ssh_auth_sock: Option<&str>) -> Result<(String, PathBuf)> {
    let (id, paths) = match arg.split_once('=') {
        Some((id, p)) => (id, p),
        None => (arg, ""),
    };
    let id = if id.is_empty() { DEFAULT_SSH_ID } else { id };
    let paths: Vec<&str> = paths.split(',').collect();
    if paths.len() > 1 {
        return Err(Error::option(
            "ssh",
            arg,
            "one agent socket per id (ID=SOCKET); kiln does not load private key files",
        ));
    }
    let path = match paths.first().copied().unwrap_or("") {
        "" => match ssh_auth_sock {
            Some(s) if !s.is_empty() => s,
            _ => {
                return Err(Error::option(
                    "ssh",
                    arg,
                    "invalid empty ssh agent socket: set SSH_AUTH_SOCK or give ID=SOCKET",
                ))
            }
        },
        p => p,
    };
    Ok((id.to_owned(), PathBuf::from(path)))
}

/// Checks that `path` is a unix socket (buildctl stats every `--ssh` path up front; a regular
/// file would be a private key, which kiln does not load).
pub fn check_ssh_socket(id: &str, path: &std::path::Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::option("ssh", format!("{id}={}", path.display()), format!("cannot stat the agent socket: {e}"))
    })?;
    if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
        return Err(Error::option(
            "ssh",
            format!("{id}={}", path.display()),
            "not a unix socket: kiln forwards ssh-agent sockets only (no private key files)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entitlements_parse_like_buildkit() {
        assert_eq!("security.insecure".parse::<Entitlement>().unwrap(), Entitlement::SecurityInsecure);
        assert_eq!("network.host".parse::<Entitlement>().unwrap(), Entitlement::NetworkHost);
        let e = "network.none".parse::<Entitlement>().unwrap_err().to_string();
        assert!(e.contains("unknown entitlement network.none"), "{e}");
        assert_eq!(Entitlement::NetworkHost.to_string(), "network.host");
    }

    #[test]
    fn ssh_specs_parse_like_buildctl() {
        assert_eq!(parse_ssh("default", Some("/a.sock")).unwrap(), ("default".into(), "/a.sock".into()));
        assert_eq!(parse_ssh("gh=/x/y.sock", Some("/a.sock")).unwrap(), ("gh".into(), "/x/y.sock".into()));
        assert_eq!(parse_ssh("=/x.sock", None).unwrap(), ("default".into(), "/x.sock".into()));
        assert_eq!(parse_ssh("gh=", Some("/a.sock")).unwrap(), ("gh".into(), "/a.sock".into()));
        assert!(parse_ssh("default", None).unwrap_err().to_string().contains("SSH_AUTH_SOCK"));
        assert!(parse_ssh("default", Some("")).is_err());
        assert!(parse_ssh("k=/a,/b", None).is_err());
    }
}
