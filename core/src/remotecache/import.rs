//! Cache importers: read a remote cache's records eagerly (metadata only) and fetch layer blobs
//! only when a result is actually needed. Any failure of an importer is a warning plus a miss,
//! never a failed build and never a wrong result (every blob is verified against its digest).

use super::config::{descriptor_digest, parse_cache_config, parse_cache_root};
use super::records::from_config;
use crate::content::layer::LayerBlob;
use crate::content::{ContentStore, OciLayout};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::options::{CacheImportSource, CacheImportSpec};
use crate::solver::{ProgressEvent, ProgressSink};
use std::collections::HashMap;

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

/// The importers of one solve and the results they offer, by record key.
#[derive(Debug, Default)]
pub struct Imports {
    origins: Vec<Origin>,
    results: HashMap<Digest, Hit>,
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
                Ok((origin, records)) => {
                    let idx = imports.origins.len();
                    imports.origins.push(origin);
                    let mut n = 0;
                    for r in records {
                        if let Some(layers) = r.layers {
                            n += 1;
                            imports.results.entry(r.digest).or_insert(Hit { importer: idx, layers });
                        }
                    }
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
        self.results.get(key).cloned()
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
) -> Result<(Origin, Vec<super::records::ExportRecord>)> {
    match &spec.source {
        CacheImportSource::Local { dir, tag, digest } => {
            let layout = OciLayout::open(dir)?;
            let reference = match (digest, tag) {
                (Some(d), _) => d.to_string(),
                (None, Some(t)) => t.clone(),
                (None, None) => "latest".to_owned(),
            };
            let desc = layout.resolve(&reference)?;
            let root = layout.store().read(&descriptor_digest(&desc)?)?;
            let (layers, config) = parse_cache_root(&root)?;
            let cfg = parse_cache_config(&layout.store().read(&descriptor_digest(&config)?)?)?;
            Ok((Origin::Local(layout), from_config(&cfg, &layers)))
        }
        CacheImportSource::Registry { reference, insecure } => {
            let r = crate::registry::Reference::parse(reference)?;
            let client = registry.client(&r, *insecure)?;
            let (root, _, _) = client.get_manifest(&r)?;
            let (layers, config) = parse_cache_root(&root)?;
            let cd = descriptor_digest(&config)?;
            client.fetch_blob(&r, &cd, store)?;
            let cfg = parse_cache_config(&store.read(&cd)?)?;
            Ok((Origin::Registry { client, reference: r }, from_config(&cfg, &layers)))
        }
    }
}
