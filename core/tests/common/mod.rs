//! Helpers shared by kiln's integration tests.

pub mod busybox;
pub mod fault;
pub mod kit;
pub mod registry;
