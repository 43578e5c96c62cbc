//! The local build cache: records keyed by cache key, refs, the metadata db, prune and disk usage.
