//! Maps `kiln::Error` to JavaScript `Error` objects with a stable string `code` (one per
//! `kiln::ErrorKind`) and the structured fields callers act on (`exitCode`, `vertex`, `logTail`,
//! `command`, `key`, `value`, `expected`). The only place the binding turns kiln errors into JS.

use kiln::{Error, ErrorKind};
use napi::bindgen_prelude::JsObjectValue;
use napi::bindgen_prelude::{Object, Unknown};
use napi::{Env, JsValue};

/// The code of errors whose kind this binding does not know yet (`ErrorKind` is non-exhaustive).
pub const UNKNOWN_CODE: &str = "KILN_UNKNOWN";

/// The code of a path missing from a build result (`Error::NotFound`, of kind `file_op`): its own
/// code, so callers tell "not there" from other file errors without reading messages.
pub const NOT_FOUND_CODE: &str = "KILN_NOT_FOUND";

/// The stable JS `code` of an error: its kind's, except [`NOT_FOUND_CODE`] for a missing path.
pub fn code_of_error(e: &Error) -> &'static str {
    if e.is_not_found() {
        NOT_FOUND_CODE
    } else {
        code_of(e.kind())
    }
}

/// The stable JS `code` of an error kind. Adding a kind to core means adding a line here (the
/// test below fails until every kind has a distinct code) and to `KilnErrorCode` in index.d.ts.
pub fn code_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Definition => "KILN_DEFINITION",
        ErrorKind::Option => "KILN_OPTION_INVALID",
        ErrorKind::Exec => "KILN_EXEC_FAILED",
        ErrorKind::Source => "KILN_SOURCE",
        ErrorKind::FileOp => "KILN_FILE_OP",
        ErrorKind::Worker => "KILN_WORKER",
        ErrorKind::Snapshot => "KILN_SNAPSHOT",
        ErrorKind::Content => "KILN_CONTENT",
        ErrorKind::Cache => "KILN_CACHE",
        ErrorKind::Registry => "KILN_REGISTRY",
        ErrorKind::Export => "KILN_EXPORT",
        ErrorKind::RootInUse => "KILN_ROOT_IN_USE",
        ErrorKind::Unsupported => "KILN_UNSUPPORTED",
        ErrorKind::Cancelled => "KILN_CANCELLED",
        ErrorKind::Io => "KILN_IO",
        ErrorKind::Internal => "KILN_INTERNAL",
        _ => UNKNOWN_CODE,
    }
}

/// The full message of `e` including its chain of causes ([`Error::report`]).
fn message_of(e: &Error) -> String {
    e.report_for(|input, name| match input {
        kiln::MissingInput::Local => format!("locals: {{ {name:?}: DIR }}"),
        kiln::MissingInput::Secret => format!("secrets: {{ {name:?}: secretFile(PATH) }} or secretValue(BYTES)"),
        _ => format!("the {name:?} SSH agent socket (not yet passable from Node)"),
    })
}

/// One row of `errorCodes()`.
#[napi_derive::napi(object)]
pub struct ErrorCodeEntry {
    /// The kiln::ErrorKind name (`exec`).
    pub kind: String,
    /// Its JS code (`KILN_EXEC_FAILED`).
    pub code: String,
}

/// Every error kind kiln has and the `code` its errors carry in JavaScript.
#[napi_derive::napi]
pub fn error_codes() -> Vec<ErrorCodeEntry> {
    ErrorKind::ALL
        .iter()
        .map(|k| ErrorCodeEntry { kind: k.as_str().to_owned(), code: code_of(*k).to_owned() })
        .collect()
}

/// Builds the JS `Error` for `e`: `name = 'KilnError'`, `code`, `kind` and the kind's fields.
pub fn to_js<'e>(env: &'e Env, e: &Error) -> napi::Result<Object<'e>> {
    let mut obj = env.create_error(napi::Error::from_reason(message_of(e)))?;
    obj.set_named_property("name", "KilnError")?;
    obj.set_named_property("code", code_of_error(e))?;
    obj.set_named_property("kind", e.kind().as_str())?;
    match e {
        Error::Exec { vertex, command, exit_code, log_tail } => {
            obj.set_named_property("exitCode", *exit_code)?;
            obj.set_named_property("vertex", vertex.as_str())?;
            obj.set_named_property("command", command.as_str())?;
            obj.set_named_property("logTail", log_tail.clone())?;
        }
        Error::Option { key, value, expected } => {
            obj.set_named_property("key", key.as_str())?;
            obj.set_named_property("value", value.as_str())?;
            obj.set_named_property("expected", expected.as_str())?;
        }
        Error::Definition { op: Some(op), .. } => obj.set_named_property("op", op.as_str())?,
        Error::Io { path, .. } | Error::RootInUse { root: path, .. } => {
            obj.set_named_property("path", path.to_string_lossy().as_ref())?
        }
        Error::NotFound { path } => obj.set_named_property("path", path.as_str())?,
        _ => {}
    }
    Ok(obj)
}

/// A `napi::Error` that rejects/throws with the JS error object of `e` (must run on the JS thread).
pub fn throw(env: &Env, e: &Error) -> napi::Error {
    match to_js(env, e) {
        Ok(obj) => {
            let unknown: Unknown = obj.to_unknown();
            napi::Error::from(unknown)
        }
        Err(inner) => inner,
    }
}

/// An invalid-option error for a binding-level argument (`network: 'bridge'`).
pub fn option(key: &str, value: &str, expected: &str) -> Error {
    Error::option(key, value, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_a_distinct_known_code() {
        let codes: std::collections::HashSet<&str> = ErrorKind::ALL.iter().map(|k| code_of(*k)).collect();
        assert_eq!(codes.len(), ErrorKind::ALL.len(), "two kinds share a code");
        assert!(!codes.contains(UNKNOWN_CODE), "a kind falls back to {UNKNOWN_CODE}");
        for c in &codes {
            assert!(c.starts_with("KILN_") && c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'), "{c}");
        }
    }

    #[test]
    fn exec_maps_to_exec_failed() {
        assert_eq!(code_of(ErrorKind::Exec), "KILN_EXEC_FAILED");
        assert_eq!(code_of(ErrorKind::Option), "KILN_OPTION_INVALID");
    }

    #[test]
    fn not_found_has_its_own_code() {
        let e = Error::NotFound { path: "/nope".into() };
        assert_eq!(code_of_error(&e), NOT_FOUND_CODE);
        assert!(!ErrorKind::ALL.iter().any(|k| code_of(*k) == NOT_FOUND_CODE));
        assert_eq!(code_of_error(&Error::Cancelled), "KILN_CANCELLED");
    }

    #[test]
    fn message_includes_causes() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::with_source(ErrorKind::Io, "write blob", io);
        assert_eq!(message_of(&e), "write blob: disk on fire");
    }
}
