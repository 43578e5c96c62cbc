//! `MetadataStore`: the engine's crash-safe metadata db (redb: pure Rust, ACID with copy-on-write
//! commits, no C toolchain; see ARCHITECTURE.md). It maps cache keys to the snapshots holding
//! results, and snapshots to the layer blobs already computed for them.

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");

/// One cached vertex output: which worker's snapshot holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The worker whose snapshotter holds the snapshot.
    pub worker: String,
    /// The snapshot id.
    pub snapshot: String,
    /// Unix seconds of creation.
    pub created_at: u64,
    /// Unix seconds of last use (for LRU prune).
    pub last_used: u64,
    /// Human name of the vertex that produced it (for `kiln du`).
    pub description: String,
}

impl CacheRecord {
    /// True when the output is an empty filesystem (no snapshot).
    pub fn snapshot_is_empty(&self) -> bool {
        self.snapshot.is_empty()
    }
}

/// The metadata db in `ROOT/metadata.redb`.
#[derive(Debug)]
pub struct MetadataStore {
    db: Database,
}

fn db_err(e: impl Into<redb::Error>) -> Error {
    let e: redb::Error = e.into();
    Error::with_source(ErrorKind::Cache, "metadata db", e)
}

/// Now as unix seconds.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl MetadataStore {
    /// Opens (or creates) the db at `path`.
    pub fn open(path: &Path) -> Result<MetadataStore> {
        let db = Database::create(path).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(RECORDS).map_err(db_err)?;
        tx.open_table(LAYERS).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(MetadataStore { db })
    }

    fn get<T: DeserializeOwned>(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<Option<T>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table).map_err(db_err)?;
        match t.get(key).map_err(db_err)? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| Error::with_source(ErrorKind::Cache, format!("corrupt metadata entry {key}"), e)),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, table: TableDefinition<&str, &[u8]>, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::with_source(ErrorKind::Internal, "encode", e))?;
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(table).map_err(db_err)?;
            t.insert(key, bytes.as_slice()).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn all<T: DeserializeOwned>(&self, table: TableDefinition<&str, &[u8]>) -> Result<Vec<(String, T)>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table).map_err(db_err)?;
        let mut out = Vec::with_capacity(t.len().map_err(db_err)? as usize);
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            match serde_json::from_slice(v.value()) {
                Ok(val) => out.push((k.value().to_owned(), val)),
                Err(e) => tracing::warn!(key = k.value(), error = %e, "skipping corrupt metadata entry"),
            }
        }
        Ok(out)
    }

    fn remove(&self, table: TableDefinition<&str, &[u8]>, keys: &[String]) -> Result<()> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(table).map_err(db_err)?;
            for k in keys {
                t.remove(k.as_str()).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    /// The record for `key`, if any.
    pub fn record(&self, key: &str) -> Result<Option<CacheRecord>> {
        self.get(RECORDS, key)
    }

    /// Stores the record for `key`.
    pub fn put_record(&self, key: &str, rec: &CacheRecord) -> Result<()> {
        self.put(RECORDS, key, rec)
    }

    /// Every record.
    pub fn records(&self) -> Result<Vec<(String, CacheRecord)>> {
        self.all(RECORDS)
    }

    /// Deletes records.
    pub fn remove_records(&self, keys: &[String]) -> Result<()> {
        self.remove(RECORDS, keys)
    }

    /// The layer blob computed for a snapshot under a given layer-format key (e.g. "gzip-oci").
    pub fn layer<T: DeserializeOwned>(&self, snapshot: &str, format: &str) -> Result<Option<T>> {
        self.get(LAYERS, &format!("{snapshot}/{format}"))
    }

    /// Remembers the layer blob of a snapshot.
    pub fn put_layer<T: Serialize>(&self, snapshot: &str, format: &str, layer: &T) -> Result<()> {
        self.put(LAYERS, &format!("{snapshot}/{format}"), layer)
    }

    /// Forgets every layer blob of the given snapshots.
    pub fn remove_layers_of(&self, snapshots: &[String]) -> Result<()> {
        let keys: Vec<String> = self
            .all::<serde_json::Value>(LAYERS)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| snapshots.iter().any(|s| k.split('/').next() == Some(s.as_str())))
            .collect();
        self.remove(LAYERS, &keys)
    }

    /// Every blob digest referenced by a stored layer entry.
    pub fn layer_entries(&self) -> Result<Vec<(String, serde_json::Value)>> {
        self.all(LAYERS)
    }
}

/// The record key of output `index` of a vertex with cache key `key` on `worker`.
pub fn record_key(worker: &str, key: &Digest, index: i64) -> String {
    format!("{worker}/{key}/{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.redb");
        let rec = CacheRecord {
            worker: "w".into(),
            snapshot: "s1".into(),
            created_at: 1,
            last_used: 2,
            description: "d".into(),
        };
        {
            let m = MetadataStore::open(&p).unwrap();
            m.put_record("k", &rec).unwrap();
        }
        let m = MetadataStore::open(&p).unwrap();
        assert_eq!(m.record("k").unwrap(), Some(rec));
        assert_eq!(m.records().unwrap().len(), 1);
        m.remove_records(&["k".into()]).unwrap();
        assert_eq!(m.record("k").unwrap(), None);
    }
}
