//! The boundary itself: panic catching, NULL checks, C string and byte decoding, and handle
//! allocation/free. All `unsafe` of the crate that reads caller memory lives here.
//!
//! The C contract (stated in kiln.h) is that a non-NULL pointer argument points to a live object
//! of the documented type (a handle from the matching `_new`/constructor, a NUL-terminated
//! string, or `len` readable bytes). NULL is always detected; dangling pointers cannot be.

use crate::errors::{kiln_error, kiln_status, set_last_error};
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

/// Runs the body of a fallible exported function: catches panics, records a failure as the
/// thread's last error and, if `err` is non-NULL, hands a copy to the caller through it.
pub(crate) fn guard(err: *mut *mut kiln_error, f: impl FnOnce() -> Result<(), kiln_error>) -> kiln_status {
    if !err.is_null() {
        // SAFETY: non-NULL `err` points to a writable `kiln_error*` (API contract).
        unsafe { *err = ptr::null_mut() };
    }
    let failure = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return kiln_status::KILN_OK,
        Ok(Err(e)) => e,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            kiln_error::api(
                kiln_status::KILN_ERR_PANIC,
                "panic",
                format!("kiln panicked (a bug, please report it): {what}"),
            )
        }
    };
    let status = failure.status();
    set_last_error(&failure);
    if !err.is_null() {
        // SAFETY: as above.
        unsafe { *err = Box::into_raw(Box::new(failure)) };
    }
    status
}

/// Runs the body of an infallible exported function (a getter); a panic yields `fallback`.
pub(crate) fn catch<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// A C string without interior NULs (each NUL byte becomes U+FFFD so nothing is cut short).
pub(crate) fn cstring(s: impl Into<Vec<u8>>) -> CString {
    let mut v: Vec<u8> = s.into();
    if v.contains(&0) {
        v = String::from_utf8_lossy(&v).replace('\0', "\u{FFFD}").into_bytes();
    }
    CString::new(v).unwrap_or_default()
}

/// Borrows a handle; NULL is an error naming `arg`.
pub(crate) fn ref_arg<'a, T>(p: *const T, arg: &str) -> Result<&'a T, kiln_error> {
    // SAFETY: non-NULL pointers are live handles of type T (API contract).
    unsafe { p.as_ref() }.ok_or_else(|| kiln_error::null(arg))
}

/// Borrows a handle mutably; NULL is an error naming `arg`.
pub(crate) fn mut_arg<'a, T>(p: *mut T, arg: &str) -> Result<&'a mut T, kiln_error> {
    // SAFETY: non-NULL pointers are live handles of type T, not used concurrently (API contract).
    unsafe { p.as_mut() }.ok_or_else(|| kiln_error::null(arg))
}

/// Checks an out-parameter and sets `*out = NULL` so it is NULL on every failure path.
pub(crate) fn out_arg<'a, T>(out: *mut *mut T, arg: &str) -> Result<&'a mut *mut T, kiln_error> {
    // SAFETY: non-NULL `out` points to a writable `T*` (API contract).
    let slot = unsafe { out.as_mut() }.ok_or_else(|| kiln_error::null(arg))?;
    *slot = ptr::null_mut();
    Ok(slot)
}

/// A required out-parameter of a plain value; NULL is an error naming `arg`.
pub(crate) fn value_out<'a, T>(p: *mut T, arg: &str) -> Result<&'a mut T, kiln_error> {
    // SAFETY: non-NULL `p` points to a writable `T` (API contract).
    unsafe { p.as_mut() }.ok_or_else(|| kiln_error::null(arg))
}

/// An optional out-parameter of a plain value (NULL: the caller does not want it).
pub(crate) fn optional_out<'a, T>(p: *mut T) -> Option<&'a mut T> {
    // SAFETY: non-NULL `p` points to a writable `T` (API contract).
    unsafe { p.as_mut() }
}

/// Moves `v` into a new heap handle owned by the caller.
pub(crate) fn put<T>(out: &mut *mut T, v: T) {
    *out = Box::into_raw(Box::new(v));
}

/// Frees the handle `*pp` (if any) and sets `*pp = NULL`; `pp == NULL` is a no-op.
pub(crate) fn take_free<T>(pp: *mut *mut T) {
    catch((), || {
        // SAFETY: non-NULL `pp` points to a `T*` that is NULL or a handle from `put` not yet freed
        // (API contract; the NULLing below makes a repeated free through `pp` a no-op).
        let Some(slot) = (unsafe { pp.as_mut() }) else { return };
        let p = std::mem::replace(slot, ptr::null_mut());
        if !p.is_null() {
            // SAFETY: `p` came from Box::into_raw in `put` and ownership returns here once.
            drop(unsafe { Box::from_raw(p) });
        }
    })
}

/// Decodes a NUL-terminated UTF-8 string; NULL and invalid UTF-8 are errors naming `arg`.
pub(crate) fn str_arg<'a>(p: *const c_char, arg: &str) -> Result<&'a str, kiln_error> {
    if p.is_null() {
        return Err(kiln_error::null(arg));
    }
    // SAFETY: non-NULL string arguments are NUL-terminated and live for the call (API contract).
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|e| {
        kiln_error::api(
            kiln_status::KILN_ERR_INVALID_UTF8,
            "invalid_utf8",
            format!(
                "argument `{arg}` is not valid UTF-8 (invalid byte at offset {}); kiln accepts UTF-8 strings only",
                e.valid_up_to()
            ),
        )
    })
}

/// Borrows `len` bytes; `data` may be NULL only when `len == 0`.
pub(crate) fn bytes_arg<'a>(data: *const u8, len: usize, arg: &str) -> Result<&'a [u8], kiln_error> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(kiln_error::null(arg));
    }
    // SAFETY: non-NULL `data` points to `len` readable bytes for the call (API contract).
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// Borrows an array of `n` pointers; `p` may be NULL only when `n == 0`.
pub(crate) fn array_arg<'a, T>(p: *const *const T, n: usize, arg: &str) -> Result<&'a [*const T], kiln_error> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(kiln_error::null(arg));
    }
    // SAFETY: non-NULL `p` points to `n` readable pointers for the call (API contract).
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::kiln_status::*;

    #[test]
    fn a_panic_becomes_a_status_and_fills_err() {
        let mut err: *mut kiln_error = ptr::null_mut();
        let s = guard(&mut err, || panic!("boom"));
        assert_eq!(s, KILN_ERR_PANIC);
        assert!(!err.is_null());
        assert_eq!(crate::errors::kiln_error_status(err), KILN_ERR_PANIC);
        take_free(&mut err);
        assert!(err.is_null());
        assert_eq!(catch(7, || panic!("getter")), 7);
    }

    #[test]
    fn cstring_keeps_text_after_a_nul() {
        assert_eq!(cstring("a\0b").to_str().unwrap(), "a\u{FFFD}b");
    }
}
