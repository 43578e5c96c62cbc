//! `moby.buildkit.v1.Control` served by an [`Engine`]: solves (LLB definitions; exporters and
//! cache exporters by BuildKit's names and attributes), their progress (`Status`), sessions,
//! workers, disk usage and prune. What kiln does not serve yet answers gRPC `Unimplemented` with
//! a message saying what, never a crash or a silent success.

use super::bridge::Forwarder;
use super::proto::control::control_server::Control;
use super::proto::control::{
    BuildHistoryEvent, BuildHistoryRequest, BytesMessage, DiskUsageRequest, DiskUsageResponse, InfoRequest,
    InfoResponse, ListWorkersRequest, ListWorkersResponse, PruneRequest, SolveRequest, SolveResponse, StatusRequest,
    StatusResponse, UpdateBuildHistoryRequest, UpdateBuildHistoryResponse, UsageRecord,
};
use super::proto::types::{BuildkitVersion, WorkerRecord};
use super::session::Sessions;
use super::status::{StatusConverter, StatusHub};
use super::transfer::{send_output, stage_output, SessionLocals, SessionSecrets, Staging};
use super::Drain;
use crate::build::BuildOptions;
use crate::engine::{Engine, SolveOptions, UsageRecord as EngineRecord};
use crate::error::{Error, ErrorKind};
use crate::graph::{Definition, Platform};
use crate::options::{CacheExportSpec, CacheImportSpec, Entitlement, OutputSpec};
use crate::progress::ProgressSink;
use futures::Stream;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The package name `Info` and `ListWorkers` report.
pub const PACKAGE: &str = "kiln";

/// The Control service over one engine.
#[derive(Clone)]
pub struct ControlService {
    engine: Engine,
    hub: StatusHub,
    fwd: Forwarder,
    sessions: Sessions,
    drain: Drain,
}

impl ControlService {
    /// Serves `engine`; builds driven over the LLB bridge are registered in `fwd`.
    pub fn new(engine: Engine, fwd: Forwarder) -> Self {
        ControlService {
            engine,
            hub: StatusHub::default(),
            fwd,
            sessions: Sessions::default(),
            drain: Drain::default(),
        }
    }

    /// Counts this service's solves in `drain` (the server waits for them on shutdown) and lets
    /// it abort them.
    pub fn with_drain(mut self, drain: Drain) -> Self {
        self.drain = drain;
        self
    }
}

/// The engine's workers as BuildKit records (ListWorkers, the gateway's Ping).
pub fn worker_records(engine: &Engine) -> Vec<WorkerRecord> {
    engine
        .workers()
        .into_iter()
        .map(|w| WorkerRecord {
            id: w.name,
            labels: w.labels.into_iter().collect(),
            platforms: vec![Platform::host().to_pb()],
            gc_policy: Vec::new(),
            buildkit_version: Some(version()),
        })
        .collect()
}

/// A kiln error as a gRPC status: the code says what kind of failure, the message is kiln's.
pub fn to_status(e: &Error) -> Status {
    let msg = e.to_string();
    match e.kind() {
        ErrorKind::Definition | ErrorKind::Option => Status::invalid_argument(msg),
        ErrorKind::Unsupported => Status::unimplemented(msg),
        ErrorKind::Cancelled => Status::cancelled(msg),
        ErrorKind::RootInUse => Status::unavailable(msg),
        _ if e.is_not_found() => Status::not_found(msg),
        _ => Status::unknown(msg),
    }
}

fn version() -> BuildkitVersion {
    BuildkitVersion {
        package: PACKAGE.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        revision: String::new(),
    }
}

/// The outputs a request asks for: BuildKit v0.11 sends one exporter by name.
fn outputs(req: &SolveRequest) -> Result<Vec<OutputSpec>, Status> {
    match req.exporter.as_str() {
        "" => Ok(Vec::new()),
        "image" | "moby" => {
            OutputSpec::from_attrs("image", &req.exporter_attrs).map(|o| vec![o]).map_err(|e| to_status(&e))
        }
        // Staged on the daemon and sent to the client after the solve (see `transfer`).
        "local" | "tar" | "oci" => Ok(Vec::new()),
        other => Err(Status::invalid_argument(format!(
            "unknown exporter {other:?}; kiln serve accepts local, tar, oci and image"
        ))),
    }
}

fn cache_options(req: &SolveRequest, opts: &mut SolveOptions) -> Result<(), Status> {
    let Some(cache) = &req.cache else { return Ok(()) };
    let mut exports = cache.exports.clone();
    if !cache.export_ref_deprecated.is_empty() {
        let mut attrs = cache.export_attrs_deprecated.clone();
        attrs.insert("ref".into(), cache.export_ref_deprecated.clone());
        exports.push(super::proto::control::CacheOptionsEntry { r#type: "registry".into(), attrs });
    }
    let mut imports = cache.imports.clone();
    for r in &cache.import_refs_deprecated {
        let attrs = [("ref".to_owned(), r.clone())].into_iter().collect();
        imports.push(super::proto::control::CacheOptionsEntry { r#type: "registry".into(), attrs });
    }
    let session_only = |what: &str, kind: &str| {
        Status::unimplemented(format!(
            "a cache {what} of type={kind} goes through the client's content store (session), which kiln serve \
             does not serve yet; use type=registry"
        ))
    };
    for e in &exports {
        if e.r#type == "local" {
            return Err(session_only("export", "local"));
        }
        opts.cache_exports.push(CacheExportSpec::from_attrs(&e.r#type, &e.attrs).map_err(|e| to_status(&e))?);
    }
    for e in &imports {
        if e.r#type == "local" {
            return Err(session_only("import", "local"));
        }
        opts.cache_imports.push(CacheImportSpec::from_attrs(&e.r#type, &e.attrs).map_err(|e| to_status(&e))?);
    }
    Ok(())
}

/// Everything of a request but the definition, as kiln's solve options.
fn solve_options(req: &SolveRequest) -> Result<SolveOptions, Status> {
    if !req.frontend.is_empty() {
        return Err(Status::unimplemented(format!(
            "frontend {:?} is not supported by kiln serve yet; send an LLB definition (buildctl build < def.pb)",
            req.frontend
        )));
    }
    if !req.frontend_inputs.is_empty() {
        return Err(Status::unimplemented("frontend inputs need a frontend; kiln serve takes an LLB definition"));
    }
    if req.source_policy.as_ref().is_some_and(|p| !p.rules.is_empty()) {
        return Err(Status::unimplemented("source policies are not supported by kiln serve"));
    }
    let mut opts = SolveOptions { outputs: outputs(req)?, ..Default::default() };
    cache_options(req, &mut opts)?;
    for e in &req.entitlements {
        opts.entitlements.insert(e.parse::<Entitlement>().map_err(|e| to_status(&e))?);
    }
    Ok(opts)
}

fn record(r: EngineRecord) -> UsageRecord {
    let t = prost_types::Timestamp::from(UNIX_EPOCH + Duration::from_secs(r.last_used));
    UsageRecord {
        id: r.id,
        size: i64::try_from(r.size).unwrap_or(i64::MAX),
        created_at: Some(t),
        last_used_at: Some(t),
        description: r.description,
        record_type: r.record_type,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn disk_usage(&self, req: Request<DiskUsageRequest>) -> Result<Response<DiskUsageResponse>, Status> {
        if !req.get_ref().filter.is_empty() {
            return Err(Status::unimplemented("disk usage filters are not supported by kiln serve"));
        }
        let records = self.engine.disk_usage().await.map_err(|e| to_status(&e))?;
        Ok(Response::new(DiskUsageResponse { record: records.into_iter().map(record).collect() }))
    }

    type PruneStream = BoxStream<UsageRecord>;

    async fn prune(&self, req: Request<PruneRequest>) -> Result<Response<Self::PruneStream>, Status> {
        let req = req.into_inner();
        if !req.filter.is_empty() || req.keep_duration != 0 {
            return Err(Status::unimplemented("prune filters and keep-duration are not supported by kiln serve"));
        }
        let before = self.engine.disk_usage().await.map_err(|e| to_status(&e))?;
        let keep = u64::try_from(req.keep_bytes).unwrap_or(0);
        // buildctl's plain `prune` (no --all) keeps nothing either way but shared records;
        // kiln has no internal records to keep, so both remove down to keep-storage.
        self.engine.prune(keep, req.all || keep == 0).await.map_err(|e| to_status(&e))?;
        let after: std::collections::BTreeSet<String> =
            self.engine.disk_usage().await.map_err(|e| to_status(&e))?.into_iter().map(|r| r.id).collect();
        let removed: Vec<Result<UsageRecord, Status>> =
            before.into_iter().filter(|r| !after.contains(&r.id)).map(|r| Ok(record(r))).collect();
        Ok(Response::new(Box::pin(futures::stream::iter(removed))))
    }

    async fn solve(&self, req: Request<SolveRequest>) -> Result<Response<SolveResponse>, Status> {
        // Counted while it runs (shutdown drains running solves); dropped, hence cancelled, when
        // the drain's bound passes.
        let _running = self.drain.enter();
        let aborted = self.drain.aborted();
        tokio::select! {
            r = self.solve_inner(req) => r,
            () = aborted => Err(Status::unavailable("kiln serve is shutting down: the solve was cancelled after the drain timeout")),
        }
    }

    type StatusStream = BoxStream<StatusResponse>;

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<Self::StatusStream>, Status> {
        let rx = self.hub.subscribe(&req.get_ref().r#ref);
        Ok(Response::new(Box::pin(futures::StreamExt::map(UnboundedReceiverStream::new(rx), Ok))))
    }

    type SessionStream = BoxStream<BytesMessage>;

    async fn session(&self, req: Request<Streaming<BytesMessage>>) -> Result<Response<Self::SessionStream>, Status> {
        let md = req.metadata().clone();
        let out = self.sessions.attach(&md, req.into_inner()).await?;
        Ok(Response::new(Box::pin(out)))
    }

    async fn list_workers(&self, req: Request<ListWorkersRequest>) -> Result<Response<ListWorkersResponse>, Status> {
        if !req.get_ref().filter.is_empty() {
            return Err(Status::unimplemented("worker filters are not supported by kiln serve"));
        }
        Ok(Response::new(ListWorkersResponse { record: worker_records(&self.engine) }))
    }

    async fn info(&self, _req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse { buildkit_version: Some(version()) }))
    }

    type ListenBuildHistoryStream = BoxStream<BuildHistoryEvent>;

    async fn listen_build_history(
        &self,
        _req: Request<BuildHistoryRequest>,
    ) -> Result<Response<Self::ListenBuildHistoryStream>, Status> {
        Err(Status::unimplemented("build history is not recorded by kiln serve"))
    }

    async fn update_build_history(
        &self,
        _req: Request<UpdateBuildHistoryRequest>,
    ) -> Result<Response<UpdateBuildHistoryResponse>, Status> {
        Err(Status::unimplemented("build history is not recorded by kiln serve"))
    }
}

impl ControlService {
    async fn solve_inner(&self, req: Request<SolveRequest>) -> Result<Response<SolveResponse>, Status> {
        let req = req.into_inner();
        tracing::debug!(
            reference = %req.r#ref,
            definition = req.definition.as_ref().map(|d| d.def.len()),
            frontend = %req.frontend,
            exporter = %req.exporter,
            "solve request"
        );
        if req.r#ref.is_empty() {
            return Err(Status::invalid_argument("a solve needs a Ref (the build id Status follows)"));
        }
        let mut opts = solve_options(&req)?;
        let session = match req.session.as_str() {
            "" => None,
            id => Some(self.sessions.get(id).await?),
        };
        let needs_session = |what: &str| {
            Status::failed_precondition(format!("{what} comes from the client's session, and this solve names none"))
        };
        let mut staging = Staging::new();
        if let Some(s) = &session {
            opts.local_provider = Some(SessionLocals::new(s.clone(), self.engine.root()));
            opts.secret_provider = Some(SessionSecrets::new(s.clone()));
        }
        let client_output = match req.exporter.as_str() {
            kind @ ("local" | "tar" | "oci") => {
                let (spec, out) = stage_output(kind, &req.exporter_attrs, &mut staging)?;
                opts.outputs.push(spec);
                Some(out)
            }
            _ => None,
        };
        if client_output.is_some() && session.is_none() {
            return Err(needs_session(&format!("the {} output", req.exporter)));
        }
        let reference = req.r#ref.clone();
        self.hub.start(&reference);
        let hub = self.hub.clone();
        let conv = Arc::new(Mutex::new(StatusConverter::default()));
        let r = reference.clone();
        opts.progress = ProgressSink::new(move |ev| {
            let update = conv.lock().unwrap_or_else(|p| p.into_inner()).convert(ev);
            hub.publish(&r, update);
        });
        // Dropping this future (the client went away) cancels the solve: its containers are
        // killed and its snapshots released by the engine.
        let finish = FinishOnDrop { hub: self.hub.clone(), reference: reference.clone() };
        let result = match req.definition.clone() {
            Some(def) => {
                let def = Definition::from_pb(def).map_err(|e| to_status(&e))?;
                self.engine.solve(&def, opts).await
            }
            // BuildKit's clients (buildctl build, client.Build) send no definition: they drive
            // the build from their side over the LLB bridge, keyed by this Ref.
            None => {
                let fwd = self.fwd.clone();
                let build = BuildOptions { solve: opts, frontend_attrs: req.frontend_attrs.clone() };
                self.engine
                    .build(build, move |ctx| async move {
                        let (_registered, returned) = fwd.register(&reference, ctx);
                        match returned.await {
                            Ok(outcome) => outcome,
                            Err(_) => Err(Error::new(
                                ErrorKind::Cancelled,
                                "the build ended before its client returned a result",
                            )),
                        }
                    })
                    .await
            }
        };
        let result = result.map_err(|e| to_status(&e));
        let result = match (result, &client_output, &session) {
            (Ok(r), Some(out), Some(s)) => send_output(s, out, &req.exporter_attrs).await.map(|()| r),
            (r, _, _) => r,
        };
        drop(finish);
        drop(staging);
        Ok(Response::new(SolveResponse { exporter_response: result?.exporter_response }))
    }
}

/// Ends the build's status stream however the solve ends (returned, failed, or dropped).
struct FinishOnDrop {
    hub: StatusHub,
    reference: String,
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.hub.finish(&self.reference);
    }
}
