//! Remote cache: the cache config v0 model and the local/registry importers and exporters.

pub mod config;
pub mod export;
pub mod import;
pub mod records;

pub use import::Imports;
pub use records::ExportRecord;
