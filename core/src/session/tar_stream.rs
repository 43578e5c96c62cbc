//! Byte streams over `FileSend.DiffCopy` as BuildKit's `CopyFileWriter` writes them: an
//! archive (a `type=tar` export, an OCI/Docker tarball) cut into `BytesMessage` chunks, the
//! exporter's attributes as `exporter-md-*` metadata, the end of the archive as the end of the
//! request stream, and the receiver's end of stream as its acknowledgement.

use crate::error::{Error, ErrorKind, Result};
use crate::session::conn::{Conn, MsgRx};
use crate::session::fsutil::keys::EXPORTER_META_PREFIX;
use crate::session::proto::filesync::BytesMessage;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Bytes per message.
pub const CHUNK: usize = 32 * 1024;

fn tar_err(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Export, format!("tar stream: {msg}"))
}

/// Adds an exporter's attributes to a `FileSend.DiffCopy` call's metadata (`exporter-md-KEY`),
/// which the client reads to name the file it writes.
pub fn exporter_metadata(attrs: &BTreeMap<String, String>, md: &mut tonic::metadata::MetadataMap) -> Result<()> {
    for (k, v) in attrs {
        let key = format!("{EXPORTER_META_PREFIX}{}", k.to_ascii_lowercase());
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes())
            .map_err(|_| tar_err(format!("exporter attribute {k:?} cannot be a gRPC metadata key")))?;
        let value = v.parse().map_err(|_| tar_err(format!("exporter attribute {k}={v:?} is not printable ASCII")))?;
        md.insert(key, value);
    }
    Ok(())
}

/// A blocking writer sending what is written as `BytesMessage` chunks of [`CHUNK`] bytes: for
/// an archive writer on a blocking thread (`blocking_send`; never from an async task).
#[derive(Debug)]
pub struct BytesWriter {
    tx: mpsc::Sender<BytesMessage>,
    buf: Vec<u8>,
}

impl BytesWriter {
    /// Writes into `tx` (the request side of a `FileSend.DiffCopy` call).
    pub fn new(tx: mpsc::Sender<BytesMessage>) -> BytesWriter {
        BytesWriter { tx, buf: Vec::with_capacity(CHUNK) }
    }

    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(BytesMessage { data: data.into() }).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the receiver of the tar stream went away")
        })
    }

    /// Sends what is buffered and ends the stream (BuildKit's CloseSend).
    pub fn finish(mut self) -> std::io::Result<()> {
        self.send_buf()
    }
}

impl Write for BytesWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buf()
    }
}

/// Waits for the receiver to end its side, as BuildKit's writer does on Close: a message from
/// it, or a failure, is an error.
pub async fn wait_for_receiver<R: MsgRx<BytesMessage>>(rx: &mut R) -> Result<()> {
    match rx.recv().await? {
        None => Ok(()),
        Some(_) => Err(tar_err("the receiver sent data on an export stream")),
    }
}

/// Sends the tar of `src_root` (kiln's `type=tar` archive: sorted, metadata kept) over `conn`
/// and waits for the receiver to finish.
pub async fn send_tree_tar<R: MsgRx<BytesMessage>>(
    conn: Conn<mpsc::Sender<BytesMessage>, R>,
    src_root: &Path,
) -> Result<()> {
    let Conn { tx, mut rx } = conn;
    let root = src_root.to_path_buf();
    let write = tokio::task::spawn_blocking(move || {
        let mut w = BytesWriter::new(tx);
        crate::export::tar::write_tree_tar(&root, &mut w)?;
        w.finish().map_err(|e| Error::io("tar stream: sending", &root, e))
    });
    let written =
        write.await.map_err(|e| Error::with_source(ErrorKind::Internal, "tar stream: writer thread failed", e))?;
    // A receiver that failed says why on its side: its status explains a broken pipe best.
    match (written, wait_for_receiver(&mut rx).await) {
        (Ok(()), r) => r,
        (Err(e), Ok(())) => Err(e),
        (Err(_), Err(e)) => Err(e),
    }
}

/// The receiving side (BuildKit's `writeTargetFile`): writes every chunk to `out` until the end
/// of the stream, returning the bytes written.
pub async fn receive_bytes<R, W>(rx: &mut R, out: &mut W) -> Result<u64>
where
    R: MsgRx<BytesMessage>,
    W: AsyncWrite + Unpin + Send,
{
    let mut n = 0u64;
    while let Some(m) = rx.recv().await? {
        out.write_all(&m.data).await.map_err(|e| tar_err(format!("cannot write the received stream: {e}")))?;
        n += m.data.len() as u64;
    }
    out.flush().await.map_err(|e| tar_err(format!("cannot write the received stream: {e}")))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::conn::pipe;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tree_streams_as_the_same_tar_the_file_exporter_writes() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/f"), vec![5u8; 100_000]).unwrap();
        std::fs::write(src.path().join("g"), b"g").unwrap();
        let (a, mut b) = pipe::<BytesMessage>(4);
        let recv = async move {
            let mut out = Vec::new();
            let n = receive_bytes(&mut b.rx, &mut out).await.unwrap();
            drop(b.tx); // ends our side: the sender's acknowledgement
            (n, out)
        };
        let (sent, (n, out)) = tokio::join!(send_tree_tar(a, src.path()), recv);
        sent.unwrap();
        let mut want = Vec::new();
        crate::export::tar::write_tree_tar(src.path(), &mut want).unwrap();
        assert_eq!(n as usize, want.len());
        assert!(out == want);
        let names: Vec<String> = tar::Archive::new(&out[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["d", "d/f", "g"]);
    }

    #[test]
    fn exporter_attributes_become_prefixed_metadata() {
        let mut md = tonic::metadata::MetadataMap::new();
        let attrs = BTreeMap::from([("name".to_string(), "out.tar".to_string())]);
        exporter_metadata(&attrs, &mut md).unwrap();
        assert_eq!(md.get("exporter-md-name").unwrap(), "out.tar");
    }
}
