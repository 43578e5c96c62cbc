//! The local cache directories of a connected solve, served to the daemon as containerd content
//! stores (`containerd.services.content.v1.Content`: Info, Read, Write, Abort), the store picked
//! by the `buildkit-attachable-store-id` header (`local:` + the directory), as buildctl serves
//! them. The daemon writes an exported cache's blobs into the directory and reads an imported
//! one's; this side resolves an import's tag to the manifest digest before the solve and tags
//! the exported manifest in `index.json` after it (BuildKit's client does both).
//!
//! Every blob written is verified against the digest the daemon names before it is placed.

use crate::api::containerd::content::content_server::{Content, ContentServer};
use crate::api::containerd::content::{
    AbortRequest, Empty, Info, InfoRequest, InfoResponse, ReadContentRequest, ReadContentResponse, WriteAction,
    WriteContentRequest, WriteContentResponse,
};
use crate::content::{BlobWriter, ContentStore, OciLayout};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::session::conn::ResponseStream;
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use tonic::{Request, Response, Status, Streaming};

/// The header naming the store a content call is for.
pub const STORE_ID_HEADER: &str = "buildkit-attachable-store-id";
/// The methods served (listed in the session's headers).
pub const METHODS: &[&str] = &[
    "/containerd.services.content.v1.Content/Info",
    "/containerd.services.content.v1.Content/Read",
    "/containerd.services.content.v1.Content/Write",
    "/containerd.services.content.v1.Content/Abort",
];
/// Bytes per Read message.
const CHUNK: usize = 1 << 20;

/// The store id of cache directory `dir` as the daemon names it.
pub fn store_id(dir: &Path) -> String {
    format!("local:{}", dir.display())
}

/// Opens (creating) the OCI layout of a cache directory.
pub fn open_layout(dir: &Path) -> Result<OciLayout> {
    if dir.join("oci-layout").exists() {
        OciLayout::open(dir)
    } else {
        OciLayout::create(dir)
    }
}

/// The stores of one solve, by id.
#[derive(Debug, Clone, Default)]
pub struct Stores(pub BTreeMap<String, PathBuf>);

impl Stores {
    /// The tonic service serving them.
    pub fn service(&self) -> ContentServer<Stores> {
        ContentServer::new(self.clone()).max_decoding_message_size(CHUNK * 8)
    }

    fn store<T>(&self, req: &Request<T>) -> Result<ContentStore, Status> {
        let id = req.metadata().get(STORE_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let Some(dir) = self.0.get(id) else {
            return Err(Status::not_found(format!("this client serves no content store {id:?}")));
        };
        open_layout(dir).map(|l| l.store().clone()).map_err(|e| Status::internal(e.to_string()))
    }
}

fn digest_arg(s: &str) -> Result<Digest, Status> {
    Digest::parse(s).map_err(|_| Status::invalid_argument(format!("{s:?} is not a sha256 digest")))
}

fn internal(e: Error) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl Content for Stores {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let store = self.store(&req)?;
        let d = digest_arg(&req.get_ref().digest)?;
        if !store.has(&d) {
            return Err(Status::not_found(format!("content {d} not found")));
        }
        let size = store.size(&d).map_err(internal)?;
        let info = Info { digest: d.to_string(), size: i64::try_from(size).unwrap_or(i64::MAX), ..Default::default() };
        Ok(Response::new(InfoResponse { info: Some(info) }))
    }

    type ReadStream = ResponseStream<ReadContentResponse>;

    async fn read(&self, req: Request<ReadContentRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let store = self.store(&req)?;
        let r = req.into_inner();
        let d = digest_arg(&r.digest)?;
        if !store.has(&d) {
            return Err(Status::not_found(format!("content {d} not found")));
        }
        let mut file =
            std::fs::File::open(store.blob_path(&d)).map_err(|e| Status::internal(format!("open {d}: {e}")))?;
        let offset = u64::try_from(r.offset).map_err(|_| Status::invalid_argument("negative offset"))?;
        file.seek(std::io::SeekFrom::Start(offset)).map_err(|e| Status::internal(format!("seek {d}: {e}")))?;
        let mut left = if r.size > 0 { u64::try_from(r.size).unwrap_or(u64::MAX) } else { u64::MAX };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut at = r.offset;
            let mut buf = vec![0u8; CHUNK];
            while left > 0 {
                let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
                let n = match file.read(&mut buf[..want]) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!("read {d}: {e}"))));
                        return;
                    }
                };
                let msg = ReadContentResponse { offset: at, data: buf[..n].to_vec() };
                if tx.blocking_send(Ok(msg)).is_err() {
                    return;
                }
                at += n as i64;
                left -= n as u64;
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    type WriteStream = ResponseStream<WriteContentResponse>;

    async fn write(&self, req: Request<Streaming<WriteContentRequest>>) -> Result<Response<Self::WriteStream>, Status> {
        let store = self.store(&req)?;
        let mut inbound = req.into_inner();
        let Some(first) = inbound.message().await? else {
            return Err(Status::invalid_argument("a write needs at least one message"));
        };
        if !first.expected.is_empty() && store.has(&digest_arg(&first.expected)?) {
            return Err(Status::already_exists(format!("content {} already exists", first.expected)));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut w = Ingest { store, writer: None, total: 0 };
            let mut next = Some(first);
            while let Some(m) = next {
                let answer = w.apply(m);
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
                next = match inbound.message().await {
                    Ok(m) => m,
                    Err(_) => return,
                };
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn abort(&self, _: Request<AbortRequest>) -> Result<Response<Empty>, Status> {
        // Writes are per stream: an abandoned one is discarded when its stream ends.
        Ok(Response::new(Empty {}))
    }
}

/// One write stream's blob.
struct Ingest {
    store: ContentStore,
    writer: Option<BlobWriter>,
    total: i64,
}

impl Ingest {
    fn offset(&self) -> i64 {
        self.writer.as_ref().map_or(0, |w| i64::try_from(w.len()).unwrap_or(i64::MAX))
    }

    fn apply(&mut self, m: WriteContentRequest) -> Result<WriteContentResponse, Status> {
        if m.total > 0 {
            self.total = m.total;
        }
        let action = WriteAction::try_from(m.action).map_err(|_| Status::invalid_argument("unknown write action"))?;
        if matches!(action, WriteAction::Write | WriteAction::Commit) && !m.data.is_empty() {
            if m.offset != self.offset() {
                return Err(Status::invalid_argument(format!(
                    "write at offset {} of {}, which is at {}",
                    m.offset,
                    m.r#ref,
                    self.offset()
                )));
            }
            if self.writer.is_none() {
                self.writer = Some(self.store.writer().map_err(internal)?);
            }
            if let Some(w) = self.writer.as_mut() {
                w.write_all(&m.data).map_err(|e| Status::internal(format!("write {}: {e}", m.r#ref)))?;
            }
        }
        let mut resp =
            WriteContentResponse { action: m.action, offset: self.offset(), total: self.total, ..Default::default() };
        if action == WriteAction::Commit {
            let expected = if m.expected.is_empty() { None } else { Some(digest_arg(&m.expected)?) };
            let writer = match self.writer.take() {
                Some(w) => w,
                None => self.store.writer().map_err(internal)?,
            };
            if self.total > 0 && i64::try_from(writer.len()).unwrap_or(i64::MAX) != self.total {
                return Err(Status::failed_precondition(format!(
                    "{} has {} bytes, {} were announced",
                    m.r#ref,
                    writer.len(),
                    self.total
                )));
            }
            let (d, size) = writer.commit(expected.as_ref()).map_err(|e| Status::failed_precondition(e.to_string()))?;
            resp.digest = d.to_string();
            resp.offset = i64::try_from(size).unwrap_or(i64::MAX);
        }
        Ok(resp)
    }
}

/// The manifest digest of a local cache import: the one given, else the tag's (default
/// `latest`) in the directory's `index.json`.
pub fn import_digest(dir: &Path, tag: Option<&str>, digest: Option<&Digest>) -> Result<Digest> {
    if let Some(d) = digest {
        return Ok(d.clone());
    }
    let layout = OciLayout::open_readonly(dir)?;
    let desc = layout.resolve(tag.unwrap_or("latest"))?;
    Digest::parse(desc.digest().as_ref())
}

/// Tags the manifest the daemon exported (`cache.manifest`, a descriptor as JSON) in `dir`'s
/// `index.json`.
pub fn tag_export(dir: &Path, tag: &str, descriptor_json: &str) -> Result<()> {
    tag_manifest(dir, tag, descriptor_json.as_bytes(), ErrorKind::Cache, "cache manifest")
}

/// The store id of a `type=oci,tar=false` output's directory (BuildKit's client names it so).
pub const EXPORT_STORE: &str = "export";
/// The exporter response key of an exported image's manifest descriptor (base64 of its JSON).
pub const IMAGE_DESCRIPTOR_KEY: &str = "containerimage.descriptor";

/// Tags the image an `oci,tar=false` output wrote into `dir` (the response's
/// `containerimage.descriptor`, base64 of the descriptor's JSON) as `image.name`, else `latest`,
/// as BuildKit's client does.
pub fn tag_image(dir: &Path, response: &BTreeMap<String, String>) -> Result<()> {
    let missing = || {
        Error::new(
            ErrorKind::Export,
            format!("the daemon exported an OCI layout to {} but gave no valid image descriptor", dir.display()),
        )
    };
    let encoded = response.get(IMAGE_DESCRIPTOR_KEY).ok_or_else(missing)?;
    let json = crate::registry::auth::base64_decode(encoded).ok_or_else(missing)?;
    let tag = response.get("image.name").map(String::as_str).filter(|t| !t.is_empty()).unwrap_or("latest");
    tag_manifest(dir, tag, &json, ErrorKind::Export, "image manifest")
}

fn tag_manifest(dir: &Path, tag: &str, json: &[u8], kind: ErrorKind, what: &str) -> Result<()> {
    let desc: oci_spec::image::Descriptor = serde_json::from_slice(json)
        .map_err(|e| Error::new(kind, format!("the daemon's {what} descriptor is not valid JSON: {e}")))?;
    let d = Digest::parse(desc.digest().as_ref())?;
    let layout = open_layout(dir)?;
    if !layout.store().has(&d) {
        return Err(Error::new(
            kind,
            format!("the daemon reported the {what} {d}, which it did not write to {}", dir.display()),
        ));
    }
    layout.set_tag(tag, desc)
}
