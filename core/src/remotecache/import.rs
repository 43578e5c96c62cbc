//! Cache importers: read a remote cache's records eagerly (metadata only) and fetch layer blobs
//! only when a result is actually needed. Any failure of an importer is a warning plus a miss,
//! never a failed build and never a wrong result (every blob is verified against its digest,
//! every layer against its diffID when applied). Imports are read-only: a local cache directory
//! is opened as a source (nothing in it is created, modified or deleted), metadata documents are
//! capped ([`crate::content::limits`]), and the records of a config share its layer chains (a
//! chain is materialised only for a lookup), so memory stays linear in the config's size.

use super::config::{descriptor_digest, parse_cache_config, parse_cache_root};
use super::records::LayerTable;
use crate::content::layer::LayerBlob;
use crate::content::{ContentStore, OciLayout};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::options::{CacheImportSource, CacheImportSpec};
use crate::progress::{ProgressEvent, ProgressSink};
use std::collections::HashMap;
use std::sync::Arc;

/// Where an importer's blobs come from.
#[derive(Debug)]
enum Origin {
    Local(OciLayout),
    Registry { client: crate::registry::RegistryClient, reference: crate::registry::Reference },
}

/// A remote result: which importer has it, and its layer chain (base first).
#[derive(Debug, Clone)]
pub struct Hit {
    /// Index of the importer.
    pub importer: usize,
    /// The layers, base first.
    pub layers: Vec<LayerBlob>,
}

/// A result as stored: the top layer of a chain in an importer's shared layer table.
#[derive(Debug)]
struct Entry {
    importer: usize,
    top: usize,
}

/// The importers of one solve and the results they offer, by record key.
#[derive(Debug, Default)]
pub struct Imports {
    origins: Vec<Origin>,
    tables: Vec<Arc<LayerTable>>,
    results: HashMap<Digest, Entry>,
}

impl Imports {
    /// Loads every importer's metadata; failures become warnings on `progress`.
    pub fn load(
        store: &ContentStore,
        specs: &[CacheImportSpec],
        progress: &ProgressSink,
        registry: &crate::registry::ClientSettings,
    ) -> Imports {
        let mut imports = Imports::default();
        for spec in specs {
            match load_one(store, spec, registry) {
                Ok((origin, cfg, table)) => {
                    let idx = imports.origins.len();
                    imports.origins.push(origin);
                    let mut n = 0;
                    for r in cfg.records {
                        if let Some(top) = table.result_top(&r) {
                            n += 1;
                            imports.results.entry(r.digest).or_insert(Entry { importer: idx, top });
                        }
                    }
                    imports.tables.push(Arc::new(table));
                    tracing::debug!(import = %spec, results = n, "cache import loaded");
                }
                // A cancelled solve stops here; its caller reports the cancellation.
                Err(Error::Cancelled) => return imports,
                Err(e) => progress.emit(ProgressEvent::Warning { message: format!("cache import {spec}: {e}") }),
            }
        }
        imports
    }

    /// True when no importer loaded.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// The remote result for a record key.
    pub fn lookup(&self, key: &Digest) -> Option<Hit> {
        let e = self.results.get(key)?;
        let layers = self.tables.get(e.importer)?.chain(e.top);
        (!layers.is_empty()).then_some(Hit { importer: e.importer, layers })
    }

    /// True when an importer has a result for `key` (without materialising its chain).
    pub fn contains(&self, key: &Digest) -> bool {
        self.results.contains_key(key)
    }

    /// Fetches blob `d` from importer `importer` into `into` (verified).
    pub fn fetch(&self, importer: usize, d: &Digest, into: &ContentStore) -> Result<()> {
        match self.origins.get(importer) {
            Some(Origin::Local(layout)) => into.link_from(layout.store(), d),
            Some(Origin::Registry { client, reference }) => client.fetch_blob(reference, d, into),
            None => Err(Error::new(ErrorKind::Internal, format!("no cache importer #{importer}"))),
        }
    }
}

fn load_one(
    store: &ContentStore,
    spec: &CacheImportSpec,
    registry: &crate::registry::ClientSettings,
) -> Result<(Origin, super::config::CacheConfig, LayerTable)> {
    match &spec.source {
        CacheImportSource::Local { dir, tag, digest } => {
            // Read-only: a corrupt blob there is a miss, never deleted.
            let layout = OciLayout::open_readonly(dir)?;
            let reference = match (digest, tag) {
                (Some(d), _) => d.to_string(),
                (None, Some(t)) => t.clone(),
                (None, None) => "latest".to_owned(),
            };
            let desc = layout.resolve(&reference)?;
            let root = layout.store().read(&descriptor_digest(&desc)?)?;
            let (layers, config) = parse_cache_root(&root)?;
            let cfg = parse_cache_config(&layout.store().read(&descriptor_digest(&config)?)?)?;
            let table = LayerTable::new(&cfg, &layers);
            Ok((Origin::Local(layout), cfg, table))
        }
        CacheImportSource::Registry { reference, insecure } => {
            let r = crate::registry::Reference::parse(reference)?;
            let client = registry.client(&r, *insecure)?;
            let (root, _, _) = client.get_manifest(&r)?;
            // parse_cache_root refuses a document over the metadata cap.
            let (layers, config) = parse_cache_root(&root)?;
            let cd = descriptor_digest(&config)?;
            client.fetch_blob(&r, &cd, store)?;
            let cfg = parse_cache_config(&store.read(&cd)?)?;
            let table = LayerTable::new(&cfg, &layers);
            Ok((Origin::Registry { client, reference: r }, cfg, table))
        }
    }
}
