//! The `https://` / `http://` source: downloads one URL into a single file, hashing the body as it
//! streams, verifying an optional checksum, and applying BuildKit's file metadata rules (mode 0600
//! unless told otherwise, owner, mtime from `Last-Modified`).
//!
//! The client is blocking (`ureq` with rustls); async callers run [`fetch_http`] on a blocking
//! thread. Proxies come from `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` and `NO_PROXY`, as ureq reads them.

use crate::digest::{Digest, Hashing};
use crate::error::{Error, ErrorKind, IoContext, Result};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Mode of a downloaded file when the op sets none (BuildKit's default).
pub const DEFAULT_PERM: u32 = 0o600;

/// Connect timeout for every request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Read buffer size while streaming a body.
const CHUNK: usize = 64 * 1024;

/// What to download and how to lay the file down.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpFetch {
    /// The `http://` or `https://` URL.
    pub url: String,
    /// Expected sha256 of the body; a mismatch fails the fetch.
    pub checksum: Option<Digest>,
    /// File name inside the destination; defaults to the URL's last path segment, else `index`.
    pub filename: Option<String>,
    /// File mode bits; defaults to [`DEFAULT_PERM`].
    pub perm: Option<u32>,
    /// Owner uid; unchanged when `None`.
    pub uid: Option<u32>,
    /// Owner gid; unchanged when `None`.
    pub gid: Option<u32>,
}

/// What a successful download produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResult {
    /// sha256 of the body.
    pub digest: Digest,
    /// The file name written under the destination root.
    pub filename: String,
    /// Body size in bytes.
    pub size: u64,
}

/// The cache key of an http source when it can be known without a request: the checksum, if the
/// op pins one. `None` means the caller must download and key on the body's digest.
pub fn http_cache_key(f: &HttpFetch) -> Option<String> {
    f.checksum.as_ref().map(|d| d.to_string())
}

/// Downloads `f.url` into `dest_root/<filename>`.
///
/// The body streams into a temporary file in `dest_root` (hashed on the way), is fsynced and then
/// renamed into place, so a failed or mismatching download leaves nothing behind. `progress` is
/// called with `(bytes so far, Content-Length if known)` as data arrives.
pub fn fetch_http(f: &HttpFetch, dest_root: &Path, progress: &dyn Fn(u64, Option<u64>)) -> Result<HttpResult> {
    let uri = parse_url(&f.url)?;
    let filename = match &f.filename {
        Some(name) => validate_filename(name)?,
        None => filename_from_path(uri.path()),
    };
    tracing::debug!(url = %f.url, %filename, "http source: downloading");

    let mut response = agent()
        .get(&f.url)
        .call()
        .map_err(|e| Error::with_source(ErrorKind::Source, format!("GET {}: request failed: {e}", f.url), e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::new(
            ErrorKind::Source,
            format!(
                "GET {}: server answered HTTP status {} {}; expected a 2xx response",
                f.url,
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_owned(),
        ));
    }
    let last_modified = response.headers().get("last-modified").and_then(|v| v.to_str().ok()).and_then(|v| {
        let t = parse_http_date(v);
        if t.is_none() {
            tracing::warn!(url = %f.url, value = v, "http source: ignoring unparsable Last-Modified header");
        }
        t
    });
    let total = response.body().content_length();

    let tmp = tempfile::Builder::new()
        .prefix(".kiln-http-")
        .tempfile_in(dest_root)
        .with_path("create temporary download file in", dest_root)?;
    let tmp_path = tmp.path().to_owned();
    let mut sink = Hashing::new(tmp);
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; CHUNK];
    progress(0, total);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::with_source(
                    ErrorKind::Source,
                    format!("GET {}: reading the response body failed after {} bytes: {e}", f.url, sink.len()),
                    e,
                ))
            }
        };
        sink.write_all(&buf[..n]).with_path("write download to", &tmp_path)?;
        progress(sink.len(), total);
    }
    let (tmp, digest, size) = sink.finish();

    if let Some(expected) = &f.checksum {
        if expected != &digest {
            // `tmp` is dropped here, removing the partial file.
            return Err(Error::new(
                ErrorKind::Source,
                format!("checksum mismatch for {}: expected {expected}, downloaded content has {digest}", f.url),
            ));
        }
    }

    let file = tmp.as_file();
    file.set_permissions(std::fs::Permissions::from_mode(f.perm.unwrap_or(DEFAULT_PERM)))
        .with_path("set mode of", &tmp_path)?;
    if f.uid.is_some() || f.gid.is_some() {
        std::os::unix::fs::fchown(file, f.uid, f.gid).with_path("change owner of", &tmp_path)?;
    }
    if let Some(mtime) = last_modified {
        file.set_times(std::fs::FileTimes::new().set_modified(mtime).set_accessed(mtime))
            .with_path("set modification time of", &tmp_path)?;
    }
    file.sync_all().with_path("fsync", &tmp_path)?;

    let dest = dest_root.join(&filename);
    tmp.persist(&dest).map_err(|e| Error::io("rename download into place at", &dest, e.error))?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dest_root).and_then(|d| d.sync_all()).with_path("fsync directory", dest_root)?;

    tracing::debug!(url = %f.url, %digest, size, "http source: downloaded");
    Ok(HttpResult { digest, filename, size })
}

/// The shared agent: connection reuse across downloads, proxy settings from the environment.
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            // Status is checked here so the error can name the URL and what was expected.
            .http_status_as_error(false)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent()
    })
}

/// Parses and checks the scheme of `url`.
fn parse_url(url: &str) -> Result<ureq::http::Uri> {
    let uri: ureq::http::Uri = url.parse().map_err(|e| {
        Error::with_source(
            ErrorKind::Source,
            format!("invalid http source URL {url:?} ({e}): expected http(s)://host/path"),
            e,
        )
    })?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some() => Ok(uri),
        _ => Err(Error::new(
            ErrorKind::Source,
            format!("invalid http source URL {url:?}: expected an http:// or https:// URL with a host"),
        )),
    }
}

/// A caller-given file name must be one plain path component.
fn validate_filename(name: &str) -> Result<String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::option("filename", name, "a single file name without '/' (not empty, '.' or '..')"));
    }
    Ok(name.to_owned())
}

/// The last segment of a URL path, percent-decoded, or `index` when there is no usable one.
fn filename_from_path(path: &str) -> String {
    let segment = path.rsplit('/').next().unwrap_or("");
    let decoded = percent_decode(segment);
    match decoded {
        Some(name) if validate_filename(&name).is_ok() => name,
        _ => "index".to_owned(),
    }
}

/// Decodes `%XX` escapes; `None` for malformed escapes or non-UTF-8 results.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only format servers may send.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let rest = s.trim().split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    if parts.len() != 5 || parts[4] != "GMT" {
        return None;
    }
    let day: u32 = parts[0].parse().ok()?;
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == parts[1])? as u32 + 1;
    let year: i64 = parts[2].parse().ok()?;
    let hms: Vec<u32> = parts[3].split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if hms.len() != 3 || hms[0] > 23 || hms[1] > 59 || hms[2] > 60 || !(1..=31).contains(&day) {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + i64::from(hms[0] * 3600 + hms[1] * 60 + hms[2]);
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_date_parses_imf_fixdate() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        let t = parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT").unwrap();
        assert_eq!(t, UNIX_EPOCH);
        let t = parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 951_825_600);
    }

    #[test]
    fn http_date_rejects_other_forms() {
        assert!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT").is_none());
        assert!(parse_http_date("Sun Nov  6 08:49:37 1994").is_none());
        assert!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST").is_none());
        assert!(parse_http_date("").is_none());
    }

    #[test]
    fn filename_from_url_path() {
        assert_eq!(filename_from_path("/a/b/file.tar.gz"), "file.tar.gz");
        assert_eq!(filename_from_path("/a/b/"), "index");
        assert_eq!(filename_from_path(""), "index");
        assert_eq!(filename_from_path("/my%20file"), "my file");
        assert_eq!(filename_from_path("/a%2Fb"), "index");
        assert_eq!(filename_from_path("/.."), "index");
        assert_eq!(filename_from_path("/bad%zz"), "index");
    }

    #[test]
    fn filename_option_is_one_component() {
        assert!(validate_filename("ok.txt").is_ok());
        for bad in ["", ".", "..", "a/b", "/abs"] {
            let e = validate_filename(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Option, "{bad}");
        }
    }

    #[test]
    fn url_scheme_is_checked() {
        assert!(parse_url("https://example.com/x").is_ok());
        assert!(parse_url("http://127.0.0.1:8080/").is_ok());
        let e = parse_url("ftp://example.com/x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Source);
        assert!(e.to_string().contains("ftp://example.com/x"));
        assert!(parse_url("not a url").is_err());
    }

    #[test]
    fn cache_key_is_checksum_when_pinned() {
        let mut f = HttpFetch { url: "https://example.com/x".into(), ..Default::default() };
        assert_eq!(http_cache_key(&f), None);
        let d = Digest::of(b"x");
        f.checksum = Some(d.clone());
        assert_eq!(http_cache_key(&f), Some(d.to_string()));
    }
}
