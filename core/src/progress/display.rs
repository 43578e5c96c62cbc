//! Progress printers shared by the CLI and the bindings: `plain` prints buildctl-style lines
//! (`#N [name]`, `#N CACHED`, `#N DONE 0.3s`, `#N ERROR ...`, output prefixed by `#N`), `tty`
//! redraws a live view of running steps with a tail of their logs, `rawjson` one JSON per event.

use super::{LogStream, ProgressEvent};
use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

/// The progress display modes the CLI and bindings accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayMode {
    /// tty when stderr is a terminal, else plain.
    Auto,
    /// Live redrawn view.
    Tty,
    /// buildctl-style plain lines.
    Plain,
    /// One JSON object per event.
    RawJson,
    /// Nothing.
    Quiet,
}

impl std::str::FromStr for DisplayMode {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Ok(match s {
            "auto" => DisplayMode::Auto,
            "tty" => DisplayMode::Tty,
            "plain" => DisplayMode::Plain,
            "rawjson" => DisplayMode::RawJson,
            "quiet" => DisplayMode::Quiet,
            other => {
                return Err(crate::Error::option("progress", other, "expected auto, tty, plain, rawjson or quiet"))
            }
        })
    }
}

struct VertexView {
    num: usize,
    name: String,
    started: Option<Instant>,
    state: VState,
    logs: Vec<String>,
    partial: Vec<u8>,
}

#[derive(PartialEq)]
enum VState {
    Running,
    Done(f64),
    Cached,
    Error,
}

/// Renders events to a writer (stderr for the CLI). Feed it every event, then call `finish`.
pub struct Printer<W: Write> {
    out: W,
    mode: DisplayMode,
    vertices: HashMap<String, VertexView>,
    order: Vec<String>,
    drawn_lines: usize,
    last_draw: Option<Instant>,
}

impl<W: Write> Printer<W> {
    /// A printer in `mode` (`Auto` must be resolved by the caller, see [`DisplayMode::resolve`]).
    pub fn new(out: W, mode: DisplayMode) -> Self {
        Printer { out, mode, vertices: HashMap::new(), order: Vec::new(), drawn_lines: 0, last_draw: None }
    }

    fn vertex(&mut self, id: &str, name: Option<&str>) -> (&mut VertexView, bool) {
        let fresh = !self.vertices.contains_key(id);
        if fresh {
            self.order.push(id.to_owned());
        }
        let num = self.order.len();
        let v = self.vertices.entry(id.to_owned()).or_insert_with(|| VertexView {
            num,
            name: name.unwrap_or(id).to_owned(),
            started: None,
            state: VState::Running,
            logs: Vec::new(),
            partial: Vec::new(),
        });
        (v, fresh)
    }

    /// Handles one event.
    pub fn handle(&mut self, e: &ProgressEvent) {
        match self.mode {
            DisplayMode::Quiet => {}
            DisplayMode::RawJson => {
                let _ = writeln!(self.out, "{}", e.to_json());
            }
            DisplayMode::Plain | DisplayMode::Auto => self.plain(e),
            DisplayMode::Tty => {
                self.track(e);
                let due = self.last_draw.map(|t| t.elapsed().as_millis() >= 100).unwrap_or(true);
                let vertex_change = !matches!(e, ProgressEvent::Log { .. } | ProgressEvent::Status { .. });
                if due || vertex_change {
                    self.draw();
                }
            }
        }
    }

    fn plain(&mut self, e: &ProgressEvent) {
        let lines: Vec<String> = match e {
            ProgressEvent::VertexStarted { vertex, name } => {
                let (v, _) = self.vertex(vertex, Some(name));
                v.started = Some(Instant::now());
                vec![format!("#{} {}", v.num, v.name)]
            }
            ProgressEvent::VertexCached { vertex, name } => {
                let (v, fresh) = self.vertex(vertex, Some(name));
                let mut l = Vec::new();
                if fresh {
                    l.push(format!("#{} {}", v.num, v.name));
                }
                l.push(format!("#{} CACHED", v.num));
                l
            }
            ProgressEvent::VertexCompleted { vertex, name, duration } => {
                let (v, _) = self.vertex(vertex, Some(name));
                vec![format!("#{} DONE {:.1}s", v.num, duration.as_secs_f64())]
            }
            ProgressEvent::VertexError { vertex, name, error } => {
                let (v, _) = self.vertex(vertex, Some(name));
                vec![format!("#{} ERROR {}", v.num, error)]
            }
            ProgressEvent::Log { vertex, data, .. } => {
                let (v, _) = self.vertex(vertex, None);
                let started = v.started.get_or_insert_with(Instant::now).elapsed().as_secs_f64();
                v.partial.extend_from_slice(data);
                let mut l = Vec::new();
                while let Some(pos) = v.partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = v.partial.drain(..=pos).collect();
                    l.push(format!("#{} {:.3} {}", v.num, started, String::from_utf8_lossy(&line[..line.len() - 1])));
                }
                l
            }
            ProgressEvent::Status { vertex, id, current, total } => {
                let (v, _) = self.vertex(vertex, None);
                match total {
                    Some(t) => vec![format!("#{} {} {}B / {}B", v.num, id, current, t)],
                    None => vec![format!("#{} {} {}B", v.num, id, current)],
                }
            }
            ProgressEvent::Warning { message } => vec![format!("WARNING: {message}")],
        };
        for l in lines {
            let _ = writeln!(self.out, "{l}");
        }
    }

    fn track(&mut self, e: &ProgressEvent) {
        match e {
            ProgressEvent::VertexStarted { vertex, name } => {
                let (v, _) = self.vertex(vertex, Some(name));
                v.started = Some(Instant::now());
            }
            ProgressEvent::VertexCached { vertex, name } => self.vertex(vertex, Some(name)).0.state = VState::Cached,
            ProgressEvent::VertexCompleted { vertex, name, duration } => {
                self.vertex(vertex, Some(name)).0.state = VState::Done(duration.as_secs_f64())
            }
            ProgressEvent::VertexError { vertex, name, error } => {
                let (v, _) = self.vertex(vertex, Some(name));
                v.state = VState::Error;
                v.logs.push(format!("ERROR: {error}"));
            }
            ProgressEvent::Log { vertex, data, stream } => {
                let (v, _) = self.vertex(vertex, None);
                v.partial.extend_from_slice(data);
                while let Some(pos) = v.partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = v.partial.drain(..=pos).collect();
                    let prefix = if *stream == LogStream::Stderr { "! " } else { "" };
                    v.logs.push(format!("{prefix}{}", String::from_utf8_lossy(&line[..line.len() - 1])));
                    if v.logs.len() > 6 {
                        v.logs.remove(0);
                    }
                }
            }
            _ => {}
        }
    }

    fn draw(&mut self) {
        self.last_draw = Some(Instant::now());
        let mut buf = String::new();
        if self.drawn_lines > 0 {
            buf.push_str(&format!("\x1b[{}F\x1b[J", self.drawn_lines));
        }
        let mut lines = 0;
        for id in &self.order {
            let v = &self.vertices[id];
            let status = match v.state {
                VState::Running => format!("{:.1}s", v.started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0)),
                VState::Done(s) => format!("DONE {s:.1}s"),
                VState::Cached => "CACHED".into(),
                VState::Error => "ERROR".into(),
            };
            buf.push_str(&format!(" => #{} {:<60} {}\n", v.num, truncate(&v.name, 60), status));
            lines += 1;
            if v.state == VState::Running || v.state == VState::Error {
                for l in &v.logs {
                    buf.push_str(&format!("    {}\n", truncate(l, 100)));
                    lines += 1;
                }
            }
        }
        self.drawn_lines = lines;
        let _ = self.out.write_all(buf.as_bytes());
        let _ = self.out.flush();
    }

    /// Flushes the final state (tty: a last redraw).
    pub fn finish(&mut self) {
        if self.mode == DisplayMode::Tty {
            self.draw();
        }
        let _ = self.out.flush();
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A built-in display on the process's stderr, fed by a [`ProgressSink`]: what the CLI, Node's
/// `progress:` option and C's `kiln_solve_opts_set_progress_display` show. Python writes to
/// `sys.stderr` instead, so it drives a [`Printer`] itself.
#[derive(Clone)]
pub struct StderrDisplay {
    printer: std::sync::Arc<std::sync::Mutex<Printer<std::io::Stderr>>>,
}

impl StderrDisplay {
    /// A display in `mode` (`Auto` resolved against stderr); `None` for [`DisplayMode::Quiet`].
    pub fn new(mode: DisplayMode) -> Option<StderrDisplay> {
        match mode.resolve() {
            DisplayMode::Quiet => None,
            m => Some(StderrDisplay {
                printer: std::sync::Arc::new(std::sync::Mutex::new(Printer::new(std::io::stderr(), m))),
            }),
        }
    }

    /// The sink rendering every event it receives.
    pub fn sink(&self) -> super::ProgressSink {
        let p = self.printer.clone();
        super::ProgressSink::new(move |e| p.lock().unwrap_or_else(|x| x.into_inner()).handle(&e))
    }

    /// Flushes the final state; call once the solve returned.
    pub fn finish(&self) {
        self.printer.lock().unwrap_or_else(|x| x.into_inner()).finish()
    }
}

impl DisplayMode {
    /// Resolves `Auto` to `Tty` or `Plain` depending on whether stderr is a terminal.
    pub fn resolve(self) -> DisplayMode {
        use std::io::IsTerminal;
        match self {
            DisplayMode::Auto if std::io::stderr().is_terminal() => DisplayMode::Tty,
            DisplayMode::Auto => DisplayMode::Plain,
            m => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn plain_lines_look_like_buildctl() {
        let mut out = Vec::new();
        {
            let mut p = Printer::new(&mut out, DisplayMode::Plain);
            let v = "sha256:a".to_string();
            p.handle(&ProgressEvent::VertexStarted { vertex: v.clone(), name: "[1/2] RUN echo hi".into() });
            p.handle(&ProgressEvent::Log { vertex: v.clone(), stream: LogStream::Stdout, data: b"hi\n".to_vec() });
            p.handle(&ProgressEvent::VertexCompleted {
                vertex: v.clone(),
                name: "x".into(),
                duration: Duration::from_millis(300),
            });
            p.handle(&ProgressEvent::VertexCached { vertex: "sha256:b".into(), name: "copy".into() });
        }
        let s = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "#1 [1/2] RUN echo hi");
        assert!(lines[1].starts_with("#1 0.") && lines[1].ends_with(" hi"), "{}", lines[1]);
        assert_eq!(lines[2], "#1 DONE 0.3s");
        assert_eq!(lines[3], "#2 copy");
        assert_eq!(lines[4], "#2 CACHED");
    }
}
