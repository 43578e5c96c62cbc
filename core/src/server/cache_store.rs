//! Local cache directories on the client's side (`--export-cache/--import-cache type=local`), as
//! BuildKit does them: buildctl serves each directory as a containerd content store on its
//! session (`containerd.services.content.v1.Content`, the store picked by the
//! `buildkit-attachable-store-id` header, `local:` + the directory), the daemon writes blobs into
//! it and reads them from it, and buildctl itself writes `index.json` after the solve from the
//! `cache.manifest` descriptor of the solve's exporter response.
//!
//! kiln stages both on the daemon and reuses its own local cache exporter and importer:
//! an export is written to a staging layout, then every blob the client's store lacks is
//! uploaded (the manifest last); an import fetches the manifest the client names by digest and
//! every blob it references into a staging layout, which the solve imports. Every blob is
//! verified against its digest on the way in.

use super::proto::containerd::content::content_client::ContentClient;
use super::proto::containerd::content::{InfoRequest, ReadContentRequest, WriteAction, WriteContentRequest};
use super::session::Session;
use crate::content::{ContentStore, OciLayout};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use oci_spec::image::Descriptor;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use tonic::metadata::MetadataValue;

/// The header naming the store a content call is for (one definition, the client's).
pub use crate::client::content::STORE_ID_HEADER;
/// The method a client serves its content stores on (checked before any call).
pub const CONTENT_WRITE: &str = "/containerd.services.content.v1.Content/Write";
/// The exporter response key buildctl reads the exported cache's manifest descriptor from.
pub use crate::client::request::CACHE_MANIFEST_KEY;
/// Bytes per Write message (containerd's own copy buffer is 1 MiB).
const CHUNK: usize = 1 << 20;
/// At most this many blobs in one cache manifest (a hostile client's manifest is bounded).
const MAX_BLOBS: usize = 100_000;

fn fail(msg: String) -> Error {
    Error::new(ErrorKind::Cache, msg)
}

/// One content store of the client's session: `local:DIR`.
#[derive(Debug, Clone)]
pub struct ClientStore {
    session: Arc<Session>,
    id: String,
}

impl ClientStore {
    /// The store buildctl serves for cache directory `dir` (the `dest=`/`src=` it sent).
    pub fn new(session: Arc<Session>, dir: &str) -> Result<ClientStore> {
        if !session.serves(CONTENT_WRITE) {
            return Err(fail(format!(
                "the client's session serves no content store for the local cache directory {dir} \
                 (containerd.services.content.v1.Content)"
            )));
        }
        ClientStore::with_id(session, &format!("local:{dir}"))
    }

    /// The client's store named `id` (`export` for `type=oci,tar=false` outputs).
    pub fn with_id(session: Arc<Session>, id: &str) -> Result<ClientStore> {
        if !session.serves(CONTENT_WRITE) {
            return Err(fail(format!(
                "the client's session serves no content store {id:?} (containerd.services.content.v1.Content)"
            )));
        }
        Ok(ClientStore { session, id: id.to_owned() })
    }

    fn request<T>(&self, msg: T) -> Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(msg);
        let v: MetadataValue<_> = self
            .id
            .parse()
            .map_err(|_| fail(format!("the cache directory {:?} cannot be named in a gRPC header", self.id)))?;
        r.metadata_mut().insert(STORE_ID_HEADER, v);
        Ok(r)
    }

    fn client(&self) -> ContentClient<tonic::transport::Channel> {
        ContentClient::new(self.session.channel.clone()).max_decoding_message_size(CHUNK * 8)
    }

    fn status(&self, what: &str, s: tonic::Status) -> Error {
        fail(format!("{what} in the client's cache store {}: {}: {}", self.id, s.code(), s.message()))
    }

    /// The size of blob `d` in the client's store, `None` when it has none.
    pub async fn info(&self, d: &Digest) -> Result<Option<u64>> {
        match self.client().info(self.request(InfoRequest { digest: d.to_string() })?).await {
            Ok(r) => Ok(Some(r.into_inner().info.map(|i| u64::try_from(i.size).unwrap_or(0)).unwrap_or(0))),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(self.status(&format!("looking up {d}"), s)),
        }
    }

    /// Copies blob `d` of the client's store into `store`, verified.
    pub async fn fetch(&self, d: &Digest, store: &ContentStore) -> Result<()> {
        if store.has(d) {
            return Ok(());
        }
        let mut stream = self
            .client()
            .read(self.request(ReadContentRequest { digest: d.to_string(), offset: 0, size: 0 })?)
            .await
            .map_err(|s| self.status(&format!("reading {d}"), s))?
            .into_inner();
        let mut w = store.writer()?;
        let mut next: i64 = 0;
        while let Some(m) = stream.message().await.map_err(|s| self.status(&format!("reading {d}"), s))? {
            if m.offset != next {
                return Err(fail(format!("the client sent {d} out of order (offset {} after {next})", m.offset)));
            }
            std::io::Write::write_all(&mut w, &m.data)
                .map_err(|e| Error::with_source(ErrorKind::Io, format!("staging {d}"), e))?;
            next += i64::try_from(m.data.len()).unwrap_or(i64::MAX);
        }
        w.commit(Some(d))?;
        Ok(())
    }

    /// Uploads `d` (`size` bytes, read from `store`) unless the client's store has it.
    pub async fn upload(&self, d: &Digest, size: u64, store: &ContentStore) -> Result<()> {
        if self.info(d).await?.is_some() {
            return Ok(());
        }
        let total = i64::try_from(size).map_err(|_| fail(format!("{d} is too large")))?;
        let (tx, rx) = crate::session::conn::request_stream::<WriteContentRequest>();
        let reference = format!("kiln-cache-{}", d.hex());
        let first = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.clone(),
            total,
            expected: d.to_string(),
            ..Default::default()
        };
        let closed = || fail(format!("the client stopped taking {d}"));
        tx.send(first).await.map_err(|_| closed())?;
        let mut resp = match self.client().write(self.request(rx)?).await {
            Ok(r) => r.into_inner(),
            // Written meanwhile (another build exporting the same blob).
            Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(self.status(&format!("writing {d}"), s)),
        };
        let mut answer = async || -> Result<i64> {
            match resp.message().await {
                Ok(Some(m)) => Ok(m.offset),
                Ok(None) => Err(fail(format!("the client's store ended the write of {d} early"))),
                Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(-1),
                Err(s) => Err(self.status(&format!("writing {d}"), s)),
            }
        };
        if answer().await? < 0 {
            return Ok(());
        }
        let mut reader = store.open_reader(d)?;
        let mut buf = vec![0u8; CHUNK];
        let mut offset: i64 = 0;
        loop {
            let n = read_full(&mut reader, &mut buf)
                .map_err(|e| Error::with_source(ErrorKind::Io, format!("read {d}"), e))?;
            if n == 0 {
                break;
            }
            let msg = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                offset,
                data: buf[..n].to_vec(),
                ..Default::default()
            };
            tx.send(msg).await.map_err(|_| closed())?;
            offset += n as i64;
            let at = answer().await?;
            if at != offset {
                return Err(fail(format!("the client's store is at offset {at} of {d}, kiln at {offset}")));
            }
        }
        if offset != total {
            return Err(fail(format!("{d} has {offset} bytes, its descriptor says {total}")));
        }
        let commit = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total,
            expected: d.to_string(),
            offset,
            ..Default::default()
        };
        tx.send(commit).await.map_err(|_| closed())?;
        answer().await?;
        Ok(())
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Uploads the cache a solve exported into the staging layout `staging` (tag `tag`) to the
/// client's store: every blob the store lacks, the manifest last. Returns the manifest's
/// descriptor as the JSON buildctl expects under [`CACHE_MANIFEST_KEY`].
pub async fn upload_export(client: &ClientStore, staging: &Path, tag: &str) -> Result<String> {
    let layout = OciLayout::open(staging)?;
    let manifest = layout.resolve(tag)?;
    upload_manifest(client, &layout, &manifest).await?;
    serde_json::to_string(&manifest)
        .map_err(|e| Error::with_source(ErrorKind::Internal, "encode the cache manifest descriptor", e))
}

/// Uploads every blob of `layout` to the client's store, the manifest `manifest` last (so the
/// store never holds a manifest whose blobs are missing).
pub async fn upload_manifest(client: &ClientStore, layout: &OciLayout, manifest: &Descriptor) -> Result<()> {
    let manifest_digest = Digest::parse(manifest.digest().as_ref())?;
    let store = layout.store();
    for (d, size) in store.list()? {
        if d != manifest_digest {
            client.upload(&d, size, store).await?;
        }
    }
    client.upload(&manifest_digest, store.size(&manifest_digest)?, store).await
}

/// Fetches the cache manifest `digest` and every blob it references from the client's store into
/// a fresh layout at `staging`, tagged `latest`, for kiln's local cache importer.
pub async fn fetch_import(client: &ClientStore, digest: &Digest, staging: &Path) -> Result<()> {
    let layout = OciLayout::create(staging)?;
    let store = layout.store();
    client.fetch(digest, store).await?;
    let body = store.read(digest)?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| fail(format!("the cache manifest {digest} from the client is not JSON: {e}")))?;
    let mut blobs = Vec::new();
    if let Some(c) = v.get("config").and_then(|c| c.get("digest")).and_then(|d| d.as_str()) {
        blobs.push(c.to_owned());
    }
    for key in ["layers", "manifests"] {
        for l in v.get(key).and_then(|l| l.as_array()).into_iter().flatten() {
            if let Some(d) = l.get("digest").and_then(|d| d.as_str()) {
                blobs.push(d.to_owned());
            }
        }
    }
    if blobs.len() > MAX_BLOBS {
        return Err(fail(format!("the cache manifest {digest} names {} blobs (at most {MAX_BLOBS})", blobs.len())));
    }
    for b in &blobs {
        client.fetch(&Digest::parse(b)?, store).await?;
    }
    let media_type =
        v.get("mediaType").and_then(|m| m.as_str()).unwrap_or("application/vnd.oci.image.index.v1+json").to_owned();
    let size = i64::try_from(body.len()).unwrap_or(i64::MAX);
    let desc = oci_spec::image::DescriptorBuilder::default()
        .media_type(oci_spec::image::MediaType::from(media_type.as_str()))
        .digest(
            oci_spec::image::Digest::try_from(digest.to_string()).map_err(|e| fail(format!("digest {digest}: {e}")))?,
        )
        .size(u64::try_from(size).unwrap_or(0))
        .build()
        .map_err(|e| fail(format!("the descriptor of {digest}: {e}")))?;
    layout.set_tag("latest", desc)?;
    Ok(())
}
