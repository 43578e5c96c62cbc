//! File operations (mkdir, mkfile, copy, rm, symlink) applied to a mounted filesystem view, and path pattern matching.
//!
//! Every function is synchronous (callers run them on a blocking thread). A "root" is a host
//! directory holding a container filesystem; every path argument is a path inside it (absolute,
//! or relative to `/`) and is resolved with [`resolve_in_root`], so symlinks and `..` can never
//! reach outside the root. The filesystem is assumed not to be modified concurrently (no
//! container runs on a view while a file op applies to it).

mod actions;
mod checksum;
mod copy;
mod meta;
pub mod pattern;
mod resolve;
mod unpack;

pub use actions::{mkdir, mkfile, rm, symlink};
pub use checksum::{checksum_selection, FileDigest, FileDigests};
pub use copy::{copy, CopyOptions};
pub use pattern::{walk_matching, Decision, PatternMatcher, WalkEntry};
pub use resolve::resolve_in_root;

pub(crate) use checksum::{finish as finish_checksum, hash_entries_known};
pub(crate) use copy::Writer;
pub(crate) use meta::{is_root, MetaOverride};

/// A numeric owner for created files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}
