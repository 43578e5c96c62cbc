//! [`BuildContext`]: what a client-side build function is given (BuildKit's `LLBBridge` seen
//! from a gateway client): inner solves, warnings, the frontend options and the set-once result.
//! It also tracks every [`Ref`] it handed out, so the build can release them all when it ends.

use super::reference::{Ref, RefInner, RefKind, RemoteRef};
use super::remote::RemoteBridge;
use super::BuildOutput;
use crate::error::{Error, Result};
use crate::graph::{Definition, State};
use crate::options::CacheImportSpec;
use crate::progress::ProgressEvent;
use crate::solver::BuildSession;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

/// What one inner solve asks for besides its definition.
#[derive(Debug, Clone, Default)]
pub struct SolveRequest {
    /// Cache imports for this solve, on top of the build's own (which apply to every inner solve).
    pub cache_imports: Vec<CacheImportSpec>,
    /// Load the result now even when the local or an imported cache already knows it (BuildKit's
    /// `Evaluate`); otherwise a known result is loaded when first read, evaluated or exported.
    pub evaluate: bool,
    /// Local directories for this solve, on top of (and replacing same-named) ones of the build
    /// (a daemon syncs a client's dirs per solve, as they are named).
    pub locals: std::collections::BTreeMap<String, std::path::PathBuf>,
}

/// The handle a build function uses: solve definitions into [`Ref`]s, warn, read the frontend
/// options, set the result. Cheap to clone, `Send + Sync + 'static`: clones may solve
/// concurrently (e.g. with `tokio::join!`), from any task or thread.
#[derive(Debug, Clone)]
pub struct BuildContext {
    inner: Arc<CtxInner>,
}

/// Where a context's solves run: the embedded solver, or a daemon's LLB bridge.
#[derive(Debug, Clone)]
pub(super) enum Backend {
    Local(Arc<BuildSession>),
    Remote(Arc<dyn RemoteBridge>),
}

#[derive(Debug)]
struct CtxInner {
    backend: Backend,
    attrs: BTreeMap<String, String>,
    /// The result set with [`BuildContext::set_result`].
    result: Mutex<Option<BuildOutput>>,
    /// Every ref handed out (weakly: a ref dropped early releases its view at once), shared
    /// with the contexts derived from this one.
    refs: Arc<Mutex<Vec<Weak<RefInner>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The error of setting a build's result a second time (or returning one after it was set):
/// [`crate::ErrorKind::Definition`], as the build's definition of its result is what is wrong.
pub(super) fn result_already_set() -> Error {
    Error::definition(None, "result already set: a build's result is set once, by set_result or by returning it")
}

impl BuildContext {
    pub(super) fn new(session: Arc<BuildSession>, attrs: BTreeMap<String, String>) -> BuildContext {
        Self::with_backend(Backend::Local(session), attrs)
    }

    /// The context of a build a daemon runs: its solves and reads go through `bridge`.
    pub fn remote(bridge: Arc<dyn RemoteBridge>, attrs: BTreeMap<String, String>) -> BuildContext {
        Self::with_backend(Backend::Remote(bridge), attrs)
    }

    /// Where this build's registry logins come from (a daemon's client session), if anywhere.
    pub(crate) fn registry_credentials(&self) -> Option<Arc<dyn crate::solver::CredentialProvider>> {
        match &self.inner.backend {
            Backend::Local(s) => s.registry_credentials(),
            Backend::Remote(_) => None,
        }
    }

    fn with_backend(backend: Backend, attrs: BTreeMap<String, String>) -> BuildContext {
        BuildContext {
            inner: Arc::new(CtxInner { backend, attrs, result: Mutex::new(None), refs: Default::default() }),
        }
    }

    /// Solves `def` on the engine (sharing work with every other solve and build there) with
    /// the build's options and `req`; the result is a [`Ref`] to read or return.
    pub async fn solve(&self, def: &Definition, req: SolveRequest) -> Result<Ref> {
        let session = match &self.inner.backend {
            Backend::Local(s) => s,
            Backend::Remote(bridge) => {
                let id = bridge.solve(def, &req).await?;
                let output = def.output();
                return Ok(Ref { inner: RefKind::Remote(Arc::new(RemoteRef { bridge: bridge.clone(), id, output })) });
            }
        };
        let solved = session.solve(def, req.cache_imports, req.locals, req.evaluate).await?;
        let inner = Arc::new(RefInner { session: session.clone(), solved, view: Mutex::new(None) });
        let mut refs = lock(&self.inner.refs);
        // Forget refs already dropped, so a long build's list stays as long as its live refs.
        refs.retain(|w| w.strong_count() > 0);
        refs.push(Arc::downgrade(&inner));
        Ok(Ref { inner: RefKind::Local(inner) })
    }

    /// [`BuildContext::solve`] of a [`State`]'s definition.
    pub async fn solve_state(&self, state: &State, req: SolveRequest) -> Result<Ref> {
        self.solve(&state.to_definition()?, req).await
    }

    /// Sets the build's result. Once only: a second call is a [`crate::ErrorKind::Definition`]
    /// error "result already set" (the first result stays), and so is the build function then
    /// returning a result of its own.
    pub fn set_result(&self, output: BuildOutput) -> Result<()> {
        let mut slot = lock(&self.inner.result);
        if slot.is_some() {
            return Err(result_already_set());
        }
        *slot = Some(output);
        Ok(())
    }

    /// A warning about vertex `vertex` (an op digest, or any name the caller shows), reported as
    /// a [`ProgressEvent::Warning`] on the build's progress sink (`vertex: message`).
    pub fn warn(&self, vertex: &str, message: &str) {
        tracing::warn!(vertex, message, "build warning");
        match &self.inner.backend {
            Backend::Local(s) => s.emit(ProgressEvent::Warning { message: format!("{vertex}: {message}") }),
            Backend::Remote(bridge) => {
                // Shown by the daemon in the build's progress; a failure to deliver is only logged.
                let (bridge, vertex, message) = (bridge.clone(), vertex.to_owned(), message.to_owned());
                tokio::spawn(async move {
                    if let Err(e) = bridge.warn(&vertex, &message).await {
                        tracing::debug!(error = %e, "a build warning did not reach the daemon");
                    }
                });
            }
        }
    }

    /// A context of the same build whose frontend options are `attrs` (a frontend run inside
    /// the build, as a gateway client's `Solve` with a frontend asks): its solves and refs are
    /// the build's — released when the build ends —; its result slot is its own.
    pub fn with_frontend_attrs(&self, attrs: BTreeMap<String, String>) -> BuildContext {
        BuildContext {
            inner: Arc::new(CtxInner {
                backend: self.inner.backend.clone(),
                attrs,
                result: Mutex::new(None),
                refs: self.inner.refs.clone(),
            }),
        }
    }

    /// The build's frontend options (BuildKit's `FrontendOpt`s), `cache-imports` included.
    pub fn frontend_attrs(&self) -> &BTreeMap<String, String> {
        &self.inner.attrs
    }

    /// The result set with [`BuildContext::set_result`], taken.
    pub(crate) fn take_result(&self) -> Option<BuildOutput> {
        lock(&self.inner.result).take()
    }

    /// Releases every ref's view (the build ended) and the result slot's refs.
    pub(super) fn release(&self) {
        drop(self.take_result());
        let refs = std::mem::take(&mut *lock(&self.inner.refs));
        for r in refs.iter().filter_map(Weak::upgrade) {
            r.release();
        }
    }
}
