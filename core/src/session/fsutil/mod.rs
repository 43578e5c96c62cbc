//! fsutil's DiffCopy protocol as BuildKit v0.11.6 speaks it (tonistiigi/fsutil, vendored at
//! v0.0.0-20230105215944): the sender streams its walk as STAT packets (an empty STAT ends it),
//! the receiver asks for the regular files it needs with REQ packets naming a file by the index
//! of its STAT in the walk, the sender answers with DATA packets (an empty DATA ends a file),
//! and the receiver ends with FIN, which the sender answers with FIN. Either side may send ERR
//! with a message instead. [`send`] and [`receive`] are the two sides; [`SyncRequest`] is what
//! the gRPC metadata of `FileSync.DiffCopy` carries.

mod dest_walk;
mod disk;
pub mod receive;
pub mod send;
pub mod stat;
pub mod validate;
mod writer;

#[cfg(test)]
mod tests;

pub use receive::{receive, receive_hashed, Differ, Digests, ReceiveOpts};
pub use send::{send, SendOpts};

use crate::error::{Error, ErrorKind, Result};
use crate::session::proto::fsutil::types::Packet;

/// The packet kinds (`fsutil.types.Packet.PacketType`).
pub use crate::session::proto::fsutil::types::packet::PacketType;

/// gRPC metadata keys of BuildKit's filesync (session/filesync/filesync.go).
pub mod keys {
    /// The name of the local directory the daemon asks for (`dir-name`).
    pub const DIR_NAME: &str = "dir-name";
    /// Include patterns, one value each (`include-patterns`).
    pub const INCLUDE_PATTERNS: &str = "include-patterns";
    /// Exclude patterns, one value each (`exclude-patterns`).
    pub const EXCLUDE_PATTERNS: &str = "exclude-patterns";
    /// Paths whose symlinks are followed, one value each (`followpaths`).
    pub const FOLLOW_PATHS: &str = "followpaths";
    /// `true`: the daemon's excludes replace the client's own for the dir (`override-excludes`).
    pub const OVERRIDE_EXCLUDES: &str = "override-excludes";
    /// Prefix of exporter metadata on `FileSend.DiffCopy` (`exporter-md-`).
    pub const EXPORTER_META_PREFIX: &str = "exporter-md-";
}

/// What the daemon asks of the client's `FileSync.DiffCopy` (BuildKit's `FSSendRequestOpt`),
/// carried in the call's gRPC metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncRequest {
    /// The local directory's name (`--local NAME=DIR`).
    pub dir_name: String,
    /// What to send of it.
    pub opts: SendOpts,
    /// The client's own excludes for the directory are replaced by `opts.exclude`.
    pub override_excludes: bool,
}

impl SyncRequest {
    /// Writes the request into a call's metadata as BuildKit's `FSSync` does (a key per list,
    /// one value per item; lists that are empty are left out).
    pub fn to_metadata(&self, md: &mut tonic::metadata::MetadataMap) -> Result<()> {
        if self.override_excludes {
            md.insert(keys::OVERRIDE_EXCLUDES, tonic::metadata::MetadataValue::from_static("true"));
        }
        for (key, values) in [
            (keys::INCLUDE_PATTERNS, &self.opts.include),
            (keys::EXCLUDE_PATTERNS, &self.opts.exclude),
            (keys::FOLLOW_PATHS, &self.opts.follow_paths),
        ] {
            for v in values {
                md.append(key, ascii_value(key, v)?);
            }
        }
        md.insert(keys::DIR_NAME, ascii_value(keys::DIR_NAME, &self.dir_name)?);
        Ok(())
    }

    /// Reads a request from a call's metadata as BuildKit's `fsSyncProvider` does (missing keys
    /// are empty; values that are not text are an error).
    pub fn from_metadata(md: &tonic::metadata::MetadataMap) -> Result<SyncRequest> {
        let all = |key: &str| -> Result<Vec<String>> {
            md.get_all(key)
                .iter()
                .map(|v| {
                    v.to_str().map(str::to_owned).map_err(|_| {
                        Error::new(ErrorKind::Source, format!("file transfer: metadata {key} is not printable ASCII"))
                    })
                })
                .collect()
        };
        Ok(SyncRequest {
            dir_name: all(keys::DIR_NAME)?.into_iter().next().unwrap_or_default(),
            opts: SendOpts {
                include: all(keys::INCLUDE_PATTERNS)?,
                exclude: all(keys::EXCLUDE_PATTERNS)?,
                follow_paths: all(keys::FOLLOW_PATHS)?,
            },
            override_excludes: all(keys::OVERRIDE_EXCLUDES)?.first().is_some_and(|v| v == "true"),
        })
    }
}

fn ascii_value(key: &str, v: &str) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    // gRPC (and grpc-go on the other end) allows printable ASCII only in text metadata; http's
    // header values would also take bytes above 0x7f.
    let printable = v.bytes().all(|b| (0x20..0x7f).contains(&b));
    let parsed = if printable { v.parse().ok() } else { None };
    parsed.ok_or_else(|| {
        Error::new(
            ErrorKind::Source,
            format!("file transfer: {key} value {v:?} cannot travel as gRPC metadata (printable ASCII only)"),
        )
    })
}

/// An ERR packet carrying `msg`.
pub(crate) fn err_packet(msg: &str) -> Packet {
    Packet { r#type: PacketType::PacketErr as i32, data: msg.to_owned().into(), ..Packet::default() }
}

/// A FIN packet.
pub(crate) fn fin_packet() -> Packet {
    Packet { r#type: PacketType::PacketFin as i32, ..Packet::default() }
}
