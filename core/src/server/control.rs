//! `moby.buildkit.v1.Control` served by an [`Engine`]: solves (LLB definitions; exporters and
//! cache exporters by BuildKit's names and attributes), their progress (`Status`), sessions,
//! workers, disk usage and prune. What kiln does not serve yet answers gRPC `Unimplemented` with
//! a message saying what, never a crash or a silent success.

use super::bridge::Forwarder;
use super::cache_store::{fetch_import, upload_export, ClientStore, CACHE_MANIFEST_KEY};
use super::proto::control::control_server::Control;
use super::proto::control::{
    BuildHistoryEvent, BuildHistoryRequest, BytesMessage, DiskUsageRequest, DiskUsageResponse, InfoRequest,
    InfoResponse, ListWorkersRequest, ListWorkersResponse, PruneRequest, SolveRequest, SolveResponse, StatusRequest,
    StatusResponse, UpdateBuildHistoryRequest, UpdateBuildHistoryResponse, UsageRecord,
};
use super::proto::types::{BuildkitVersion, WorkerRecord};
use super::session::Sessions;
use super::status::{StatusConverter, StatusHub};
use super::transfer::{send_output, stage_output, KeptLocals, SessionLocals, SessionSecrets, Staging};
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
    kept: Arc<KeptLocals>,
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
            kept: Arc::default(),
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
    let mut status = match e.kind() {
        ErrorKind::Definition | ErrorKind::Option => Status::invalid_argument(msg),
        ErrorKind::Unsupported => Status::unimplemented(msg),
        ErrorKind::Cancelled => Status::cancelled(msg),
        ErrorKind::RootInUse => Status::unavailable(msg),
        _ if e.is_not_found() => Status::not_found(msg),
        _ => Status::unknown(msg),
    };
    // kiln's own clients read the exact kind back (`kiln::client`); other clients ignore it.
    status
        .metadata_mut()
        .insert(crate::client::ERROR_KIND_KEY, tonic::metadata::MetadataValue::from_static(e.kind().as_str()));
    status
}

/// Refuses frontend options that would read the daemon's disk: a named context
/// `oci-layout://DIR` (kiln's layout identifier carries the directory; BuildKit's names the
/// client's session store).
pub fn check_frontend_attrs(attrs: &std::collections::BTreeMap<String, String>) -> Result<(), Status> {
    if let Some((k, v)) = attrs.iter().find(|(k, v)| k.starts_with("context:") && v.starts_with("oci-layout://")) {
        return Err(Status::unimplemented(format!(
            "the named context {k}={v} is not served by kiln serve (an oci-layout directory would be read on \
             the daemon's disk); use docker-image://, local: or https:// contexts"
        )));
    }
    Ok(())
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

/// A `type=local` cache export whose directory is on the client: staged on the daemon, then
/// uploaded into the client's content store (see `cache_store`).
struct ClientCacheExport {
    dir: String,
    staging: std::path::PathBuf,
    tag: String,
}

/// A `type=local` cache import from the client's store: the manifest buildctl named by digest.
struct ClientCacheImport {
    dir: String,
    digest: crate::digest::Digest,
    staging: std::path::PathBuf,
}

/// The cache exports and imports of a request. Local ones name directories on the client, which
/// are reached through its session's content store: they are staged in `staging` and returned
/// for the caller to transfer.
fn cache_options(
    req: &SolveRequest,
    opts: &mut SolveOptions,
    staging: &mut Staging,
) -> Result<(Vec<ClientCacheExport>, Vec<ClientCacheImport>), Status> {
    let (mut client_exports, mut client_imports) = (Vec::new(), Vec::new());
    let Some(cache) = &req.cache else { return Ok((client_exports, client_imports)) };
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
    for e in &exports {
        let mut attrs = e.attrs.clone();
        if e.r#type == "local" {
            let dir = attrs.remove("dest").or_else(|| attrs.remove("store")).unwrap_or_default();
            if dir.is_empty() {
                return Err(Status::invalid_argument("a cache export of type=local needs dest=DIR"));
            }
            let d = staging.dir()?;
            attrs.insert("dest".into(), d.display().to_string());
            let spec = CacheExportSpec::from_attrs("local", &attrs).map_err(|e| to_status(&e))?;
            let tag = match &spec.target {
                crate::options::CacheTarget::Local { tag, .. } => tag.clone(),
                _ => "latest".to_owned(),
            };
            opts.cache_exports.push(spec);
            client_exports.push(ClientCacheExport { dir, staging: d, tag });
            continue;
        }
        opts.cache_exports.push(CacheExportSpec::from_attrs(&e.r#type, &attrs).map_err(|e| to_status(&e))?);
    }
    for e in &imports {
        if e.r#type == "local" {
            let dir = e.attrs.get("src").or_else(|| e.attrs.get("store")).cloned().unwrap_or_default();
            let digest = e.attrs.get("digest").map(String::as_str).unwrap_or_default();
            if dir.is_empty() || digest.is_empty() {
                return Err(Status::invalid_argument(
                    "a cache import of type=local through kiln serve needs src=DIR and the digest=sha256:... the \
                     client read from DIR's index.json (buildctl sends both)",
                ));
            }
            let digest = crate::digest::Digest::parse(digest).map_err(|e| to_status(&e))?;
            let d = staging.dir()?;
            let attrs = [("src".to_owned(), d.display().to_string()), ("digest".to_owned(), digest.to_string())]
                .into_iter()
                .collect();
            opts.cache_imports.push(CacheImportSpec::from_attrs("local", &attrs).map_err(|e| to_status(&e))?);
            client_imports.push(ClientCacheImport { dir, digest, staging: d });
            continue;
        }
        opts.cache_imports.push(CacheImportSpec::from_attrs(&e.r#type, &e.attrs).map_err(|e| to_status(&e))?);
    }
    Ok((client_exports, client_imports))
}

/// BuildKit's `cache-imports` frontend attribute (JSON) with each `local` import's `src` pointed
/// at its staging layout, so a frontend's solves import what the client's store holds. A local
/// entry the request's cache options do not name is dropped: its directory is the client's, and
/// the daemon must never read a path a client names on the daemon's own disk.
fn rewrite_cache_imports_attr(attrs: &mut std::collections::BTreeMap<String, String>, imports: &[ClientCacheImport]) {
    let Some(json) = attrs.get(crate::build::CACHE_IMPORTS_ATTR) else { return };
    let Ok(list) = serde_json::from_str::<Vec<serde_json::Value>>(json) else { return };
    let mut kept = Vec::with_capacity(list.len());
    for mut entry in list {
        let local = entry.get("Type").and_then(|t| t.as_str()) == Some("local");
        if !local {
            kept.push(entry);
            continue;
        }
        let Some(a) = entry.get_mut("Attrs").and_then(|a| a.as_object_mut()) else { continue };
        let src = a.get("src").or_else(|| a.get("store")).and_then(|s| s.as_str()).unwrap_or_default().to_owned();
        match imports.iter().find(|i| i.dir == src) {
            Some(i) => {
                a.remove("store");
                a.insert("src".into(), serde_json::Value::String(i.staging.display().to_string()));
                a.insert("digest".into(), serde_json::Value::String(i.digest.to_string()));
                kept.push(entry);
            }
            None => tracing::warn!(src = %src, "ignoring a local cache import the solve's cache options do not name"),
        }
    }
    if let Ok(s) = serde_json::to_string(&kept) {
        attrs.insert(crate::build::CACHE_IMPORTS_ATTR.to_owned(), s);
    }
}

/// Refuses sources that would read the *daemon's* disk at a path the client names: kiln's
/// `oci-layout://DIR` (BuildKit's reads the client's session store, which kiln serve does not
/// serve) and git remotes that are local paths or `file://` URLs. A client reaches its own files
/// through `local://` sources, synced over its session.
pub fn check_client_sources(def: &Definition) -> Result<(), Status> {
    use crate::graph::op::Op;
    use crate::graph::SourceSpec;
    for v in def.vertices() {
        let Op::Source(s) = &v.typed else { continue };
        match &s.spec {
            SourceSpec::OciLayout { path, .. } => {
                return Err(Status::unimplemented(format!(
                    "oci-layout sources are not served by kiln serve (oci-layout://{} would be read on the daemon's \
                     disk); push the image to a registry or send the files as a local source",
                    path.display()
                )))
            }
            // `/abs`, `./rel`, `rel` and `file:` are paths; `git@host:path` (scp-like) is not.
            SourceSpec::Git { remote, .. }
                if remote.starts_with('/')
                    || remote.starts_with("file:")
                    || (!remote.contains("://") && !remote.contains(':')) =>
            {
                return Err(Status::invalid_argument(format!(
                    "git remote {remote:?} is a path on the daemon's disk; kiln serve clones network remotes only"
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Everything of a request but the definition, as kiln's solve options.
fn solve_options(req: &SolveRequest) -> Result<SolveOptions, Status> {
    // Checked before anything is staged or transferred.
    check_frontend_attrs(&req.frontend_attrs)?;
    if !req.frontend_inputs.is_empty() {
        return Err(Status::unimplemented(
            "frontend inputs are not supported by kiln serve; name the inputs with context:NAME options instead",
        ));
    }
    if req.source_policy.as_ref().is_some_and(|p| !p.rules.is_empty()) {
        return Err(Status::unimplemented("source policies are not supported by kiln serve"));
    }
    let mut opts = SolveOptions { outputs: outputs(req)?, ..Default::default() };
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
        let (cache_exports, cache_imports) = cache_options(&req, &mut opts, &mut staging)?;
        let mut frontend_attrs = req.frontend_attrs.clone();
        if !cache_exports.is_empty() || !cache_imports.is_empty() {
            let Some(s) = &session else {
                return Err(needs_session("a cache directory of type=local"));
            };
            for i in &cache_imports {
                let store = ClientStore::new(s.clone(), &i.dir).map_err(|e| to_status(&e))?;
                fetch_import(&store, &i.digest, &i.staging).await.map_err(|e| {
                    Status::new(to_status(&e).code(), format!("importing the cache at {} from the client: {e}", i.dir))
                })?;
            }
        }
        rewrite_cache_imports_attr(&mut frontend_attrs, &cache_imports);
        if let Some(s) = &session {
            opts.local_provider = Some(SessionLocals::new(s.clone(), self.engine.root(), Some(self.kept.clone())));
            opts.secret_provider = Some(SessionSecrets::new(s.clone()));
            opts.ssh_provider = Some(super::forward::SessionSsh::new(s.clone()));
            opts.registry_credentials = Some(super::forward::SessionAuth::new(s.clone()));
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
            // A built-in frontend run on the daemon (BuildKit's Solve with Frontend set).
            None if !req.frontend.is_empty() => {
                let build = BuildOptions { solve: opts, frontend_attrs };
                self.engine.build_frontend(&req.frontend, build).await
            }
            Some(def) => {
                let def = Definition::from_pb(def).map_err(|e| to_status(&e))?;
                check_client_sources(&def)?;
                self.engine.solve(&def, opts).await
            }
            // BuildKit's clients (buildctl build, client.Build) send no definition: they drive
            // the build from their side over the LLB bridge, keyed by this Ref.
            None => {
                let fwd = self.fwd.clone();
                let build = BuildOptions { solve: opts, frontend_attrs };
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
            (Ok(mut r), Some(out), Some(s)) => send_output(s, out, &req.exporter_attrs).await.map(|extra| {
                r.exporter_response.extend(extra);
                r
            }),
            (r, _, _) => r,
        };
        let result = match (result, &session) {
            (Ok(mut r), Some(s)) if !cache_exports.is_empty() => {
                let mut sent = Ok(());
                for e in &cache_exports {
                    let up = async {
                        let store = ClientStore::new(s.clone(), &e.dir)?;
                        upload_export(&store, &e.staging, &e.tag).await
                    };
                    match up.await {
                        Ok(desc) => {
                            r.exporter_response.insert(CACHE_MANIFEST_KEY.to_owned(), desc);
                        }
                        Err(err) => {
                            sent = Err(Status::new(
                                to_status(&err).code(),
                                format!("exporting the cache to {} on the client: {err}", e.dir),
                            ));
                            break;
                        }
                    }
                }
                sent.map(|()| r)
            }
            (r, _) => r,
        };
        drop(finish);
        drop(staging);
        let result = result?;
        let mut resp = Response::new(SolveResponse { exporter_response: result.exporter_response });
        // kiln's clients report the engine's own counts (BuildKit's clients ignore these headers).
        for (key, n) in [(crate::client::CACHED_KEY, result.cached), (crate::client::EXECUTED_KEY, result.executed)] {
            resp.metadata_mut().insert(key, tonic::metadata::MetadataValue::from(n as u64));
        }
        Ok(resp)
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
