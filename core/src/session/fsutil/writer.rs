//! The receiver's disk writer (fsutil's `DiskWriter` driven by its double walk), on a blocking
//! thread: validates each STAT, diffs it against the destination's walk, applies the change
//! (a new entry is made under a temporary name and renamed over an old one), requests the
//! data of regular files and writes their DATA at its offset, deletes what the sender lacks,
//! and sends FIN when the walk and every requested file are complete.

use super::dest_walk::DestWalk;
use super::disk::{mknod, remove_all, rewrite_metadata, set_times};
use super::receive::{Differ, ReceiveOpts};
use super::stat::{
    can_request_data, is_dir, mkdev, unix_perm, MODE_CHAR_DEVICE, MODE_DEVICE, MODE_IRREGULAR, MODE_NAMED_PIPE,
    MODE_SOCKET, MODE_SYMLINK,
};
use super::validate::{compare_path, WalkValidator};
use super::{err_packet, fin_packet, PacketType};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::session::proto::fsutil::types::{Packet, Stat};
use crate::solver::FileDigest;
use prost::bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

fn recv_err(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Source, format!("file transfer (receiving): {msg}"))
}

/// A requested file whose DATA is arriving.
struct Pending {
    path: PathBuf,
    mtime: i64,
    perm: u32,
    written: u64,
    file: Option<File>,
    /// The mode to put back after writing to a file we could not open for writing.
    restore: Option<u32>,
    /// The path as the sender named it (what its digest is recorded by).
    rel: String,
}

/// The received files' sizes and sha256 by the path the sender named them with (see
/// [`ReceiveOpts::hash`]).
pub type Digests = crate::solver::FileDigests;

/// Files kept open at once while their data arrives (fsutil's sender sends four at a time; a
/// sender interleaving more costs reopenings, not descriptors).
const MAX_OPEN: usize = 16;

enum Change {
    Add,
    Modify,
}

pub(super) struct Worker {
    dest: PathBuf,
    opts: ReceiveOpts,
    out: mpsc::UnboundedSender<Packet>,
    validator: WalkValidator,
    next_id: u32,
    dest_walk: Option<DestWalk>,
    /// The destination directory deleted last: its contents went with it.
    rmdir: Option<String>,
    pending: HashMap<u32, Pending>,
    open: usize,
    dirs: Vec<(PathBuf, i64)>,
    received: u64,
    stats_done: bool,
    fin_sent: bool,
    fin_received: bool,
    /// The sender reported an error (ERR): not echoed back.
    peer_failed: bool,
    tmp_seq: u64,
    /// With [`ReceiveOpts::hash`]: the threads hashing the received content.
    hashers: Option<Hashers>,
}

impl Worker {
    pub(super) fn new(dest: PathBuf, opts: ReceiveOpts, out: mpsc::UnboundedSender<Packet>) -> Worker {
        let dest_walk = (!opts.merge).then(|| DestWalk::new(dest.clone()));
        Worker {
            dest,
            opts,
            out,
            validator: WalkValidator::default(),
            next_id: 0,
            dest_walk,
            rmdir: None,
            pending: HashMap::new(),
            open: 0,
            dirs: Vec::new(),
            received: 0,
            stats_done: false,
            fin_sent: false,
            fin_received: false,
            peer_failed: false,
            tmp_seq: u64::from(std::process::id()) << 20,
            hashers: None,
        }
    }

    /// Runs to the end of the stream; returns the received files' digests (empty unless
    /// [`ReceiveOpts::hash`]).
    pub(super) fn run(mut self, mut input: mpsc::Receiver<Packet>) -> Result<Digests> {
        if self.opts.hash {
            match Hashers::start() {
                Ok(h) => self.hashers = Some(h),
                Err(e) => {
                    let _ = self.out.send(err_packet(&e.to_string()));
                    return Err(e);
                }
            }
        }
        let r = self.run_inner(&mut input);
        if let Err(e) = &r {
            if !self.peer_failed {
                let _ = self.out.send(err_packet(&e.to_string()));
            }
        }
        r?;
        match self.hashers.take() {
            Some(h) => h.finish(),
            None => Ok(Digests::new()),
        }
    }

    fn run_inner(&mut self, input: &mut mpsc::Receiver<Packet>) -> Result<()> {
        match std::fs::symlink_metadata(&self.dest) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(recv_err(format!("destination {} is not a directory", self.dest.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dest)
                    .with_path("file transfer: cannot create destination", &self.dest)?;
            }
            Err(e) => return Err(Error::io("file transfer: cannot use destination", &self.dest, e)),
        }
        loop {
            let Some(p) = input.blocking_recv() else {
                if self.fin_received {
                    return Ok(());
                }
                return Err(recv_err(if self.fin_sent {
                    "the sender ended the stream without answering FIN"
                } else {
                    "the sender ended the stream before the transfer was complete"
                }));
            };
            if self.fin_received {
                // fsutil reads on to the end of the stream after FIN, ignoring what comes.
                continue;
            }
            match PacketType::try_from(p.r#type) {
                Ok(PacketType::PacketErr) => {
                    self.peer_failed = true;
                    return Err(recv_err(format!("error from sender: {}", String::from_utf8_lossy(&p.data))));
                }
                Ok(PacketType::PacketStat) => {
                    if self.stats_done {
                        return Err(recv_err("a STAT after the end of the walk"));
                    }
                    match p.stat {
                        Some(st) => self.stat(st)?,
                        None => {
                            self.stats_done = true;
                            self.delete_rest()?;
                        }
                    }
                    self.maybe_finish()?;
                }
                Ok(PacketType::PacketData) => {
                    self.data(p.id, p.data)?;
                    self.maybe_finish()?;
                }
                Ok(PacketType::PacketFin) => {
                    if !self.fin_sent {
                        return Err(recv_err("the sender sent FIN before the transfer was complete"));
                    }
                    self.fin_received = true;
                }
                // fsutil's receiver ignores REQ and unknown packets.
                _ => {}
            }
        }
    }

    fn stat(&mut self, mut st: Stat) -> Result<()> {
        self.validator.check(&st)?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        if st.size < 0 {
            return Err(recv_err(format!("{:?} has a negative size {}", st.path, st.size)));
        }
        if let Some(o) = self.opts.owner {
            st.uid = o.uid;
            st.gid = o.gid;
        }
        let Some(mut walk) = self.dest_walk.take() else {
            return self.apply(Change::Add, id, &st);
        };
        let r = self.diff_one(&mut walk, id, &st);
        self.dest_walk = Some(walk);
        r
    }

    /// fsutil's double walk for one sender entry: deletes the destination's entries sorting
    /// before it, then adds it, or compares it with the destination's entry of the same path.
    fn diff_one(&mut self, walk: &mut DestWalk, id: u32, st: &Stat) -> Result<()> {
        loop {
            let Some(d) = walk.peek()? else {
                self.rmdir = None;
                return self.apply(Change::Add, id, st);
            };
            match compare_path(&d.st.path, &st.path) {
                Ordering::Less => {
                    let (path, dir) = (d.st.path.clone(), is_dir(d.st.mode));
                    walk.advance();
                    self.delete(&path, dir)?;
                }
                Ordering::Greater => {
                    self.rmdir = None;
                    return self.apply(Change::Add, id, st);
                }
                Ordering::Equal => {
                    let same = self.opts.differ == Differ::Metadata && same_file(&d.st, st);
                    self.rmdir = (is_dir(d.st.mode) && !is_dir(st.mode)).then(|| format!("{}/", d.st.path));
                    walk.advance();
                    if same {
                        if is_dir(st.mode) {
                            // Children changing below it move its mtime: put it back at the end.
                            self.dirs.push((self.dest.join(&st.path), st.mod_time));
                        }
                        return Ok(());
                    }
                    return self.apply(Change::Modify, id, st);
                }
            }
        }
    }

    /// Deletes a destination entry the sender does not have (unless its directory went already).
    fn delete(&mut self, rel: &str, dir: bool) -> Result<()> {
        if let Some(r) = &self.rmdir {
            if rel.starts_with(r.as_str()) {
                return Ok(());
            }
        }
        self.rmdir = dir.then(|| format!("{rel}/"));
        remove_all(&self.dest.join(rel))
    }

    /// After the last STAT: what remains of the destination's walk is not the sender's.
    fn delete_rest(&mut self) -> Result<()> {
        let Some(mut walk) = self.dest_walk.take() else { return Ok(()) };
        let r = (|| {
            while let Some(d) = walk.peek()? {
                let (path, dir) = (d.st.path.clone(), is_dir(d.st.mode));
                walk.advance();
                self.delete(&path, dir)?;
            }
            Ok(())
        })();
        self.dest_walk = Some(walk);
        r
    }

    /// fsutil's `DiskWriter.HandleChange` for an added or modified entry.
    fn apply(&mut self, change: Change, id: u32, st: &Stat) -> Result<()> {
        let dest_path = self.dest.join(&st.path);
        let old = match std::fs::symlink_metadata(&dest_path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if matches!(change, Change::Modify) {
                    return Err(Error::io("file transfer: changed entry vanished", &dest_path, e));
                }
                None
            }
            Err(e) => return Err(Error::io("file transfer: cannot stat destination", &dest_path, e)),
        };
        let new_dir = is_dir(st.mode);
        if let Some(old) = &old {
            if old.is_dir() && new_dir {
                rewrite_metadata(&dest_path, st)?;
                self.dirs.push((dest_path, st.mod_time));
                return Ok(());
            }
        }
        // A changed entry is made anew under a temporary name and renamed over the old one, never
        // rewritten in place: a daemon keeping a synced dir relies on it, having hard-linked the
        // old files into snapshots.
        let new_path = match &old {
            Some(_) => self.tmp_name(&dest_path)?,
            None => dest_path.clone(),
        };
        let mode = st.mode;
        let mut regular = false;
        if new_dir {
            std::fs::DirBuilder::new()
                .mode(unix_perm(mode))
                .create(&new_path)
                .with_path("file transfer: cannot create directory", &new_path)?;
            self.dirs.push((dest_path.clone(), st.mod_time));
        } else if mode & (MODE_DEVICE | MODE_NAMED_PIPE) != 0 {
            let kind = if mode & MODE_CHAR_DEVICE != 0 {
                libc::S_IFCHR
            } else if mode & MODE_NAMED_PIPE != 0 {
                libc::S_IFIFO
            } else {
                libc::S_IFBLK
            };
            mknod(&new_path, kind | (unix_perm(mode) & 0o7777), mkdev(st.devmajor, st.devminor))?;
        } else if mode & MODE_SYMLINK != 0 {
            std::os::unix::fs::symlink(&st.linkname, &new_path)
                .with_path("file transfer: cannot create symlink", &new_path)?;
        } else if !st.linkname.is_empty() {
            // The validator saw the target sent before as a file: it is inside dest.
            let target = self.dest.join(&st.linkname);
            std::fs::hard_link(&target, &new_path).with_path("file transfer: cannot create hardlink", &new_path)?;
        } else if mode & (MODE_SOCKET | MODE_IRREGULAR) != 0 || !can_request_data(mode) {
            return Err(recv_err(format!("{:?} has a file type kiln cannot create (mode {mode:#o})", st.path)));
        } else {
            regular = true;
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(unix_perm(mode) & 0o777)
                .open(&new_path)
                .with_path("file transfer: cannot create file", &new_path)?;
        }
        rewrite_metadata(&new_path, st)?;
        if let Some(old) = &old {
            if old.is_dir() != new_dir {
                remove_all(&dest_path)?;
            }
            std::fs::rename(&new_path, &dest_path).with_path("file transfer: cannot move into place", &dest_path)?;
        }
        if regular {
            self.pending.insert(
                id,
                Pending {
                    path: dest_path,
                    mtime: st.mod_time,
                    perm: unix_perm(mode),
                    written: 0,
                    file: None,
                    restore: None,
                    rel: st.path.clone(),
                },
            );
            self.send(Packet { r#type: PacketType::PacketReq as i32, id, ..Packet::default() })?;
        }
        Ok(())
    }

    fn tmp_name(&mut self, dest_path: &Path) -> Result<PathBuf> {
        let parent = dest_path.parent().ok_or_else(|| recv_err("the destination itself cannot be replaced"))?;
        self.tmp_seq = self.tmp_seq.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Ok(parent.join(format!(".tmp.{:09}", (self.tmp_seq >> 33) % 1_000_000_000)))
    }

    fn data(&mut self, id: u32, data: Bytes) -> Result<()> {
        if !self.pending.contains_key(&id) {
            return Err(recv_err(format!("DATA for file id {id}, which was not requested or is complete")));
        }
        if data.is_empty() {
            let Some(mut p) = self.pending.remove(&id) else { return Ok(()) };
            if p.file.take().is_some() {
                self.open -= 1;
            }
            if let Some(h) = &self.hashers {
                h.end(id, std::mem::take(&mut p.rel), p.written)?;
            }
            // Writing may clear setuid/setgid (without CAP_FSETID): set the mode again.
            if p.restore.is_some() || p.perm & (libc::S_ISUID | libc::S_ISGID) != 0 {
                std::fs::set_permissions(&p.path, std::fs::Permissions::from_mode(p.perm))
                    .with_path("file transfer: cannot set mode", &p.path)?;
            }
            return set_times(&p.path, p.mtime);
        }
        self.received = self.received.saturating_add(data.len() as u64);
        if let Some(max) = self.opts.max_bytes {
            if self.received > max {
                return Err(recv_err(format!("more than {max} bytes of file content sent")));
            }
        }
        if self.pending.get(&id).is_some_and(|p| p.file.is_none()) {
            if self.open >= MAX_OPEN {
                for other in self.pending.values_mut() {
                    other.file = None;
                }
                self.open = 0;
            }
            if let Some(p) = self.pending.get_mut(&id) {
                p.file = Some(open_for_data(p)?);
                self.open += 1;
            }
        }
        if let Some(p) = self.pending.get_mut(&id) {
            if let Some(f) = &p.file {
                f.write_all_at(&data, p.written).with_path("file transfer: cannot write", &p.path)?;
            }
            p.written += data.len() as u64;
            if let Some(h) = &self.hashers {
                h.data(id, data)?;
            }
        }
        Ok(())
    }

    /// After the walk and every requested file: directory mtimes (children moved them), FIN.
    fn maybe_finish(&mut self) -> Result<()> {
        if !self.stats_done || !self.pending.is_empty() || self.fin_sent {
            return Ok(());
        }
        for (dir, mtime) in self.dirs.iter().rev() {
            set_times(dir, *mtime)?;
        }
        self.fin_sent = true;
        self.send(fin_packet())
    }

    fn send(&self, p: Packet) -> Result<()> {
        self.out.send(p).map_err(|_| recv_err("the stream to the sender is closed"))
    }
}

/// fsutil's `sameFile` with `DiffMetadata` (after `compareStat`).
fn same_file(d: &Stat, s: &Stat) -> bool {
    if !is_dir(d.mode) && (d.size != s.size || d.mod_time != s.mod_time) {
        return false;
    }
    d.mode == s.mode
        && d.uid == s.uid
        && d.gid == s.gid
        && d.devmajor == s.devmajor
        && d.devminor == s.devminor
        && d.linkname == s.linkname
}

/// Opens a requested file to write its data, making it writable for a moment if its mode does
/// not allow us (fsutil's lazyFileWriter does the same).
fn open_for_data(p: &mut Pending) -> Result<File> {
    let open = |path: &Path| OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(path);
    match open(&p.path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            std::fs::set_permissions(&p.path, std::fs::Permissions::from_mode(p.perm | 0o200))
                .with_path("file transfer: cannot make writable", &p.path)?;
            p.restore = Some(p.perm);
            open(&p.path).with_path("file transfer: cannot open for writing", &p.path)
        }
        Err(e) => Err(Error::io("file transfer: cannot open for writing", &p.path, e)),
    }
}

/// What a hashing thread is told of one file.
enum Hash {
    /// The next bytes of file `id`.
    Data(u32, Bytes),
    /// File `id` is complete: its path and size.
    End(u32, String, u64),
}

/// Threads hashing the received files (sha256 costs about as much as everything else the
/// receiver does): a file goes to one of them by id, so files sent concurrently are hashed in
/// parallel, and the disk writes never wait for a hash.
struct Hashers {
    lanes: Vec<std::sync::mpsc::SyncSender<Hash>>,
    threads: Vec<std::thread::JoinHandle<Digests>>,
}

/// Chunks queued per hashing thread before the writer waits for it (bounds the memory held).
const HASH_QUEUE: usize = 32;

fn hasher_gone() -> Error {
    Error::new(ErrorKind::Internal, "file transfer (receiving): a hashing thread stopped")
}

impl Hashers {
    fn start() -> Result<Hashers> {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4);
        let mut h = Hashers { lanes: Vec::with_capacity(n), threads: Vec::with_capacity(n) };
        for _ in 0..n {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Hash>(HASH_QUEUE);
            let t = std::thread::Builder::new()
                .name("kiln-recv-hash".into())
                .spawn(move || {
                    let mut open: HashMap<u32, Sha256> = HashMap::new();
                    let mut done = Digests::new();
                    for m in rx {
                        match m {
                            Hash::Data(id, b) => open.entry(id).or_default().update(&b),
                            Hash::End(id, rel, size) => {
                                let sha256 = open.remove(&id).unwrap_or_default().finalize().into();
                                done.insert(rel, FileDigest { size, sha256 });
                            }
                        }
                    }
                    done
                })
                .map_err(|e| {
                    Error::with_source(ErrorKind::Internal, "file transfer: cannot start a hashing thread", e)
                })?;
            h.lanes.push(tx);
            h.threads.push(t);
        }
        Ok(h)
    }

    fn send(&self, id: u32, m: Hash) -> Result<()> {
        let lane = self.lanes.get(id as usize % self.lanes.len().max(1)).ok_or_else(hasher_gone)?;
        lane.send(m).map_err(|_| hasher_gone())
    }

    fn data(&self, id: u32, b: Bytes) -> Result<()> {
        self.send(id, Hash::Data(id, b))
    }

    fn end(&self, id: u32, rel: String, size: u64) -> Result<()> {
        self.send(id, Hash::End(id, rel, size))
    }

    /// Waits for every file's hash.
    fn finish(self) -> Result<Digests> {
        drop(self.lanes);
        let mut all = Digests::new();
        for t in self.threads {
            all.extend(t.join().map_err(|_| hasher_gone())?);
        }
        Ok(all)
    }
}
