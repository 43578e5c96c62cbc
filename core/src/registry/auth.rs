//! Registry credentials and challenges: reading `auths` from Docker's `config.json`
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), asking a solve's
//! [`CredentialProvider`] ([`LoginSource`]) and parsing `WWW-Authenticate`.

use crate::error::{Error, ErrorKind, IoContext, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Credentials for one registry from `config.json`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// Username and password (from `auth` or `username`/`password`).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token realm.
    IdentityToken { username: String, token: String },
}

impl std::fmt::Debug for Credential {
    // Never print secrets, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken { username, .. } => write!(f, "IdentityToken({username}, <redacted>)"),
        }
    }
}

/// Every credential found in a Docker config file, keyed by normalised registry host.
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    /// The file that was (or would have been) read, for error messages.
    pub path: Option<PathBuf>,
    /// Whether `path` existed.
    pub found_file: bool,
    by_host: HashMap<String, Credential>,
    /// Set when the file delegates to a credential helper, which kiln does not run.
    pub helper: Option<String>,
}

impl Credentials {
    /// Loads `$DOCKER_CONFIG/config.json` or `$HOME/.docker/config.json`; a missing file means
    /// anonymous access, a malformed one is an error naming the file.
    pub fn load() -> Result<Credentials> {
        let path = match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("config.json")),
            _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json")),
        };
        let Some(path) = path else { return Ok(Credentials::default()) };
        match std::fs::read(&path) {
            Ok(bytes) => Credentials::parse(&bytes, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Credentials { path: Some(path), ..Credentials::default() })
            }
            Err(e) => Err(e).with_path("reading registry credentials", &path),
        }
    }

    /// Parses the JSON of a Docker config file read from `path`.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Credentials> {
        let bad = |why: String| {
            Error::new(
                ErrorKind::Registry,
                format!(
                    "registry credentials file {} is invalid: {why}; expected {{\"auths\": {{\"HOST\": {{\"auth\": \
                     \"base64(user:password)\"}}}}}}",
                    path.display()
                ),
            )
        };
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON ({e})")))?;
        let mut creds =
            Credentials { path: Some(path.to_path_buf()), found_file: true, by_host: HashMap::new(), helper: None };
        if let Some(store) = v.get("credsStore").and_then(|s| s.as_str()) {
            creds.helper = Some(format!("credsStore {store:?}"));
        }
        if let Some(helpers) = v.get("credHelpers").and_then(|h| h.as_object()) {
            if !helpers.is_empty() {
                creds.helper = Some("credHelpers".to_owned());
            }
        }
        let Some(auths) = v.get("auths") else { return Ok(creds) };
        let auths = auths.as_object().ok_or_else(|| bad("\"auths\" is not an object".to_owned()))?;
        for (key, entry) in auths {
            let field = |name: &str| entry.get(name).and_then(|s| s.as_str()).filter(|s| !s.is_empty());
            let (mut username, mut password) =
                (field("username").map(str::to_owned), field("password").map(str::to_owned));
            if let Some(auth) = field("auth") {
                let decoded = base64_decode(auth)
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| bad(format!("\"auth\" of {key:?} is not base64 text")))?;
                let (u, p) = decoded
                    .split_once(':')
                    .ok_or_else(|| bad(format!("\"auth\" of {key:?} does not decode to user:password")))?;
                username = Some(u.to_owned());
                password = Some(p.to_owned());
            }
            let cred = match (field("identitytoken"), username, password) {
                (Some(token), u, _) => {
                    Credential::IdentityToken { username: u.unwrap_or_default(), token: token.to_owned() }
                }
                (None, Some(username), Some(password)) => Credential::Basic { username, password },
                _ => continue,
            };
            creds.by_host.insert(normalise_host(key), cred);
        }
        Ok(creds)
    }

    /// The credential for `registry` (as written in references, e.g. `docker.io`).
    pub fn get(&self, registry: &str) -> Option<&Credential> {
        let host = normalise_host(registry);
        self.by_host.get(&host)
    }

    /// Where credentials were looked for, for error messages.
    pub fn describe(&self, registry: &str) -> String {
        let Some(path) = &self.path else {
            return "no credentials: neither DOCKER_CONFIG nor HOME is set".to_owned();
        };
        let mut s = if !self.found_file {
            format!(
                "no credentials: {} does not exist (credentials are read from $DOCKER_CONFIG/config.json, else \
                 ~/.docker/config.json)",
                path.display()
            )
        } else if self.get(registry).is_some() {
            format!("used credentials for {registry} from {}", path.display())
        } else {
            format!("no \"auths\" entry for {registry} in {}", path.display())
        };
        if let Some(h) = &self.helper {
            s.push_str(&format!(" (it names {h}; kiln does not run credential helpers)"));
        }
        s
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/v2` → `host:5000`.
fn normalise_host(key: &str) -> String {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_owned(),
        _ => host,
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm=...`
    Basic,
    /// `Bearer realm=...,service=...,scope=...`
    Bearer { realm: String, service: Option<String> },
}

/// Parses the first Basic or Bearer challenge of a `WWW-Authenticate` header value.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        let realm = params.get("realm")?.clone();
        return Some(Challenge::Bearer { realm, service: params.get("service").cloned() });
    }
    None
}

/// `key="value", key2=value2` → map; quoted values may contain commas (scopes do).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.insert(key, value);
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` on invalid input.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrip() {
        for s in ["", "a", "ab", "abc", "user:pass", "x:y:z with spaces"] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).unwrap(), s.as_bytes(), "{e}");
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert!(base64_decode("not base64!").is_none());
    }

    #[test]
    fn parses_docker_config() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "ghcr.io": {"identitytoken": "tok"},
            "empty.example": {}
        }, "credsStore": "desktop"}"#;
        let c = Credentials::parse(json, Path::new("/x/config.json")).unwrap();
        assert_eq!(c.get("docker.io"), Some(&Credential::Basic { username: "user".into(), password: "pass".into() }));
        assert_eq!(c.get("127.0.0.1:5000"), Some(&Credential::Basic { username: "u".into(), password: "p".into() }));
        assert!(matches!(c.get("ghcr.io"), Some(Credential::IdentityToken { .. })));
        assert!(c.get("empty.example").is_none());
        assert!(c.describe("quay.io").contains("no \"auths\" entry for quay.io in /x/config.json"));
        assert!(c.describe("quay.io").contains("credsStore"));
        let e = Credentials::parse(br#"{"auths": {"h": {"auth": "!!"}}}"#, Path::new("/c.json")).unwrap_err();
        assert!(e.to_string().contains("/c.json"), "{e}");
        assert!(!format!("{:?}", c.get("docker.io")).contains("pass"));
    }

    #[test]
    fn parses_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_params("realm=x, service=\"a\\\"b\"").get("service").map(String::as_str), Some("a\"b"));
    }
}

/// A registry login: a username and password, or (empty username) an identity token.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// The user name; empty for an identity token.
    pub username: String,
    /// The password or identity token.
    pub secret: String,
}

impl std::fmt::Debug for RegistryLogin {
    // Never print secrets, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryLogin({}, <redacted>)", self.username)
    }
}

/// Provides registry credentials by host (see `SolveOptions::registry_credentials`).
pub trait CredentialProvider: Send + Sync + std::fmt::Debug {
    /// The login for registry `host` (as contacted, e.g. `registry-1.docker.io` or
    /// `127.0.0.1:5000`); `None` when the provider has none.
    fn credentials<'a>(&'a self, host: &'a str) -> futures::future::BoxFuture<'a, Result<Option<RegistryLogin>>>;
}

/// Registry logins asked of a [`CredentialProvider`] (a daemon's client session, as buildkitd
/// asks its client) from the blocking registry client: answers are cached per registry for the
/// client's life; a registry the provider has no login for falls back to the Docker config.
#[derive(Debug, Clone)]
pub struct LoginSource {
    provider: Arc<dyn CredentialProvider>,
    runtime: tokio::runtime::Handle,
    asked: Arc<Mutex<HashMap<String, Option<Credential>>>>,
}

/// How long the registry client waits for the provider's answer.
const LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl LoginSource {
    /// Asks `provider` on the current tokio runtime (`None` outside one).
    pub fn new(provider: Arc<dyn CredentialProvider>) -> Option<LoginSource> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(LoginSource { provider, runtime, asked: Arc::default() })
    }

    /// Whether the provider gave a login for `registry`.
    pub(crate) fn answered(&self, registry: &str) -> bool {
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).get(registry).is_some_and(|c| c.is_some())
    }

    /// The provider's credential for `registry` (contacted at `host`), asked once.
    pub(crate) fn get(&self, registry: &str, host: &str) -> Result<Option<Credential>> {
        if let Some(c) = self.asked.lock().unwrap_or_else(|p| p.into_inner()).get(registry) {
            return Ok(c.clone());
        }
        // The registry client blocks; the provider is async: run it on the runtime and wait on a
        // channel (never `block_on`, which panics on a runtime thread).
        let (tx, rx) = std::sync::mpsc::channel();
        let (provider, h) = (self.provider.clone(), host.to_owned());
        self.runtime.spawn(async move {
            let _ = tx.send(provider.credentials(&h).await);
        });
        let login = rx
            .recv_timeout(LOGIN_TIMEOUT)
            .map_err(|_| {
                Error::new(
                    ErrorKind::Registry,
                    format!("asking the client for credentials of {host}: no answer within {LOGIN_TIMEOUT:?}"),
                )
            })?
            .map_err(|e| e.context(format!("asking the client for credentials of {host}")))?;
        let cred = login.and_then(|l| match (l.username.is_empty(), l.secret.is_empty()) {
            (_, true) => None,
            (true, false) => Some(Credential::IdentityToken { username: String::new(), token: l.secret }),
            (false, false) => Some(Credential::Basic { username: l.username, password: l.secret }),
        });
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).insert(registry.to_owned(), cred.clone());
        Ok(cred)
    }
}
