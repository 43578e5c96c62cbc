//! Pipelined layer creation: when a solve has a `mode=max` cache exporter, each vertex's layer
//! (diff → tar → compress → digest, written to the content store and remembered for the snapshot)
//! starts as soon as the vertex has executed, on a blocking thread, at most one per core at once,
//! while the rest of the graph runs. The cache export then starts every layer still missing the
//! same way, waits for them, and only writes metadata: every later `layers_of` finds the blob
//! remembered for the snapshot. The blobs are the engine's, so every exporter of the solve (and
//! of later solves) reuses them.
//!
//! A layer is made exactly as the export would make it (`exporters::layer_of`, one streaming pass
//! whose digest is computed while writing), so nothing unverified is written. The snapshots read
//! are recorded results of the solve, which holds the in-flight gate (no prune) until every
//! layer task has ended: the solve waits for them on success and on error, and a cancelled solve
//! waits for its task count, in which every layer thread counts. Cancellation stops every layer
//! not yet started; one being made finishes (it is bounded by its snapshot's size).

use super::exporters::layer_of;
use super::refs::{chain, ResultRef};
use super::Solve;
use crate::content::layer::Compression;
use crate::error::Result;
use crate::options::{CacheExportSpec, CacheMode};
use crate::snapshot::SnapshotId;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How a layer is made: the compression, OCI or Docker media types, and whether a blob already
/// made in another compression may stand in for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LayerFormat {
    pub compression: Compression,
    pub oci: bool,
    pub force: bool,
}

impl LayerFormat {
    /// The format a cache exporter writes its layers in.
    pub fn of_cache_export(spec: &CacheExportSpec) -> LayerFormat {
        LayerFormat {
            compression: super::cache_export::compression(spec),
            oci: spec.oci_mediatypes,
            force: spec.force_compression,
        }
    }
}

/// The layer tasks of one solve.
pub(crate) struct LayerPrefetch {
    /// The format of the solve's first `mode=max` cache exporter: layers made as vertices
    /// complete (None: no such exporter, nothing starts before the export).
    eager: Option<LayerFormat>,
    /// At most one layer per core is being made at once.
    permits: Arc<tokio::sync::Semaphore>,
    /// (snapshot, format) pairs started in this solve: each layer is made once.
    started: Mutex<HashSet<(SnapshotId, LayerFormat)>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set when the solve ends or is cancelled: layers not yet started are skipped.
    stop: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LayerPrefetch {
    /// The layer tasks of a solve with `exports` as its cache exporters.
    pub fn new(exports: &[CacheExportSpec]) -> LayerPrefetch {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        LayerPrefetch {
            eager: exports.iter().find(|s| s.mode == CacheMode::Max).map(LayerFormat::of_cache_export),
            permits: Arc::new(tokio::sync::Semaphore::new(cores.max(1))),
            started: Mutex::new(HashSet::new()),
            tasks: Mutex::new(Vec::new()),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A vertex executed: starts the layers of its outputs' chains (those not started yet) when
    /// the solve exports its cache with `mode=max`.
    pub fn executed<'a>(&self, solve: &Arc<Solve>, outputs: impl IntoIterator<Item = &'a ResultRef>) {
        let Some(format) = self.eager.clone() else { return };
        for r in outputs {
            self.start_chain(solve, r, &format);
        }
    }

    /// Starts the layer of every snapshot of `r`'s chain not yet started in `format`.
    pub fn start_chain(&self, solve: &Arc<Solve>, r: &ResultRef, format: &LayerFormat) {
        match chain(r) {
            Ok(snapshots) => {
                for s in snapshots {
                    self.start(solve, r, s, format);
                }
            }
            // The export computes the chain again and reports the error.
            Err(e) => tracing::debug!(snapshot = %r.snapshot.0, error = %e, "layer prefetch: no chain"),
        }
    }

    fn start(&self, solve: &Arc<Solve>, r: &ResultRef, s: SnapshotId, format: &LayerFormat) {
        if self.stop.load(Ordering::SeqCst) || !lock(&self.started).insert((s.clone(), format.clone())) {
            return;
        }
        let permits = self.permits.clone();
        let stop = self.stop.clone();
        let cache = solve.solver.cache.clone();
        let interrupt = solve.registry.interrupt.clone();
        let worker = r.worker.clone();
        let format = format.clone();
        let tokens = solve.task_tokens();
        let task = tokio::spawn(async move {
            // Counted from the start: a cancelled solve waits until this task let go of the engine.
            let tokens = tokens;
            let Ok(_permit) = permits.acquire_owned().await else { return };
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let made = super::spawn_counted(tokens, move || -> Result<()> {
                if stop.load(Ordering::SeqCst) || interrupt.is_fired() {
                    return Ok(());
                }
                layer_of(&cache, &worker, &s, &format.compression, format.oci, format.force).map(|_| ())
            })
            .await;
            match made {
                Ok(Ok(())) => {}
                // The export makes the layer again and reports what failed.
                Ok(Err(e)) => tracing::debug!(error = %e, "layer prefetch failed"),
                Err(e) => tracing::debug!(error = %e, "layer prefetch task failed"),
            }
        });
        lock(&self.tasks).push(task);
    }

    /// Waits for every layer task started so far (each ends after at most one layer).
    pub async fn wait(&self) {
        loop {
            let tasks = std::mem::take(&mut *lock(&self.tasks));
            if tasks.is_empty() {
                return;
            }
            for t in tasks {
                // A task ends on its own (stop, or its layer made); its errors were logged.
                let _ = t.await;
            }
        }
    }

    /// Skips every layer not yet started (the solve ended, failed or was cancelled).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
