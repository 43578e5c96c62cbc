//! `type=tar`: writes a result tree as one tar archive (to a file, atomically, or to stdout).
//! Entries are sorted by name and keep modes, owners, mtimes, symlinks, hardlinks, fifos and
//! device nodes, so the same tree always gives the same archive.

use crate::error::{Error, ErrorKind, IoContext, Result};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Writes a tar of the tree at `src_root` to `dest` (`-` means stdout). A file destination is
/// written to a temp file beside it and renamed into place when complete.
pub fn export_tar(src_root: &Path, dest: &Path) -> Result<()> {
    if !fs::symlink_metadata(src_root).with_path("reading export source", src_root)?.is_dir() {
        return Err(Error::new(
            ErrorKind::Export,
            format!("tar export source {} is not a directory", src_root.display()),
        ));
    }
    if dest == Path::new("-") {
        let stdout = io::stdout();
        let mut out = BufWriter::new(stdout.lock());
        write_tree_tar(src_root, &mut out)?;
        return out.flush().with_path("writing tar to", "<stdout>");
    }
    atomic_file(dest, |f| write_tree_tar(src_root, f))
}

/// Creates `dest` atomically: `write` fills a temp file in the same directory, which is then
/// fsynced and renamed over `dest`.
pub(crate) fn atomic_file(dest: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_path("creating directory for", dest)?;
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-export-")
        .tempfile_in(&parent)
        .with_path("creating temp file in", &parent)?;
    let mut out = BufWriter::new(tmp);
    write(&mut out)?;
    let tmp = out.into_inner().map_err(|e| Error::io("writing", dest, e.into_error()))?;
    tmp.as_file().sync_all().with_path("syncing", tmp.path().to_path_buf())?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .with_path("setting mode of", tmp.path().to_path_buf())?;
    }
    tmp.persist(dest).map_err(|e| Error::io("renaming into place", dest, e.error))?;
    crate::content::store::sync_dir(&parent)
}

/// Writes the tar of `src_root` into `out` (entries relative to the root, no `./` prefix).
pub(crate) fn write_tree_tar(src_root: &Path, out: &mut dyn Write) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    let mut seen_inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for entry in walkdir::WalkDir::new(src_root).min_depth(1).follow_links(false).sort_by_file_name() {
        let entry = entry.map_err(|e| {
            let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| src_root.to_path_buf());
            Error::io("walking export source", path, e.into())
        })?;
        let path = entry.path();
        let rel = path.strip_prefix(src_root).map_err(|_| {
            Error::new(ErrorKind::Internal, format!("{} is outside {}", path.display(), src_root.display()))
        })?;
        let meta = fs::symlink_metadata(path).with_path("reading", path)?;
        let ft = meta.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        // Permission bits plus setuid/setgid/sticky only, as Go's archive/tar writes them (the
        // file type is the entry type, never part of the mode field).
        header.set_mode(meta.mode() & 0o7777);
        header.set_size(0);
        let res = if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = seen_inodes.get(&(meta.dev(), meta.ino())) {
                    header.set_entry_type(tar::EntryType::Link);
                    builder.append_link(&mut header, rel, first).with_path("adding hardlink to tar", path)?;
                    continue;
                }
                seen_inodes.insert((meta.dev(), meta.ino()), rel.to_path_buf());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(path).with_path("opening", path)?;
            builder.append_data(&mut header, rel, file)
        } else if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            builder.append_data(&mut header, rel, io::empty())
        } else if ft.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            let target = fs::read_link(path).with_path("reading symlink", path)?;
            builder.append_link(&mut header, rel, target)
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            header.set_entry_type(if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let rdev = meta.rdev();
            header.set_device_major(nix::sys::stat::major(rdev) as u32).with_path("adding device to tar", path)?;
            header.set_device_minor(nix::sys::stat::minor(rdev) as u32).with_path("adding device to tar", path)?;
            builder.append_data(&mut header, rel, io::empty())
        } else {
            tracing::warn!(path = %path.display(), "tar export skips sockets");
            continue;
        };
        res.with_path("adding to tar", path)?;
    }
    builder.finish().with_path("finishing tar of", src_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_has_symlinks_and_hardlinks() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("a")).unwrap();
        fs::write(src.join("a/f"), b"hello").unwrap();
        fs::hard_link(src.join("a/f"), src.join("a/g")).unwrap();
        std::os::unix::fs::symlink("f", src.join("a/l")).unwrap();
        let dest = dir.path().join("out/x.tar");
        export_tar(&src, &dest).unwrap();
        let mut ar = tar::Archive::new(File::open(&dest).unwrap());
        let got: Vec<(String, tar::EntryType)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().entry_type())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".to_owned(), tar::EntryType::Directory),
                ("a/f".to_owned(), tar::EntryType::Regular),
                ("a/g".to_owned(), tar::EntryType::Link),
                ("a/l".to_owned(), tar::EntryType::Symlink),
            ]
        );
        assert_eq!(fs::read_dir(dir.path().join("out")).unwrap().count(), 1);
    }

    #[test]
    fn header_mode_has_no_file_type_bits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::set_permissions(src.join("d"), fs::Permissions::from_mode(0o1755)).unwrap();
        fs::write(src.join("d/suid"), b"x").unwrap();
        fs::set_permissions(src.join("d/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
        let dest = dir.path().join("x.tar");
        export_tar(&src, &dest).unwrap();
        let mut ar = tar::Archive::new(File::open(&dest).unwrap());
        let modes: Vec<u32> = ar.entries().unwrap().map(|e| e.unwrap().header().mode().unwrap()).collect();
        assert_eq!(modes, vec![0o1755, 0o4755]);
    }
}
