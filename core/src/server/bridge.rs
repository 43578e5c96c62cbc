//! BuildKit's gateway (`moby.buildkit.v1.frontend.LLBBridge`) for client-side builds driven over
//! the control socket, as `buildctl build` and `client.Build` do: `Control.Solve` arrives with
//! neither a definition nor a frontend and becomes an [`Engine::build`] whose function waits for
//! the client; the client's LLBBridge calls, keyed by the `buildkit-controlapi-buildid` gRPC metadata (= the solve's
//! Ref), solve into refs, read them and finally `Return` the result. This module owns the table
//! of those builds and their refs (BuildKit's `control/gateway` forwarder).
//!
//! [`Engine::build`]: crate::engine::Engine::build

use super::control::to_status;
use super::proto::fsutil::types::Stat;
use super::proto::gateway::llb_bridge_server::LlbBridge;
use super::proto::gateway::{self as gw, result::Result as GwResult};
use super::proto::moby::buildkit::v1::apicaps::ApiCap;
use crate::build::{BuildContext, BuildOutput, FileStat, Ref, SolveRequest as InnerSolve};
use crate::error::{Error, ErrorKind};
use crate::graph::{Definition, ImageConfig, SUPPORTED_CAPS};
use crate::options::CacheImportSpec;
use futures::Stream;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tonic::{Request, Response, Status, Streaming};

/// The gRPC metadata key naming the build of a gateway call (BuildKit's `client/buildid`).
pub const BUILD_ID_KEY: &str = "buildkit-controlapi-buildid";

/// How long a gateway call waits for its build's `Control.Solve` to register it (the client
/// starts both at once; BuildKit waits 3 s).
pub const REGISTER_WAIT: Duration = Duration::from_secs(10);

/// The gateway capabilities kiln serves (BuildKit v0.11.6's names).
pub const FRONTEND_CAPS: &[&str] = &[
    "solve.base",
    "resolveimage",
    "resolveimage.resolvemode",
    "readfile",
    "return",
    "readdir",
    "statfile",
    "importcaches",
    "proto.refarray",
    "frontend.inputs",
    "gateway.solve.evaluate",
    "gateway.evaluate",
    "gateway.warnings",
];

/// What the function of a bridged build receives when the client returns.
type Outcome = Result<Option<BuildOutput>, Error>;

/// One client-side build in flight.
struct Bridged {
    ctx: BuildContext,
    refs: Mutex<HashMap<String, Ref>>,
    next: AtomicU64,
    returned: Mutex<Option<oneshot::Sender<Outcome>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The builds driven over the bridge, by build id.
#[derive(Default, Clone)]
pub struct Forwarder {
    builds: Arc<Mutex<HashMap<String, Arc<Bridged>>>>,
    registered: Arc<Notify>,
}

/// Removes a build from the table when its function ends (however it ends).
pub struct Registration {
    fwd: Forwarder,
    id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.fwd.builds).remove(&self.id);
    }
}

impl Forwarder {
    /// Registers the build `id` driven through `ctx`; its result arrives on the returned receiver
    /// when the client calls `Return`.
    pub fn register(&self, id: &str, ctx: BuildContext) -> (Registration, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let b =
            Bridged { ctx, refs: Mutex::new(HashMap::new()), next: AtomicU64::new(0), returned: Mutex::new(Some(tx)) };
        lock(&self.builds).insert(id.to_owned(), Arc::new(b));
        self.registered.notify_waiters();
        (Registration { fwd: self.clone(), id: id.to_owned() }, rx)
    }

    /// The build a call names in its `buildid` metadata, waiting (bounded) for it to register.
    async fn lookup<T>(&self, req: &Request<T>) -> Result<Arc<Bridged>, Status> {
        let id = req
            .metadata()
            .get(BUILD_ID_KEY)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::invalid_argument(
                    "a gateway call needs the buildkit-controlapi-buildid metadata (the Control.Solve Ref)",
                )
            })?
            .to_owned();
        let deadline = tokio::time::Instant::now() + REGISTER_WAIT;
        loop {
            let notified = self.registered.notified();
            if let Some(b) = lock(&self.builds).get(&id) {
                return Ok(b.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Status::not_found(format!("no build {id:?} is running on this server")));
            }
        }
    }
}

impl Bridged {
    fn add_ref(&self, r: Ref) -> String {
        let id = format!("ref{}", self.next.fetch_add(1, Ordering::Relaxed));
        lock(&self.refs).insert(id.clone(), r);
        id
    }

    fn get_ref(&self, id: &str) -> Result<Ref, Status> {
        lock(&self.refs).get(id).cloned().ok_or_else(|| Status::not_found(format!("no ref {id:?} in this build")))
    }

    /// The result a `Return` names, as the build's output.
    fn output(&self, result: gw::Result) -> Result<BuildOutput, Status> {
        let mut out = BuildOutput::default();
        match result.result {
            None => {}
            Some(GwResult::RefDeprecated(id)) => out.result = self.optional_ref(&id)?,
            Some(GwResult::Ref(r)) => out.result = self.optional_ref(&r.id)?,
            Some(GwResult::RefsDeprecated(m)) => {
                for (k, id) in m.refs {
                    if let Some(r) = self.optional_ref(&id)? {
                        out.refs.insert(k, r);
                    }
                }
            }
            Some(GwResult::Refs(m)) => {
                for (k, r) in m.refs {
                    if let Some(r) = self.optional_ref(&r.id)? {
                        out.refs.insert(k, r);
                    }
                }
            }
        }
        if let Some(cfg) = result.metadata.get("containerimage.config") {
            out.image_config = Some(ImageConfig::from_oci_json(cfg).map_err(|e| to_status(&e))?);
        }
        out.metadata = result.metadata.into_iter().collect();
        Ok(out)
    }

    /// An empty id is the empty filesystem.
    fn optional_ref(&self, id: &str) -> Result<Option<Ref>, Status> {
        if id.is_empty() {
            return Ok(None);
        }
        self.get_ref(id).map(Some)
    }
}

fn stat(s: FileStat) -> Stat {
    Stat {
        mode: s.go_mode(),
        path: s.path,
        uid: s.uid,
        gid: s.gid,
        size: i64::try_from(s.size).unwrap_or(i64::MAX),
        mod_time: s.mtime_ns,
        linkname: s.link_target.unwrap_or_default(),
        ..Default::default()
    }
}

fn caps(ids: &[&str]) -> Vec<ApiCap> {
    ids.iter().map(|id| ApiCap { id: (*id).to_owned(), enabled: true, ..Default::default() }).collect()
}

/// The LLBBridge service over the forwarder's builds.
#[derive(Clone)]
pub struct BridgeService {
    fwd: Forwarder,
    workers: Vec<super::proto::types::WorkerRecord>,
    engine: crate::engine::Engine,
}

impl BridgeService {
    /// Serves the builds of `fwd` on `engine` (which resolves frontends' base images);
    /// `workers` is what `Ping` reports.
    pub fn new(fwd: Forwarder, workers: Vec<super::proto::types::WorkerRecord>, engine: crate::engine::Engine) -> Self {
        BridgeService { fwd, workers, engine }
    }

    /// A gateway `Solve` naming the Dockerfile frontend: the frontend runs inside the build with
    /// the request's options; its result becomes a ref of the build, its image config the
    /// result's `containerimage.config` metadata (as BuildKit's frontends return it).
    async fn frontend_solve(
        &self,
        b: &Bridged,
        attrs: std::collections::BTreeMap<String, String>,
    ) -> Result<Response<gw::SolveResponse>, Status> {
        super::control::check_frontend_attrs(&attrs)?;
        let ctx = b.ctx.with_frontend_attrs(attrs);
        let resolver: crate::frontend::dockerfile::build::SharedResolver =
            Arc::new(crate::engine::LoggedInResolver::new(self.engine.clone(), b.ctx.registry_credentials()));
        let out = crate::frontend::dockerfile::build::build(ctx, resolver).await.map_err(|e| to_status(&e))?;
        let out = out.unwrap_or_default();
        let id = out.result.map(|r| b.add_ref(r)).unwrap_or_default();
        let mut metadata = std::collections::BTreeMap::new();
        if let Some(cfg) = &out.image_config {
            let json = serde_json::to_vec(&cfg.to_oci_json())
                .map_err(|e| Status::internal(format!("encode the image config: {e}")))?;
            metadata.insert("containerimage.config".to_owned(), json);
        }
        let result = gw::Result {
            result: Some(GwResult::Ref(gw::Ref { id: id.clone(), def: None })),
            metadata,
            ..Default::default()
        };
        Ok(Response::new(gw::SolveResponse { r#ref: id, result: Some(result) }))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl LlbBridge for BridgeService {
    async fn resolve_image_config(
        &self,
        req: Request<gw::ResolveImageConfigRequest>,
    ) -> Result<Response<gw::ResolveImageConfigResponse>, Status> {
        // Keyed by the build like every gateway call (BuildKit's forwarder is per build).
        let b = self.fwd.lookup(&req).await?;
        let logins = b.ctx.registry_credentials().and_then(crate::registry::LoginSource::new);
        let req = req.into_inner();
        // BuildKit's ResolverType: 0 = registry, 1 = an OCI layout store on the client's session.
        if req.resolver_type != 0 {
            return Err(Status::unimplemented(
                "ResolveImageConfig from an OCI layout store on the client's session is not served by kiln serve; \
                 kiln resolves registry images",
            ));
        }
        if req.r#ref.is_empty() {
            return Err(Status::invalid_argument("ResolveImageConfig needs a Ref"));
        }
        let reference = crate::registry::Reference::parse(&req.r#ref).map_err(|e| to_status(&e))?;
        let image = crate::graph::ImageRef::Registry(reference.to_string());
        let platform = req.platform.as_ref().map(crate::graph::Platform::from_pb);
        let engine = self.engine.clone();
        let (resolved, config) =
            tokio::task::spawn_blocking(move || engine.resolve_with_logins(&image, platform.as_ref(), logins))
                .await
                .map_err(|e| Status::internal(format!("the image resolve task failed: {e}")))?
                .map_err(|e| to_status(&e))?;
        Ok(Response::new(gw::ResolveImageConfigResponse { digest: resolved.digest.to_string(), config }))
    }

    async fn solve(&self, req: Request<gw::SolveRequest>) -> Result<Response<gw::SolveResponse>, Status> {
        let b = self.fwd.lookup(&req).await?;
        let req = req.into_inner();
        match req.frontend.as_str() {
            "" => {}
            crate::frontend::dockerfile::build::FRONTEND_NAME | "dockerfile" => {
                return self.frontend_solve(&b, req.frontend_opt).await;
            }
            other => {
                return Err(Status::unimplemented(format!(
                    "frontend {other:?} is not supported: kiln has the built-in dockerfile.v0"
                )));
            }
        }
        if req.source_policies.iter().any(|p| !p.rules.is_empty()) {
            return Err(Status::unimplemented("source policies are not supported by kiln serve"));
        }
        let mut inner = InnerSolve { evaluate: req.evaluate, ..Default::default() };
        for e in &req.cache_imports {
            if e.r#type == "local" {
                return Err(Status::unimplemented(
                    "a cache import of type=local in a gateway Solve is not supported by kiln serve: give it to the \
                     build itself (buildctl --import-cache type=local,src=DIR), whose imports every solve of the \
                     build uses",
                ));
            }
            inner.cache_imports.push(CacheImportSpec::from_attrs(&e.r#type, &e.attrs).map_err(|e| to_status(&e))?);
        }
        let Some(pbdef) = req.definition.filter(|d| !d.def.is_empty()) else {
            // BuildKit: an empty definition solves to the empty result.
            let r = gw::Ref { id: String::new(), def: None };
            return Ok(Response::new(gw::SolveResponse {
                r#ref: String::new(),
                result: Some(gw::Result { result: Some(GwResult::Ref(r)), ..Default::default() }),
            }));
        };
        let def = Definition::from_pb(pbdef.clone()).map_err(|e| to_status(&e))?;
        super::control::check_client_sources(&def)?;
        let r = b.ctx.solve(&def, inner).await.map_err(|e| to_status(&e))?;
        let id = b.add_ref(r);
        let result = gw::Result {
            result: Some(GwResult::Ref(gw::Ref { id: id.clone(), def: Some(pbdef) })),
            ..Default::default()
        };
        Ok(Response::new(gw::SolveResponse { r#ref: id, result: Some(result) }))
    }

    async fn read_file(&self, req: Request<gw::ReadFileRequest>) -> Result<Response<gw::ReadFileResponse>, Status> {
        let b = self.fwd.lookup(&req).await?;
        let req = req.into_inner();
        let r = b.get_ref(&req.r#ref)?;
        let range = match req.range {
            None => None,
            Some(rg) => {
                let off = u64::try_from(rg.offset).map_err(|_| Status::invalid_argument("negative range offset"))?;
                let len = u64::try_from(rg.length).map_err(|_| Status::invalid_argument("negative range length"))?;
                Some((off, len))
            }
        };
        let data = r.read_file(&req.file_path, range).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(gw::ReadFileResponse { data }))
    }

    async fn read_dir(&self, req: Request<gw::ReadDirRequest>) -> Result<Response<gw::ReadDirResponse>, Status> {
        let b = self.fwd.lookup(&req).await?;
        let req = req.into_inner();
        let r = b.get_ref(&req.r#ref)?;
        let pattern = Some(req.include_pattern.as_str()).filter(|p| !p.is_empty());
        let entries = r.read_dir(&req.dir_path, pattern).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(gw::ReadDirResponse { entries: entries.into_iter().map(stat).collect() }))
    }

    async fn stat_file(&self, req: Request<gw::StatFileRequest>) -> Result<Response<gw::StatFileResponse>, Status> {
        let b = self.fwd.lookup(&req).await?;
        let req = req.into_inner();
        let r = b.get_ref(&req.r#ref)?;
        let s = r.stat_file(&req.path).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(gw::StatFileResponse { stat: Some(stat(s)) }))
    }

    async fn evaluate(&self, req: Request<gw::EvaluateRequest>) -> Result<Response<gw::EvaluateResponse>, Status> {
        let b = self.fwd.lookup(&req).await?;
        let r = b.get_ref(&req.get_ref().r#ref)?;
        r.evaluate().await.map_err(|e| to_status(&e))?;
        Ok(Response::new(gw::EvaluateResponse {}))
    }

    async fn ping(&self, _req: Request<gw::PingRequest>) -> Result<Response<gw::PongResponse>, Status> {
        Ok(Response::new(gw::PongResponse {
            frontend_api_caps: caps(FRONTEND_CAPS),
            llb_caps: caps(SUPPORTED_CAPS),
            workers: self.workers.clone(),
        }))
    }

    async fn r#return(&self, req: Request<gw::ReturnRequest>) -> Result<Response<gw::ReturnResponse>, Status> {
        let b = self.fwd.lookup(&req).await?;
        let req = req.into_inner();
        let outcome = match req.error {
            Some(e) if e.code != 0 => {
                Err(Error::new(ErrorKind::Definition, format!("the client's build failed: {}", e.message)))
            }
            _ => match req.result {
                None => Ok(None),
                Some(r) => Ok(Some(b.output(r)?)),
            },
        };
        let tx = lock(&b.returned).take().ok_or_else(|| Status::failed_precondition("result already returned"))?;
        let _ = tx.send(outcome);
        Ok(Response::new(gw::ReturnResponse {}))
    }

    async fn inputs(&self, _req: Request<gw::InputsRequest>) -> Result<Response<gw::InputsResponse>, Status> {
        Ok(Response::new(gw::InputsResponse::default()))
    }

    async fn new_container(
        &self,
        _req: Request<gw::NewContainerRequest>,
    ) -> Result<Response<gw::NewContainerResponse>, Status> {
        Err(Status::unimplemented("gateway containers are not served by kiln serve"))
    }

    async fn release_container(
        &self,
        _req: Request<gw::ReleaseContainerRequest>,
    ) -> Result<Response<gw::ReleaseContainerResponse>, Status> {
        Err(Status::unimplemented("gateway containers are not served by kiln serve"))
    }

    type ExecProcessStream = BoxStream<gw::ExecMessage>;

    async fn exec_process(
        &self,
        _req: Request<Streaming<gw::ExecMessage>>,
    ) -> Result<Response<Self::ExecProcessStream>, Status> {
        Err(Status::unimplemented("gateway containers are not served by kiln serve"))
    }

    async fn warn(&self, req: Request<gw::WarnRequest>) -> Result<Response<gw::WarnResponse>, Status> {
        let b = self.fwd.lookup(&req).await?;
        let req = req.into_inner();
        b.ctx.warn(&req.digest, &String::from_utf8_lossy(&req.short));
        Ok(Response::new(gw::WarnResponse {}))
    }
}
