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

impl LogStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
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

/// A [`ProgressEvent`] as one record: `kind` plus the fields that apply to it (others `None`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFields {
    /// The type name ([`ProgressEvent::kind`]).
    pub kind: &'static str,
    /// Op digest (or an exporter id such as `export:local` for `status`).
    pub vertex: Option<String>,
    /// Display name of the vertex.
    pub name: Option<String>,
    /// Seconds the vertex ran (`vertex_completed`).
    pub duration: Option<f64>,
    /// `stdout` or `stderr` (`log`).
    pub stream: Option<&'static str>,
    /// Output bytes (`log`).
    pub data: Option<Vec<u8>>,
    /// Error message (`vertex_error`).
    pub error: Option<String>,
    /// What is being counted (`status`).
    pub id: Option<String>,
    /// Bytes done (`status`).
    pub current: Option<u64>,
    /// Total bytes when known (`status`).
    pub total: Option<u64>,
    /// Warning text (`warning`).
    pub message: Option<String>,
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

    /// The event as one record of optional fields, the shape every binding hands to its users
    /// (Python's `ProgressEvent`, Node's event object, C's callback): a binding copies fields and
    /// converts types, nothing more.
    pub fn fields(self) -> EventFields {
        let kind = self.kind();
        let mut f = EventFields { kind, ..EventFields::default() };
        match self {
            ProgressEvent::VertexStarted { vertex, name } | ProgressEvent::VertexCached { vertex, name } => {
                f.vertex = Some(vertex);
                f.name = Some(name);
            }
            ProgressEvent::VertexCompleted { vertex, name, duration } => {
                f.vertex = Some(vertex);
                f.name = Some(name);
                f.duration = Some(duration.as_secs_f64());
            }
            ProgressEvent::VertexError { vertex, name, error } => {
                f.vertex = Some(vertex);
                f.name = Some(name);
                f.error = Some(error);
            }
            ProgressEvent::Log { vertex, stream, data } => {
                f.vertex = Some(vertex);
                f.stream = Some(stream.as_str());
                f.data = Some(data);
            }
            ProgressEvent::Status { vertex, id, current, total } => {
                f.vertex = Some(vertex);
                f.id = Some(id);
                f.current = Some(current);
                f.total = total;
            }
            ProgressEvent::Warning { message } => f.message = Some(message),
        }
        f
    }

    /// The event's type name: `vertex_started`, `vertex_cached`, `vertex_completed`,
    /// `vertex_error`, `log`, `status` or `warning` (the JSON `type`).
    pub fn kind(&self) -> &'static str {
        match self {
            ProgressEvent::VertexStarted { .. } => "vertex_started",
            ProgressEvent::VertexCached { .. } => "vertex_cached",
            ProgressEvent::VertexCompleted { .. } => "vertex_completed",
            ProgressEvent::VertexError { .. } => "vertex_error",
            ProgressEvent::Log { .. } => "log",
            ProgressEvent::Status { .. } => "status",
            ProgressEvent::Warning { .. } => "warning",
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
