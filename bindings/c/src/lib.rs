//! # kiln-capi: the C face of kiln
//!
//! Owns the C ABI (`include/kiln.h` is generated from this crate by `scripts/gen-header`). Every
//! exported function follows rustls-ffi's rules: fallible functions return `kiln_status` with
//! outputs through out-parameters; every pointer is NULL-checked; a panic never crosses the
//! boundary; handles are opaque; `const` first arguments are never mutated.
//!
//! Modules: [`ffi`] (the boundary helpers), [`errors`] (status numbers and error objects),
//! [`state`] (the graph builder), [`solve`] (solve options and progress), [`engine`] (engine,
//! solve, results).
#![allow(clippy::not_unsafe_ptr_arg_deref)] // C callers cannot see `unsafe`; the contract is in kiln.h.

pub mod engine;
pub mod errors;
mod ffi;
pub mod solve;
pub mod state;

use std::ffi::c_char;

/// The library version (`"0.1.0"`). Static storage: never free it.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
