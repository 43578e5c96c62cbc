//! # kiln-capi: the C face of kiln
//!
//! Owns the C ABI (`include/kiln.h` is generated from this crate by `scripts/gen-header`). Every
//! exported function follows rustls-ffi's rules: fallible functions return `kiln_status` with
//! outputs through out-parameters; every pointer is NULL-checked; a panic never crosses the
//! boundary; handles are opaque; `const` first arguments are never mutated.
//!
//! Modules: [`ffi`] (the boundary helpers), [`errors`] (status numbers and error objects),
//! the graph builder ([`state`]: states, sources, metadata, merge; [`exec_opts`]: runs and their
//! options; [`file_ops`]: file actions; [`bytes`]: marshalled definitions), [`solve`] (solve options
//! and progress), [`engine`] (engine, solve, results), [`build`] (client-side builds: the build
//! callback, its context, refs and their reads). Thread-safety and ownership rules hold for
//! every function and are stated once, in the kiln.h preamble (`cbindgen.toml`).
#![allow(clippy::not_unsafe_ptr_arg_deref)] // C callers cannot see `unsafe`; the contract is in kiln.h.

pub mod engine;
pub mod errors;
mod ffi;
pub mod solve;

// The graph builder, in this order so the generated header keeps its layout.
pub mod state;

pub mod exec_opts;

pub mod file_ops;

pub mod bytes;

pub mod image;

pub mod build;
/// A Dockerfile in a directory as a state (`kiln_dockerfile`, `kiln_engine_dockerfile`).
pub mod dockerfile;

use std::ffi::c_char;

/// The library version (`"0.1.0"`). Static storage: never free it.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn kiln_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
