//! The binding's one tokio runtime per process, created lazily and recreated after `fork()`
//! (a forked child inherits the runtime's memory but none of its threads), plus the
//! pyo3-async-runtimes glue that lets `solve_async` run on it.

use pyo3_async_runtimes::generic::{ContextExt, Runtime as GenericRuntime};
use pyo3_async_runtimes::TaskLocals;
use std::cell::OnceCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use tokio::runtime::Runtime;

/// The runtime of this process and the pid that created it.
static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// The runtime of the current process, created on first use. After a fork the parent's
/// runtime is leaked (its worker threads do not exist in the child, so dropping it could hang)
/// and a fresh one is built.
pub fn runtime() -> std::io::Result<&'static Runtime> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((owner, rt)) = *slot {
        if owner == pid {
            return Ok(rt);
        }
        tracing::debug!(parent = owner, child = pid, "process forked: creating a new tokio runtime");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("kiln-py").build()?;
    let rt: &'static Runtime = Box::leak(Box::new(rt));
    *slot = Some((pid, rt));
    Ok(rt)
}

/// The runtime, or a panic with the reason. Only reached from [`KilnRuntime`], which
/// pyo3-async-runtimes calls after `solve_async` has already created the runtime with
/// [`runtime`] (reporting a failure as a Python exception); pyo3 turns a panic here into a
/// `PanicException` rather than aborting.
fn runtime_for_spawn() -> &'static Runtime {
    match runtime() {
        Ok(rt) => rt,
        Err(e) => panic!("kiln: cannot start the tokio runtime: {e}"),
    }
}

tokio::task_local! {
    static TASK_LOCALS: OnceCell<TaskLocals>;
}

/// pyo3-async-runtimes' view of [`runtime`]: spawns there and keeps the asyncio task locals
/// (event loop, contextvars) of each future.
pub struct KilnRuntime;

impl GenericRuntime for KilnRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle = tokio::task::JoinHandle<()>;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        runtime_for_spawn().spawn(fut)
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        runtime_for_spawn().spawn_blocking(f)
    }
}

impl ContextExt for KilnRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS.try_with(|c| c.get().cloned()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_is_created_once_per_process() {
        let a = runtime().unwrap() as *const Runtime;
        let b = runtime().unwrap() as *const Runtime;
        assert_eq!(a, b);
        assert_eq!(runtime().unwrap().block_on(async { 1 + 1 }), 2);
    }
}
