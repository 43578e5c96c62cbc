//! The receiving side of DiffCopy (fsutil's `Receive` with its `DiskWriter`): read the sender's
//! walk, diff it against what the destination holds (fsutil's double walk), apply each change
//! (create, replace through a temporary name, delete what the sender no longer has), request
//! the content of new or changed regular files by id and stream their DATA to disk, restore
//! directory mtimes, then FIN.
//!
//! The disk work ([`super::writer`]) runs on one blocking thread fed by a bounded channel; requests go out through
//! an unbounded queue so that the thread never waits on the sender while the sender waits on
//! us (fsutil sends each REQ from its own goroutine for the same reason).

pub use super::writer::Digests;
use super::writer::Worker;
use crate::error::{Error, ErrorKind, Result};
use crate::fileops::Owner;
use crate::session::conn::{Conn, MsgRx, MsgTx, STREAM_BUFFER};
use crate::session::proto::fsutil::types::Packet;
use std::path::Path;
use tokio::sync::mpsc;

/// How a destination entry that the sender also has is judged unchanged (fsutil's `DiffType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Differ {
    /// Same type, mode, owner, device numbers, link target and, for non-directories, size and
    /// mtime: kept without transferring it (fsutil's default, `DiffMetadata`).
    #[default]
    Metadata,
    /// Every entry is rewritten and every file transferred (`DiffNone`).
    None,
}

/// How to receive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiveOpts {
    /// Keep destination entries the sender does not have (fsutil's `Merge`; BuildKit's
    /// `type=local` export target). Without it, the destination ends up exactly the sender's
    /// walk: everything else in it is deleted.
    pub merge: bool,
    /// Own every entry by this user and group instead of the sender's (BuildKit's export target
    /// sets the receiving user's ids this way).
    pub owner: Option<Owner>,
    /// When an existing entry counts as unchanged.
    pub differ: Differ,
    /// A cap on the file content received, in bytes (`None`: no cap). fsutil has none; a
    /// daemon may want one.
    pub max_bytes: Option<u64>,
    /// Record the sha256 of every file's content as it is written ([`receive_hashed`]): a
    /// daemon keying a build context on its content then need not read it back.
    pub hash: bool,
}

/// Receives the sender's directory into `dest` (created if missing) over `conn`, returning after
/// the sender's FIN and the end of its stream. A local failure is also sent to the sender as an
/// ERR packet; an ERR from the sender is returned as an error.
pub async fn receive<T, R>(conn: Conn<T, R>, dest: &Path, opts: &ReceiveOpts) -> Result<()>
where
    T: MsgTx<Packet>,
    R: MsgRx<Packet>,
{
    receive_hashed(conn, dest, opts).await.map(drop)
}

/// [`receive`], returning the size and sha256 of each regular file received by its path (with
/// [`ReceiveOpts::hash`]; empty without).
pub async fn receive_hashed<T, R>(conn: Conn<T, R>, dest: &Path, opts: &ReceiveOpts) -> Result<Digests>
where
    T: MsgTx<Packet>,
    R: MsgRx<Packet>,
{
    let Conn { tx, mut rx } = conn;
    let (in_tx, in_rx) = mpsc::channel::<Packet>(STREAM_BUFFER);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Packet>();
    let worker = Worker::new(dest.to_path_buf(), opts.clone(), out_tx);
    let mut worker_task = tokio::task::spawn_blocking(move || worker.run(in_rx));

    // Forwards the sender's packets to the worker until the end of the stream (dropping `in_tx`
    // then is how the worker learns of it) or until the worker stops taking them.
    let pump = async move {
        while let Some(p) = rx.recv().await? {
            if in_tx.send(p).await.is_err() {
                break;
            }
        }
        Ok::<(), Error>(())
    };
    let writer = async {
        while let Some(p) = out_rx.recv().await {
            if tx.send(p).await.is_err() {
                // The peer is gone; the pump sees the stream end.
                break;
            }
        }
    };
    let main = async {
        tokio::pin!(pump);
        let mut transport = None;
        let done = tokio::select! {
            w = &mut worker_task => w,
            p = &mut pump => {
                transport = p.err();
                (&mut worker_task).await
            }
        };
        let worked =
            done.map_err(|e| Error::with_source(ErrorKind::Internal, "file transfer: receiver thread failed", e))?;
        // A transport failure explains the worker's "stream ended" better than the worker does.
        match transport {
            Some(e) => Err(e),
            None => worked,
        }
    };
    tokio::pin!(main, writer);
    let mut flushed = false;
    let r = loop {
        tokio::select! {
            r = &mut main => break r,
            () = &mut writer, if !flushed => flushed = true,
        }
    };
    if !flushed {
        // What is left is a FIN or an ERR: best effort, never waiting on a peer that stopped reading.
        let _ = tokio::time::timeout(FLUSH_GRACE, &mut writer).await;
    }
    r
}

/// How long a finished receive waits to hand its last packets to a slow peer.
const FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
