//! The build-graph face: `State` (sources, `run`, file ops, metadata), `ExecState`, `Mount`,
//! `Definition` and the source/mount constructor functions. Each wraps the core type and only
//! converts Python arguments; all behaviour stays in `kiln::graph`.

use crate::errors::to_pyerr;
use crate::opts::{self, FromPy};
use kiln::graph::builder as gen;
use kiln::graph::{ExecOptions, ExecState, ImageConfig, MountSpec};
use kiln::options::SecretSource;
use kiln::{Definition, Error, State};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// An immutable filesystem state: every method returns a new state.
#[pyclass(frozen, name = "State", module = "kiln._native")]
#[derive(Clone)]
pub struct PyState {
    pub inner: State,
}

/// The result of `State.run`: the rootfs (`root()`) and the outputs of writable bind mounts.
#[pyclass(frozen, name = "ExecState", module = "kiln._native")]
pub struct PyExecState {
    inner: ExecState,
}

/// An extra mount of a `run` (see `mount`, `cache_mount`, `tmpfs_mount`, `secret_mount`).
#[pyclass(frozen, name = "Mount", module = "kiln._native")]
#[derive(Clone)]
pub struct PyMount {
    pub inner: MountSpec,
}

/// A build secret for `Engine.solve(secrets={id: ...})`: made by `secret_file(path)` (read when
/// the solve starts) or `secret_value(data)`. Its repr never shows the value or the path.
#[pyclass(frozen, name = "Secret", module = "kiln._native")]
#[derive(Clone)]
pub struct PySecret {
    pub inner: SecretSource,
}

#[pymethods]
impl PySecret {
    fn __repr__(&self) -> String {
        match &self.inner {
            SecretSource::File(_) => "<kiln.Secret file>".to_owned(),
            SecretSource::Value(v) => format!("<kiln.Secret value, {} bytes>", v.len()),
            SecretSource::Env(n) => format!("<kiln.Secret env {n}>"),
        }
    }
}

/// A secret read from the file at `path` when the solve starts (a regular file of at most
/// 500 KiB).
#[pyfunction]
pub fn secret_file(path: PathBuf) -> PySecret {
    PySecret { inner: SecretSource::file(absolute(path)) }
}

/// A secret whose value is `data` (bytes, or str stored as UTF-8; at most 500 KiB).
#[pyfunction]
pub fn secret_value(data: &Bound<'_, PyAny>) -> PyResult<PySecret> {
    Ok(PySecret { inner: SecretSource::value(bytes_of(data, "data")?) })
}

/// The secrets of a solve, loaded by core: every value must be a `Secret` (a plain str or bytes
/// is refused rather than guessed to be a path or a value).
pub fn secrets_from_py(secrets: &Bound<'_, PyDict>) -> PyResult<std::collections::BTreeMap<String, Vec<u8>>> {
    let mut list = Vec::new();
    for (id, value) in secrets.iter() {
        let id: String = id.extract()?;
        let Ok(s) = value.cast::<PySecret>() else {
            let ty = value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
            return Err(kerr(Error::option(
                "secrets",
                id.as_str(),
                format!(
                    "secret {id:?} is a {ty}; give kiln.secret_file(path) or kiln.secret_value(data) so its meaning \
                     is explicit"
                ),
            )));
        };
        list.push((id, s.get().inner.clone()));
    }
    kiln::options::load_secrets(list.iter().map(|(id, s)| (id.as_str(), s))).map_err(kerr)
}

/// Bytes from `bytes` or a `str` (UTF-8); anything else is an option error naming `key`.
pub fn bytes_of(data: &Bound<'_, PyAny>, key: &str) -> PyResult<Vec<u8>> {
    if let Ok(s) = data.cast::<PyString>() {
        Ok(s.to_str()?.as_bytes().to_vec())
    } else if let Ok(b) = data.cast::<PyBytes>() {
        Ok(b.as_bytes().to_vec())
    } else {
        let ty = data.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
        Err(kerr(Error::option(key, ty, "bytes or str")))
    }
}

/// A validated, serialised LLB definition (BuildKit's `pb.Definition` wire format).
#[pyclass(frozen, name = "Definition", module = "kiln._native")]
pub struct PyDefinition {
    pub inner: Definition,
}

pub(crate) fn wrap(inner: State) -> PyState {
    PyState { inner }
}

fn kerr(e: Error) -> PyErr {
    Python::attach(|py| to_pyerr(py, &e))
}

/// A `State` from a `State` or an `ExecState` (its root).
pub fn state_of(obj: &Bound<'_, PyAny>) -> PyResult<State> {
    if let Ok(s) = obj.cast::<PyState>() {
        return Ok(s.get().inner.clone());
    }
    if let Ok(s) = obj.cast::<PyExecState>() {
        return Ok(s.get().inner.root());
    }
    Err(PyTypeError::new_err(format!(
        "expected a kiln.State or kiln.ExecState, got {}",
        obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
    )))
}

/// The image config as a plain dict (`entrypoint`, `cmd`, `env`, `working_dir`, `user`, `labels`).
pub fn image_config_to_py<'py>(py: Python<'py>, c: &ImageConfig) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json_string(c)?;
    py.import("json")?.call_method1("loads", (json,))
}

fn serde_json_string(c: &ImageConfig) -> PyResult<String> {
    serde_json::to_string(c).map_err(|e| PyTypeError::new_err(format!("image config: {e}")))
}

/// An image config from a dict with the keys of [`image_config_to_py`] (missing keys are empty).
pub fn image_config_from_py(obj: &Bound<'_, PyAny>) -> PyResult<ImageConfig> {
    let json: String = obj.py().import("json")?.call_method1("dumps", (obj,))?.extract()?;
    serde_json::from_str(&json).map_err(|e| {
        kerr(Error::option(
            "image_config",
            json.clone(),
            format!(
                "expected a dict with entrypoint, cmd (lists of str), env (list of KEY=VALUE), working_dir, \
                 user (str) and labels (dict): {e}"
            ),
        ))
    })
}

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

#[pymethods]
impl PyState {
    /// Runs `args` (a list, or a str run by `/bin/sh -c`) on this state as rootfs.
    #[pyo3(signature = (args, **options))]
    fn run(&self, args: &Bound<'_, PyAny>, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyExecState> {
        let mut o = gen::run_options(opts::open(options))?;
        o.args = if let Ok(script) = args.cast::<PyString>() {
            ExecOptions::shell(script.to_str()?).args
        } else {
            Vec::<String>::from_py("args", args)?
        };
        Ok(PyExecState { inner: self.inner.try_run(o).map_err(kerr)? })
    }

    /// Creates a directory (relative paths join the state's cwd).
    #[pyo3(signature = (path, **options))]
    fn mkdir(&self, path: &str, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyState> {
        Ok(wrap(self.inner.mkdir(path, gen::mkdir_options(opts::open(options))?)))
    }

    /// Creates a file holding `data` (bytes, or str written as UTF-8).
    #[pyo3(signature = (path, data, **options))]
    fn mkfile(&self, path: &str, data: &Bound<'_, PyAny>, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyState> {
        let (o, mode) = gen::mkfile_options(opts::open(options))?;
        Ok(wrap(self.inner.mkfile(path, mode, bytes_of(data, "data")?, o)))
    }

    /// Removes a path.
    #[pyo3(signature = (path, **options))]
    fn rm(&self, path: &str, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyState> {
        Ok(wrap(self.inner.rm(path, gen::rm_options(opts::open(options))?)))
    }

    /// Creates a symlink at `newpath` pointing to `oldpath`.
    fn symlink(&self, oldpath: String, newpath: &str) -> PyState {
        wrap(self.inner.symlink(oldpath, newpath))
    }

    /// Copies `src_path` of `src` to `dest_path` of this state.
    #[pyo3(signature = (src, src_path, dest_path, **options))]
    fn copy(
        &self,
        src: &Bound<'_, PyAny>,
        src_path: &str,
        dest_path: &str,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyState> {
        let src = State::from_py("src", src)?;
        Ok(wrap(self.inner.copy(&src, src_path, dest_path, gen::copy_options(opts::open(options))?)))
    }

    /// Sets env var `key` for later runs and the image config.
    fn with_env(&self, key: String, value: String) -> PyState {
        wrap(self.inner.clone().with_env(key, value))
    }

    /// Sets the working dir (relative paths join the current one).
    fn with_cwd(&self, dir: &str) -> PyState {
        wrap(self.inner.clone().with_cwd(dir))
    }

    /// Sets the user for later runs and the image config.
    fn with_user(&self, user: String) -> PyState {
        wrap(self.inner.clone().with_user(user))
    }

    /// Sets the hostname for later runs.
    fn with_hostname(&self, hostname: String) -> PyState {
        wrap(self.inner.clone().with_hostname(hostname))
    }

    /// Sets the image config entrypoint.
    fn with_entrypoint(&self, args: Vec<String>) -> PyState {
        wrap(self.inner.clone().with_entrypoint(args))
    }

    /// Sets the image config cmd.
    fn with_cmd(&self, args: Vec<String>) -> PyState {
        wrap(self.inner.clone().with_cmd(args))
    }

    /// Adds an image config label.
    fn with_label(&self, key: String, value: String) -> PyState {
        wrap(self.inner.clone().with_label(key, value))
    }

    /// Adds an exposed port to the image config (`80/tcp`, `53/udp`; a bare number means tcp).
    fn with_exposed_port(&self, port: String) -> PyState {
        wrap(self.inner.clone().with_exposed_port(port))
    }

    /// Adds a volume to the image config.
    fn with_volume(&self, path: String) -> PyState {
        wrap(self.inner.clone().with_volume(path))
    }

    /// Sets the image config stop signal (`SIGTERM`).
    fn with_stop_signal(&self, signal: String) -> PyState {
        wrap(self.inner.clone().with_stop_signal(signal))
    }

    /// Sets the image config shell (Dockerfile `SHELL`).
    fn with_shell(&self, args: Vec<String>) -> PyState {
        wrap(self.inner.clone().with_shell(args))
    }

    /// Adds a manifest annotation written by image exporters.
    fn with_annotation(&self, key: String, value: String) -> PyState {
        wrap(self.inner.clone().with_annotation(key, value))
    }

    /// Replaces the whole image config this state carries (a dict as `image_config()` returns).
    fn with_image_config(&self, config: &Bound<'_, PyAny>) -> PyResult<PyState> {
        Ok(wrap(self.inner.clone().with_image_config(&image_config_from_py(config)?)))
    }

    /// Sets the display name of the op producing this state.
    fn with_custom_name(&self, name: String) -> PyState {
        wrap(self.inner.clone().with_custom_name(name))
    }

    /// Adds a metadata description entry to the op producing this state.
    fn with_description(&self, key: String, value: String) -> PyState {
        wrap(self.inner.clone().with_description(key, value))
    }

    /// Restricts the op producing this state to workers having all `labels`.
    fn with_worker_selector(&self, labels: BTreeMap<String, String>) -> PyState {
        wrap(self.inner.clone().with_worker_selector(labels))
    }

    /// Never use a cached result for the op producing this state.
    fn ignore_cache(&self) -> PyState {
        wrap(self.inner.clone().ignore_cache())
    }

    /// Env vars as `(key, value)` pairs.
    #[getter]
    fn env(&self) -> Vec<(String, String)> {
        self.inner.env().to_vec()
    }

    /// The working dir.
    #[getter]
    fn cwd(&self) -> String {
        self.inner.cwd().to_owned()
    }

    /// The user, if set.
    #[getter]
    fn user(&self) -> Option<String> {
        self.inner.user().map(str::to_owned)
    }

    /// True for the empty filesystem.
    #[getter]
    fn is_scratch(&self) -> bool {
        self.inner.is_scratch()
    }

    /// The image config this state carries, as a dict.
    fn image_config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        image_config_to_py(py, &self.inner.image_config())
    }

    /// Marshals the graph into a validated `Definition`.
    fn to_definition(&self) -> PyResult<PyDefinition> {
        Ok(PyDefinition { inner: self.inner.to_definition().map_err(kerr)? })
    }

    /// The LLB definition bytes (BuildKit's `pb.Definition`).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let def = self.inner.to_definition().map_err(kerr)?;
        Ok(PyBytes::new(py, &def.to_bytes()))
    }

    fn __repr__(&self) -> String {
        match self.inner.to_definition() {
            Ok(d) => match d.terminal_digest() {
                Some(t) => format!("<kiln.State {} ops, {t}>", d.len()),
                None => "<kiln.State scratch>".to_owned(),
            },
            Err(e) => format!("<kiln.State invalid: {e}>"),
        }
    }
}

#[pymethods]
impl PyExecState {
    /// The rootfs after the run.
    fn root(&self) -> PyState {
        wrap(self.inner.root())
    }

    /// The output of the writable bind mount at `dest` (None for other mounts).
    fn mount_output(&self, dest: &str) -> Option<PyState> {
        self.inner.mount_output(dest).map(wrap)
    }

    fn __repr__(&self) -> String {
        "<kiln.ExecState>".to_owned()
    }
}

#[pymethods]
impl PyMount {
    /// The mount's destination path.
    #[getter]
    fn dest(&self) -> String {
        self.inner.dest().to_owned()
    }

    fn __repr__(&self) -> String {
        format!("<kiln.Mount {}>", self.inner.dest())
    }
}

#[pymethods]
impl PyDefinition {
    /// Parses and validates definition bytes from any LLB producer.
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<PyDefinition> {
        Ok(PyDefinition { inner: Definition::from_bytes(data).map_err(kerr)? })
    }

    /// The definition bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    /// The digest of the terminal op (None for an empty definition).
    #[getter]
    fn digest(&self) -> Option<String> {
        self.inner.terminal_digest().map(|d| d.to_string())
    }

    /// `(digest, display name)` of every op, inputs first.
    fn vertices(&self) -> Vec<(String, String)> {
        self.inner.vertices().iter().map(|v| (v.digest.to_string(), v.name())).collect()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!("<kiln.Definition {} ops>", self.inner.len())
    }
}

/// The empty filesystem.
#[pyfunction]
pub fn scratch() -> PyState {
    wrap(State::scratch())
}

/// `docker-image://REF` (normalized: `busybox` → `docker.io/library/busybox:latest`) for
/// `platform` (default: the host's). Pure: nothing is fetched, the state carries no config;
/// `Engine.image` resolves the image and inherits its config.
#[pyfunction]
#[pyo3(signature = (reference, **options))]
pub fn image(reference: &str, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyState> {
    Ok(wrap(State::image_with_options(reference, &gen::image_options(opts::open(options))?)))
}

/// The Dockerfile of the directory `context` (`dockerfile=`, default `Dockerfile`, relative to
/// it) converted into its target stage's State, which carries the target's image config and can
/// be extended; solve it with `locals={context_name: context}` (default name `context`). Bases
/// must come from named contexts (`contexts={"base": "local:rootfs"}`) or scratch: registry
/// bases need `Engine.dockerfile`, which resolves their configs.
#[pyfunction]
#[pyo3(signature = (context, **options))]
pub fn dockerfile(py: Python<'_>, context: PathBuf, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyState> {
    let o = gen::dockerfile_options(opts::open(options))?;
    let context = absolute(context);
    let st = py.detach(|| kiln::frontend::dockerfile::state_from_dir(&context, &o, None)).map_err(kerr)?;
    Ok(wrap(st))
}

/// An image from an OCI layout directory by `tag` (default `latest`) or manifest `digest`.
#[pyfunction]
#[pyo3(signature = (path, **options))]
pub fn oci_layout(path: PathBuf, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyState> {
    let o = gen::oci_layout_options(opts::open(options))?;
    let r = o.reference().map_err(kerr)?;
    Ok(wrap(State::oci_layout_with_options(absolute(path), r, &o.image_options())))
}

/// `local://NAME`: a directory passed to `Engine.solve(locals={NAME: dir})`.
#[pyfunction]
#[pyo3(signature = (name, **options))]
pub fn local(name: String, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyState> {
    Ok(wrap(State::local_with(name, gen::local_options(opts::open(options))?)))
}

/// A file downloaded from `url`, verified against `checksum` (`sha256:...`) when given.
#[pyfunction]
#[pyo3(signature = (url, **options))]
pub fn http(url: String, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyState> {
    Ok(wrap(State::http(url, gen::http_options(opts::open(options))?)))
}

/// A git checkout of `ref` (branch, tag or commit; empty = default branch) from `url`.
#[pyfunction]
#[pyo3(signature = (url, r#ref="", **options))]
pub fn git(url: String, r#ref: &str, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyState> {
    Ok(wrap(State::git_with(url, r#ref, gen::git_options(opts::open(options))?)))
}

/// Stacks `states` (later ones win).
#[pyfunction]
pub fn merge(states: Vec<Bound<'_, PyAny>>) -> PyResult<PyState> {
    let states = states.iter().map(|s| State::from_py("states", s)).collect::<PyResult<Vec<_>>>()?;
    Ok(wrap(State::merge(states)))
}

/// Bind-mounts `state` (or only its `selector` path) at `dest`.
#[pyfunction]
#[pyo3(signature = (dest, state, **options))]
pub fn mount(dest: String, state: &Bound<'_, PyAny>, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyMount> {
    let state = State::from_py("state", state)?;
    Ok(PyMount { inner: MountSpec::bind_with(dest, &state, gen::mount_options(opts::open(options))?) })
}

/// A persistent cache directory at `dest` (`id` defaults to `dest`).
#[pyfunction]
#[pyo3(signature = (dest, **options))]
pub fn cache_mount(dest: String, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyMount> {
    Ok(PyMount { inner: MountSpec::cache_with(dest, gen::cache_mount_options(opts::open(options))?) })
}

/// A tmpfs at `dest` (`size` in bytes, 0 for the runtime default).
#[pyfunction]
#[pyo3(signature = (dest, **options))]
pub fn tmpfs_mount(dest: String, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyMount> {
    Ok(PyMount { inner: MountSpec::tmpfs_with(dest, gen::tmpfs_mount_options(opts::open(options))?) })
}

/// Secret `id` (from `Engine.solve(secrets=...)`; defaults to the file name of `dest`) as a file
/// at `dest`.
#[pyfunction]
#[pyo3(signature = (dest, **options))]
pub fn secret_mount(dest: String, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyMount> {
    Ok(PyMount { inner: MountSpec::secret_with(dest, gen::secret_mount_options(opts::open(options))?).map_err(kerr)? })
}

/// Resolves a relative local dir against the current directory (so a later `chdir` is harmless).
pub fn local_dir(p: PathBuf) -> PathBuf {
    absolute(p)
}
