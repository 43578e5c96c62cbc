//! ADD's archive extraction (BuildKit's `AttemptUnpackDockerCompatibility`, its file backend's
//! `unpack`): a copy source that is a regular file holding a tar archive — plain, or gzip, bzip2,
//! xz or zstd compressed (Docker's `DecompressStream` formats) — is extracted into the
//! destination directory instead of copied; anything else is copied as usual.

use super::meta::{in_action, io_err, mkdir_all_in_root, resolve};
use super::resolve::clean_abs;
use super::Owner;
use crate::error::Result;
use std::io::Read;
use std::path::Path;

/// The decompressed stream of `path` when it is a compression format BuildKit reads (gzip,
/// bzip2, xz, zstd, told by their magic numbers as Docker's `DetectCompression`) or plain.
fn open_stream(path: &Path) -> std::io::Result<Box<dyn Read>> {
    let mut magic = [0u8; 6];
    let mut n = 0;
    let mut probe = std::fs::File::open(path)?;
    while n < magic.len() {
        match probe.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let f = std::io::BufReader::new(std::fs::File::open(path)?);
    Ok(match &magic[..n] {
        [0x1f, 0x8b, 0x08, ..] => Box::new(flate2::read::MultiGzDecoder::new(f)),
        [0x42, 0x5a, 0x68, ..] => Box::new(bzip2::read::MultiBzDecoder::new(f)),
        [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00] => Box::new(xz2::read::XzDecoder::new_multi_decoder(f)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(zstd::stream::read::Decoder::with_buffer(f)?),
        _ => Box::new(f),
    })
}

/// BuildKit's `isArchivePath`: a regular file whose (decompressed) start is a tar header.
pub(crate) fn is_archive(host: &Path) -> bool {
    let Ok(m) = std::fs::symlink_metadata(host) else { return false };
    if !m.file_type().is_file() {
        return false;
    }
    let Ok(stream) = open_stream(host) else { return false };
    let mut ar = tar::Archive::new(stream);
    matches!(ar.entries().map(|mut e| e.next()), Ok(Some(Ok(_))))
}

/// Extracts the archive at `src_host` into `dest` of `dest_root` (created with parents owned
/// by `owner`), keeping the entries' modes, owners and times, as Docker's `Untar`.
pub(crate) fn unpack(action: &str, src_host: &Path, dest_root: &Path, dest: &str, owner: Option<Owner>) -> Result<()> {
    let dest_host = resolve(action, dest_root, &clean_abs(dest), true)?;
    mkdir_all_in_root(action, dest_root, &dest_host, 0o755, owner, None)?;
    let shown = clean_abs(dest);
    let stream = open_stream(src_host).map_err(|e| io_err(action, "cannot open archive", &shown, e))?;
    let mut ar = tar::Archive::new(stream);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_preserve_ownerships(super::meta::is_root());
    ar.set_overwrite(true);
    // `unpack` keeps every entry inside `dest_host` (no `..`, no escaping through links).
    ar.unpack(&dest_host).map_err(|e| in_action(action, crate::error::Error::io("extracting archive into", &dest_host, e)))
}
