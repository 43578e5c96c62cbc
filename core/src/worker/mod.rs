//! Workers: an executor (runc via an OCI runtime bundle) plus a snapshotter plus labels.

pub mod exec;
mod insecure;
mod mountstub;
pub mod platform;
pub mod pool;
mod rootpath;
pub mod runc;
mod spec;
pub mod user;

pub use exec::{ExecMount, ExecRequest, MountSource, NetworkMode, OutputSink, OutputStream, SecurityMode, Ulimit};
pub use runc::RuncExecutor;
pub(crate) use spec::add_default_path;
pub use user::resolve_user;
