//! `RegistryClient`: a small blocking OCI distribution client on `ureq`. It speaks the v2 API
//! (manifests, blobs, uploads, cross-repository mounts) and answers `401` challenges with Basic
//! credentials or Bearer tokens (cached per registry and scope).
//!
//! Request bodies are replayable (bytes, or a file range reopened on retry) so that a request
//! refused for lack of auth can be sent again with credentials without buffering blobs in memory.
//!
//! Every network wait is bounded ([`RegistryOptions`]): connecting by the connect timeout, every
//! read and write by the idle (read) timeout. Idempotent requests are retried with exponential
//! backoff on connection errors, timeouts, HTTP 5xx and 429; blob downloads restart when their
//! body stalls. A client made [`interruptible`](RegistryClient::interruptible) ends blocked
//! requests at once when its [`Interrupt`] fires (a cancelled solve), with [`Error::Cancelled`].

use super::auth::{base64_encode, parse_challenge, Challenge, Credential, Credentials, LoginSource};
use super::options::{Interrupt, RegistryOptions, ENV_CONNECT_TIMEOUT, ENV_READ_TIMEOUT, MAX_BACKOFF};
use super::reference::Reference;
use crate::content::image::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::content::ContentStore;
use crate::digest::{Digest, Hashing};
use crate::error::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use ureq::http::{Method, Response, StatusCode};
use ureq::SendBody;

/// Manifest media types the client accepts, most specific first.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// Chunk size of chunked uploads when one is set ([`RegistryClient::with_chunk_size`]). By
/// default every blob streams in one PUT (the distribution spec's monolithic upload, which every
/// registry accepts): PATCH round trips of 8 MiB cost a request each for nothing on a fast link.
pub const DEFAULT_CHUNK_SIZE: u64 = 8 * 1024 * 1024;
/// Blobs pushed at once by [`RegistryClient::push_blobs`].
pub const PUSH_PARALLELISM: usize = 4;
/// Manifests larger than this are refused (the distribution spec suggests servers cap at 4 MiB).
const MAX_MANIFEST_BYTES: u64 = 8 * 1024 * 1024;
/// Error bodies are read only this far.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Tokens without `expires_in` are valid for 60 s per the token spec; refresh a little early.
const DEFAULT_TOKEN_TTL: u64 = 60;

/// Counters of what blob pushes did, shared by clones of a client (for callers' progress and
/// for tests that must tell a skipped upload from a real one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Blobs already present in the target repository (HEAD hit), not uploaded.
    pub blobs_skipped: u64,
    /// Blobs placed by a cross-repository mount.
    pub blobs_mounted: u64,
    /// Blobs uploaded with one PUT.
    pub monolithic_uploads: u64,
    /// Blobs uploaded with PATCH chunks.
    pub chunked_uploads: u64,
    /// PATCH requests sent.
    pub chunks: u64,
    /// Blob bytes sent.
    pub bytes_uploaded: u64,
}

/// A blocking OCI distribution client. Cheap to clone; clones share connections, tokens and
/// [`PushStats`].
#[derive(Debug, Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
    chunk_size: u64,
    interrupt: Option<Interrupt>,
    /// Logins asked of the solve's credential provider before the Docker config's.
    logins: Option<LoginSource>,
}

#[derive(Debug)]
struct Inner {
    agent: Arc<ureq::Agent>,
    options: RegistryOptions,
    scheme: &'static str,
    creds: Credentials,
    /// Per registry: how it challenged us last (unknown until its first `401`).
    challenges: Mutex<HashMap<String, Challenge>>,
    /// Bearer tokens per (registry, scopes) with their expiry.
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
    stats: Mutex<PushStats>,
}

/// A request body that can be produced again for a retry.
enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    File { path: &'a Path, offset: u64, len: u64 },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves it consistent (single inserts/removes).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn header<'a>(resp: &'a Response<ureq::Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn append_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

fn registry_error(message: String) -> Error {
    Error::new(ErrorKind::Registry, message)
}

impl RegistryClient {
    /// A client; `insecure` selects plain `http://` (meant for loopback test registries or
    /// registries the user explicitly marked insecure). Credentials are read now from
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`; without an entry for a registry
    /// the client is anonymous there.
    ///
    /// Timeouts and retries come from [`RegistryOptions::from_env`] (the defaults unless
    /// `KILN_REGISTRY_*` variables are set).
    pub fn new(insecure: bool) -> Result<RegistryClient> {
        RegistryClient::with_options(insecure, &RegistryOptions::from_env()?)
    }

    /// A client with explicit timeouts and retries (see [`RegistryClient::new`]).
    pub fn with_options(insecure: bool, options: &RegistryOptions) -> Result<RegistryClient> {
        let creds = Credentials::load()?;
        let options = options.sanitized();
        let agent = ureq::Agent::config_builder()
            .timeout_resolve(Some(options.connect_timeout))
            .timeout_connect(Some(options.connect_timeout))
            // Idle timeouts, not deadlines: a large blob streams as long as bytes keep moving.
            .timeout_per_read(Some(options.read_timeout))
            .timeout_per_write(Some(options.read_timeout))
            // Statuses are checked by the caller so that errors carry the registry's message.
            .http_status_as_error(false)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        tracing::debug!(insecure, credentials = ?creds.path, ?options, "registry client");
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                agent: Arc::new(agent),
                options,
                scheme: if insecure { "http" } else { "https" },
                creds,
                challenges: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                stats: Mutex::new(PushStats::default()),
            }),
            chunk_size: u64::MAX,
            interrupt: None,
            logins: None,
        })
    }

    /// The same client, asking `logins` (a daemon's client session) for credentials first.
    pub fn with_logins(mut self, logins: Option<LoginSource>) -> RegistryClient {
        self.logins = logins;
        self
    }

    /// The credential for `r`'s registry: the login source's, else the Docker config's.
    fn credential(&self, r: &Reference) -> Result<Option<Credential>> {
        if let Some(l) = &self.logins {
            if let Some(c) = l.get(&r.registry, r.host())? {
                return Ok(Some(c));
            }
        }
        Ok(self.inner.creds.get(&r.registry).cloned())
    }

    /// Where the credentials for `r` came from, for error messages.
    fn describe_credentials(&self, r: &Reference) -> String {
        let asked = self.logins.as_ref().is_some_and(|l| l.answered(&r.registry));
        let file = self.inner.creds.describe(&r.registry);
        if asked {
            format!("used the login the client's session gave for {}", r.registry)
        } else if self.logins.is_some() {
            format!("the client's session gave no login for {}; {file}", r.registry)
        } else {
            file
        }
    }

    /// The same client, ended by `interrupt`: when it fires, requests blocked on the network
    /// return at once and every request after it fails, with [`Error::Cancelled`].
    pub fn interruptible(mut self, interrupt: &Interrupt) -> RegistryClient {
        interrupt.register(&self.inner.agent);
        self.interrupt = Some(interrupt.clone());
        self
    }

    /// The timeouts and retries this client uses.
    pub fn options(&self) -> &RegistryOptions {
        &self.inner.options
    }

    fn interrupted(&self) -> bool {
        self.interrupt.as_ref().is_some_and(Interrupt::is_fired)
    }

    fn check_interrupt(&self) -> Result<()> {
        if self.interrupted() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// Waits before a retry (ended early, with `Cancelled`, by the interrupt).
    fn pause(&self, d: Duration) -> Result<()> {
        match &self.interrupt {
            Some(i) => i.wait(d),
            None => {
                std::thread::sleep(d);
                Ok(())
            }
        }
    }

    /// The error for a failed network exchange of `method url` with `r`'s registry:
    /// `Cancelled` when the interrupt ended it, else what happened (timeouts name the limit and
    /// the variable that sets it).
    fn network_error(&self, r: &Reference, method: &Method, url: &str, e: ureq::Error, attempts: u32) -> Error {
        if self.interrupted() {
            return Error::Cancelled;
        }
        let o = &self.inner.options;
        let what = match &e {
            ureq::Error::Timeout(t) => match t {
                ureq::Timeout::Resolve | ureq::Timeout::Connect => format!(
                    "timed out: no connection to registry {} within {} ({ENV_CONNECT_TIMEOUT})",
                    r.registry,
                    secs(o.connect_timeout)
                ),
                ureq::Timeout::PerWrite | ureq::Timeout::SendRequest | ureq::Timeout::SendBody => format!(
                    "timed out: registry {} accepted no data for {} ({ENV_READ_TIMEOUT})",
                    r.registry,
                    secs(o.read_timeout)
                ),
                _ => format!(
                    "timed out: registry {} sent nothing for {} ({ENV_READ_TIMEOUT})",
                    r.registry,
                    secs(o.read_timeout)
                ),
            },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                format!("registry {} refused the connection ({io})", r.registry)
            }
            ureq::Error::Io(io) => format!("connection to registry {} failed: {io}", r.registry),
            ureq::Error::HostNotFound => format!("registry host {} not found", r.registry),
            ureq::Error::ConnectionFailed => format!("could not connect to registry {}", r.registry),
            other => format!("registry {}: {other}", r.registry),
        };
        let tries = if attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() };
        Error::with_source(ErrorKind::Registry, format!("{method} {url}: {what}{tries}"), e)
    }

    /// The same client with another upload chunk size (bytes, at least 1): blobs larger than it
    /// are uploaded in PATCH chunks of this size, smaller ones in one PUT.
    pub fn with_chunk_size(mut self, bytes: u64) -> RegistryClient {
        self.chunk_size = bytes.max(1);
        self
    }

    /// What blob pushes through this client (and its clones) did so far.
    pub fn push_stats(&self) -> PushStats {
        lock(&self.inner.stats).clone()
    }

    fn repo_url(&self, r: &Reference, rest: &str) -> String {
        format!("{}://{}/v2/{}/{rest}", self.inner.scheme, r.host(), r.repository)
    }

    /// Resolves a `Location` header against the registry's base URL.
    fn absolute(&self, r: &Reference, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else if location.starts_with('/') {
            format!("{}://{}{location}", self.inner.scheme, r.host())
        } else {
            format!("{}://{}/{location}", self.inner.scheme, r.host())
        }
    }

    /// Resolves `r` to its manifest digest, media type and size: `HEAD` first, `GET` when the
    /// registry's `HEAD` answer lacks what is needed.
    pub fn resolve(&self, r: &Reference) -> Result<(Digest, String, u64)> {
        let url = self.repo_url(r, &format!("manifests/{}", r.manifest_ref()));
        let accept = [("Accept", MANIFEST_ACCEPT.to_owned())];
        let resp = self.send(r, &[pull_scope(&r.repository)], Method::HEAD, &url, &accept, &Payload::Empty)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(registry_error(format!(
                "manifest {r} not found: HEAD {url} returned HTTP 404 (check the repository and tag)"
            )));
        }
        if resp.status() == StatusCode::OK {
            let digest = header(&resp, "docker-content-digest").and_then(|d| Digest::parse(d).ok());
            let media_type = header(&resp, "content-type").map(|m| m.split(';').next().unwrap_or(m).trim().to_owned());
            let size = header(&resp, "content-length").and_then(|l| l.parse::<u64>().ok());
            if let (Some(digest), Some(media_type), Some(size)) = (digest, media_type, size) {
                if is_manifest_type(&media_type) {
                    if let Some(want) = &r.digest {
                        if want != &digest {
                            return Err(registry_error(format!(
                                "registry answered HEAD {url} with digest {digest}, expected {want}"
                            )));
                        }
                    }
                    return Ok((digest, media_type, size));
                }
            }
        }
        tracing::debug!(%url, status = %resp.status(), "manifest HEAD incomplete, falling back to GET");
        let (bytes, media_type, digest) = self.get_manifest(r)?;
        Ok((digest, media_type, bytes.len() as u64))
    }

    /// Fetches the manifest (or index) `r` names; returns its bytes, media type and digest. When
    /// `r` pins a digest the content must hash to it.
    pub fn get_manifest(&self, r: &Reference) -> Result<(Vec<u8>, String, Digest)> {
        let url = self.repo_url(r, &format!("manifests/{}", r.manifest_ref()));
        let accept = [("Accept", MANIFEST_ACCEPT.to_owned())];
        let resp = self.send(r, &[pull_scope(&r.repository)], Method::GET, &url, &accept, &Payload::Empty)?;
        if resp.status() != StatusCode::OK {
            return Err(status_error(&format!("fetching manifest {r}"), "GET", &url, resp));
        }
        let content_type = header(&resp, "content-type").map(|m| m.split(';').next().unwrap_or(m).trim().to_owned());
        let mut bytes = Vec::new();
        resp.into_body()
            .into_with_config()
            .limit(MAX_MANIFEST_BYTES)
            .reader()
            .read_to_end(&mut bytes)
            .map_err(|e| self.body_error(r, &Method::GET, &url, e).context(format!("reading manifest {r}")))?;
        let digest = Digest::of(&bytes);
        if let Some(want) = &r.digest {
            if want != &digest {
                return Err(registry_error(format!(
                    "manifest from {url} does not match its digest: expected {want}, content has {digest}"
                )));
            }
        }
        let media_type = match content_type {
            Some(m) if is_manifest_type(&m) => m,
            _ => media_type_from_json(&bytes),
        };
        Ok((bytes, media_type, digest))
    }

    /// The size of blob `d` in `r`'s repository, or `None` when the registry does not have it.
    pub fn blob_exists(&self, r: &Reference, d: &Digest) -> Result<Option<u64>> {
        self.blob_exists_scoped(r, d, &pull_scope(&r.repository))
    }

    fn blob_exists_scoped(&self, r: &Reference, d: &Digest, scope: &str) -> Result<Option<u64>> {
        let url = self.repo_url(r, &format!("blobs/{d}"));
        let resp = self.send(r, &[scope.to_owned()], Method::HEAD, &url, &[], &Payload::Empty)?;
        match resp.status() {
            StatusCode::OK => Ok(Some(header(&resp, "content-length").and_then(|l| l.parse().ok()).unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(&format!("checking blob {d} in {}", r.repository), "HEAD", &url, resp)),
        }
    }

    /// Streams blob `d` of `r`'s repository into `into`, verifying its digest: on a mismatch
    /// nothing is stored and the error names the expected and actual digests. A blob already in
    /// the store is not fetched again.
    pub fn fetch_blob(&self, r: &Reference, d: &Digest, into: &ContentStore) -> Result<()> {
        if into.has(d) {
            return Ok(());
        }
        let url = self.repo_url(r, &format!("blobs/{d}"));
        // A download whose body fails (stalls past the read timeout, connection lost) starts
        // again, as many times as a request is attempted; each start discards what came before.
        let attempts = self.inner.options.attempts;
        let mut attempt = 1;
        let (writer, actual, len) = loop {
            let resp = self.send(r, &[pull_scope(&r.repository)], Method::GET, &url, &[], &Payload::Empty)?;
            if resp.status() != StatusCode::OK {
                return Err(status_error(&format!("fetching blob {d} of {}", r.repository), "GET", &url, resp));
            }
            let mut reader = resp.into_body().into_reader();
            let mut out = Hashing::new(into.writer()?);
            match copy_body(&mut reader, &mut out) {
                Ok(()) => break out.finish(),
                // The store could not take the bytes (a full disk): not the registry's fault.
                Err(Copy::Write(e)) => {
                    return Err(Error::with_source(
                        ErrorKind::Content,
                        format!("storing blob {d} downloaded from {url}: {e}"),
                        e,
                    ))
                }
                Err(Copy::Read(e)) => {
                    let err = self.network_error(r, &Method::GET, &url, ureq::Error::from(e), attempt);
                    if attempt >= attempts || matches!(err, Error::Cancelled) {
                        return Err(err.context(format!("downloading blob {d}")));
                    }
                    let wait = self.inner.options.backoff_for(attempt);
                    tracing::warn!(blob = %d, %url, error = %err, attempt, attempts, ?wait, "blob download failed; restarting");
                    // Dropping the writer discards the partial temp file.
                    drop(out);
                    self.pause(wait)?;
                    attempt += 1;
                }
            }
        };
        if &actual != d {
            // Dropping the writer discards the temp file: nothing is stored.
            drop(writer);
            return Err(registry_error(format!(
                "blob from {url} does not match its digest: expected {d}, got {actual} ({len} bytes); nothing was stored"
            )));
        }
        writer.commit(Some(d))?;
        tracing::debug!(blob = %d, bytes = len, %url, "fetched blob");
        Ok(())
    }

    /// Pushes blob `d` from `from` to `r`'s repository: nothing when the registry has it
    /// already (HEAD), a cross-repository mount when `mount_from` names another repository on
    /// the same registry (`repo/name`, optionally prefixed with the registry), else an upload:
    /// one PUT for blobs up to the chunk size, PATCH chunks for larger ones, streamed from disk.
    pub fn push_blob(&self, r: &Reference, d: &Digest, from: &ContentStore, mount_from: Option<&str>) -> Result<()> {
        self.push_blob_inner(r, d, from, mount_from)
            .map_err(|e| e.context(format!("pushing blob {d} to {}/{}", r.registry, r.repository)))
    }

    /// Pushes `digests` from `from` like [`RegistryClient::push_blob`], at most
    /// [`PUSH_PARALLELISM`] at once (each HEAD check, mount or upload on its own thread), the
    /// largest first so that no big blob starts last and runs alone; after a failure no further
    /// blob starts, and the first error is returned once the running ones ended.
    pub fn push_blobs(&self, r: &Reference, digests: &[Digest], from: &ContentStore) -> Result<()> {
        let mut by_size: Vec<(u64, &Digest)> = digests.iter().map(|d| (from.size(d).unwrap_or(0), d)).collect();
        by_size.sort_by(|a, b| b.0.cmp(&a.0));
        let digests: Vec<&Digest> = by_size.into_iter().map(|(_, d)| d).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let workers = PUSH_PARALLELISM.min(digests.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    if failed.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(d) = digests.get(i).copied() else { return };
                    if let Err(e) = self.push_blob(r, d, from, None) {
                        failed.store(true, std::sync::atomic::Ordering::SeqCst);
                        lock(&first_error).get_or_insert(e);
                        return;
                    }
                });
            }
        });
        let first = lock(&first_error).take();
        first.map_or(Ok(()), Err)
    }

    fn push_blob_inner(&self, r: &Reference, d: &Digest, from: &ContentStore, mount_from: Option<&str>) -> Result<()> {
        let size = from.size(d)?;
        let path = from.blob_path(d);
        let scope = push_scope(&r.repository);
        if self.blob_exists_scoped(r, d, &scope)?.is_some() {
            lock(&self.inner.stats).blobs_skipped += 1;
            tracing::debug!(blob = %d, repo = %r.repository, "blob exists, skipping upload");
            return Ok(());
        }
        let source_repo = mount_from
            .map(|m| m.strip_prefix(&format!("{}/", r.registry)).unwrap_or(m))
            .filter(|m| !m.is_empty() && *m != r.repository);
        let uploads = self.repo_url(r, "blobs/uploads/");
        let (url, scopes) = match source_repo {
            Some(src) => (
                append_query(&uploads, &format!("mount={}&from={}", encode(d.as_str()), encode(src))),
                vec![scope.clone(), pull_scope(src)],
            ),
            None => (uploads, vec![scope.clone()]),
        };
        let resp = self.send(r, &scopes, Method::POST, &url, &[], &Payload::Empty)?;
        if resp.status() == StatusCode::CREATED && source_repo.is_some() {
            lock(&self.inner.stats).blobs_mounted += 1;
            tracing::debug!(blob = %d, repo = %r.repository, from = ?source_repo, "mounted blob");
            return Ok(());
        }
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(&format!("starting upload of blob {d} to {}", r.repository), "POST", &url, resp));
        }
        let mut location = self.location(r, &resp, "POST", &url)?;
        let scopes = [scope];
        if size <= self.chunk_size {
            let put_url = append_query(&location, &format!("digest={}", encode(d.as_str())));
            let payload = Payload::File { path: &path, offset: 0, len: size };
            let resp = self.send(r, &scopes, Method::PUT, &put_url, &octet_stream(), &payload)?;
            self.expect_created(r, d, resp, &put_url)?;
            let mut stats = lock(&self.inner.stats);
            stats.monolithic_uploads += 1;
            stats.bytes_uploaded += size;
            return Ok(());
        }
        let mut offset = 0;
        while offset < size {
            let len = self.chunk_size.min(size - offset);
            let mut headers = octet_stream();
            headers.push(("Content-Range", format!("{offset}-{}", offset + len - 1)));
            let payload = Payload::File { path: &path, offset, len };
            let resp = self.send(r, &scopes, Method::PATCH, &location, &headers, &payload)?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(status_error(
                    &format!("uploading bytes {offset}-{} of blob {d}", offset + len - 1),
                    "PATCH",
                    &location,
                    resp,
                ));
            }
            location = self.location(r, &resp, "PATCH", &location)?;
            offset += len;
            let mut stats = lock(&self.inner.stats);
            stats.chunks += 1;
            stats.bytes_uploaded += len;
        }
        let put_url = append_query(&location, &format!("digest={}", encode(d.as_str())));
        let resp = self.send(r, &scopes, Method::PUT, &put_url, &[], &Payload::Empty)?;
        self.expect_created(r, d, resp, &put_url)?;
        lock(&self.inner.stats).chunked_uploads += 1;
        tracing::debug!(blob = %d, bytes = size, repo = %r.repository, "uploaded blob in chunks");
        Ok(())
    }

    fn location(&self, r: &Reference, resp: &Response<ureq::Body>, method: &str, url: &str) -> Result<String> {
        header(resp, "location").map(|l| self.absolute(r, l)).ok_or_else(|| {
            registry_error(format!("{method} {url} answered HTTP {} without the Location of the upload", resp.status()))
        })
    }

    fn expect_created(&self, r: &Reference, d: &Digest, resp: Response<ureq::Body>, url: &str) -> Result<()> {
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(&format!("finishing upload of blob {d} to {}", r.repository), "PUT", url, resp));
        }
        if let Some(got) = header(&resp, "docker-content-digest") {
            if got != d.as_str() {
                return Err(registry_error(format!(
                    "registry stored the upload to {url} as {got}, expected {d} (the local blob may be corrupt)"
                )));
            }
        }
        Ok(())
    }

    /// Uploads a manifest (or index) of `media_type` to `r`'s tag, or to its digest when it
    /// pins one (the body must then hash to it). Returns the body's digest.
    pub fn put_manifest(&self, r: &Reference, media_type: &str, body: &[u8]) -> Result<Digest> {
        let digest = Digest::of(body);
        if let Some(want) = &r.digest {
            if want != &digest {
                return Err(registry_error(format!(
                    "cannot put manifest at {r}: its content hashes to {digest}, not to the reference's digest"
                )));
            }
        }
        let url = self.repo_url(r, &format!("manifests/{}", r.manifest_ref()));
        let headers = [("Content-Type", media_type.to_owned())];
        let resp = self.send(r, &[push_scope(&r.repository)], Method::PUT, &url, &headers, &Payload::Bytes(body))?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(&format!("putting manifest {r}"), "PUT", &url, resp));
        }
        if let Some(got) = header(&resp, "docker-content-digest") {
            if got != digest.as_str() {
                return Err(registry_error(format!(
                    "registry stored manifest {r} as {got}, but its content hashes to {digest}"
                )));
            }
        }
        tracing::debug!(%r, %digest, media_type, "put manifest");
        Ok(digest)
    }

    /// Sends a request, answering one `401` challenge with credentials or a token. Idempotent
    /// requests (`GET`, `HEAD`, and `PUT` of a byte body: manifests) are retried with backoff
    /// on connection errors, timeouts, HTTP 5xx and 429; the response then records how many
    /// attempts were made ([`Attempts`]) for the caller's error message.
    fn send(
        &self,
        r: &Reference,
        scopes: &[String],
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        payload: &Payload<'_>,
    ) -> Result<Response<ureq::Body>> {
        let idempotent = matches!(method, Method::GET | Method::HEAD)
            || (method == Method::PUT && matches!(payload, Payload::Bytes(_)));
        let attempts = if idempotent { self.inner.options.attempts } else { 1 };
        let mut attempt = 1;
        loop {
            self.check_interrupt()?;
            let wait = match self.send_authorized(r, scopes, &method, url, headers, payload) {
                Ok(resp) if attempt < attempts && retryable_status(resp.status()) => {
                    let wait = retry_after(&resp).unwrap_or_else(|| self.inner.options.backoff_for(attempt));
                    tracing::warn!(%method, %url, status = %resp.status(), attempt, attempts, ?wait, "registry request failed; retrying");
                    wait
                }
                Ok(mut resp) => {
                    resp.extensions_mut().insert(Attempts(attempt));
                    return Ok(resp);
                }
                Err(Failure::Net(e)) if attempt < attempts && !self.interrupted() => {
                    let wait = self.inner.options.backoff_for(attempt);
                    tracing::warn!(%method, %url, error = %e, attempt, attempts, ?wait, "registry request failed; retrying");
                    wait
                }
                Err(Failure::Net(e)) => return Err(self.network_error(r, &method, url, e, attempt)),
                Err(Failure::Local(e)) => return Err(e),
            };
            self.pause(wait)?;
            attempt += 1;
        }
    }

    /// One exchange (plus one answered `401` challenge).
    fn send_authorized(
        &self,
        r: &Reference,
        scopes: &[String],
        method: &Method,
        url: &str,
        headers: &[(&str, String)],
        payload: &Payload<'_>,
    ) -> std::result::Result<Response<ureq::Body>, Failure> {
        let mut refused_with_auth = false;
        for attempt in 0..2 {
            let auth = self.authorization(r, scopes).map_err(Failure::Local)?;
            let had_auth = auth.is_some();
            let resp = self.send_once(method, url, headers, auth, payload)?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenge = header(&resp, "www-authenticate").and_then(parse_challenge);
            tracing::debug!(%url, ?challenge, attempt, "registry asked for authentication");
            let Some(challenge) = challenge else {
                return Err(Failure::Local(self.auth_error(
                    r,
                    method,
                    url,
                    "without a Basic or Bearer WWW-Authenticate challenge",
                )));
            };
            if had_auth {
                refused_with_auth = true;
                // A stale token: forget it so the retry fetches a fresh one.
                lock(&self.inner.tokens).remove(&(r.registry.clone(), scopes.join(" ")));
            }
            lock(&self.inner.challenges).insert(r.registry.clone(), challenge);
            if attempt == 1 {
                break;
            }
        }
        let why = if refused_with_auth { "and refused the credentials" } else { "" };
        Err(Failure::Local(self.auth_error(r, method, url, why)))
    }

    fn auth_error(&self, r: &Reference, method: &Method, url: &str, why: &str) -> Error {
        registry_error(format!(
            "authentication to registry {} failed: {method} {url} returned HTTP 401 {why}; {}",
            r.registry,
            self.describe_credentials(r)
        ))
    }

    fn send_once(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&str, String)],
        auth: Option<String>,
        payload: &Payload<'_>,
    ) -> std::result::Result<Response<ureq::Body>, Failure> {
        if self.interrupted() {
            return Err(Failure::Local(Error::Cancelled));
        }
        let mut builder = ureq::http::Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, v.as_str());
        }
        if let Some(auth) = auth {
            builder = builder.header("Authorization", auth);
        }
        let has_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
        // Owned readers: `SendBody` is invariant in its lifetime. Byte payloads are manifests
        // and token forms, small enough to copy.
        let body = match payload {
            Payload::Empty if !has_body => SendBody::none(),
            Payload::Empty => {
                builder = builder.header("Content-Length", "0");
                SendBody::from_owned_reader(std::io::empty())
            }
            Payload::Bytes(b) => {
                builder = builder.header("Content-Length", b.len());
                SendBody::from_owned_reader(std::io::Cursor::new(b.to_vec()))
            }
            Payload::File { path, offset, len } => {
                let mut f = std::fs::File::open(path)
                    .map_err(|e| Failure::Local(Error::io("opening blob to upload", *path, e)))?;
                f.seek(SeekFrom::Start(*offset))
                    .map_err(|e| Failure::Local(Error::io("seeking in blob to upload", *path, e)))?;
                builder = builder.header("Content-Length", *len);
                SendBody::from_owned_reader(f.take(*len))
            }
        };
        let request = builder.body(body).map_err(|e| {
            Failure::Local(Error::with_source(
                ErrorKind::Registry,
                format!("building request {method} {url}: invalid URL or header"),
                e,
            ))
        })?;
        self.inner.agent.run(request).map_err(Failure::Net)
    }

    /// The error for a response body that could not be read (`Cancelled` when interrupted).
    fn body_error(&self, r: &Reference, method: &Method, url: &str, e: std::io::Error) -> Error {
        self.network_error(r, method, url, ureq::Error::from(e), 1)
    }

    /// The `Authorization` header for `r`'s registry, once it has challenged us.
    fn authorization(&self, r: &Reference, scopes: &[String]) -> Result<Option<String>> {
        let Some(challenge) = lock(&self.inner.challenges).get(&r.registry).cloned() else {
            // Not challenged (yet): no credentials asked for, none sent.
            return Ok(None);
        };
        let cred = self.credential(r)?;
        let cred = cred.as_ref();
        match challenge {
            Challenge::Basic => match cred {
                Some(Credential::Basic { username, password }) => {
                    Ok(Some(format!("Basic {}", base64_encode(format!("{username}:{password}").as_bytes()))))
                }
                _ => Err(registry_error(format!(
                    "registry {} requires basic authentication; {}",
                    r.registry,
                    self.describe_credentials(r)
                ))),
            },
            Challenge::Bearer { realm, service } => {
                let key = (r.registry.clone(), scopes.join(" "));
                if let Some((token, expiry)) = lock(&self.inner.tokens).get(&key) {
                    if Instant::now() < *expiry {
                        return Ok(Some(format!("Bearer {token}")));
                    }
                }
                let (token, ttl) = self.fetch_token(r, &realm, service.as_deref(), scopes, cred)?;
                // Refresh a little before the registry's deadline.
                let expiry = Instant::now() + Duration::from_secs(ttl.saturating_sub(5).max(1));
                lock(&self.inner.tokens).insert(key, (token.clone(), expiry));
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Gets a Bearer token from the challenge's realm (token spec; OAuth2 refresh-token grant
    /// for identity tokens).
    fn fetch_token(
        &self,
        r: &Reference,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        cred: Option<&Credential>,
    ) -> Result<(String, u64)> {
        let mut query: Vec<String> = Vec::new();
        if let Some(s) = service {
            query.push(format!("service={}", encode(s)));
        }
        let result = match cred {
            Some(Credential::IdentityToken { token, .. }) => {
                let mut form = query.clone();
                form.push("grant_type=refresh_token".to_owned());
                form.push(format!("refresh_token={}", encode(token)));
                form.push("client_id=kiln".to_owned());
                form.push(format!("scope={}", encode(&scopes.join(" "))));
                let form = form.join("&");
                let headers = [("Content-Type", "application/x-www-form-urlencoded".to_owned())];
                self.send_once(&Method::POST, realm, &headers, None, &Payload::Bytes(form.as_bytes()))
            }
            _ => {
                query.extend(scopes.iter().map(|s| format!("scope={}", encode(s))));
                let url = if query.is_empty() { realm.to_owned() } else { append_query(realm, &query.join("&")) };
                let auth = match cred {
                    Some(Credential::Basic { username, password }) => {
                        Some(format!("Basic {}", base64_encode(format!("{username}:{password}").as_bytes())))
                    }
                    _ => None,
                };
                self.send_once(&Method::GET, &url, &[], auth, &Payload::Empty)
            }
        };
        let resp = result
            .map_err(|f| match f {
                Failure::Local(e) => e,
                Failure::Net(e) => {
                    let method =
                        if matches!(cred, Some(Credential::IdentityToken { .. })) { Method::POST } else { Method::GET };
                    self.network_error(r, &method, realm, e, 1)
                }
            })
            .map_err(|e| e.context(format!("getting a token for registry {}", r.registry)))?;
        if resp.status() != StatusCode::OK {
            let e = status_error(&format!("getting a token for registry {}", r.registry), "GET", realm, resp);
            return Err(e.context(self.describe_credentials(r)));
        }
        let mut body = Vec::new();
        resp.into_body()
            .into_with_config()
            .limit(MAX_ERROR_BODY * 16)
            .reader()
            .read_to_end(&mut body)
            .map_err(|e| Error::with_source(ErrorKind::Registry, format!("reading token from {realm}"), e))?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            Error::with_source(ErrorKind::Registry, format!("token response from {realm} is not JSON"), e)
        })?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                registry_error(format!("token response from {realm} has no \"token\" or \"access_token\""))
            })?;
        let ttl = v.get("expires_in").and_then(|e| e.as_u64()).unwrap_or(DEFAULT_TOKEN_TTL);
        Ok((token.to_owned(), ttl))
    }
}

/// Which side of a body copy failed.
enum Copy {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies a response body into `out`, telling a failed read (the network) from a failed write.
fn copy_body(from: &mut impl Read, out: &mut impl std::io::Write) -> std::result::Result<(), Copy> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(Copy::Write)?;
    }
}

/// Why one exchange failed: locally (not worth retrying) or on the network.
enum Failure {
    Local(Error),
    Net(ureq::Error),
}

/// How many attempts a response took (a response extension, for error messages).
#[derive(Debug, Clone, Copy)]
struct Attempts(u32);

/// Statuses worth another attempt of an idempotent request.
fn retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS
}

/// A `Retry-After` in seconds (the HTTP-date form is ignored), capped at the longest backoff.
fn retry_after(resp: &Response<ureq::Body>) -> Option<Duration> {
    header(resp, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_BACKOFF))
}

/// `1.5 s`, `30 s`.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{s:.3} s").replace(".000", "")
    }
}

fn octet_stream() -> Vec<(&'static str, String)> {
    vec![("Content-Type", "application/octet-stream".to_owned())]
}

fn is_manifest_type(m: &str) -> bool {
    matches!(m, OCI_INDEX | OCI_MANIFEST | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST)
}

/// The media type of a manifest from its `mediaType` field, else by shape.
fn media_type_from_json(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    if let Some(m) = v.get("mediaType").and_then(|m| m.as_str()) {
        return m.to_owned();
    }
    if v.get("manifests").is_some() {
        OCI_INDEX.to_owned()
    } else {
        OCI_MANIFEST.to_owned()
    }
}

/// An error for an unexpected status: names what kiln was doing, the request, the status and
/// the registry's own error messages (`{"errors":[{"code","message","detail"}]}`).
fn status_error(what: &str, method: &str, url: &str, resp: Response<ureq::Body>) -> Error {
    let status = resp.status();
    let attempts = resp.extensions().get::<Attempts>().map(|a| a.0).unwrap_or(1);
    let mut body = Vec::new();
    // The error body is best effort: the status alone is still reported when it cannot be read.
    let _ = resp.into_body().into_with_config().limit(MAX_ERROR_BODY).reader().read_to_end(&mut body);
    let detail = registry_messages(&body)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().chars().take(300).collect::<String>());
    let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
    let tries = if attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() };
    registry_error(format!("{what}: {method} {url} returned HTTP {status}{tries}{detail}"))
}

fn registry_messages(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let errors = v.get("errors")?.as_array()?;
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
            match e.get("detail").filter(|d| !d.is_null()) {
                Some(d) => format!("{code}: {msg} ({d})"),
                None => format!("{code}: {msg}"),
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding() {
        assert_eq!(encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(append_query("http://h/u?_state=x", "digest=d"), "http://h/u?_state=x&digest=d");
        assert_eq!(append_query("http://h/u", "digest=d"), "http://h/u?digest=d");
    }

    #[test]
    fn registry_error_messages() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(registry_messages(body).unwrap(), r#"MANIFEST_UNKNOWN: manifest unknown ({"Tag":"x"})"#);
        assert!(registry_messages(b"not json").is_none());
    }

    #[test]
    fn media_type_fallback() {
        assert_eq!(media_type_from_json(br#"{"manifests":[]}"#), OCI_INDEX);
        assert_eq!(media_type_from_json(br#"{"mediaType":"x"}"#), "x");
        assert_eq!(media_type_from_json(b"{}"), OCI_MANIFEST);
    }
}
