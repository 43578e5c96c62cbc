//! Progress for Python: `ProgressEvent` objects handed to a callable, and the built-in
//! displays (core's `Printer`) writing to Python's `sys.stderr`.

use kiln::solver::display::{DisplayMode, Printer};
use kiln::solver::ProgressEvent;
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
    /// Converts a core event.
    pub fn from_event(py: Python<'_>, e: &ProgressEvent) -> Self {
        let f = e.clone().fields();
        PyProgressEvent {
            r#type: f.kind,
            vertex: f.vertex,
            name: f.name,
            duration: f.duration,
            stream: f.stream,
            data: f.data.map(|d| PyBytes::new(py, &d).unbind()),
            error: f.error,
            id: f.id,
            current: f.current,
            total: f.total,
            message: f.message,
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
