//! Maps `kiln::Error` to the exception classes of `kiln.errors` (defined in pure Python, all
//! under `kiln.KilnError`): one explicit arm per known `ErrorKind`, a fallback for kinds added
//! later, and the typed fields (`exit_code`, `vertex`, `log_tail`, ...) set as keyword arguments.

use kiln::{Error, ErrorKind};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The base class every kiln exception derives from.
pub const BASE_CLASS: &str = "KilnError";

/// The class of [`Error::NotFound`] (a path missing from a build result; kind `file_op`), a
/// subclass of `FileOpError` and of Python's `FileNotFoundError`.
pub const NOT_FOUND_CLASS: &str = "NotFoundError";

/// The `kiln.errors` class raised for `kind`.
pub fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Definition => "DefinitionError",
        ErrorKind::Option => "OptionError",
        ErrorKind::Exec => "ExecError",
        ErrorKind::Source => "SourceError",
        ErrorKind::FileOp => "FileOpError",
        ErrorKind::Worker => "WorkerError",
        ErrorKind::Snapshot => "SnapshotError",
        ErrorKind::Content => "ContentError",
        ErrorKind::Cache => "CacheError",
        ErrorKind::Registry => "RegistryError",
        ErrorKind::Export => "ExportError",
        ErrorKind::RootInUse => "RootInUseError",
        ErrorKind::Unsupported => "UnsupportedError",
        ErrorKind::Cancelled => "CancelledError",
        ErrorKind::Io => "IoError",
        ErrorKind::Internal => "InternalError",
        // ErrorKind is #[non_exhaustive]: a kind added to core later is still a KilnError.
        _ => BASE_CLASS,
    }
}

/// Builds the Python exception for `e` (a `kiln.errors` instance; `RuntimeError` if the pure
/// Python package is not importable, e.g. when `kiln._native` is loaded on its own).
pub fn to_pyerr(py: Python<'_>, e: &Error) -> PyErr {
    match build(py, e) {
        Ok(err) => err,
        Err(import_err) => {
            let err = PyRuntimeError::new_err(format!("{} error: {e}", e.kind()));
            err.set_cause(py, Some(import_err));
            err
        }
    }
}

fn build(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let module = py.import("kiln.errors")?;
    // A missing path of a build result is a FileOpError of its own class.
    let class = module.getattr(if e.is_not_found() { NOT_FOUND_CLASS } else { class_name(e.kind()) })?;
    let kw = PyDict::new(py);
    kw.set_item("kind", e.kind().as_str())?;
    match e {
        Error::Exec { vertex, command, exit_code, log_tail } => {
            kw.set_item("vertex", vertex)?;
            kw.set_item("command", command)?;
            kw.set_item("exit_code", exit_code)?;
            kw.set_item("log_tail", log_tail)?;
        }
        Error::Option { key, value, expected } => {
            kw.set_item("key", key)?;
            kw.set_item("value", value)?;
            kw.set_item("expected", expected)?;
        }
        Error::Definition { op, .. } => kw.set_item("op", op)?,
        Error::Io { path, .. } => kw.set_item("path", path)?,
        Error::NotFound { path } => kw.set_item("path", path)?,
        Error::RootInUse { root, pid } => {
            kw.set_item("path", root)?;
            kw.set_item("pid", pid)?;
        }
        _ => {}
    }
    let message = e.report_for(|input, name| match input {
        kiln::MissingInput::Local => format!("locals={{{name:?}: DIR}}"),
        kiln::MissingInput::Secret => {
            format!("secrets={{{name:?}: kiln.secret_file(PATH)}} or kiln.secret_value(BYTES)")
        }
        _ => format!("the {name:?} SSH agent socket (not yet passable from Python)"),
    });
    let instance = class.call((message,), Some(&kw))?;
    Ok(PyErr::from_value(instance))
}

/// A sample error of `kind` (for the Python tests that every kind maps to its class).
pub fn sample(kind: ErrorKind, message: &str) -> Error {
    match kind {
        ErrorKind::Exec => Error::Exec {
            vertex: "sample vertex".into(),
            command: "/bin/false".into(),
            exit_code: 1,
            log_tail: vec![message.to_owned()],
        },
        ErrorKind::Option => Error::option("sample", message, "a sample value"),
        ErrorKind::Definition => Error::definition(None, message),
        ErrorKind::Cancelled => Error::Cancelled,
        other => Error::new(other, message),
    }
}

/// Finds a kind by its stable name (`"exec"`, `"root_in_use"`, ...).
pub fn kind_by_name(name: &str) -> Option<ErrorKind> {
    ErrorKind::ALL.iter().copied().find(|k| k.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_kind_maps_to_a_distinct_class() {
        let mut seen = HashSet::new();
        for kind in ErrorKind::ALL {
            let class = class_name(*kind);
            assert_ne!(class, BASE_CLASS, "{kind} falls back to the base class");
            assert!(seen.insert(class), "{kind} shares class {class} with another kind");
            assert_eq!(kind_by_name(kind.as_str()), Some(*kind));
            assert_eq!(sample(*kind, "x").kind(), *kind);
        }
    }
}
