//! Remote cache: the cache config v0 model and the local/registry importers and exporters.

pub mod config;
