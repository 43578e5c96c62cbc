//! Progress events of a solve: vertex lifecycle, container output and byte counts. One stream of
//! plain data that every binding forwards (Python callbacks, Node callbacks, the C callback, the CLI
//! printers in `display`).
//!
//! Below the solver and the remote caches (both emit events); depends on nothing of kiln's but errors.

pub mod display;

use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Which output stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Container stdout.
    Stdout,
    /// Container stderr.
    Stderr,
}

/// One progress event. `vertex` is the op digest (`sha256:...`), `name` its display name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// A vertex began executing.
    VertexStarted {
        /// Op digest.
        vertex: String,
        /// Display name.
        name: String,
    },
    /// A vertex's result came from the cache (nothing ran).
    VertexCached {
        /// Op digest.
        vertex: String,
        /// Display name.
        name: String,
    },
    /// A vertex finished executing.
    VertexCompleted {
        /// Op digest.
        vertex: String,
        /// Display name.
        name: String,
        /// Wall time of the execution.
        #[serde(with = "duration_secs")]
        duration: Duration,
    },
    /// A vertex failed.
    VertexError {
        /// Op digest.
        vertex: String,
        /// Display name.
        name: String,
        /// The error message.
        error: String,
    },
    /// Container output.
    Log {
        /// Op digest.
        vertex: String,
        /// stdout or stderr.
        stream: LogStream,
        /// The bytes (lossy UTF-8 in JSON).
        #[serde(serialize_with = "lossy")]
        data: Vec<u8>,
    },
    /// A byte-count status of a vertex (copying, extracting, exporting).
    Status {
        /// Op digest, or an exporter id such as `export:local`.
        vertex: String,
        /// What is being counted.
        id: String,
        /// Bytes done.
        current: u64,
        /// Total when known.
        total: Option<u64>,
    },
    /// A non-fatal problem (e.g. a cache importer that failed).
    Warning {
        /// The message.
        message: String,
    },
}

mod duration_secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

fn lossy<S: serde::Serializer>(d: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(d))
}

impl ProgressEvent {
    /// The vertex this event belongs to, if any.
    pub fn vertex(&self) -> Option<&str> {
        match self {
            ProgressEvent::VertexStarted { vertex, .. }
            | ProgressEvent::VertexCached { vertex, .. }
            | ProgressEvent::VertexCompleted { vertex, .. }
            | ProgressEvent::VertexError { vertex, .. }
            | ProgressEvent::Log { vertex, .. }
            | ProgressEvent::Status { vertex, .. } => Some(vertex),
            ProgressEvent::Warning { .. } => None,
        }
    }

    /// The event as one JSON object (the `rawjson` progress format).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// Where a solve sends its events. Cheap to clone; a no-op sink drops everything.
#[derive(Clone, Default)]
pub struct ProgressSink {
    f: Option<Arc<dyn Fn(ProgressEvent) + Send + Sync>>,
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.f.is_some() { "ProgressSink(..)" } else { "ProgressSink(none)" })
    }
}

impl ProgressSink {
    /// A sink calling `f` for every event (from any thread; keep it quick).
    pub fn new(f: impl Fn(ProgressEvent) + Send + Sync + 'static) -> Self {
        ProgressSink { f: Some(Arc::new(f)) }
    }

    /// A sink that drops every event.
    pub fn none() -> Self {
        ProgressSink { f: None }
    }

    /// A sink feeding an unbounded channel.
    pub fn channel() -> (Self, tokio::sync::mpsc::UnboundedReceiver<ProgressEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (ProgressSink::new(move |e| drop(tx.send(e))), rx)
    }

    /// A sink sending every event to `self`, then to `other` (a callback and a display at once).
    pub fn tee(self, other: ProgressSink) -> ProgressSink {
        match (self.f, other.f) {
            (Some(a), Some(b)) => ProgressSink::new(move |e: ProgressEvent| {
                a(e.clone());
                b(e)
            }),
            (a, b) => ProgressSink { f: a.or(b) },
        }
    }

    /// Sends one event.
    pub fn emit(&self, e: ProgressEvent) {
        if let Some(f) = &self.f {
            f(e)
        }
    }
}
