//! The local build cache: records keyed by cache key (which snapshot holds a vertex output), the
//! layer blobs computed for snapshots, the crash-safe metadata db, and the engine root lock.
pub mod metadata;
pub mod root_lock;

pub use metadata::{CacheRecord, MetadataStore};
pub use root_lock::RootLock;
