//! The sending side of DiffCopy (fsutil's `Send`): walk the source directory, send one STAT per
//! selected path in walk order and an empty STAT after the last, answer each REQ with the
//! file's content in 32 KiB DATA packets and an empty DATA, and answer the receiver's FIN with
//! FIN. The walk, the REQ loop and the file senders run concurrently, as fsutil's do: the
//! receiver requests files while stats are still arriving.

use super::stat::{can_request_data, mkstat};
use super::{err_packet, fin_packet, PacketType};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::fileops::{walk_matching, PatternMatcher};
use crate::session::conn::{Conn, MsgRx, MsgTx};
use crate::session::proto::fsutil::types::{Packet, Stat};
use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// Data packet size. fsutil's buffer is 32 KiB; larger packets cost fewer messages through the
/// session tunnel (a gRPC stream inside a gRPC stream) and stay far below every peer's 4 MiB
/// message limit.
pub const CHUNK: usize = 512 * 1024;
/// Requests queued before the REQ loop waits, as fsutil's pipeline.
const QUEUE: usize = 128;

/// What of the source directory is sent: BuildKit's WalkOpt from the session metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOpts {
    /// `include-patterns`: `.dockerignore`-style patterns selecting paths (empty: everything).
    pub include: Vec<String>,
    /// `exclude-patterns`: patterns leaving paths out.
    pub exclude: Vec<String>,
    /// `followpaths`: paths whose symlinks are resolved so their targets are sent too.
    pub follow_paths: Vec<String>,
}

fn send_err(msg: String) -> Error {
    Error::new(ErrorKind::Source, format!("file transfer (sending): {msg}"))
}

/// Sends `src` over `conn` until the receiver's FIN. A walk error is also sent to the receiver
/// as an ERR packet; an ERR from the receiver is returned as an error.
pub async fn send<T, R>(conn: Conn<T, R>, src: &Path, opts: &SendOpts) -> Result<()>
where
    T: MsgTx<Packet>,
    R: MsgRx<Packet>,
{
    let Conn { tx, mut rx } = conn;
    let matcher = PatternMatcher::new(&opts.include, &opts.exclude).map_err(|e| send_err(e.to_string()))?;
    let root = src.to_path_buf();
    let follow = opts.follow_paths.clone();
    let (stat_tx, mut stat_rx) = mpsc::channel::<Result<Stat>>(64);
    // The walk is blocking file system work: a thread, handing stats over a bounded channel.
    // Detached: it ends when the walk does or at its next send once the channel is gone.
    let _walker = tokio::task::spawn_blocking(move || {
        let walked = match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => walk_matching(&root, &matcher, &follow),
            Ok(_) => Err(send_err(format!("{} is not a directory", root.display()))),
            Err(e) => Err(Error::io("file transfer: cannot read source directory", &root, e)),
        };
        let entries = match walked {
            Ok(v) => v,
            Err(e) => {
                let _ = stat_tx.blocking_send(Err(e));
                return;
            }
        };
        let mut seen = HashMap::new();
        for e in entries {
            let st = mkstat(&e.path, &e.rel, &e.meta, Some(&mut seen));
            let failed = st.is_err();
            if stat_tx.blocking_send(st).is_err() || failed {
                return;
            }
        }
    });

    // Regular files by the id the receiver will request them with: the stat's index in the walk.
    let files: Mutex<HashMap<u32, String>> = Mutex::new(HashMap::new());
    let (queue_tx, queue_rx) = mpsc::channel::<(u32, PathBuf)>(QUEUE);
    let (tx_ref, files) = (&tx, &files);

    let walk = async move {
        let mut id: u32 = 0;
        while let Some(st) = stat_rx.recv().await {
            let st = match st {
                Ok(st) => st,
                Err(e) => {
                    let _ = tx_ref.send(err_packet(&e.to_string())).await;
                    return Err(e);
                }
            };
            if can_request_data(st.mode) {
                lock(files).insert(id, st.path.clone());
            }
            id = id.wrapping_add(1);
            tx_ref.send(Packet { r#type: PacketType::PacketStat as i32, stat: Some(st), ..Packet::default() }).await?;
        }
        // The empty STAT: the walk is complete.
        tx_ref.send(Packet { r#type: PacketType::PacketStat as i32, ..Packet::default() }).await
    };

    // Owns the queue's sender: when it returns, the file senders run dry and finish.
    let requests = async move {
        loop {
            let Some(p) = rx.recv().await? else {
                return Err(send_err("the receiver ended the stream before FIN".into()));
            };
            match PacketType::try_from(p.r#type) {
                Ok(PacketType::PacketErr) => {
                    return Err(send_err(format!("error from receiver: {}", String::from_utf8_lossy(&p.data))));
                }
                Ok(PacketType::PacketReq) => {
                    let Some(rel) = lock(files).remove(&p.id) else {
                        return Err(send_err(format!("invalid file id {}", p.id)));
                    };
                    if queue_tx.send((p.id, src.join(rel))).await.is_err() {
                        return Err(send_err("file senders stopped".into()));
                    }
                }
                Ok(PacketType::PacketFin) => {
                    tx_ref.send(fin_packet()).await?;
                    return Ok(rx);
                }
                // fsutil's sender ignores everything else.
                _ => {}
            }
        }
    };

    // fsutil's four file senders, taking requests in turn.
    let queue = tokio::sync::Mutex::new(queue_rx);
    let sender = || async {
        loop {
            let next = queue.lock().await.recv().await;
            let Some((id, path)) = next else { return Ok::<(), Error>(()) };
            send_file(tx_ref, id, path).await?;
        }
    };
    let ((), mut rx, (), (), (), ()) = tokio::try_join!(walk, requests, sender(), sender(), sender(), sender())?;
    // Our end of the stream, then the receiver's: returning at once would drop a client call
    // before its request's end reached the peer, which h2 turns into a cancellation that the
    // receiver (still reading to the end of the stream, as fsutil does) reports as a failure.
    drop(tx);
    let drained = tokio::time::timeout(END_GRACE, async { while let Ok(Some(_)) = rx.recv().await {} });
    let _ = drained.await;
    Ok(())
}

/// How long a finished send waits for the receiver to end its side.
const END_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// One requested file: its content in [`CHUNK`]-sized DATA packets, then an empty DATA. A file
/// that cannot be opened any more is sent empty, as fsutil does.
async fn send_file<T: MsgTx<Packet>>(tx: &T, id: u32, path: PathBuf) -> Result<()> {
    // O_NOFOLLOW: the walk saw a regular file here; never read through a symlink swapped in.
    let opened = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path);
    if let Ok(f) = opened {
        let mut f = Some(f);
        // Each chunk is read on a blocking thread straight into the buffer the packet carries
        // (tokio's `File` reads into its own buffer and copies): one copy fewer per byte.
        while let Some(file) = f.take() {
            let path = path.clone();
            let (file, data) = tokio::task::spawn_blocking(move || read_chunk(file, &path))
                .await
                .map_err(|e| Error::with_source(ErrorKind::Internal, "file transfer: read task failed", e))??;
            if data.is_empty() {
                break;
            }
            let full = data.len() == CHUNK;
            tx.send(Packet { r#type: PacketType::PacketData as i32, id, data, ..Packet::default() }).await?;
            // A short chunk was the end of the file.
            f = full.then_some(file);
        }
    }
    tx.send(Packet { r#type: PacketType::PacketData as i32, id, ..Packet::default() }).await
}

/// Up to [`CHUNK`] bytes of `f` (fewer only at its end), read into a fresh buffer.
fn read_chunk(f: std::fs::File, path: &Path) -> Result<(std::fs::File, prost::bytes::Bytes)> {
    let mut buf = Vec::with_capacity(CHUNK);
    // `read_to_end` fills the spare capacity without zeroing it first; `take` stops at a chunk.
    std::io::Read::read_to_end(&mut std::io::Read::take(&f, CHUNK as u64), &mut buf)
        .with_path("file transfer: cannot read", path)?;
    Ok((f, prost::bytes::Bytes::from(buf)))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
