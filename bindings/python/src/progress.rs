//! Progress for Python: `ProgressEvent` objects handed to a callable, and the built-in
//! displays (core's `Printer`) writing to Python's `sys.stderr`.

use kiln::solver::display::{DisplayMode, Printer};
use kiln::solver::{LogStream, ProgressEvent};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::io::Write;

/// One progress event. `type` is one of `vertex_started`, `vertex_cached`, `vertex_completed`,
/// `vertex_error`, `log`, `status`, `warning`; fields that do not apply to a type are None.
#[pyclass(frozen, get_all, name = "ProgressEvent", module = "kiln._native")]
pub struct PyProgressEvent {
    /// The event type.
    r#type: &'static str,
    /// Op digest (or an exporter id such as `export:local` for `status`).
    vertex: Option<String>,
    /// Display name of the vertex.
    name: Option<String>,
    /// Seconds the vertex ran (`vertex_completed`).
    duration: Option<f64>,
    /// `stdout` or `stderr` (`log`).
    stream: Option<&'static str>,
    /// Output bytes (`log`).
    data: Option<Py<PyBytes>>,
    /// Error message (`vertex_error`).
    error: Option<String>,
    /// What is being counted (`status`).
    id: Option<String>,
    /// Bytes done (`status`).
    current: Option<u64>,
    /// Total bytes when known (`status`).
    total: Option<u64>,
    /// Warning text (`warning`).
    message: Option<String>,
}

impl PyProgressEvent {
    fn empty(t: &'static str) -> Self {
        PyProgressEvent {
            r#type: t,
            vertex: None,
            name: None,
            duration: None,
            stream: None,
            data: None,
            error: None,
            id: None,
            current: None,
            total: None,
            message: None,
        }
    }

    /// Converts a core event.
    pub fn from_event(py: Python<'_>, e: &ProgressEvent) -> Self {
        match e {
            ProgressEvent::VertexStarted { vertex, name } => PyProgressEvent {
                vertex: Some(vertex.clone()),
                name: Some(name.clone()),
                ..Self::empty("vertex_started")
            },
            ProgressEvent::VertexCached { vertex, name } => PyProgressEvent {
                vertex: Some(vertex.clone()),
                name: Some(name.clone()),
                ..Self::empty("vertex_cached")
            },
            ProgressEvent::VertexCompleted { vertex, name, duration } => PyProgressEvent {
                vertex: Some(vertex.clone()),
                name: Some(name.clone()),
                duration: Some(duration.as_secs_f64()),
                ..Self::empty("vertex_completed")
            },
            ProgressEvent::VertexError { vertex, name, error } => PyProgressEvent {
                vertex: Some(vertex.clone()),
                name: Some(name.clone()),
                error: Some(error.clone()),
                ..Self::empty("vertex_error")
            },
            ProgressEvent::Log { vertex, stream, data } => PyProgressEvent {
                vertex: Some(vertex.clone()),
                stream: Some(match stream {
                    LogStream::Stdout => "stdout",
                    LogStream::Stderr => "stderr",
                }),
                data: Some(PyBytes::new(py, data).unbind()),
                ..Self::empty("log")
            },
            ProgressEvent::Status { vertex, id, current, total } => PyProgressEvent {
                vertex: Some(vertex.clone()),
                id: Some(id.clone()),
                current: Some(*current),
                total: *total,
                ..Self::empty("status")
            },
            ProgressEvent::Warning { message } => {
                PyProgressEvent { message: Some(message.clone()), ..Self::empty("warning") }
            }
            // ProgressEvent may grow; an unknown event still reaches the callable by its JSON type.
            #[allow(unreachable_patterns)]
            _ => PyProgressEvent { message: Some(e.to_json()), ..Self::empty("unknown") },
        }
    }
}

#[pymethods]
impl PyProgressEvent {
    /// The event as a dict with only the fields that apply.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("type", self.r#type)?;
        macro_rules! put {
            ($($f:ident),*) => {$(
                if let Some(v) = &self.$f { d.set_item(stringify!($f), v)?; }
            )*};
        }
        put!(vertex, name, duration, stream, data, error, id, current, total, message);
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let mut s = format!("<kiln.ProgressEvent {}", self.r#type);
        if let Some(n) = self.name.as_ref().or(self.vertex.as_ref()) {
            s.push_str(&format!(" {n:?}"));
        }
        s.push('>');
        s
    }
}

/// Writes to Python's `sys.stderr` (so pytest's capture and redirections see the display).
pub struct PyStderr;

impl Write for PyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf).into_owned();
        Python::attach(|py| -> PyResult<()> {
            py.import("sys")?.getattr("stderr")?.call_method1("write", (text,))?;
            Ok(())
        })
        .map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Python::attach(|py| -> PyResult<()> {
            py.import("sys")?.getattr("stderr")?.call_method0("flush")?;
            Ok(())
        })
        .map_err(std::io::Error::other)
    }
}

/// What a solve does with its events.
pub enum Progress {
    /// A built-in display.
    Display(Printer<PyStderr>),
    /// A Python callable receiving `ProgressEvent`s.
    Callback(Py<PyAny>),
    /// Nothing.
    Quiet,
}

impl Progress {
    /// From the `progress=` argument: a mode name (`auto`, `tty`, `plain`, `rawjson`, `quiet`)
    /// or a callable; absent or None means `auto`, a live view when `sys.stderr` is a terminal
    /// and plain lines otherwise.
    pub fn from_py(py: Python<'_>, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Progress> {
        let auto = pyo3::types::PyString::new(py, "auto").into_any();
        let obj = match obj {
            Some(o) if !o.is_none() => o,
            _ => &auto,
        };
        if let Ok(name) = obj.extract::<String>() {
            let mode: DisplayMode = name.parse().map_err(|e| crate::errors::to_pyerr(obj.py(), &e))?;
            let mode = match mode {
                DisplayMode::Auto => {
                    let tty: bool = obj.py().import("sys")?.getattr("stderr")?.call_method0("isatty")?.extract()?;
                    if tty {
                        DisplayMode::Tty
                    } else {
                        DisplayMode::Plain
                    }
                }
                m => m,
            };
            return Ok(match mode {
                DisplayMode::Quiet => Progress::Quiet,
                m => Progress::Display(Printer::new(PyStderr, m)),
            });
        }
        if obj.is_callable() {
            return Ok(Progress::Callback(obj.clone().unbind()));
        }
        Err(PyTypeError::new_err("progress must be 'auto', 'tty', 'plain', 'rawjson', 'quiet' or a callable"))
    }

    /// Handles one event; the GIL must be held. An exception from a callable is returned.
    pub fn handle(&mut self, py: Python<'_>, e: &ProgressEvent) -> PyResult<()> {
        match self {
            Progress::Display(p) => p.handle(e),
            Progress::Callback(f) => {
                f.call1(py, (PyProgressEvent::from_event(py, e),))?;
            }
            Progress::Quiet => {}
        }
        Ok(())
    }

    /// Flushes a display.
    pub fn finish(&mut self) {
        if let Progress::Display(p) = self {
            p.finish()
        }
    }
}
