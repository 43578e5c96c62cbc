//! The solver side of a client-side build (BuildKit's `solver/llbsolver/bridge.go`): a
//! [`BuildSession`] runs the inner solves of one build on the engine's solver — same key locks,
//! same cache, same parallelism limiter, so identical work dedups across builds and plain solves —
//! hands back lazily loaded results ([`SolvedRef`]), exports the final one through the same
//! exporters and cache exporters as a solve, and on close aborts every task the build started.

use super::refs::ResultRef;
use super::tasks::{TaskCount, TaskToken};
use super::{cache_export, exporters, lock, Solve, SolveOptions, Solver};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::graph::{Definition, ImageConfig};
use crate::options::{CacheImportSpec, OutputSpec};
use crate::progress::ProgressEvent;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The inner solves of one client-side build and what they hold.
#[derive(Debug)]
pub(crate) struct BuildSession {
    solver: Arc<Solver>,
    /// The build's options (outputs, cache exports and imports, progress, secrets, ...), given to
    /// every inner solve; its `cancel` is handled by the build, not by each solve.
    opts: SolveOptions,
    /// Every task of the build (vertex tasks, import and read threads): the build ends once it
    /// is idle.
    tasks: Arc<TaskCount>,
    /// One registry interrupt for every inner solve, fired when the build ends.
    interrupt: crate::registry::Interrupt,
    /// Every inner solve started, so the build can abort their tasks when it ends.
    solves: Mutex<Vec<Arc<Solve>>>,
    /// Set when the build ended: refs can no longer be read, no solve can start.
    closed: AtomicBool,
}

impl std::fmt::Debug for Solve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Solve").field("vertices", &self.def.len()).finish()
    }
}

/// An inner solve's result: output `output` of the solve's definition (`None`: the empty
/// filesystem). Loaded on demand: a result known to the local or an imported cache is fetched
/// only when read, evaluated or exported.
#[derive(Debug, Clone)]
pub(crate) struct SolvedRef {
    solve: Arc<Solve>,
    output: Option<(Digest, i64)>,
}

impl SolvedRef {
    /// The result's snapshot, loaded (executed, or applied from an imported cache) if needed;
    /// `None` for the empty filesystem. Memoised by the solve: a second call costs a lookup.
    pub async fn load(&self) -> Result<Option<ResultRef>> {
        match &self.output {
            None => Ok(None),
            Some((d, i)) => self.solve.output_ref(d, *i).await,
        }
    }

    /// The op digest and output index of the result (`None`: the empty filesystem).
    pub fn output(&self) -> Option<&(Digest, i64)> {
        self.output.as_ref()
    }
}

impl BuildSession {
    /// Where the build's registry logins come from (a daemon's client session), if anywhere.
    pub(crate) fn registry_credentials(&self) -> Option<Arc<dyn crate::solver::CredentialProvider>> {
        self.opts.registry_credentials.clone()
    }

    /// A session on `solver` whose inner solves use `opts` (its `cancel` is ignored: the build
    /// cancels by ending the session).
    pub fn new(solver: Arc<Solver>, mut opts: SolveOptions) -> Arc<BuildSession> {
        opts.cancel = None;
        Arc::new(BuildSession {
            solver,
            opts,
            tasks: Arc::default(),
            interrupt: Default::default(),
            solves: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// True once the build ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The error of using the build after it ended.
    pub fn closed_error() -> Error {
        Error::new(
            ErrorKind::Unsupported,
            "the build has ended and released its refs; read them inside the build function",
        )
    }

    /// The engine's scratch directory.
    pub fn tmp(&self) -> &Path {
        self.solver.cache.tmp()
    }

    /// Emits a progress event on the build's sink.
    pub fn emit(&self, e: ProgressEvent) {
        self.opts.progress.emit(e)
    }

    /// Tokens counting a blocking thread of the build as a live task (engine and build).
    pub fn tokens(&self) -> (TaskToken, TaskToken) {
        (self.solver.tasks.token(), self.tasks.token())
    }

    /// Solves `def` with the build's options plus `imports` and `locals`; the result is loaded now when
    /// `evaluate` is set or when neither the local nor an imported cache knows it, else lazily.
    pub async fn solve(
        self: &Arc<Self>,
        def: &Definition,
        imports: Vec<CacheImportSpec>,
        locals: std::collections::BTreeMap<String, std::path::PathBuf>,
        evaluate: bool,
    ) -> Result<SolvedRef> {
        if self.is_closed() {
            return Err(Self::closed_error());
        }
        self.opts.check(def)?;
        let mut opts = self.opts.clone();
        opts.locals.extend(locals);
        for i in imports {
            if !opts.cache_imports.iter().any(|c| c.to_string() == i.to_string()) {
                opts.cache_imports.push(i);
            }
        }
        let registry = crate::registry::ClientSettings {
            options: self.solver.registry.clone(),
            interrupt: self.interrupt.clone(),
            logins: self.opts.registry_credentials.clone().and_then(crate::registry::LoginSource::new),
        };
        let solve = Solve::start(self.solver.clone(), def, opts, self.tasks.clone(), registry).await?;
        lock(&self.solves).push(solve.clone());
        // The build may have ended while the imports loaded: its close did not see this solve.
        if self.is_closed() {
            solve.abort_all();
            return Err(Self::closed_error());
        }
        let output = def.output();
        if let Some((d, i)) = &output {
            if evaluate || !solve.known(d, *i).await? {
                solve.output_ref(d, *i).await?;
            }
        }
        solve.finish_unreported();
        Ok(SolvedRef { solve, output })
    }

    /// Exports `result` (`None`: the empty filesystem) to `outputs` with `image_config`, then,
    /// with `cache_exports`, runs the build's cache exporters over the result's graph (as
    /// BuildKit exports the cache of the result it was returned).
    pub async fn export(
        &self,
        result: Option<&SolvedRef>,
        outputs: &[OutputSpec],
        image_config: &ImageConfig,
        cache_exports: bool,
    ) -> Result<BTreeMap<String, String>> {
        if outputs.is_empty() && (!cache_exports || self.opts.cache_exports.is_empty()) {
            return Ok(BTreeMap::new());
        }
        let solve = match result {
            Some(r) => r.solve.clone(),
            None => {
                let empty = Definition::from_pb(Default::default())?;
                let registry = crate::registry::ClientSettings {
                    options: self.solver.registry.clone(),
                    interrupt: self.interrupt.clone(),
                    logins: self.opts.registry_credentials.clone().and_then(crate::registry::LoginSource::new),
                };
                let s =
                    Solve::start(self.solver.clone(), &empty, self.opts.clone(), self.tasks.clone(), registry).await?;
                lock(&self.solves).push(s.clone());
                s
            }
        };
        let loaded = match result {
            Some(r) if !outputs.is_empty() || cache_exports => r.load().await?,
            _ => None,
        };
        let response = exporters::run_with(&solve, loaded.as_ref(), outputs, image_config).await?;
        if cache_exports {
            cache_export::run(&solve).await?;
        }
        Ok(response)
    }

    /// The build's cache exporters and outputs (from its options).
    pub fn opts(&self) -> &SolveOptions {
        &self.opts
    }

    /// (cached, executed) vertices over every inner solve.
    pub fn counts(&self) -> (usize, usize) {
        lock(&self.solves).iter().map(|s| s.counts()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// Ends the build: no ref can be read and no solve start any more, registry requests are
    /// interrupted and every vertex task of every inner solve is aborted. [`Self::wait_idle`]
    /// then waits for their guards (containers, mounts, active snapshots).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.interrupt.fire();
        let solves = std::mem::take(&mut *lock(&self.solves));
        for s in &solves {
            s.abort_all();
        }
    }

    /// Returns once every task of the build (vertex tasks, import and read threads) has ended.
    pub async fn wait_idle(&self) {
        self.tasks.wait_idle().await
    }
}
