//! Snapshotters (overlayfs, native copy) and layer diff/apply as tar with OCI whiteouts.
