//! Bounds on metadata read from places kiln does not control (OCI layouts, cache directories,
//! registries): every JSON document (`index.json`, `oci-layout`, manifests, image and cache
//! configs) is read from a regular file only, and at most [`max_metadata_bytes`] of it (16 MiB
//! unless `KILN_MAX_METADATA_BYTES` or [`set_max_metadata_bytes`] says otherwise). JSON nesting
//! is bounded by serde_json's recursion limit (128 levels).

use crate::error::{Error, ErrorKind, Result};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The default cap on one metadata document.
pub const DEFAULT_MAX_METADATA_BYTES: u64 = 16 << 20;
/// Environment variable overriding the cap (bytes).
pub const MAX_METADATA_ENV: &str = "KILN_MAX_METADATA_BYTES";

static OVERRIDE: AtomicU64 = AtomicU64::new(0);
static FROM_ENV: OnceLock<u64> = OnceLock::new();

/// The largest metadata document kiln reads, in bytes.
pub fn max_metadata_bytes() -> u64 {
    match OVERRIDE.load(Ordering::Relaxed) {
        0 => *FROM_ENV.get_or_init(|| {
            std::env::var(MAX_METADATA_ENV)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_MAX_METADATA_BYTES)
        }),
        n => n,
    }
}

/// Sets the cap for this process (`None` restores the environment's or the default).
pub fn set_max_metadata_bytes(bytes: Option<u64>) {
    OVERRIDE.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// Opens `path` for reading without blocking on a FIFO and without following a final symlink
/// when `nofollow`; anything but a regular file is refused (`InvalidInput`).
pub fn open_regular(path: &Path, nofollow: bool) -> io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(f) => f,
        // O_NOFOLLOW on a symlink.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "is a symbolic link, not a regular file"))
        }
        Err(e) => return Err(e),
    };
    let ft = file.metadata()?.file_type();
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("is {kind}, not a regular file")));
    }
    Ok(file)
}

/// Reads all of `file` (named `path`, a `what` document) if it is at most the metadata cap.
pub fn read_capped(mut file: File, path: &Path, what: &str) -> Result<Vec<u8>> {
    let cap = max_metadata_bytes();
    let len = file.metadata().map_err(|e| Error::io(format!("reading {what}"), path, e))?.len();
    if len > cap {
        return Err(too_large(path, what, len, cap));
    }
    let mut out = Vec::with_capacity(len as usize);
    // The file may grow while read: never read more than cap + 1 bytes.
    (&mut file).take(cap + 1).read_to_end(&mut out).map_err(|e| Error::io(format!("reading {what}"), path, e))?;
    if out.len() as u64 > cap {
        return Err(too_large(path, what, out.len() as u64, cap));
    }
    Ok(out)
}

fn too_large(path: &Path, what: &str, len: u64, cap: u64) -> Error {
    Error::new(
        ErrorKind::Content,
        format!(
            "{what} {} is {len} bytes, more than the {cap}-byte limit on metadata documents (set {MAX_METADATA_ENV} to raise it)",
            path.display()
        ),
    )
}

/// Reads the metadata document at `path`: a regular file of at most the cap. `Ok(None)` when it
/// does not exist.
pub fn read_metadata_file(path: &Path, what: &str) -> Result<Option<Vec<u8>>> {
    match open_regular(path, false) {
        Ok(f) => read_capped(f, path, what).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            Err(Error::new(ErrorKind::Content, format!("{what} {}: {e}", path.display())))
        }
        Err(e) => Err(Error::io(format!("reading {what}"), path, e)),
    }
}

/// The deepest JSON nesting accepted in a metadata document (OCI and cache documents nest a
/// handful of levels).
pub const MAX_JSON_DEPTH: usize = 64;

/// Refuses JSON nested deeper than [`MAX_JSON_DEPTH`] (one linear scan, before any parser
/// recurses — serde_json skips unknown fields without its recursion limit).
pub fn check_json_depth(bytes: &[u8], what: &str) -> Result<()> {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(Error::new(
                        ErrorKind::Content,
                        format!("{what} nests JSON deeper than {MAX_JSON_DEPTH} levels"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a document that arrived in memory (e.g. from a registry) against the cap.
pub fn check_size(len: usize, what: &str) -> Result<()> {
    let cap = max_metadata_bytes();
    if len as u64 > cap {
        return Err(Error::new(
            ErrorKind::Content,
            format!("{what} is {len} bytes, more than the {cap}-byte limit on metadata documents (set {MAX_METADATA_ENV} to raise it)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifo_and_devices_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let e = read_metadata_file(&fifo, "index.json").unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = read_metadata_file(Path::new("/dev/zero"), "index.json").unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        assert!(read_metadata_file(&dir.path().join("missing"), "x").unwrap().is_none());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert!(open_regular(&link, true).is_err());
    }

    #[test]
    fn json_depth() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(check_json_depth(deep.as_bytes(), "x").is_err());
        let ok = format!("{{\"a\":\"{}\",\"b\":{}{}}}", "[".repeat(100), "[".repeat(63), "]".repeat(63));
        check_json_depth(ok.as_bytes(), "x").unwrap();
    }
}
