//! `kiln::Error`: the one error type of the engine. Every failure carries a stable [`ErrorKind`]
//! (what bindings map to typed errors) and enough context to act on without a debugger.

use std::path::PathBuf;
use std::sync::Arc;

/// Result alias used across kiln.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stable classification of errors; bindings map each kind to a typed error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A build definition could not be parsed or is invalid (cycles, dangling inputs, unknown ops).
    Definition,
    /// An option string (output, cache import/export, secret, ...) is malformed.
    Option,
    /// A container process exited with a non-zero status.
    Exec,
    /// A source (local dir, image, http, git) could not be resolved or read.
    Source,
    /// A file operation (copy, mkdir, mkfile, rm, symlink) failed.
    FileOp,
    /// A worker or container runtime failed (runc missing, bundle setup, mounts).
    Worker,
    /// Snapshot storage failed (overlay mount, layer apply, unsafe layer content).
    Snapshot,
    /// The content store or an OCI layout is missing data or is corrupt (digest mismatch).
    Content,
    /// The engine's build cache or metadata store failed.
    Cache,
    /// A registry request failed.
    Registry,
    /// A result exporter failed.
    Export,
    /// The engine root is locked by another process.
    RootInUse,
    /// A requested capability is not supported by kiln.
    Unsupported,
    /// The solve was cancelled.
    Cancelled,
    /// An I/O error with its path.
    Io,
    /// A bug in kiln: an invariant did not hold.
    Internal,
}

impl ErrorKind {
    /// Every kind, for bindings' exhaustiveness tests.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::Definition,
        ErrorKind::Option,
        ErrorKind::Exec,
        ErrorKind::Source,
        ErrorKind::FileOp,
        ErrorKind::Worker,
        ErrorKind::Snapshot,
        ErrorKind::Content,
        ErrorKind::Cache,
        ErrorKind::Registry,
        ErrorKind::Export,
        ErrorKind::RootInUse,
        ErrorKind::Unsupported,
        ErrorKind::Cancelled,
        ErrorKind::Io,
        ErrorKind::Internal,
    ];

    /// A stable lowercase name (`"exec"`, `"option"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Definition => "definition",
            ErrorKind::Option => "option",
            ErrorKind::Exec => "exec",
            ErrorKind::Source => "source",
            ErrorKind::FileOp => "file_op",
            ErrorKind::Worker => "worker",
            ErrorKind::Snapshot => "snapshot",
            ErrorKind::Content => "content",
            ErrorKind::Cache => "cache",
            ErrorKind::Registry => "registry",
            ErrorKind::Export => "export",
            ErrorKind::RootInUse => "root_in_use",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error type of every fallible kiln operation.
///
/// Cheap to clone: causes are shared (`Arc`), so an error handed to every waiter of a shared
/// vertex keeps its variant, fields and cause chain. [`Error::report`] renders the whole chain.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// Invalid build definition; `op` names the offending op digest when known.
    Definition {
        /// Digest of the offending op, if the problem is tied to one.
        op: Option<String>,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// An option is malformed: names the key, the value and what is accepted.
    Option {
        /// The option key (`mode`, `type`, ...).
        key: String,
        /// The rejected value.
        value: String,
        /// What is accepted instead.
        expected: String,
    },
    /// A container process exited non-zero.
    Exec {
        /// Name of the failed vertex.
        vertex: String,
        /// The command line that ran.
        command: String,
        /// Its exit code (128+signal when killed by a signal).
        exit_code: i32,
        /// The last lines of its output.
        log_tail: Vec<String>,
    },
    /// Any other failure of one kind, with its message and optional cause.
    Other {
        /// The classification.
        kind: ErrorKind,
        /// Human readable context.
        message: String,
        /// The underlying cause (shared, so the error stays cheap to clone).
        source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// An I/O error on a path.
    Io {
        /// What kiln was doing.
        context: String,
        /// The path involved.
        path: PathBuf,
        /// The cause (shared, so the error stays cheap to clone).
        source: Arc<std::io::Error>,
    },
    /// The engine root is held by another process.
    RootInUse {
        /// The root directory.
        root: PathBuf,
        /// The holder's pid (0 if unknown).
        pid: u32,
    },
    /// The solve was cancelled by its caller.
    Cancelled,
    /// Something the definition needs was not given to the solve. The message names it and
    /// what was given; each face adds how to pass it in that language ([`Error::missing`]).
    Missing {
        /// What is missing.
        input: MissingInput,
        /// Its name or id (`local://NAME`, the secret or SSH id).
        name: String,
        /// The step that needs it, if one does.
        needed_by: Option<String>,
        /// The names that were given.
        provided: Vec<String>,
    },
    /// A path read from a build result does not exist (a client-side build's `read_file`,
    /// `read_dir` or `stat_file`). Kind [`ErrorKind::FileOp`]; [`Error::is_not_found`] tells
    /// it apart from other file errors.
    NotFound {
        /// The path as it was asked for (inside the result).
        path: String,
    },
}

/// What kind of solve input [`Error::Missing`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingInput {
    /// A `local://NAME` directory.
    Local,
    /// A secret (mount or environment variable).
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Definition { op, message } => match op {
                Some(op) => write!(f, "invalid definition (op {op}): {message}"),
                None => write!(f, "invalid definition: {message}"),
            },
            Error::Option { key, value, expected } => write!(f, "invalid option {key}={value:?}: {expected}"),
            Error::Exec { vertex, command, exit_code, .. } => write!(
                f,
                "process \"{command}\" in vertex {vertex:?} did not complete successfully: exit code: {exit_code}"
            ),
            Error::Other { message, .. } => f.write_str(message),
            Error::Io { context, path, source } => write!(f, "{context} {}: {source}", path.display()),
            Error::RootInUse { root, pid } => write!(f, "root {} is in use by pid {pid}", root.display()),
            Error::Cancelled => f.write_str("solve cancelled"),
            Error::Missing { input, name, needed_by, provided } => {
                let what = match input {
                    MissingInput::Local => "local source",
                    MissingInput::Secret => "secret",
                    MissingInput::Ssh => "SSH agent",
                };
                write!(f, "{what} {name:?}")?;
                if let Some(v) = needed_by {
                    write!(f, " required by {v}")?;
                }
                write!(f, " was not provided (provided: {provided:?})")
            }
            Error::NotFound { path } => write!(f, "{path}: no such file or directory"),
        }
    }
}

/// The cause is the shared error itself (not its `Arc`), so `downcast_ref::<std::io::Error>()`
/// on `source()` works as it would on an unshared cause.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Other { source: Some(s), .. } => Some(&**s),
            Error::Io { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

impl Error {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Definition { .. } => ErrorKind::Definition,
            Error::Option { .. } => ErrorKind::Option,
            Error::Exec { .. } => ErrorKind::Exec,
            Error::Other { kind, .. } => *kind,
            Error::Io { .. } => ErrorKind::Io,
            Error::RootInUse { .. } => ErrorKind::RootInUse,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Missing { .. } => ErrorKind::Source,
            Error::NotFound { .. } => ErrorKind::FileOp,
        }
    }

    /// True for [`Error::NotFound`]: a path read from a build result does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// What a solve lacked, for [`Error::Missing`]: each face appends how to pass it.
    pub fn missing(&self) -> Option<(MissingInput, &str)> {
        match self {
            Error::Missing { input, name, .. } => Some((*input, name)),
            _ => None,
        }
    }

    /// A [`Error::Missing`] for `name`, listing the names that were given.
    pub fn missing_input<'a>(
        input: MissingInput,
        name: impl Into<String>,
        needed_by: Option<String>,
        provided: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        Error::Missing { input, name: name.into(), needed_by, provided: provided.into_iter().cloned().collect() }
    }

    /// Using an engine handle after `close()` (every face reports it the same way).
    pub fn engine_closed() -> Self {
        Error::new(ErrorKind::Unsupported, "the engine is closed; open a new Engine to keep building")
    }

    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::Other { kind, message: message.into(), source: None }
    }

    /// An error of `kind` with a message and an underlying cause.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Other { kind, message: message.into(), source: Some(Arc::new(source)) }
    }

    /// An invalid-definition error.
    pub fn definition(op: Option<&str>, message: impl Into<String>) -> Self {
        Error::Definition { op: op.map(str::to_owned), message: message.into() }
    }

    /// An invalid-option error naming key, value and what is accepted. Parts longer than a few
    /// KiB (a hostile or mistaken megabyte value) are clipped, so an error never echoes an
    /// option string whole into logs.
    pub fn option(key: impl Into<String>, value: impl Into<String>, expected: impl Into<String>) -> Self {
        Error::Option {
            key: clip(key.into(), 1024),
            value: clip(value.into(), 1024),
            expected: clip(expected.into(), 4096),
        }
    }

    /// An I/O error with what kiln was doing and the path.
    pub fn io(context: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), path: path.into(), source: Arc::new(source) }
    }

    /// The message followed by each cause not already shown in it (`msg: cause: cause...`): the
    /// one rendering of the whole chain, used by every binding so nothing is lost crossing it.
    pub fn report(&self) -> String {
        let mut msg = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            let text = s.to_string();
            if !msg.contains(&text) {
                msg.push_str(": ");
                msg.push_str(&text);
            }
            src = s.source();
        }
        msg
    }

    /// [`Error::report`], then for an [`Error::Missing`] how to pass the missing input in the
    /// caller's language: `how(input, name)` gives the spelling (`--local src=DIR`,
    /// `locals={"src": DIR}`, ...).
    pub fn report_for(&self, how: impl Fn(MissingInput, &str) -> String) -> String {
        let msg = self.report();
        match self.missing() {
            Some((input, name)) => format!("{msg}; pass it as {}", how(input, name)),
            None => msg,
        }
    }

    /// Adds context in front of the message (keeps the kind).
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        match self {
            Error::Other { kind, message, source } => {
                Error::Other { kind, message: format!("{ctx}: {message}"), source }
            }
            Error::Io { context, path, source } => Error::Io { context: format!("{ctx}: {context}"), path, source },
            other => other,
        }
    }
}

/// `s` cut to at most `max` bytes (at a char boundary), noting the full length.
fn clip(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// Extension to attach a path and context to `std::io::Result`.
pub trait IoContext<T> {
    /// Maps an I/O error to [`Error::Io`] with `context` and `path`.
    fn with_path(self, context: &str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn with_path(self, context: &str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(context, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stable_and_distinct() {
        let names: std::collections::HashSet<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }

    #[test]
    fn option_error_names_key_value_and_accepted() {
        let e = Error::option("mode", "maxx", "expected min or max");
        assert_eq!(e.to_string(), "invalid option mode=\"maxx\": expected min or max");
        assert_eq!(e.kind(), ErrorKind::Option);
    }

    #[test]
    fn report_renders_each_cause_once() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::with_source(ErrorKind::Cache, "open cache", io);
        assert_eq!(e.report(), "open cache: disk on fire");
        // a cause already in the message is not repeated; a deeper one is appended
        let inner = Error::with_source(ErrorKind::FileOp, "copy /a /b", std::io::Error::other("EIO"));
        let outer = Error::with_source(ErrorKind::Export, "export: copy /a /b", inner);
        assert_eq!(outer.report(), "export: copy /a /b: EIO");
        let io = Error::io("read blob", "/x/y", std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        assert_eq!(io.report(), io.to_string());
        assert!(io.report().starts_with("read blob /x/y: File name too long"), "{}", io.report());
    }

    #[test]
    fn clones_keep_variant_fields_and_chain() {
        let e = Error::io("write layer", "/root/l", std::io::Error::from_raw_os_error(libc::ENOSPC)).context("export");
        let c = e.clone();
        assert_eq!(c.kind(), ErrorKind::Io);
        assert!(matches!(&c, Error::Io { path, .. } if path == std::path::Path::new("/root/l")));
        assert_eq!(c.report(), e.report());
        let s = std::error::Error::source(&c).unwrap();
        let io = s.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.raw_os_error(), Some(libc::ENOSPC));
        let w = Error::with_source(ErrorKind::FileOp, "mkfile /f", e);
        assert_eq!(w.clone().report(), w.report());
        assert!(std::error::Error::source(&w.clone()).unwrap().downcast_ref::<Error>().is_some());
    }
}
