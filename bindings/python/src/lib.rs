//! `kiln._native`: the pyo3 module behind the `kiln` Python package. The package's pure-Python
//! files (`python/kiln/`) re-export these classes and define the exception hierarchy that
//! [`errors`] raises. Only the public face of the `kiln` crate is used.

pub mod build;
pub mod engine;
pub mod errors;
pub mod graph;
pub mod opts;
pub mod progress;
pub mod runtime;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// `(kind name, exception class name)` for every error kind of the core.
#[pyfunction]
fn error_kinds() -> Vec<(&'static str, &'static str)> {
    kiln::ErrorKind::ALL.iter().map(|k| (k.as_str(), errors::class_name(*k))).collect()
}

/// Raises a sample error of the kind named `kind` through the native mapping (for tests).
#[pyfunction]
fn _raise_error(py: Python<'_>, kind: &str, message: &str) -> PyResult<()> {
    let k = errors::kind_by_name(kind).ok_or_else(|| PyValueError::new_err(format!("unknown error kind {kind:?}")))?;
    Err(errors::to_pyerr(py, &errors::sample(k, message)))
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<graph::PyState>()?;
    m.add_class::<graph::PyExecState>()?;
    m.add_class::<graph::PyMount>()?;
    m.add_class::<graph::PyDefinition>()?;
    m.add_class::<graph::PySecret>()?;
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<engine::PySolveResult>()?;
    m.add_class::<engine::PyUsageRecord>()?;
    m.add_class::<engine::PyPruneReport>()?;
    m.add_class::<engine::PyWorkerInfo>()?;
    m.add_class::<engine::PySolveTask>()?;
    m.add_class::<build::PyBuildTask>()?;
    m.add_class::<build::PyBuildContext>()?;
    m.add_class::<build::PyRef>()?;
    m.add_class::<build::PyDirEntry>()?;
    m.add_class::<progress::PyProgressEvent>()?;
    m.add_function(wrap_pyfunction!(graph::scratch, m)?)?;
    m.add_function(wrap_pyfunction!(graph::image, m)?)?;
    m.add_function(wrap_pyfunction!(graph::dockerfile, m)?)?;
    m.add_function(wrap_pyfunction!(graph::oci_layout, m)?)?;
    m.add_function(wrap_pyfunction!(graph::local, m)?)?;
    m.add_function(wrap_pyfunction!(graph::http, m)?)?;
    m.add_function(wrap_pyfunction!(graph::git, m)?)?;
    m.add_function(wrap_pyfunction!(graph::merge, m)?)?;
    m.add_function(wrap_pyfunction!(graph::mount, m)?)?;
    m.add_function(wrap_pyfunction!(graph::cache_mount, m)?)?;
    m.add_function(wrap_pyfunction!(graph::tmpfs_mount, m)?)?;
    m.add_function(wrap_pyfunction!(graph::secret_mount, m)?)?;
    m.add_function(wrap_pyfunction!(graph::secret_file, m)?)?;
    m.add_function(wrap_pyfunction!(graph::secret_value, m)?)?;
    m.add_function(wrap_pyfunction!(error_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(_raise_error, m)?)?;
    Ok(())
}
