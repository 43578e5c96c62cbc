//! Status codes and error objects: `kiln_status` (stable numbers), the mapping from every
//! `kiln::ErrorKind` to a status, `kiln_error` (message, kind, exit code, vertex, log tail) and the
//! per-thread "last error" that every failing call records.

use crate::ffi::{catch, cstring, guard, out_arg, put, ref_arg, take_free};
use kiln::{Error, ErrorKind};
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::ptr;

/// The result of every fallible kiln function. Numbers are stable ABI: they never change
/// meaning, and a number that is retired stays reserved forever (it is never reused).
///
/// 1..=16 mirror the engine's error kinds; 17 and 18 belong to client-side builds
/// (`kiln_engine_build`): a path missing from a build ref and a failed build callback; 99 is a
/// kind newer than this library's mapping (a fallback that a matching build never returns); 100
/// and up are misuse of the C API itself.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum kiln_status {
    /// Success.
    KILN_OK = 0,
    /// A build definition could not be parsed or is invalid (kind `definition`).
    KILN_ERR_DEFINITION = 1,
    /// An option string (output, cache import/export, secret, ...) is malformed (kind `option`);
    /// the message names the key, the value and what is accepted.
    KILN_ERR_OPTION = 2,
    /// A container process exited non-zero (kind `exec`); see `kiln_error_exit_code` and the log tail.
    KILN_ERR_EXEC = 3,
    /// A source (local dir, image, http, git) could not be resolved or read (kind `source`).
    KILN_ERR_SOURCE = 4,
    /// A file operation (copy, mkdir, mkfile, rm, symlink) failed (kind `file_op`).
    KILN_ERR_FILE_OP = 5,
    /// A worker or container runtime failed (kind `worker`).
    KILN_ERR_WORKER = 6,
    /// Snapshot storage failed (kind `snapshot`).
    KILN_ERR_SNAPSHOT = 7,
    /// The content store or an OCI layout is missing data or is corrupt (kind `content`).
    KILN_ERR_CONTENT = 8,
    /// The build cache or metadata store failed (kind `cache`).
    KILN_ERR_CACHE = 9,
    /// A registry request failed (kind `registry`).
    KILN_ERR_REGISTRY = 10,
    /// A result exporter failed (kind `export`).
    KILN_ERR_EXPORT = 11,
    /// The engine root is locked by another engine (kind `root_in_use`).
    KILN_ERR_ROOT_IN_USE = 12,
    /// A requested capability is not supported (kind `unsupported`).
    KILN_ERR_UNSUPPORTED = 13,
    /// The solve was cancelled (kind `cancelled`).
    KILN_ERR_CANCELLED = 14,
    /// An I/O error; the message names the path (kind `io`).
    KILN_ERR_IO = 15,
    /// A bug in kiln: an invariant did not hold (kind `internal`).
    KILN_ERR_INTERNAL = 16,
    /// A path read from a build ref (`kiln_ref_read_file`, `kiln_ref_read_dir`,
    /// `kiln_ref_stat_file`) does not exist (kind `not_found`); the message names the path.
    KILN_ERR_NOT_FOUND = 17,
    /// A build callback failed (kind `callback`): it returned nonzero or called
    /// `kiln_build_ctx_fail`; the message is the one it gave, `kiln_error_exit_code` the value it
    /// returned.
    KILN_ERR_CALLBACK = 18,
    /// An engine error kind newer than this library's mapping (kind as the engine names it).
    KILN_ERR_UNKNOWN = 99,
    /// A required pointer argument was NULL (kind `null_argument`).
    KILN_ERR_NULL_ARGUMENT = 100,
    /// A string argument is not valid UTF-8 (kind `invalid_utf8`).
    KILN_ERR_INVALID_UTF8 = 101,
    /// An argument has a value outside what the function accepts (kind `invalid_argument`).
    KILN_ERR_INVALID_ARGUMENT = 102,
    /// kiln panicked; the panic was caught at the boundary (kind `panic`). Please report it.
    KILN_ERR_PANIC = 103,
    /// A blocking call was made on a kiln engine thread, e.g. from inside a progress callback
    /// (kind `wrong_thread`).
    KILN_ERR_WRONG_THREAD = 104,
}

use kiln_status::*;

/// Every status with its name, for `kiln_status_name`.
const STATUS_NAMES: &[(kiln_status, &str)] = &[
    (KILN_OK, "KILN_OK\0"),
    (KILN_ERR_DEFINITION, "KILN_ERR_DEFINITION\0"),
    (KILN_ERR_OPTION, "KILN_ERR_OPTION\0"),
    (KILN_ERR_EXEC, "KILN_ERR_EXEC\0"),
    (KILN_ERR_SOURCE, "KILN_ERR_SOURCE\0"),
    (KILN_ERR_FILE_OP, "KILN_ERR_FILE_OP\0"),
    (KILN_ERR_WORKER, "KILN_ERR_WORKER\0"),
    (KILN_ERR_SNAPSHOT, "KILN_ERR_SNAPSHOT\0"),
    (KILN_ERR_CONTENT, "KILN_ERR_CONTENT\0"),
    (KILN_ERR_CACHE, "KILN_ERR_CACHE\0"),
    (KILN_ERR_REGISTRY, "KILN_ERR_REGISTRY\0"),
    (KILN_ERR_EXPORT, "KILN_ERR_EXPORT\0"),
    (KILN_ERR_ROOT_IN_USE, "KILN_ERR_ROOT_IN_USE\0"),
    (KILN_ERR_UNSUPPORTED, "KILN_ERR_UNSUPPORTED\0"),
    (KILN_ERR_CANCELLED, "KILN_ERR_CANCELLED\0"),
    (KILN_ERR_IO, "KILN_ERR_IO\0"),
    (KILN_ERR_INTERNAL, "KILN_ERR_INTERNAL\0"),
    (KILN_ERR_NOT_FOUND, "KILN_ERR_NOT_FOUND\0"),
    (KILN_ERR_CALLBACK, "KILN_ERR_CALLBACK\0"),
    (KILN_ERR_UNKNOWN, "KILN_ERR_UNKNOWN\0"),
    (KILN_ERR_NULL_ARGUMENT, "KILN_ERR_NULL_ARGUMENT\0"),
    (KILN_ERR_INVALID_UTF8, "KILN_ERR_INVALID_UTF8\0"),
    (KILN_ERR_INVALID_ARGUMENT, "KILN_ERR_INVALID_ARGUMENT\0"),
    (KILN_ERR_PANIC, "KILN_ERR_PANIC\0"),
    (KILN_ERR_WRONG_THREAD, "KILN_ERR_WRONG_THREAD\0"),
];

/// The status of an engine error kind. The wildcard arm is required because `ErrorKind` is
/// `#[non_exhaustive]`; the test `every_kind_maps_to_a_distinct_status` keeps it unreachable.
pub(crate) fn status_of_kind(kind: ErrorKind) -> kiln_status {
    match kind {
        ErrorKind::Definition => KILN_ERR_DEFINITION,
        ErrorKind::Option => KILN_ERR_OPTION,
        ErrorKind::Exec => KILN_ERR_EXEC,
        ErrorKind::Source => KILN_ERR_SOURCE,
        ErrorKind::FileOp => KILN_ERR_FILE_OP,
        ErrorKind::Worker => KILN_ERR_WORKER,
        ErrorKind::Snapshot => KILN_ERR_SNAPSHOT,
        ErrorKind::Content => KILN_ERR_CONTENT,
        ErrorKind::Cache => KILN_ERR_CACHE,
        ErrorKind::Registry => KILN_ERR_REGISTRY,
        ErrorKind::Export => KILN_ERR_EXPORT,
        ErrorKind::RootInUse => KILN_ERR_ROOT_IN_USE,
        ErrorKind::Unsupported => KILN_ERR_UNSUPPORTED,
        ErrorKind::Cancelled => KILN_ERR_CANCELLED,
        ErrorKind::Io => KILN_ERR_IO,
        ErrorKind::Internal => KILN_ERR_INTERNAL,
        _ => KILN_ERR_UNKNOWN,
    }
}

/// A failure as C sees it. Owned by the caller once handed out; immutable after creation.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone)]
pub struct kiln_error {
    status: kiln_status,
    kind: CString,
    message: CString,
    exit_code: Option<i32>,
    vertex: Option<CString>,
    log_tail: Vec<CString>,
}

impl kiln_error {
    /// A binding-level failure (misuse of the C API).
    pub(crate) fn api(status: kiln_status, kind: &str, message: impl Into<String>) -> kiln_error {
        kiln_error {
            status,
            kind: cstring(kind),
            message: cstring(message.into()),
            exit_code: None,
            vertex: None,
            log_tail: Vec::new(),
        }
    }

    /// A required pointer was NULL.
    pub(crate) fn null(arg: &str) -> kiln_error {
        kiln_error::api(
            KILN_ERR_NULL_ARGUMENT,
            "null_argument",
            format!("argument `{arg}` is NULL; pass a valid pointer"),
        )
    }

    /// An argument has a bad value; `message` says what is accepted.
    pub(crate) fn invalid(message: impl Into<String>) -> kiln_error {
        kiln_error::api(KILN_ERR_INVALID_ARGUMENT, "invalid_argument", message)
    }

    /// The failure of a build callback that returned `code` (see KILN_ERR_CALLBACK).
    pub(crate) fn callback(code: i32, message: impl Into<String>) -> kiln_error {
        let mut e = kiln_error::api(KILN_ERR_CALLBACK, "callback", message);
        e.exit_code = Some(code);
        e
    }

    /// For a KILN_ERR_CALLBACK error, records the value the callback returned.
    pub(crate) fn with_callback_code(mut self, code: i32) -> kiln_error {
        if self.status == KILN_ERR_CALLBACK {
            self.exit_code = Some(code);
        }
        self
    }

    /// The message as a Rust string.
    pub(crate) fn message_string(&self) -> String {
        self.message.to_string_lossy().into_owned()
    }

    /// The status of this error.
    pub(crate) fn status(&self) -> kiln_status {
        self.status
    }

    /// The full message (for tests).
    #[cfg(test)]
    pub(crate) fn message_str(&self) -> &str {
        self.message.to_str().unwrap_or("")
    }
}

impl From<Error> for kiln_error {
    fn from(e: Error) -> kiln_error {
        kiln_error::from(&e)
    }
}

impl From<&Error> for kiln_error {
    fn from(e: &Error) -> kiln_error {
        // The message with every cause not already shown in it.
        let message = e.report_for(|input, name| match input {
            kiln::MissingInput::Local => format!("kiln_solve_opts_add_local(opts, {name:?}, DIR)"),
            kiln::MissingInput::Secret => {
                format!("kiln_solve_opts_add_secret_file(opts, {name:?}, PATH) or kiln_solve_opts_add_secret_value")
            }
            _ => format!("the {name:?} SSH agent socket (not yet passable from C)"),
        });
        let (exit_code, vertex, log_tail) = match e {
            Error::Exec { vertex, exit_code, log_tail, .. } => (
                Some(*exit_code),
                Some(cstring(vertex.as_str())),
                log_tail.iter().map(|l| cstring(l.as_str())).collect(),
            ),
            Error::Definition { op: Some(op), .. } => (None, Some(cstring(op.as_str())), Vec::new()),
            _ => (None, None, Vec::new()),
        };
        // A missing path is a file_op error to the engine; C gets a status of its own for it.
        let (status, kind) = if e.is_not_found() {
            (KILN_ERR_NOT_FOUND, "not_found")
        } else {
            (status_of_kind(e.kind()), e.kind().as_str())
        };
        kiln_error { status, kind: cstring(kind), message: cstring(message), exit_code, vertex, log_tail }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<kiln_error>> = const { RefCell::new(None) };
}

/// Records the failure of the current call on this thread.
pub(crate) fn set_last_error(e: &kiln_error) {
    LAST_ERROR.with(|l| *l.borrow_mut() = Some(e.clone()));
}

/// Copies the error of the most recent failing kiln call on the calling thread into `*out` (a new
/// handle the caller owns and frees with `kiln_error_free`), or sets `*out` to NULL when no call on
/// this thread has failed yet. Successful calls do not clear it.
///
/// Returns KILN_ERR_NULL_ARGUMENT if `out` is NULL. Thread safety: per thread by design; any thread.
#[no_mangle]
pub extern "C" fn kiln_error_last(out: *mut *mut kiln_error) -> kiln_status {
    guard(ptr::null_mut(), || {
        let out = out_arg(out, "out")?;
        if let Some(e) = LAST_ERROR.with(|l| l.borrow().clone()) {
            put(out, e);
        }
        Ok(())
    })
}

/// Frees an error and sets `*err` to NULL. `err == NULL` and `*err == NULL` are no-ops, so freeing
/// the same variable twice is harmless; freeing a *copy* of an already freed pointer is not.
///
/// Thread safety: must not race with any other use of the same error.
#[no_mangle]
pub extern "C" fn kiln_error_free(err: *mut *mut kiln_error) {
    take_free(err)
}

/// The status this error maps to (e.g. KILN_ERR_EXEC). KILN_ERR_NULL_ARGUMENT if `err` is NULL.
///
/// Thread safety: a kiln_error is immutable; any thread may read it concurrently.
#[no_mangle]
pub extern "C" fn kiln_error_status(err: *const kiln_error) -> kiln_status {
    catch(KILN_ERR_PANIC, || ref_arg(err, "err").map(|e| e.status).unwrap_or(KILN_ERR_NULL_ARGUMENT))
}

/// The stable lowercase kind name (`"exec"`, `"option"`, ..., `"not_found"`, `"callback"`, or for
/// API misuse `"null_argument"`, `"invalid_utf8"`, `"invalid_argument"`, `"panic"`,
/// `"wrong_thread"`).
/// Borrowed: valid until the error is freed. NULL if `err` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_error_kind(err: *const kiln_error) -> *const c_char {
    catch(ptr::null(), || ref_arg(err, "err").map(|e| e.kind.as_ptr()).unwrap_or(ptr::null()))
}

/// The human-readable message: what went wrong, its causes, and what is accepted. Borrowed: valid
/// until the error is freed. NULL if `err` is NULL.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_error_message(err: *const kiln_error) -> *const c_char {
    catch(ptr::null(), || ref_arg(err, "err").map(|e| e.message.as_ptr()).unwrap_or(ptr::null()))
}

/// The exit code of the failed process for KILN_ERR_EXEC (128+signal when killed by a signal),
/// the value the build callback returned for KILN_ERR_CALLBACK; -1 for every other error and for
/// a NULL `err`.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_error_exit_code(err: *const kiln_error) -> i32 {
    catch(-1, || ref_arg(err, "err").ok().and_then(|e| e.exit_code).unwrap_or(-1))
}

/// The failed vertex: its name for KILN_ERR_EXEC, the op digest for a definition error tied to
/// one op; NULL otherwise or if `err` is NULL. Borrowed: valid until the error is freed.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_error_vertex(err: *const kiln_error) -> *const c_char {
    catch(ptr::null(), || {
        ref_arg(err, "err").ok().and_then(|e| e.vertex.as_ref()).map(|v| v.as_ptr()).unwrap_or(ptr::null())
    })
}

/// How many lines of the failed process's output the error carries (0 for non-exec errors or a
/// NULL `err`).
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_error_log_tail_len(err: *const kiln_error) -> usize {
    catch(0, || ref_arg(err, "err").map(|e| e.log_tail.len()).unwrap_or(0))
}

/// Line `index` (0 = oldest) of the log tail, without its newline; NULL if out of range or `err`
/// is NULL. Borrowed: valid until the error is freed.
///
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub extern "C" fn kiln_error_log_tail_line(err: *const kiln_error, index: usize) -> *const c_char {
    catch(ptr::null(), || {
        ref_arg(err, "err").ok().and_then(|e| e.log_tail.get(index)).map(|l| l.as_ptr()).unwrap_or(ptr::null())
    })
}

/// The name of a status number (`"KILN_ERR_EXEC"`), or NULL for a number that is not assigned.
/// Static storage: never free it.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_status_name(status: i32) -> *const c_char {
    catch(ptr::null(), || {
        STATUS_NAMES
            .iter()
            .find(|(s, _)| *s as i32 == status)
            .map(|(_, n)| n.as_ptr().cast::<c_char>())
            .unwrap_or(ptr::null())
    })
}

/// How many engine error kinds this library knows (for enumerating them with
/// `kiln_error_kind_status` / `kiln_error_kind_name`).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_error_kind_count() -> usize {
    ErrorKind::ALL.len()
}

/// The status that engine error kind number `index` (0-based, < `kiln_error_kind_count()`) maps
/// to; KILN_ERR_INVALID_ARGUMENT if `index` is out of range.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_error_kind_status(index: usize) -> kiln_status {
    catch(KILN_ERR_PANIC, || ErrorKind::ALL.get(index).map(|k| status_of_kind(*k)).unwrap_or(KILN_ERR_INVALID_ARGUMENT))
}

/// The stable name of engine error kind number `index` (`"exec"`), or NULL if out of range.
/// Static storage: never free it.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_error_kind_name(index: usize) -> *const c_char {
    static NAMES: std::sync::OnceLock<Vec<CString>> = std::sync::OnceLock::new();
    catch(ptr::null(), || {
        let names = NAMES.get_or_init(|| ErrorKind::ALL.iter().map(|k| cstring(k.as_str())).collect());
        names.get(index).map(|n| n.as_ptr()).unwrap_or(ptr::null())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::ffi::CStr;

    #[test]
    fn every_kind_maps_to_a_distinct_status() {
        let mut seen = HashSet::new();
        for k in ErrorKind::ALL {
            let s = status_of_kind(*k);
            assert_ne!(s, KILN_ERR_UNKNOWN, "{k} has no status of its own");
            assert_ne!(s, KILN_OK);
            assert!(seen.insert(s), "{k} shares status {s:?}");
            // The status name ends with the kind name, so C code can rely on the pairing.
            // SAFETY: kiln_status_name returns NUL-terminated static strings.
            let name = unsafe { CStr::from_ptr(kiln_status_name(s as i32)) }.to_str().unwrap();
            assert_eq!(name, format!("KILN_ERR_{}", k.as_str().to_uppercase()));
        }
        assert_eq!(kiln_error_kind_count(), ErrorKind::ALL.len());
    }

    #[test]
    fn status_names_are_distinct_and_numbers_stable() {
        let names: HashSet<_> = STATUS_NAMES.iter().map(|(_, n)| *n).collect();
        assert_eq!(names.len(), STATUS_NAMES.len());
        assert_eq!(KILN_ERR_EXEC as i32, 3);
        assert_eq!(KILN_ERR_INTERNAL as i32, 16);
        assert_eq!(KILN_ERR_NULL_ARGUMENT as i32, 100);
        assert!(kiln_status_name(42).is_null());
    }

    #[test]
    fn exec_error_carries_exit_code_vertex_and_log_tail() {
        let e = Error::Exec {
            vertex: "run x".into(),
            command: "x".into(),
            exit_code: 7,
            log_tail: vec!["a".into(), "b\0c".into()],
        };
        let ke = kiln_error::from(&e);
        assert_eq!(ke.status(), KILN_ERR_EXEC);
        assert_eq!(kiln_error_exit_code(&ke), 7);
        assert_eq!(kiln_error_log_tail_len(&ke), 2);
        assert!(kiln_error_log_tail_line(&ke, 2).is_null());
        assert!(ke.message_str().contains("exit code: 7"));
    }

    #[test]
    fn a_missing_path_has_its_own_status() {
        let e = kiln_error::from(&Error::NotFound { path: "/nope".into() });
        assert_eq!(e.status(), KILN_ERR_NOT_FOUND);
        // SAFETY: kiln_error_kind returns a NUL-terminated string borrowed from `e`.
        assert_eq!(unsafe { CStr::from_ptr(kiln_error_kind(&e)) }.to_str().unwrap(), "not_found");
        assert!(e.message_str().contains("/nope"));
        let c = kiln_error::callback(3, "no lockfile");
        assert_eq!((c.status(), kiln_error_exit_code(&c)), (KILN_ERR_CALLBACK, 3));
    }

    #[test]
    fn causes_are_appended_to_the_message() {
        let cause = std::io::Error::other("disk on fire");
        let e = Error::with_source(ErrorKind::Cache, "open cache", cause);
        assert_eq!(kiln_error::from(&e).message_str(), "open cache: disk on fire");
    }
}
