//! `kiln::Error`: the one error type of the engine. Every failure carries a stable [`ErrorKind`]
//! (what bindings map to typed errors) and enough context to act on without a debugger.

use std::path::PathBuf;

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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid build definition; `op` names the offending op digest when known.
    #[error("invalid definition{}: {message}", op.as_ref().map(|o| format!(" (op {o})")).unwrap_or_default())]
    Definition {
        /// Digest of the offending op, if the problem is tied to one.
        op: Option<String>,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// An option is malformed: names the key, the value and what is accepted.
    #[error("invalid option {key}={value:?}: {expected}")]
    Option {
        /// The option key (`mode`, `type`, ...).
        key: String,
        /// The rejected value.
        value: String,
        /// What is accepted instead.
        expected: String,
    },
    /// A container process exited non-zero.
    #[error("process \"{command}\" in vertex {vertex:?} did not complete successfully: exit code: {exit_code}")]
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
    #[error("{message}")]
    Other {
        /// The classification.
        kind: ErrorKind,
        /// Human readable context.
        message: String,
        /// The underlying cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// An I/O error on a path.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What kiln was doing.
        context: String,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The engine root is held by another process.
    #[error("root {} is in use by pid {pid}", root.display())]
    RootInUse {
        /// The root directory.
        root: PathBuf,
        /// The holder's pid (0 if unknown).
        pid: u32,
    },
    /// The solve was cancelled by its caller.
    #[error("solve cancelled")]
    Cancelled,
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
        }
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
        Error::Other { kind, message: message.into(), source: Some(Box::new(source)) }
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
        Error::Io { context: context.into(), path: path.into(), source }
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
}
