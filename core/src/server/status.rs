//! The progress of each build, by its `Ref` (BuildKit's job id), for `Control.Status`: buildctl
//! calls `Status` beside `Solve`, before or after the solve started, so every update is kept
//! and replayed to a late subscriber. A finished build's history stays readable for the last
//! [`KEEP_FINISHED`] builds (a `Status` arriving just after the solve returned still gets it).

use super::proto::control::{StatusResponse, Vertex, VertexLog, VertexStatus, VertexWarning};
use crate::progress::{LogStream, ProgressEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::mpsc;

/// How many finished builds keep their history.
pub const KEEP_FINISHED: usize = 64;

#[derive(Default)]
struct Job {
    history: Vec<StatusResponse>,
    subscribers: Vec<mpsc::UnboundedSender<StatusResponse>>,
    done: bool,
}

#[derive(Default)]
struct Jobs {
    by_ref: HashMap<String, Job>,
    finished: VecDeque<String>,
}

/// Every build's progress, shared by the `Solve` that publishes and the `Status` calls that read.
#[derive(Default, Clone)]
pub struct StatusHub {
    jobs: Arc<Mutex<Jobs>>,
}

impl StatusHub {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts (or restarts) the job `reference`: a new build with an id in use replaces the
    /// finished one's history.
    pub fn start(&self, reference: &str) {
        let mut jobs = self.lock();
        let job = jobs.by_ref.entry(reference.to_owned()).or_default();
        if job.done {
            *job = Job::default();
        }
    }

    /// Appends one update and sends it to the live subscribers.
    pub fn publish(&self, reference: &str, update: StatusResponse) {
        let mut jobs = self.lock();
        let job = jobs.by_ref.entry(reference.to_owned()).or_default();
        job.subscribers.retain(|s| s.send(update.clone()).is_ok());
        job.history.push(update);
    }

    /// Ends the job: subscribers' streams end; the history stays for late readers.
    pub fn finish(&self, reference: &str) {
        let mut jobs = self.lock();
        if let Some(job) = jobs.by_ref.get_mut(reference) {
            job.done = true;
            job.subscribers.clear();
        }
        jobs.finished.push_back(reference.to_owned());
        while jobs.finished.len() > KEEP_FINISHED {
            if let Some(old) = jobs.finished.pop_front() {
                if jobs.by_ref.get(&old).is_some_and(|j| j.done) {
                    jobs.by_ref.remove(&old);
                }
            }
        }
    }

    /// The job's updates so far, then the live ones until it finishes. A job not started yet is
    /// waited for (its `Solve` may arrive after the `Status`).
    pub fn subscribe(&self, reference: &str) -> mpsc::UnboundedReceiver<StatusResponse> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut jobs = self.lock();
        let job = jobs.by_ref.entry(reference.to_owned()).or_default();
        for u in &job.history {
            let _ = tx.send(u.clone());
        }
        if !job.done {
            job.subscribers.push(tx);
        }
        rx
    }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// Turns one build's progress events into BuildKit status updates. A vertex's update carries
/// its whole state (name, started, completed, cached, error), so it remembers start times.
#[derive(Default)]
pub struct StatusConverter {
    started: HashMap<String, prost_types::Timestamp>,
}

impl StatusConverter {
    /// The update for `event`.
    pub fn convert(&mut self, event: ProgressEvent) -> StatusResponse {
        let mut out = StatusResponse::default();
        let vertex = |digest: String, name: String| Vertex { digest, name, ..Default::default() };
        match event {
            ProgressEvent::VertexStarted { vertex: d, name } => {
                let t = now();
                self.started.insert(d.clone(), t);
                out.vertexes.push(Vertex { started: Some(t), ..vertex(d, name) });
            }
            ProgressEvent::VertexCached { vertex: d, name } => {
                let t = now();
                let started = self.started.get(&d).copied().unwrap_or(t);
                out.vertexes.push(Vertex {
                    cached: true,
                    started: Some(started),
                    completed: Some(t),
                    ..vertex(d, name)
                });
            }
            ProgressEvent::VertexCompleted { vertex: d, name, .. } => {
                let t = now();
                let started = self.started.get(&d).copied().unwrap_or(t);
                out.vertexes.push(Vertex { started: Some(started), completed: Some(t), ..vertex(d, name) });
            }
            ProgressEvent::VertexError { vertex: d, name, error } => {
                let t = now();
                let started = self.started.get(&d).copied().unwrap_or(t);
                out.vertexes.push(Vertex { started: Some(started), completed: Some(t), error, ..vertex(d, name) });
            }
            ProgressEvent::Log { vertex, stream, data } => out.logs.push(VertexLog {
                vertex,
                timestamp: Some(now()),
                stream: match stream {
                    LogStream::Stdout => 1,
                    LogStream::Stderr => 2,
                },
                msg: data,
            }),
            ProgressEvent::Status { vertex, id, current, total } => {
                let t = now();
                let done = total.is_some_and(|total| current >= total);
                out.statuses.push(VertexStatus {
                    id: id.clone(),
                    vertex,
                    name: id,
                    current: i64::try_from(current).unwrap_or(i64::MAX),
                    total: total.and_then(|t| i64::try_from(t).ok()).unwrap_or(0),
                    timestamp: Some(t),
                    started: Some(t),
                    completed: if done { Some(t) } else { None },
                });
            }
            ProgressEvent::Warning { message } => {
                out.warnings.push(VertexWarning { level: 1, short: message.into_bytes(), ..Default::default() })
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_subscribers_get_the_history_and_finished_jobs_end() {
        let hub = StatusHub::default();
        hub.start("r1");
        let mut conv = StatusConverter::default();
        hub.publish("r1", conv.convert(ProgressEvent::VertexStarted { vertex: "sha256:a".into(), name: "a".into() }));
        let mut early = hub.subscribe("r1");
        hub.publish("r1", conv.convert(ProgressEvent::Warning { message: "w".into() }));
        hub.finish("r1");
        let mut late = hub.subscribe("r1");
        for rx in [&mut early, &mut late] {
            let mut got = Vec::new();
            while let Ok(u) = rx.try_recv() {
                got.push(u);
            }
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].vertexes[0].name, "a");
            assert!(got[0].vertexes[0].started.is_some());
            assert_eq!(got[1].warnings[0].short, b"w");
            assert!(rx.try_recv().is_err(), "the stream ends with the job");
        }
    }

    #[test]
    fn completion_keeps_the_start_time() {
        let mut conv = StatusConverter::default();
        let s = conv.convert(ProgressEvent::VertexStarted { vertex: "d".into(), name: "n".into() });
        let c = conv.convert(ProgressEvent::VertexCompleted {
            vertex: "d".into(),
            name: "n".into(),
            duration: std::time::Duration::from_millis(1),
        });
        assert_eq!(s.vertexes[0].started, c.vertexes[0].started);
        assert!(c.vertexes[0].completed.is_some());
    }

    #[test]
    fn finished_history_is_bounded() {
        let hub = StatusHub::default();
        for i in 0..(KEEP_FINISHED + 10) {
            let r = format!("r{i}");
            hub.start(&r);
            hub.publish(&r, StatusResponse::default());
            hub.finish(&r);
        }
        assert!(hub.lock().by_ref.len() <= KEEP_FINISHED);
    }
}
