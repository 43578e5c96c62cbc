//! `fsutil.types.Stat` of a host path as fsutil's `mkstat` builds it (Go `os.FileMode` bits,
//! nanosecond mtime, hardlinks named by their first path, xattrs), and the Go mode bits the
//! receiver turns back into Unix modes.

use crate::build::FileStat;
use crate::error::{IoContext, Result};
use crate::session::proto::fsutil::types::Stat;
use std::collections::{BTreeMap, HashMap};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Go's `os.ModeDir`.
pub const MODE_DIR: u32 = 1 << 31;
/// Go's `os.ModeSymlink`.
pub const MODE_SYMLINK: u32 = 1 << 27;
/// Go's `os.ModeDevice`.
pub const MODE_DEVICE: u32 = 1 << 26;
/// Go's `os.ModeNamedPipe`.
pub const MODE_NAMED_PIPE: u32 = 1 << 25;
/// Go's `os.ModeSocket`.
pub const MODE_SOCKET: u32 = 1 << 24;
/// Go's `os.ModeSetuid`.
pub const MODE_SETUID: u32 = 1 << 23;
/// Go's `os.ModeSetgid`.
pub const MODE_SETGID: u32 = 1 << 22;
/// Go's `os.ModeCharDevice`.
pub const MODE_CHAR_DEVICE: u32 = 1 << 21;
/// Go's `os.ModeSticky`.
pub const MODE_STICKY: u32 = 1 << 20;
/// Go's `os.ModeIrregular`.
pub const MODE_IRREGULAR: u32 = 1 << 19;
/// Go's `os.ModeType`: every file type bit.
pub const MODE_TYPE: u32 =
    MODE_DIR | MODE_SYMLINK | MODE_NAMED_PIPE | MODE_SOCKET | MODE_DEVICE | MODE_CHAR_DEVICE | MODE_IRREGULAR;

/// fsutil's `fileCanRequestData`: only regular files carry data, and the sender and receiver
/// number them alike from this test alone (fsutil: "needs to match between sender/receiver").
pub fn can_request_data(go_mode: u32) -> bool {
    go_mode & MODE_TYPE == 0
}

/// A Go mode's directory bit.
pub fn is_dir(go_mode: u32) -> bool {
    go_mode & MODE_DIR != 0
}

/// The Unix permission bits (with setuid, setgid, sticky) of a Go mode: Go's `syscallMode`.
pub fn unix_perm(go_mode: u32) -> u32 {
    let mut m = go_mode & 0o777;
    for (go, unix) in [(MODE_SETUID, libc::S_ISUID), (MODE_SETGID, libc::S_ISGID), (MODE_STICKY, libc::S_ISVTX)] {
        if go_mode & go != 0 {
            m |= unix;
        }
    }
    m
}

/// The Unix `st_mode` (type and permission bits) of a Go mode: the inverse of [`go_mode`].
pub fn unix_mode(go_mode: u32) -> u32 {
    let kind = if go_mode & MODE_DIR != 0 {
        libc::S_IFDIR
    } else if go_mode & MODE_SYMLINK != 0 {
        libc::S_IFLNK
    } else if go_mode & MODE_DEVICE != 0 {
        if go_mode & MODE_CHAR_DEVICE != 0 {
            libc::S_IFCHR
        } else {
            libc::S_IFBLK
        }
    } else if go_mode & MODE_NAMED_PIPE != 0 {
        libc::S_IFIFO
    } else if go_mode & MODE_SOCKET != 0 {
        libc::S_IFSOCK
    } else {
        libc::S_IFREG
    };
    kind | unix_perm(go_mode)
}

/// The Go mode of a Unix `st_mode` as fsutil sends it (`FileStat::go_mode`: the socket bit is
/// cleared, as fsutil clears it for archive/tar's sake).
pub fn go_mode(unix_mode: u32) -> u32 {
    FileStat { path: String::new(), mode: unix_mode, uid: 0, gid: 0, size: 0, mtime_ns: 0, link_target: None }.go_mode()
}

/// Go's `unix.Major` as fsutil's stat_unix.go computes it (the legacy encoding).
fn major(dev: u64) -> i64 {
    ((dev >> 8) & 0xfff) as i64
}

/// Go's `unix.Minor` as fsutil's stat_unix.go computes it.
fn minor(dev: u64) -> i64 {
    ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as i64
}

/// The inverse of [`major`]/[`minor`] (Go's `unix.Mkdev`, as fsutil's receiver calls it).
pub fn mkdev(major: i64, minor: i64) -> u64 {
    let (ma, mi) = (major as u32 as u64, minor as u32 as u64);
    ((ma & 0xfffff000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffffff00) << 12) | (mi & 0xff)
}

/// fsutil's `mkstat`: the stat of `host` (lstat'ed as `meta`) recorded as `rel`. `seen` maps
/// inodes to the first path walked: a later path of a multiply-linked inode is sent as a
/// hardlink to it (`linkname`), keeping the file's size, as fsutil does.
pub fn mkstat(host: &Path, rel: &str, meta: &Metadata, seen: Option<&mut HashMap<u64, String>>) -> Result<Stat> {
    let ft = meta.file_type();
    let mut st = Stat {
        path: rel.to_owned(),
        mode: go_mode(meta.mode()),
        uid: meta.uid(),
        gid: meta.gid(),
        mod_time: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
        ..Stat::default()
    };
    if !ft.is_dir() {
        // fsutil tests the S_IFBLK/S_IFCHR bits with `&`, not by equality: the same test here.
        let fmt = meta.mode() & libc::S_IFMT;
        if fmt & libc::S_IFBLK != 0 || fmt & libc::S_IFCHR != 0 {
            st.devmajor = major(meta.rdev());
            st.devminor = minor(meta.rdev());
        }
        if let Some(seen) = seen {
            let mut linked = false;
            if meta.nlink() > 1 {
                if let Some(first) = seen.get(&meta.ino()) {
                    st.linkname = first.clone();
                    linked = true;
                }
            }
            if !linked {
                seen.insert(meta.ino(), rel.to_owned());
            }
        }
        st.size = meta.len() as i64;
        if ft.is_symlink() {
            let target = std::fs::read_link(host).with_path("read symlink", host)?;
            st.linkname = String::from_utf8_lossy(target.as_os_str().as_bytes()).into_owned();
        }
    }
    let xattrs = crate::snapshot::list_xattrs(host)?;
    if !xattrs.is_empty() {
        st.xattrs = xattrs
            .into_iter()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v))
            .collect::<BTreeMap<String, Vec<u8>>>();
    }
    Ok(st)
}
