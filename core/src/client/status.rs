//! A daemon's progress (`Control.Status`) as kiln [`ProgressEvent`]s: each vertex reports its
//! start and one final state (CACHED, DONE or ERROR) however many updates the daemon sends, logs
//! and byte counts pass through, warnings keep their short text. The counts of cached and
//! executed vertices become the solve result's.

use crate::api::control::{StatusResponse, Vertex};
use crate::progress::{LogStream, ProgressEvent, ProgressSink};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Seen {
    #[default]
    New,
    Started,
    Done,
}

/// Converts status updates into events, remembering what each vertex already reported.
#[derive(Debug, Default)]
pub struct StatusFollower {
    seen: HashMap<String, Seen>,
    /// When set, only these digests count toward [`StatusFollower::counts`] (a definition's
    /// ops; the daemon's export steps are vertices too).
    counted: Option<BTreeSet<String>>,
    cached: BTreeSet<String>,
    executed: BTreeSet<String>,
    /// The last lines of each vertex's output (for an exec error's log tail).
    logs: HashMap<String, std::collections::VecDeque<String>>,
    /// The first vertex that failed: its digest and name.
    failed: Option<(String, String)>,
}

/// Lines of output kept per vertex (an exec error's log tail).
pub const LOG_TAIL_LINES: usize = 10;

fn duration(v: &Vertex) -> Duration {
    match (&v.started, &v.completed) {
        (Some(s), Some(c)) => {
            let nanos = (c.seconds - s.seconds) as i128 * 1_000_000_000 + (c.nanos - s.nanos) as i128;
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
        }
        _ => Duration::ZERO,
    }
}

impl StatusFollower {
    /// A follower counting only `counted` digests (`None`: every vertex).
    pub fn new(counted: Option<BTreeSet<String>>) -> StatusFollower {
        StatusFollower { counted, ..Default::default() }
    }

    /// Emits the events of one update.
    pub fn update(&mut self, resp: StatusResponse, sink: &ProgressSink) {
        for v in resp.vertexes {
            let state = self.seen.entry(v.digest.clone()).or_default();
            if *state == Seen::Done {
                continue;
            }
            let (vertex, name) = (v.digest.clone(), v.name.clone());
            if v.cached {
                *state = Seen::Done;
                self.count(&vertex, true);
                sink.emit(ProgressEvent::VertexCached { vertex, name });
                continue;
            }
            if v.started.is_some() && *state == Seen::New {
                *state = Seen::Started;
                sink.emit(ProgressEvent::VertexStarted { vertex: vertex.clone(), name: name.clone() });
            }
            if v.completed.is_some() {
                *state = Seen::Done;
                if v.error.is_empty() {
                    self.count(&vertex, false);
                    sink.emit(ProgressEvent::VertexCompleted { vertex, name, duration: duration(&v) });
                } else {
                    self.failed.get_or_insert((vertex.clone(), name.clone()));
                    sink.emit(ProgressEvent::VertexError { vertex, name, error: v.error });
                }
            }
        }
        for s in resp.statuses {
            sink.emit(ProgressEvent::Status {
                vertex: s.vertex,
                id: s.id,
                current: u64::try_from(s.current).unwrap_or(0),
                total: u64::try_from(s.total).ok().filter(|t| *t > 0),
            });
        }
        for l in resp.logs {
            let stream = if l.stream == 2 { LogStream::Stderr } else { LogStream::Stdout };
            let tail = self.logs.entry(l.vertex.clone()).or_default();
            for line in String::from_utf8_lossy(&l.msg).lines().filter(|x| !x.is_empty()) {
                if tail.len() == LOG_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.to_owned());
            }
            sink.emit(ProgressEvent::Log { vertex: l.vertex, stream, data: l.msg });
        }
        for w in resp.warnings {
            let short = String::from_utf8_lossy(&w.short).into_owned();
            let message = if w.vertex.is_empty() { short } else { format!("{}: {short}", w.vertex) };
            sink.emit(ProgressEvent::Warning { message });
        }
    }

    fn count(&mut self, digest: &str, cached: bool) {
        if self.counted.as_ref().is_some_and(|c| !c.contains(digest)) {
            return;
        }
        if cached {
            self.cached.insert(digest.to_owned());
        } else {
            self.executed.insert(digest.to_owned());
        }
    }

    /// The failed vertex's name and the last lines of its output, if a vertex failed.
    pub fn failure(&self) -> Option<(String, Vec<String>)> {
        let (digest, name) = self.failed.as_ref()?;
        let tail = self.logs.get(digest).map(|t| t.iter().cloned().collect()).unwrap_or_default();
        Some((name.clone(), tail))
    }

    /// Vertices that were cached and that executed.
    pub fn counts(&self) -> (usize, usize) {
        (self.cached.len(), self.executed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds: s, nanos: 0 })
    }

    #[test]
    fn each_vertex_reports_once() {
        let (sink, mut rx) = ProgressSink::channel();
        let mut f = StatusFollower::new(None);
        let v = |started, completed, cached| Vertex {
            digest: "sha256:a".into(),
            name: "a".into(),
            started,
            completed,
            cached,
            ..Default::default()
        };
        f.update(StatusResponse { vertexes: vec![v(ts(1), None, false)], ..Default::default() }, &sink);
        f.update(StatusResponse { vertexes: vec![v(ts(1), None, false)], ..Default::default() }, &sink);
        f.update(StatusResponse { vertexes: vec![v(ts(1), ts(3), false)], ..Default::default() }, &sink);
        f.update(StatusResponse { vertexes: vec![v(ts(1), ts(3), false)], ..Default::default() }, &sink);
        drop(sink);
        let mut kinds = Vec::new();
        while let Ok(e) = rx.try_recv() {
            kinds.push(match e {
                ProgressEvent::VertexStarted { .. } => "started",
                ProgressEvent::VertexCompleted { duration, .. } => {
                    assert_eq!(duration, Duration::from_secs(2));
                    "done"
                }
                _ => "other",
            });
        }
        assert_eq!(kinds, ["started", "done"]);
        assert_eq!(f.counts(), (0, 1));
    }

    #[test]
    fn only_counted_digests_count() {
        let sink = ProgressSink::none();
        let mut f = StatusFollower::new(Some(["sha256:a".to_owned()].into_iter().collect()));
        let cached = |d: &str| Vertex { digest: d.into(), cached: true, ..Default::default() };
        f.update(
            StatusResponse { vertexes: vec![cached("sha256:a"), cached("sha256:export")], ..Default::default() },
            &sink,
        );
        assert_eq!(f.counts(), (1, 0));
    }
}
