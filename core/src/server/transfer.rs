//! Files between a build on the daemon and its client, over the client's session: the local
//! dirs a definition names are synced from the client (`FileSync.DiffCopy`) into staging dirs the
//! solve reads; `local`, `tar` and `oci` outputs are written to staging on the daemon and sent to
//! the client (`FileSend.DiffCopy`: fsutil packets for a directory, raw bytes for an archive),
//! as BuildKit's exporters do. Synced locals are staged in the engine root's `tmp` (emptied at
//! every open); outputs in the system temp dir, since an export may never write inside the root.
//! Both go with the build.

use super::control::to_status;
use super::session::Session;
use crate::graph::{Definition, SourceSpec};
use crate::options::OutputSpec;
use crate::session::conn::{request_stream, Conn, LazyResponse};
use crate::session::fsutil::{self, ReceiveOpts, SendOpts, SyncRequest};
use crate::session::packet_call::{call_with_packets, FILE_SEND_DIFF_COPY, FILE_SYNC_DIFF_COPY};
use crate::session::proto::filesync::file_send_client::FileSendClient;
use crate::session::proto::filesync::BytesMessage;
use crate::session::proto::fsutil::types::Packet;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;
use tonic::Status;

/// The staging dirs of one build (removed when dropped).
pub struct Staging {
    dirs: Vec<tempfile::TempDir>,
    base: PathBuf,
}

/// What a staging dir holds.
#[derive(Clone, Copy)]
enum Kind {
    Local,
    Output,
}

impl Staging {
    /// Staging under the engine root's `tmp` (emptied by every engine open, so a crash leaves
    /// nothing behind for long).
    pub fn new(root: &Path) -> Result<Staging, Status> {
        let base = root.join("tmp");
        std::fs::create_dir_all(&base).map_err(|e| Status::internal(format!("create {}: {e}", base.display())))?;
        Ok(Staging { dirs: Vec::new(), base })
    }

    fn dir(&mut self, kind: Kind) -> Result<PathBuf, Status> {
        let (base, prefix) = match kind {
            Kind::Local => (self.base.clone(), "session-local-"),
            Kind::Output => (std::env::temp_dir(), "kiln-serve-output-"),
        };
        let d = tempfile::Builder::new()
            .prefix(prefix)
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

/// What the client must send of each local dir `def` names: its filters when every source of
/// that name agrees on them, everything otherwise (kiln applies each source's own filters to
/// the synced dir again, so sending more is correct, only slower).
pub fn locals_of(def: &Definition) -> BTreeMap<String, SendOpts> {
    let mut out: BTreeMap<String, Option<SendOpts>> = BTreeMap::new();
    for v in def.vertices() {
        if let Ok(Some(SourceSpec::Local { name, include, exclude, follow_paths, .. })) = v.source_spec() {
            let want = SendOpts { include, exclude, follow_paths };
            match out.get(&name) {
                None => {
                    out.insert(name, Some(want));
                }
                Some(Some(have)) if *have != want => {
                    out.insert(name, None);
                }
                Some(_) => {}
            }
        }
    }
    out.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect()
}

/// Syncs each named local dir from the client into staging; the map is the solve's `locals`.
pub async fn sync_locals(
    session: &Session,
    wanted: BTreeMap<String, SendOpts>,
    staging: &mut Staging,
) -> Result<BTreeMap<String, PathBuf>, Status> {
    if !wanted.is_empty() && !session.serves(FILE_SYNC_DIFF_COPY) {
        return Err(Status::failed_precondition("the client's session serves no local dirs (FileSync.DiffCopy)"));
    }
    let mut out = BTreeMap::new();
    for (name, opts) in wanted {
        let dest = staging.dir(Kind::Local)?;
        let (tx, rx) = request_stream::<Packet>();
        let mut req = tonic::Request::new(rx);
        SyncRequest { dir_name: name.clone(), opts, override_excludes: false }
            .to_metadata(req.metadata_mut())
            .map_err(session_err)?;
        let resp = call_with_packets(session.channel.clone(), FILE_SYNC_DIFF_COPY, req)
            .await
            .map_err(|s| Status::new(s.code(), format!("syncing local {name:?} from the client: {}", s.message())))?;
        let opts = ReceiveOpts { differ: fsutil::Differ::None, ..Default::default() };
        fsutil::receive(Conn::new(tx, resp.into_inner()), &dest, &opts)
            .await
            .map_err(|e| Status::new(to_status(&e).code(), format!("syncing local {name:?} from the client: {e}")))?;
        out.insert(name, dest);
    }
    Ok(out)
}

/// An output that goes to the client, and where the daemon stages it.
pub enum ClientOutput {
    /// `type=local`: a directory sent as fsutil packets.
    Dir(PathBuf),
    /// `type=tar` / `type=oci`: one archive file sent as bytes.
    File(PathBuf),
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
            let d = staging.dir(Kind::Output)?;
            Ok((OutputSpec::Local { dest: d.clone() }, ClientOutput::Dir(d)))
        }
        "tar" | "oci" => {
            let file = staging.dir(Kind::Output)?.join("out.tar");
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

/// Sends a staged output to the client (`FileSend.DiffCopy`), with the exporter's attributes as
/// `exporter-md-*` metadata as BuildKit does.
pub async fn send_output(
    session: &Session,
    out: &ClientOutput,
    attrs: &BTreeMap<String, String>,
) -> Result<(), Status> {
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
                tx.send(BytesMessage { data: buf[..n].to_vec() })
                    .await
                    .map_err(|_| Status::unavailable("the client stopped taking the output"))?;
            }
            drop(tx);
            crate::session::tar_stream::wait_for_receiver(&mut rx).await.map_err(session_err)
        }
    }
}
