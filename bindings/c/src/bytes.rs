//! `kiln_bytes`, an owned byte buffer: `kiln_state_to_bytes` marshals a state into an LLB
//! definition (BuildKit's `pb.Definition`) and `kiln_bytes_data` / `kiln_bytes_len` read it.

use crate::errors::kiln_status;
use crate::ffi::{catch, guard, out_arg, put, ref_arg, take_free};
use crate::state::kiln_state;
use std::ptr;

/// An owned byte buffer (a marshalled LLB definition, or file contents read from a build ref).
/// Immutable; any thread; freed with `kiln_bytes_free`.
#[allow(non_camel_case_types)]
pub struct kiln_bytes {
    data: Vec<u8>,
}

impl kiln_bytes {
    /// A buffer holding `data`.
    pub(crate) fn new(data: Vec<u8>) -> kiln_bytes {
        kiln_bytes { data }
    }
}

/// Marshals `state` into an LLB definition (BuildKit's `pb.Definition` protobuf) in `*out`
/// (caller owns it; free with `kiln_bytes_free`). KILN_ERR_DEFINITION if the graph is invalid.
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_state_to_bytes(state: *const kiln_state, out: *mut *mut kiln_bytes) -> kiln_status {
    guard(ptr::null_mut(), || {
        let out = out_arg(out, "out")?;
        let def = ref_arg(state, "state")?.st.to_definition()?;
        put(out, kiln_bytes { data: def.to_bytes() });
        Ok(())
    })
}

/// The bytes of `bytes` (borrowed: valid until it is freed); NULL if `bytes` is NULL.
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_bytes_data(bytes: *const kiln_bytes) -> *const u8 {
    catch(ptr::null(), || ref_arg(bytes, "bytes").map(|b| b.data.as_ptr()).unwrap_or(ptr::null()))
}

/// The length of `bytes`; 0 if `bytes` is NULL.
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_bytes_len(bytes: *const kiln_bytes) -> usize {
    catch(0, || ref_arg(bytes, "bytes").map(|b| b.data.len()).unwrap_or(0))
}

/// Frees a byte buffer and sets `*bytes` to NULL (NULL / `*bytes == NULL`: no-op).
///
/// Thread safety: see the header preamble.
#[no_mangle]
pub extern "C" fn kiln_bytes_free(bytes: *mut *mut kiln_bytes) {
    take_free(bytes)
}
