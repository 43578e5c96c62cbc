//! Files between a build on the daemon and its client, over the client's session: the local
//! dirs a solve's sources name are synced from the client on demand (`FileSync.DiffCopy`, the
//! solve's `LocalProvider`) into staging dirs the solve reads; `local`, `tar` and `oci` outputs are written to staging on the daemon and sent to
//! the client (`FileSend.DiffCopy`: fsutil packets for a directory, raw bytes for an archive),
//! as BuildKit's exporters do. Synced locals are staged in the engine root's `tmp` (emptied at
//! every open); outputs in the system temp dir, since an export may never write inside the root.
//! Both go with the build, except the synced dirs of a client naming a session shared key, kept
//! for its next build ([`KeptLocals`]).

use super::control::to_status;
use super::proto::secrets::v1::secrets_client::SecretsClient;
use super::proto::secrets::v1::GetSecretRequest;
use super::session::Session;
use crate::options::OutputSpec;
use crate::session::conn::{request_stream, Conn, LazyResponse};
use crate::session::fsutil::{self, ReceiveOpts, SendOpts, SyncRequest};
use crate::session::packet_call::{call_with_packets, FILE_SEND_DIFF_COPY, FILE_SYNC_DIFF_COPY};
use crate::session::proto::filesync::file_send_client::FileSendClient;
use crate::session::proto::filesync::BytesMessage;
use crate::session::proto::fsutil::types::Packet;
use crate::solver::{LocalProvider, LocalRequest, ProvidedLocal, SecretProvider};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tonic::Status;

/// The output staging dirs of one build (removed when dropped).
pub struct Staging {
    dirs: Vec<tempfile::TempDir>,
    base: PathBuf,
}

impl Staging {
    /// Staging in the system temp dir (an export may never write inside the engine root).
    pub fn new() -> Staging {
        Staging { dirs: Vec::new(), base: std::env::temp_dir() }
    }

    /// A new staging dir, removed with this `Staging`.
    pub(crate) fn dir(&mut self) -> Result<PathBuf, Status> {
        let base = self.base.clone();
        let d = tempfile::Builder::new()
            .prefix("kiln-serve-output-")
            .tempdir_in(&base)
            .map_err(|e| Status::internal(format!("create a staging dir in {}: {e}", base.display())))?;
        let p = d.path().to_path_buf();
        self.dirs.push(d);
        Ok(p)
    }
}

fn session_err(e: crate::Error) -> Status {
    to_status(&e)
}

/// The client's local dirs, synced on demand as a solve's sources name them (the solve's
/// [`LocalProvider`]): each distinct request (name and filters) is synced once per build into
/// its own staging dir, concurrent requests for it waiting for the one transfer. A client that
/// names a session shared key gets the dir kept from its last build ([`KeptLocals`]) when no
/// other build holds it: only what changed crosses the session.
#[derive(Debug)]
pub struct SessionLocals {
    session: Arc<Session>,
    base: PathBuf,
    kept: Option<Arc<KeptLocals>>,
    synced: tokio::sync::Mutex<HashMap<LocalRequest, Arc<tokio::sync::OnceCell<ProvidedLocal>>>>,
    dirs: std::sync::Mutex<Vec<tempfile::TempDir>>,
    /// The kept dirs this build uses: no other build syncs into them until it ends.
    held: std::sync::Mutex<Vec<tokio::sync::OwnedMutexGuard<KeptDir>>>,
}

/// Local dirs synced for earlier builds, by the client's shared key and the request, kept for
/// the next build of the same key (BuildKit keeps its synced dirs by shared key the same way).
/// A later sync changes a kept dir only by creating, renaming and removing names (fsutil's
/// receiver replaces a changed file by a new one), so the files an earlier build linked into
/// its snapshot keep their content.
#[derive(Debug, Default)]
pub struct KeptLocals {
    dirs: std::sync::Mutex<HashMap<KeptKey, Arc<tokio::sync::Mutex<KeptDir>>>>,
    uses: std::sync::atomic::AtomicU64,
}

/// What a kept dir is kept by: the client's shared key and the request.
type KeptKey = (String, LocalRequest);

/// One kept dir and the digests of its files.
#[derive(Debug, Default)]
pub struct KeptDir {
    dir: Option<tempfile::TempDir>,
    digests: Arc<crate::solver::FileDigests>,
    last_use: u64,
}

/// Kept dirs at most: the least recently used one not in use goes first.
const KEPT_MAX: usize = 8;

impl KeptLocals {
    /// The entry of `key`, made if missing (evicting the least recently used idle ones beyond
    /// [`KEPT_MAX`]).
    fn entry(&self, key: KeptKey) -> Arc<tokio::sync::Mutex<KeptDir>> {
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        let e = dirs.entry(key.clone()).or_default().clone();
        while dirs.len() > KEPT_MAX {
            let idle = dirs
                .iter()
                .filter(|(k, _)| **k != key)
                .filter_map(|(k, v)| v.try_lock().ok().map(|g| (g.last_use, k.clone())))
                .min_by_key(|(used, _)| *used);
            match idle {
                Some((_, k)) => {
                    dirs.remove(&k);
                }
                None => break,
            }
        }
        e
    }
}

impl SessionLocals {
    /// Locals of `session`, staged under `ROOT/tmp`; `kept` keeps them between builds.
    pub fn new(session: Arc<Session>, root: &Path, kept: Option<Arc<KeptLocals>>) -> Arc<SessionLocals> {
        Arc::new(SessionLocals {
            session,
            base: root.join("tmp"),
            kept,
            synced: Default::default(),
            dirs: Default::default(),
            held: Default::default(),
        })
    }

    fn new_dir(&self, prefix: &str) -> crate::Result<tempfile::TempDir> {
        std::fs::create_dir_all(&self.base).map_err(|e| crate::Error::io("create staging dir", &self.base, e))?;
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.base)
            .map_err(|e| crate::Error::io("create staging dir", &self.base, e))
    }

    async fn sync(&self, req: &LocalRequest) -> crate::Result<ProvidedLocal> {
        let fail = |msg: String| crate::Error::new(crate::ErrorKind::Source, msg);
        if !self.session.serves(FILE_SYNC_DIFF_COPY) {
            return Err(fail("the client's session serves no local dirs (FileSync.DiffCopy)".into()));
        }
        let key = &self.session.shared_key;
        if let (Some(kept), false) = (&self.kept, key.is_empty()) {
            // In use by another build: that build's dir stays as it is; this one syncs afresh.
            if let Ok(mut g) = kept.entry((key.clone(), req.clone())).try_lock_owned() {
                let dir = match g.dir.take() {
                    Some(d) => d,
                    None => self.new_dir("session-kept-")?,
                };
                let dest = dir.path().to_path_buf();
                // Only new or changed files (by size, mtime and metadata, as fsutil judges) cross.
                let opts = ReceiveOpts { differ: fsutil::Differ::Metadata, hash: true, ..Default::default() };
                let received = self.transfer(req, &dest, &opts).await?;
                // Only a complete sync is kept: a failed one drops the dir (`dir` goes out of scope).
                let mut digests = (*g.digests).clone();
                digests.extend(received);
                g.digests = Arc::new(digests);
                g.dir = Some(dir);
                g.last_use = kept.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let provided = ProvidedLocal { dir: dest, digests: g.digests.clone(), private: true };
                self.held.lock().unwrap_or_else(|p| p.into_inner()).push(g);
                return Ok(provided);
            }
        }
        let dir = self.new_dir("session-local-")?;
        let dest = dir.path().to_path_buf();
        self.dirs.lock().unwrap_or_else(|p| p.into_inner()).push(dir);
        // Hashing each file as it arrives spares the local source reading the whole dir back
        // for its cache key.
        let opts = ReceiveOpts { differ: fsutil::Differ::None, hash: true, ..Default::default() };
        let digests = self.transfer(req, &dest, &opts).await?;
        // The staging dir is ours alone and removed with the build: the snapshot may link its files.
        Ok(ProvidedLocal { dir: dest, digests: Arc::new(digests), private: true })
    }

    /// Receives the client's dir of `req` into `dest`.
    async fn transfer(
        &self,
        req: &LocalRequest,
        dest: &Path,
        opts: &ReceiveOpts,
    ) -> crate::Result<crate::solver::FileDigests> {
        let name = &req.name;
        let fail = |msg: String| crate::Error::new(crate::ErrorKind::Source, msg);
        let (tx, rx) = request_stream::<Packet>();
        let mut call = tonic::Request::new(rx);
        let send_opts = SendOpts {
            include: req.include.clone(),
            exclude: req.exclude.clone(),
            follow_paths: req.follow_paths.clone(),
        };
        SyncRequest { dir_name: name.clone(), opts: send_opts, override_excludes: false }
            .to_metadata(call.metadata_mut())?;
        let resp = call_with_packets(self.session.channel.clone(), FILE_SYNC_DIFF_COPY, call)
            .await
            .map_err(|s| fail(format!("syncing local {name:?} from the client: {}", s.message())))?;
        fsutil::receive_hashed(Conn::new(tx, resp.into_inner()), dest, opts)
            .await
            .map_err(|e| fail(format!("syncing local {name:?} from the client: {e}")))
    }
}

impl LocalProvider for SessionLocals {
    fn provide<'a>(&'a self, req: &'a LocalRequest) -> BoxFuture<'a, crate::Result<ProvidedLocal>> {
        Box::pin(async move {
            let cell = self.synced.lock().await.entry(req.clone()).or_default().clone();
            cell.get_or_try_init(|| self.sync(req)).await.cloned()
        })
    }
}

/// The method a client serves secrets on.
pub const GET_SECRET: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";

/// The client's secrets, asked for on demand as execs mount them (the solve's
/// [`SecretProvider`]). Errors name the id, never a value.
#[derive(Debug)]
pub struct SessionSecrets {
    session: Arc<Session>,
}

impl SessionSecrets {
    /// Secrets of `session`.
    pub fn new(session: Arc<Session>) -> Arc<SessionSecrets> {
        Arc::new(SessionSecrets { session })
    }
}

impl SecretProvider for SessionSecrets {
    fn secret<'a>(&'a self, id: &'a str) -> BoxFuture<'a, crate::Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            if !self.session.serves(GET_SECRET) {
                return Ok(None);
            }
            let mut client = SecretsClient::new(self.session.channel.clone());
            match client.get_secret(GetSecretRequest { id: id.to_owned(), ..Default::default() }).await {
                Ok(r) => Ok(Some(r.into_inner().data)),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                Err(s) => Err(crate::Error::new(
                    crate::ErrorKind::Source,
                    format!("reading secret {id:?} from the client: {}: {}", s.code(), s.message()),
                )),
            }
        })
    }
}

/// An output that goes to the client, and where the daemon stages it.
pub enum ClientOutput {
    /// `type=local`: a directory sent as fsutil packets.
    Dir(PathBuf),
    /// `type=tar` / `type=oci`: one archive file sent as bytes.
    File(PathBuf),
    /// `type=oci,tar=false`: an OCI layout whose blobs go into the client's content store
    /// `export`; the client tags the manifest in its `index.json` (BuildKit's `client/solve.go`).
    Layout(PathBuf),
}

/// The output spec the solve writes for exporter `kind` with `attrs` (staged on the daemon), and
/// what to send to the client afterwards.
pub fn stage_output(
    kind: &str,
    attrs: &BTreeMap<String, String>,
    staging: &mut Staging,
) -> Result<(OutputSpec, ClientOutput), Status> {
    match kind {
        "local" => {
            let d = staging.dir()?;
            Ok((OutputSpec::Local { dest: d.clone() }, ClientOutput::Dir(d)))
        }
        "oci" if attrs.get("tar").is_some_and(|v| v == "false") => {
            let d = staging.dir()?;
            let mut a: BTreeMap<String, String> =
                attrs.iter().filter(|(k, _)| k.as_str() != "dest").map(|(k, v)| (k.clone(), v.clone())).collect();
            a.insert("dest".into(), d.display().to_string());
            let spec = OutputSpec::from_attrs(kind, &a).map_err(|e| to_status(&e))?;
            Ok((spec, ClientOutput::Layout(d)))
        }
        "tar" | "oci" => {
            let file = staging.dir()?.join("out.tar");
            let mut a: BTreeMap<String, String> = attrs
                .iter()
                .filter(|(k, _)| k.as_str() != "dest" && k.as_str() != "tar")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            a.insert("dest".into(), file.display().to_string());
            if kind == "oci" {
                a.insert("tar".into(), "true".into());
            }
            let spec = OutputSpec::from_attrs(kind, &a).map_err(|e| to_status(&e))?;
            Ok((spec, ClientOutput::File(file)))
        }
        other => Err(Status::internal(format!("{other} is not an output sent to the client"))),
    }
}

/// Sends a staged output to the client (`FileSend.DiffCopy`, with the exporter's attributes as
/// `exporter-md-*` metadata as BuildKit does; an OCI layout through the client's content store).
/// Returns what to add to the exporter response.
pub async fn send_output(
    session: &Arc<Session>,
    out: &ClientOutput,
    attrs: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Status> {
    if let ClientOutput::Layout(dir) = out {
        let sent = async {
            let store =
                super::cache_store::ClientStore::with_id(session.clone(), crate::client::content::EXPORT_STORE)?;
            let layout = crate::content::OciLayout::open(dir)?;
            let desc = layout.index()?.manifests().first().cloned().ok_or_else(|| {
                crate::Error::new(crate::ErrorKind::Internal, "the OCI exporter wrote no manifest".to_owned())
            })?;
            super::cache_store::upload_manifest(&store, &layout, &desc).await?;
            serde_json::to_vec(&desc)
                .map_err(|e| crate::Error::with_source(crate::ErrorKind::Internal, "encode the image descriptor", e))
        };
        let json = sent.await.map_err(|e| {
            Status::new(to_status(&e).code(), format!("sending the OCI layout to the client's content store: {e}"))
        })?;
        let mut extra = BTreeMap::new();
        extra.insert(
            crate::client::content::IMAGE_DESCRIPTOR_KEY.to_owned(),
            crate::registry::auth::base64_encode(&json),
        );
        if let Some(name) = attrs.get("name").filter(|n| !n.is_empty()) {
            // Normalised as BuildKit's exporter answers (`app` → `docker.io/library/app:latest`);
            // buildctl tags the layout with it.
            let names: Vec<String> = name
                .split(',')
                .map(|n| {
                    crate::registry::Reference::parse(n.trim()).map(|r| r.to_string()).unwrap_or_else(|_| n.to_owned())
                })
                .collect();
            extra.insert("image.name".to_owned(), names.join(","));
        }
        return Ok(extra);
    }
    send_stream(session, out, attrs).await.map(|()| BTreeMap::new())
}

async fn send_stream(session: &Session, out: &ClientOutput, attrs: &BTreeMap<String, String>) -> Result<(), Status> {
    if !session.serves(FILE_SEND_DIFF_COPY) {
        return Err(Status::failed_precondition(
            "the client's session takes no outputs (FileSend.DiffCopy); give the output a destination on the client",
        ));
    }
    match out {
        ClientOutput::Dir(dir) => {
            let (tx, rx) = request_stream::<Packet>();
            let mut req = tonic::Request::new(rx);
            crate::session::tar_stream::exporter_metadata(attrs, req.metadata_mut()).map_err(session_err)?;
            // The client's receiver answers only after our stats: the call is awaited lazily.
            let call = call_with_packets(session.channel.clone(), FILE_SEND_DIFF_COPY, req);
            fsutil::send(Conn::new(tx, LazyResponse::new(call)), dir, &SendOpts::default())
                .await
                .map_err(|e| Status::new(to_status(&e).code(), format!("sending the output to the client: {e}")))
        }
        ClientOutput::File(file) => {
            let (tx, rx) = request_stream::<BytesMessage>();
            let mut req = tonic::Request::new(rx);
            crate::session::tar_stream::exporter_metadata(attrs, req.metadata_mut()).map_err(session_err)?;
            let mut client = FileSendClient::new(session.channel.clone());
            // The client answers only at the end of the archive: the call runs on its own task
            // while the bytes are sent.
            let call = tokio::spawn(async move { client.diff_copy(req).await });
            let mut rx = LazyResponse::new(async move {
                call.await.map_err(|e| Status::internal(format!("the output call's task failed: {e}")))?
            });
            let mut f = tokio::fs::File::open(file)
                .await
                .map_err(|e| Status::internal(format!("open the staged output {}: {e}", file.display())))?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = f.read(&mut buf).await.map_err(|e| Status::internal(format!("read the staged output: {e}")))?;
                if n == 0 {
                    break;
                }
                tx.send(BytesMessage { data: prost::bytes::Bytes::copy_from_slice(&buf[..n]) })
                    .await
                    .map_err(|_| Status::unavailable("the client stopped taking the output"))?;
            }
            drop(tx);
            crate::session::tar_stream::wait_for_receiver(&mut rx).await.map_err(session_err)
        }
        ClientOutput::Layout(_) => Err(Status::internal("an OCI layout goes through the content store")),
    }
}
