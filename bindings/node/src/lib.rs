//! kiln-node: the napi-rs addon behind the `kiln` npm package. It owns only the translation
//! between JavaScript values and kiln's public face (`kiln::Engine`, `kiln::graph`,
//! `kiln::Error`); all behaviour lives in core. Async work runs on napi's tokio runtime.
#![deny(clippy::unwrap_used)]

pub mod build;
pub mod engine;
pub mod errors;
pub mod graph;
pub mod opts;
