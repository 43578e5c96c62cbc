//! The local build cache: records keyed by cache key (which snapshot holds a vertex output), the
//! layer blobs computed for snapshots, the directories of cache mounts, the crash-safe metadata
//! db, and the engine root lock;
//! [`CacheManager`] is the API the solver and the engine use.
pub(crate) mod manager;
pub mod metadata;
pub(crate) mod mounts;
pub(crate) mod refs;
pub mod root_lock;

pub(crate) use manager::CacheManager;
pub use manager::{PruneReport, UsageRecord};
pub use metadata::{CacheRecord, MetadataStore};
pub use root_lock::RootLock;
