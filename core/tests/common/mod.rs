//! Helpers shared by kiln's integration tests.

pub mod busybox;
pub mod kit;
pub mod registry;
pub mod fault;
