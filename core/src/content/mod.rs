//! Content-addressed blob store and OCI image layout read/write (index.json guarded by a lock).
