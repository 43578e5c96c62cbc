//! `Worker` (an executor + a snapshotter + labels) and `WorkerPool`: the engine's workers and the
//! selection of one per vertex from its constraints.

use crate::error::{Error, ErrorKind, Result};
use crate::snapshot::Snapshotter;
use crate::worker::RuncExecutor;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One worker: where a vertex's containers run and its snapshots live.
#[derive(Debug)]
pub struct Worker {
    /// Unique name, e.g. `runc-overlayfs`.
    pub name: String,
    /// Labels matched by worker selectors (`executor`, `snapshotter`, `hostname`, `name`).
    pub labels: BTreeMap<String, String>,
    /// The container runtime.
    pub executor: Arc<RuncExecutor>,
    /// The snapshot storage.
    pub snapshotter: Arc<dyn Snapshotter>,
}

impl Worker {
    /// True when every `KEY==VALUE` (or `labels.KEY==VALUE`) filter matches this worker's labels.
    pub fn matches(&self, filters: &[String]) -> Result<bool> {
        for f in filters {
            let (k, v) = parse_filter(f)?;
            if self.labels.get(k).map(String::as_str) != Some(v) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Parses a selector filter `KEY==VALUE` (containerd style `labels.KEY==VALUE` also accepted).
pub fn parse_filter(f: &str) -> Result<(&str, &str)> {
    let (k, v) = f.split_once("==").ok_or_else(|| {
        Error::new(ErrorKind::Definition, format!("invalid worker selector {f:?}: expected KEY==VALUE"))
    })?;
    let k = k.trim();
    Ok((k.strip_prefix("labels.").unwrap_or(k), v.trim()))
}

/// The engine's workers; the first is the default.
#[derive(Debug, Default)]
pub struct WorkerPool {
    workers: Vec<Arc<Worker>>,
}

impl WorkerPool {
    /// A pool of `workers` (first = default).
    pub fn new(workers: Vec<Arc<Worker>>) -> Self {
        WorkerPool { workers }
    }

    /// All workers.
    pub fn all(&self) -> &[Arc<Worker>] {
        &self.workers
    }

    /// The worker by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Worker>> {
        self.workers.iter().find(|w| w.name == name)
    }

    /// The default worker.
    pub fn default_worker(&self) -> Result<&Arc<Worker>> {
        self.workers.first().ok_or_else(|| Error::new(ErrorKind::Worker, "the engine has no worker"))
    }

    /// The first worker matching `filters` (empty = default); an unmatched selector is an error
    /// naming the known workers and their labels.
    pub fn select(&self, filters: &[String]) -> Result<&Arc<Worker>> {
        if filters.is_empty() {
            return self.default_worker();
        }
        for w in &self.workers {
            if w.matches(filters)? {
                return Ok(w);
            }
        }
        let known: Vec<String> = self
            .workers
            .iter()
            .map(|w| {
                let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} ({})", w.name, labels.join(","))
            })
            .collect();
        Err(Error::new(
            ErrorKind::Worker,
            format!("no worker matches selector [{}]; known workers: {}", filters.join(", "), known.join("; ")),
        ))
    }
}
