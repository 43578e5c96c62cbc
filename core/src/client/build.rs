//! Client-side builds on a daemon (BuildKit's `client.Build`): `Control.Solve` without a
//! definition or frontend starts the build, and the build function runs here against the
//! daemon's `LLBBridge` — every call carrying the build id in `buildkit-controlapi-buildid` —
//! until `Return` hands the daemon the result (or the function's error) to export.

use super::request;
use super::{status_error, Client, Target};
use crate::api::gateway::llb_bridge_client::LlbBridgeClient;
use crate::api::gateway::result::Result as GwResult;
use crate::api::gateway::{
    self as gw, EvaluateRequest, FileRange, PingRequest, ReadDirRequest, ReadFileRequest, ReturnRequest,
    StatFileRequest, WarnRequest,
};
use crate::build::remote::RemoteBridge;
use crate::build::{BuildContext, BuildOptions, BuildOutput, FileStat, SolveRequest};
use crate::error::{Error, ErrorKind, Result};
use crate::graph::Definition;
use crate::options::CacheImportSource;
use crate::session::fsutil::stat::unix_mode;
use crate::session::proto::fsutil::types::Stat;
use crate::solver::SolveResult;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// The metadata key naming the build a gateway call belongs to.
pub const BUILD_ID_KEY: &str = "buildkit-controlapi-buildid";
/// How long the bridge may take to know the build (the daemon registers it once its
/// `Control.Solve` started; BuildKit's forwarder waits 3 s per call).
const READY_WAIT: Duration = Duration::from_secs(20);

/// The daemon's LLB bridge for one build.
#[derive(Debug)]
pub struct BridgeClient {
    channel: Channel,
    build_id: String,
}

fn file_stat(s: Stat) -> FileStat {
    FileStat {
        path: s.path,
        mode: unix_mode(s.mode),
        uid: s.uid,
        gid: s.gid,
        size: u64::try_from(s.size).unwrap_or(0),
        mtime_ns: s.mod_time,
        link_target: (!s.linkname.is_empty()).then_some(s.linkname),
    }
}

/// A bridge call's failure: a missing path is [`Error::NotFound`] as on an embedded engine.
fn call_error(what: &str, path: &str, s: tonic::Status) -> Error {
    if s.code() == tonic::Code::NotFound || s.message().contains("no such file or directory") {
        return Error::NotFound { path: path.to_owned() };
    }
    status_error(what, s)
}

impl BridgeClient {
    fn client(&self) -> LlbBridgeClient<Channel> {
        LlbBridgeClient::new(self.channel.clone())
            .max_decoding_message_size(super::MAX_MESSAGE)
            .max_encoding_message_size(super::MAX_MESSAGE)
    }

    fn req<T>(&self, msg: T) -> Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(msg);
        let v = self
            .build_id
            .parse()
            .map_err(|_| Error::new(ErrorKind::Internal, "the build id is not a valid gRPC header"))?;
        r.metadata_mut().insert(BUILD_ID_KEY, v);
        Ok(r)
    }

    /// Waits (bounded) until the daemon's bridge knows the build.
    async fn wait_ready(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        loop {
            match self.client().ping(self.req(PingRequest {})?).await {
                Ok(_) => return Ok(()),
                Err(s) if tokio::time::Instant::now() < deadline && s.code() != tonic::Code::Unimplemented => {
                    tracing::debug!(status = %s, "the daemon's bridge does not know the build yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => return Err(status_error("reaching the daemon's LLB bridge", s)),
            }
        }
    }

    /// Hands the daemon the build's result, or its error.
    async fn finish(&self, outcome: &Result<BuildOutput>) -> Result<()> {
        let req = match outcome {
            Ok(out) => ReturnRequest { result: Some(gateway_result(out)?), error: None },
            Err(e) => ReturnRequest {
                result: None,
                error: Some(crate::api::google::rpc::Status {
                    code: tonic::Code::Unknown as i32,
                    message: e.to_string(),
                    ..Default::default()
                }),
            },
        };
        self.client().r#return(self.req(req)?).await.map_err(|s| status_error("returning the build's result", s))?;
        Ok(())
    }
}

fn remote_id(r: &crate::build::Ref) -> Result<String> {
    r.remote_id().map(str::to_owned).ok_or_else(|| {
        Error::definition(None, "an embedded engine's result cannot be the result of a build on a daemon")
    })
}

/// A build output as the gateway's `Result`: the ref (or named refs) and the metadata, the
/// image config as `containerimage.config` as BuildKit's frontends return it.
fn gateway_result(out: &BuildOutput) -> Result<gw::Result> {
    let mut metadata: BTreeMap<String, Vec<u8>> = out.metadata.clone();
    if let Some(cfg) = &out.image_config {
        let json = serde_json::to_vec(&cfg.to_oci_json())
            .map_err(|e| Error::with_source(ErrorKind::Internal, "encode the image config", e))?;
        metadata.insert("containerimage.config".into(), json);
    }
    let result = if out.refs.is_empty() {
        let id = out.result.as_ref().map(remote_id).transpose()?.unwrap_or_default();
        GwResult::Ref(gw::Ref { id, def: None })
    } else {
        let refs = out
            .refs
            .iter()
            .map(|(k, r)| Ok((k.clone(), gw::Ref { id: remote_id(r)?, def: None })))
            .collect::<Result<_>>()?;
        GwResult::Refs(gw::RefMap { refs })
    };
    Ok(gw::Result { result: Some(result), metadata, ..Default::default() })
}

impl RemoteBridge for BridgeClient {
    fn solve<'a>(&'a self, def: &'a Definition, req: &'a SolveRequest) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            if !req.locals.is_empty() {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "per-solve locals of a build on a daemon are not supported; give them to the build",
                ));
            }
            let mut cache_imports = Vec::new();
            for i in &req.cache_imports {
                if matches!(i.source, CacheImportSource::Local { .. }) {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        "a per-solve cache import of type=local on a daemon is not supported; give it to the build",
                    ));
                }
                let (kind, attrs) = request::attrs_of(&i.to_csv())?;
                cache_imports.push(gw::CacheOptionsEntry { r#type: kind, attrs });
            }
            let msg = gw::SolveRequest {
                definition: Some(def.to_pb()),
                allow_result_return: true,
                cache_imports,
                evaluate: req.evaluate,
                ..Default::default()
            };
            let resp = self.client().solve(self.req(msg)?).await.map_err(|s| status_error("solve", s))?.into_inner();
            let id = match resp.result.and_then(|r| r.result) {
                Some(GwResult::Ref(r)) => r.id,
                Some(GwResult::RefDeprecated(id)) => id,
                Some(_) => return Err(Error::new(ErrorKind::Internal, "the daemon answered a solve with named refs")),
                None => resp.r#ref,
            };
            Ok(id)
        })
    }

    fn read_file<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            let range = range.map(|(o, l)| FileRange {
                offset: i64::try_from(o).unwrap_or(i64::MAX),
                length: i64::try_from(l).unwrap_or(i64::MAX),
            });
            let msg = ReadFileRequest { r#ref: id.to_owned(), file_path: path.to_owned(), range };
            let resp = self.client().read_file(self.req(msg)?).await.map_err(|s| call_error("read_file", path, s))?;
            Ok(resp.into_inner().data)
        })
    }

    fn read_dir<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
        include_pattern: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<FileStat>>> {
        Box::pin(async move {
            let msg = ReadDirRequest {
                r#ref: id.to_owned(),
                dir_path: path.to_owned(),
                include_pattern: include_pattern.unwrap_or_default().to_owned(),
            };
            let resp = self.client().read_dir(self.req(msg)?).await.map_err(|s| call_error("read_dir", path, s))?;
            let mut entries: Vec<FileStat> = resp.into_inner().entries.into_iter().map(file_stat).collect();
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(entries)
        })
    }

    fn stat_file<'a>(&'a self, id: &'a str, path: &'a str) -> BoxFuture<'a, Result<FileStat>> {
        Box::pin(async move {
            let msg = StatFileRequest { r#ref: id.to_owned(), path: path.to_owned() };
            let resp = self.client().stat_file(self.req(msg)?).await.map_err(|s| call_error("stat_file", path, s))?;
            let stat = resp.into_inner().stat.ok_or_else(|| Error::NotFound { path: path.to_owned() })?;
            Ok(file_stat(stat))
        })
    }

    fn evaluate<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let msg = EvaluateRequest { r#ref: id.to_owned() };
            self.client().evaluate(self.req(msg)?).await.map_err(|s| status_error("evaluate", s))?;
            Ok(())
        })
    }

    fn warn<'a>(&'a self, vertex: &'a str, message: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let msg = WarnRequest {
                digest: vertex.to_owned(),
                level: 1,
                short: message.as_bytes().to_vec(),
                ..Default::default()
            };
            self.client().warn(self.req(msg)?).await.map_err(|s| status_error("warn", s))?;
            Ok(())
        })
    }
}

/// Runs `f` as a client-side build on `client`'s daemon (see `Engine::build`).
pub async fn run<F, Fut>(client: &Client, opts: BuildOptions, f: F) -> Result<SolveResult>
where
    F: FnOnce(BuildContext) -> Fut,
    Fut: Future<Output = Result<Option<BuildOutput>>> + Send,
{
    let channel = client.channel.clone();
    let BuildOptions { solve, frontend_attrs } = opts;
    let attrs = frontend_attrs.clone();
    let driver = move |build_id: String| async move {
        let bridge = Arc::new(BridgeClient { channel, build_id });
        bridge.wait_ready().await?;
        let ctx = BuildContext::remote(bridge.clone(), attrs);
        let returned = std::panic::AssertUnwindSafe(f(ctx.clone())).catch_unwind().await.unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::new(ErrorKind::Internal, format!("the build function panicked: {msg}")))
        });
        let outcome = match (returned, ctx.take_result()) {
            (Ok(Some(_)), Some(_)) => Err(Error::definition(
                None,
                "result already set: a build's result is set once, by set_result or by returning it",
            )),
            (Ok(r), s) => Ok(r.or(s).unwrap_or_default()),
            (Err(e), _) => Err(e),
        };
        bridge.finish(&outcome).await?;
        outcome.map(|_| ())
    };
    // Neither a definition nor a frontend: the daemon runs the build from our side (buildctl's
    // `client.Build`); the frontend options reach the function through the context.
    let target = Target::Frontend { name: "", attrs: &frontend_attrs };
    request::run(client, target, solve, Some(driver)).await
}
