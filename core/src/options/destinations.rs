//! Where a solve may write: no output or cache destination inside the engine root, so an export
//! can never overwrite the engine's own state (its metadata db, snapshots or content store).

use super::{CacheExportSpec, CacheTarget, OutputSpec};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// `path` made absolute with its longest existing prefix canonicalized (symlinks resolved), so
/// a destination that does not exist yet is judged by where it would be created.
fn resolved(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return abs,
        }
    }
}

fn refuse_inside(root: &Path, key: &str, dest: &Path) -> Result<()> {
    if dest == Path::new("-") {
        return Ok(());
    }
    if resolved(dest).starts_with(root) {
        return Err(Error::option(
            key,
            dest.display().to_string(),
            format!(
                "{} is inside the engine root {}; writing there would corrupt the engine's state: choose a \
                 destination outside the root",
                dest.display(),
                root.display()
            ),
        ));
    }
    Ok(())
}

/// Errors when an output (`dest=`) or a local cache export (`dest=`) is inside `root` (which must
/// be canonical).
pub(crate) fn check_outside_root(root: &Path, outputs: &[OutputSpec], cache_exports: &[CacheExportSpec]) -> Result<()> {
    for o in outputs {
        match o {
            OutputSpec::Local { dest } | OutputSpec::Tar { dest } | OutputSpec::Oci { dest, .. } => {
                refuse_inside(root, "dest", dest)?
            }
            _ => {}
        }
    }
    for c in cache_exports {
        if let CacheTarget::Local { dir, .. } = &c.target {
            refuse_inside(root, "dest", dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_inside_the_root_are_refused_even_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        std::os::unix::fs::symlink(&root, dir.path().join("alias")).unwrap();
        let tar = |d: PathBuf| vec![OutputSpec::Tar { dest: d }];
        let e = check_outside_root(&root, &tar(root.join("metadata.redb")), &[]).unwrap_err();
        assert!(e.to_string().contains("inside the engine root"), "{e}");
        assert!(check_outside_root(&root, &tar(dir.path().join("alias/new/x.tar")), &[]).is_err());
        assert!(check_outside_root(&root, &tar(dir.path().join("out.tar")), &[]).is_ok());
        assert!(check_outside_root(&root, &tar(PathBuf::from("-")), &[]).is_ok());
        let cache: CacheExportSpec = format!("type=local,dest={}", root.join("c").display()).parse().unwrap();
        assert!(check_outside_root(&root, &[], &[cache]).is_err());
    }
}
