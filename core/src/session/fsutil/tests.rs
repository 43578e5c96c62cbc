//! DiffCopy end to end: trees sent and received over an in-memory pipe and over a real tonic
//! call, selections, incremental receives, and hostile packet streams.

use super::*;
use crate::session::conn::{pipe, request_stream, serve_stream, Conn, PipeConn};
use crate::session::proto::filesync::file_sync_client::FileSyncClient;
use crate::session::proto::filesync::file_sync_server::{FileSync, FileSyncServer};
use crate::session::proto::fsutil::types::{Packet, Stat};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const DIR: u32 = 1 << 31;
const SYMLINK: u32 = 1 << 27;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn set_mtime(p: &Path, ns: i64) {
    let ts = nix::sys::time::TimeSpec::new(ns / 1_000_000_000, ns % 1_000_000_000);
    nix::sys::stat::utimensat(None, p, &ts, &ts, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
}

fn write(p: &Path, data: &[u8], mode: u32) {
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Everything the transfer must keep of a tree, by path: kind, mode, owner, size, mtime (not of
/// the root), link target, content, and which paths share an inode.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        let mut s =
            format!("mode={:o} uid={} gid={} mtime={}.{:09}", m.mode(), m.uid(), m.gid(), m.mtime(), m.mtime_nsec());
        if m.file_type().is_symlink() {
            s += &format!(" -> {}", std::fs::read_link(e.path()).unwrap().display());
        } else if m.is_file() {
            let data = std::fs::read(e.path()).unwrap();
            s += &format!(" size={} sha={}", data.len(), hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data)));
            if m.nlink() > 1 {
                let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone());
                s += &format!(" link-group={first}");
            }
        }
        out.insert(rel, s);
    }
    out
}

/// A tree with every kind of entry the protocol carries.
fn sample_tree(root: &Path) {
    let d = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
    d("empty");
    d("a/b/c");
    d("a.b");
    write(&root.join("zero"), b"", 0o644);
    write(&root.join("a/small.txt"), b"hello\n", 0o640);
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    write(&root.join("a/b/big.bin"), &big, 0o600);
    write(&root.join("a/b/c/exact"), &vec![7u8; super::send::CHUNK * 2], 0o644);
    write(&root.join("suid"), b"#!/bin/sh\n", 0o4755);
    write(&root.join("a.b/exe"), b"x", 0o755);
    write(&root.join("a/b/sticky-dir-file"), b"s", 0o444);
    std::fs::set_permissions(root.join("a.b"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("small.txt", root.join("a/link")).unwrap();
    std::os::unix::fs::symlink("../nowhere/at/all", root.join("a/dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs-link")).unwrap();
    std::fs::hard_link(root.join("a/small.txt"), root.join("a/b/hard")).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o620)).unwrap();
    if is_root() {
        std::os::unix::fs::lchown(root.join("a/small.txt"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("a/link"), Some(42), Some(43)).unwrap();
        std::os::unix::fs::lchown(root.join("empty"), Some(7), Some(8)).unwrap();
    }
    // Times last, children before parents, with nanoseconds.
    let mut all: Vec<_> = walkdir::WalkDir::new(root).min_depth(1).into_iter().map(|e| e.unwrap()).collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.depth()));
    for (i, e) in all.iter().enumerate() {
        set_mtime(e.path(), 1_600_000_000_000_000_000 + (i as i64) * 1_000_000_123 + 987);
    }
}

async fn transfer(src: &Path, dest: &Path, sopts: SendOpts, ropts: ReceiveOpts) -> (Result<()>, Result<()>) {
    let (a, b) = pipe::<Packet>(8);
    tokio::join!(send(a, src, &sopts), receive(b, dest, &ropts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_keeps_the_tree_exactly() {
    let src = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let (s, r) = transfer(src.path(), dest.path(), SendOpts::default(), ReceiveOpts::default()).await;
    s.unwrap();
    r.unwrap();
    let (want, got) = (snapshot(src.path()), snapshot(dest.path()));
    assert_eq!(want, got);
    let ino = |p: &str| std::fs::metadata(dest.path().join(p)).unwrap().ino();
    assert_eq!(ino("a/b/hard"), ino("a/small.txt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xattrs_travel_when_the_filesystem_has_them() {
    let src = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let f = src.path().join("f");
    write(&f, b"x", 0o644);
    if crate::snapshot::set_xattr(&f, std::ffi::OsStr::new("user.kiln"), b"v1").is_err() {
        return; // no user xattrs on this filesystem
    }
    let (s, r) = transfer(src.path(), dest.path(), SendOpts::default(), ReceiveOpts::default()).await;
    s.unwrap();
    r.unwrap();
    let got = crate::snapshot::list_xattrs(&dest.path().join("f")).unwrap();
    assert!(got.iter().any(|(k, v)| k == "user.kiln" && v == b"v1"), "{got:?}");
}

fn names(root: &Path) -> Vec<String> {
    snapshot(root).into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_exclude_and_follow_paths() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    for d in ["src/a", "src/b", "doc", "node_modules/x", "real"] {
        std::fs::create_dir_all(s.join(d)).unwrap();
    }
    for f in ["src/a/m.rs", "src/a/m.c", "src/b/n.rs", "doc/r.md", "node_modules/x/i.js", "top.rs", "real/target"] {
        write(&s.join(f), f.as_bytes(), 0o644);
    }
    std::os::unix::fs::symlink("real/target", s.join("link")).unwrap();

    let run = |opts: SendOpts| async move {
        let dest = tempfile::tempdir().unwrap();
        let (a, b) = transfer(s, dest.path(), opts, ReceiveOpts::default()).await;
        a.unwrap();
        b.unwrap();
        names(dest.path())
    };
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let got = run(SendOpts { include: v(&["src/**/*.rs"]), ..SendOpts::default() }).await;
    assert_eq!(got, v(&["src", "src/a", "src/a/m.rs", "src/b", "src/b/n.rs"]));

    let got =
        run(SendOpts { exclude: v(&["node_modules", "**/*.c", "doc", "!doc/r.md"]), ..SendOpts::default() }).await;
    assert_eq!(
        got,
        v(&[
            "doc",
            "doc/r.md",
            "link",
            "real",
            "real/target",
            "src",
            "src/a",
            "src/a/m.rs",
            "src/b",
            "src/b/n.rs",
            "top.rs"
        ])
    );

    let got = run(SendOpts { follow_paths: v(&["link"]), ..SendOpts::default() }).await;
    assert_eq!(got, v(&["link", "real", "real/target"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_deletes_what_the_sender_lacks_unless_merging() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    for merge in [false, true] {
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        std::fs::create_dir_all(d.join("stale/deep/er")).unwrap();
        write(&d.join("stale/deep/er/f"), b"old", 0o644);
        write(&d.join("extra"), b"old", 0o644);
        // Type changes: a dir where the sender has a file, a file where it has a dir, a
        // symlink (to outside) where it has a dir.
        std::fs::create_dir_all(d.join("zero/inner")).unwrap();
        write(&d.join("empty"), b"not a dir", 0o644);
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("a")).unwrap();
        let (s, r) =
            transfer(src.path(), d, SendOpts::default(), ReceiveOpts { merge, ..ReceiveOpts::default() }).await;
        s.unwrap();
        r.unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written through the symlink");
        let mut want = snapshot(src.path());
        let got = snapshot(d);
        if merge {
            assert!(got.contains_key("extra") && got.contains_key("stale/deep/er/f"));
            want.extend(
                got.iter()
                    .filter(|(k, _)| k.starts_with("stale") || *k == "extra")
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        assert_eq!(want, got, "merge={merge}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_files_are_not_transferred_again() {
    let src = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let (s, r) = transfer(src.path(), dest.path(), SendOpts::default(), ReceiveOpts::default()).await;
    s.unwrap();
    r.unwrap();
    // Same metadata, different content at the receiver: fsutil's DiffMetadata keeps it.
    let p = dest.path().join("a/b/c/exact");
    let before = std::fs::symlink_metadata(&p).unwrap();
    std::fs::write(&p, vec![9u8; super::send::CHUNK * 2]).unwrap();
    set_mtime(&p, before.mtime() * 1_000_000_000 + before.mtime_nsec());
    // A changed source file is transferred.
    write(&src.path().join("a/small.txt"), b"changed!\n", 0o640);
    let (s, r) = transfer(src.path(), dest.path(), SendOpts::default(), ReceiveOpts::default()).await;
    s.unwrap();
    r.unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), vec![9u8; super::send::CHUNK * 2]);
    assert_eq!(std::fs::read(dest.path().join("a/small.txt")).unwrap(), b"changed!\n");
    assert_eq!(std::fs::read(dest.path().join("a/b/hard")).unwrap(), b"changed!\n");
    // Differ::None rewrites it.
    let opts = ReceiveOpts { differ: Differ::None, ..ReceiveOpts::default() };
    let (s, r) = transfer(src.path(), dest.path(), SendOpts::default(), opts).await;
    s.unwrap();
    r.unwrap();
    assert_eq!(snapshot(src.path()), snapshot(dest.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_override_and_missing_source() {
    let src = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let me = crate::fileops::Owner { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() };
    let opts = ReceiveOpts { owner: Some(me), merge: true, ..ReceiveOpts::default() };
    let (s, r) = transfer(src.path(), dest.path(), SendOpts::default(), opts).await;
    s.unwrap();
    r.unwrap();
    let m = std::fs::symlink_metadata(dest.path().join("a/small.txt")).unwrap();
    assert_eq!((m.uid(), m.gid()), (me.uid, me.gid));

    // A sender whose directory is missing reports it to the receiver.
    let (s, r) = transfer(&src.path().join("missing"), dest.path(), SendOpts::default(), ReceiveOpts::default()).await;
    assert!(s.unwrap_err().to_string().contains("cannot read source directory"));
    assert!(r.unwrap_err().to_string().contains("error from sender"));
}

/// Plays a scripted sender against `receive`: sends `script`, answering nothing, then ends the
/// stream. Returns the receive result and the packets the receiver sent.
async fn scripted(dest: &Path, script: Vec<Packet>, opts: ReceiveOpts) -> (Result<()>, Vec<Packet>) {
    let (ours, theirs): (PipeConn<Packet>, PipeConn<Packet>) = pipe(4);
    let Conn { tx, mut rx } = ours;
    let feed = async move {
        for p in script {
            if tx.send(p).await.is_err() {
                break;
            }
        }
    };
    let read = async move {
        let mut got = Vec::new();
        while let Some(p) = rx.recv().await {
            got.push(p);
        }
        got
    };
    let (r, (), got) = tokio::join!(receive(theirs, dest, &opts), feed, read);
    (r, got)
}

fn stat(path: &str, mode: u32, size: i64, link: &str) -> Packet {
    Packet {
        r#type: PacketType::PacketStat as i32,
        stat: Some(Stat { path: path.into(), mode, size, linkname: link.into(), ..Stat::default() }),
        ..Packet::default()
    }
}
fn end() -> Packet {
    Packet { r#type: PacketType::PacketStat as i32, ..Packet::default() }
}
fn data(id: u32, d: &[u8]) -> Packet {
    Packet { r#type: PacketType::PacketData as i32, id, data: d.to_vec().into(), ..Packet::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_sender_that_plays_by_the_rules_works() {
    let dest = tempfile::tempdir().unwrap();
    let script = vec![
        stat("d", DIR | 0o755, 0, ""),
        stat("d/f", 0o644, 3, ""),
        end(),
        data(1, b"abc"),
        data(1, b""),
        fin_packet(),
    ];
    let (r, got) = scripted(dest.path(), script, ReceiveOpts::default()).await;
    r.unwrap();
    assert_eq!(std::fs::read(dest.path().join("d/f")).unwrap(), b"abc");
    let kinds: Vec<_> = got.iter().map(|p| (p.r#type, p.id)).collect();
    assert_eq!(kinds, vec![(PacketType::PacketReq as i32, 1), (PacketType::PacketFin as i32, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_packet_streams_fail_and_write_nothing_outside() {
    let outer = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<Packet>, &str)> = vec![
        ("dotdot", vec![stat("../x", 0o644, 1, ""), end(), data(0, b"x"), data(0, b""), fin_packet()], "escapes"),
        ("inner dotdot", vec![stat("a/../../x", 0o644, 1, "")], "escapes"),
        ("absolute", vec![stat("/tmp/x", 0o644, 1, "")], "absolute"),
        ("dot", vec![stat("./x", 0o644, 1, "")], "unclean"),
        (
            "through a symlink",
            vec![stat("l", SYMLINK | 0o777, 0, "../outside"), stat("l/x", 0o644, 1, ""), end()],
            "parent directory was not sent",
        ),
        ("parent missing", vec![stat("nodir/x", 0o644, 1, "")], "parent directory was not sent"),
        ("out of order", vec![stat("b", 0o644, 0, ""), stat("a", 0o644, 0, "")], "walk order"),
        ("duplicate", vec![stat("a", 0o644, 0, ""), stat("a", 0o644, 0, "")], "walk order"),
        ("hardlink to unknown", vec![stat("h", 0o644, 0, "../../etc/passwd")], "hardlink"),
        ("unrequested data", vec![stat("f", 0o644, 1, ""), end(), data(7, b"x")], "not requested"),
        ("data after its end", vec![stat("f", 0o644, 1, ""), end(), data(0, b""), data(0, b"x")], "not requested"),
        ("missing FIN", vec![stat("f", 0o644, 0, ""), end(), data(0, b"")], "without answering FIN"),
        ("early end", vec![stat("f", 0o644, 1, "")], "before the transfer was complete"),
        ("early FIN", vec![stat("f", 0o644, 1, ""), fin_packet()], "FIN before"),
        ("negative size", vec![stat("f", 0o644, -1, "")], "negative size"),
        (
            "huge size, endless data",
            vec![stat("f", 0o644, i64::MAX, ""), end(), data(0, &[1u8; 40_000]), data(0, &[1u8; 40_000])],
            "more than 65536 bytes",
        ),
        ("stat after end", vec![end(), stat("f", 0o644, 0, "")], "after the end"),
        ("sender error", vec![stat("f", 0o644, 0, ""), err_packet("boom")], "error from sender: boom"),
        ("socket", vec![stat("s", 1 << 24, 0, "")], "file type"),
    ];
    for (name, script, want) in cases {
        let dest = outer.path().join(name.replace(' ', "-")).join("dest");
        std::fs::create_dir_all(&dest).unwrap();
        let opts = ReceiveOpts { max_bytes: Some(65536), ..ReceiveOpts::default() };
        let (r, got) = scripted(&dest, script, opts).await;
        let e = r.expect_err(name).to_string();
        assert!(e.contains(want), "{name}: {e}");
        // Nothing beside dest, and no ERR echoed back for the sender's own error.
        let siblings: Vec<_> =
            std::fs::read_dir(dest.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(siblings, vec![std::ffi::OsString::from("dest")], "{name}");
        let errs = got.iter().filter(|p| p.r#type == PacketType::PacketErr as i32).count();
        match name {
            "sender error" => assert_eq!(errs, 0),
            "dotdot" | "unrequested data" => assert_eq!(errs, 1),
            _ => {}
        }
    }
    assert!(!outer.path().join("x").exists());
}

/// A FileSync service serving one directory, as a BuildKit client does.
struct Provider {
    dir: std::path::PathBuf,
}

#[tonic::async_trait]
impl FileSync for Provider {
    type DiffCopyStream = crate::session::conn::ResponseStream<Packet>;
    type TarStreamStream = crate::session::conn::ResponseStream<Packet>;

    async fn diff_copy(
        &self,
        request: tonic::Request<tonic::Streaming<Packet>>,
    ) -> std::result::Result<tonic::Response<Self::DiffCopyStream>, tonic::Status> {
        let req = SyncRequest::from_metadata(request.metadata())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        if req.dir_name != "context" {
            return Err(tonic::Status::not_found(format!("no access allowed to dir {:?}", req.dir_name)));
        }
        let (conn, stream) = serve_stream(request.into_inner());
        let dir = self.dir.clone();
        tokio::spawn(async move {
            let _ = send(conn, &dir, &req.opts).await;
        });
        Ok(tonic::Response::new(stream))
    }

    async fn tar_stream(
        &self,
        _request: tonic::Request<tonic::Streaming<Packet>>,
    ) -> std::result::Result<tonic::Response<Self::TarStreamStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("tarstream"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_real_grpc_call() {
    let src = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    write(&src.path().join("skip.log"), b"x", 0o644);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = FileSyncServer::new(Provider { dir: src.path().to_path_buf() });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = FileSyncClient::new(channel.clone());

    let (tx, stream) = request_stream::<Packet>();
    let mut req = tonic::Request::new(stream);
    let sync = SyncRequest {
        dir_name: "context".into(),
        opts: SendOpts { exclude: vec!["*.log".into()], ..SendOpts::default() },
        override_excludes: false,
    };
    sync.to_metadata(req.metadata_mut()).unwrap();
    let resp = client.diff_copy(req).await.unwrap();
    receive(Conn::new(tx, resp.into_inner()), dest.path(), &ReceiveOpts::default()).await.unwrap();
    std::fs::remove_file(src.path().join("skip.log")).unwrap();
    assert_eq!(snapshot(src.path()), snapshot(dest.path()));

    // An unknown dir name is the service's NotFound, surfaced on the call.
    let (_tx, stream) = request_stream::<Packet>();
    let mut req = tonic::Request::new(stream);
    SyncRequest { dir_name: "other".into(), ..SyncRequest::default() }.to_metadata(req.metadata_mut()).unwrap();
    let e = client.diff_copy(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // The packet call the daemon makes for FileSend (declared with BytesMessage), tried on the
    // FileSync method that this server has.
    use crate::session::packet_call::{call_with_packets, FILE_SYNC_DIFF_COPY};
    let dest2 = tempfile::tempdir().unwrap();
    let (tx, stream) = request_stream::<Packet>();
    let mut req = tonic::Request::new(stream);
    SyncRequest { dir_name: "context".into(), ..SyncRequest::default() }.to_metadata(req.metadata_mut()).unwrap();
    let resp = call_with_packets(channel, FILE_SYNC_DIFF_COPY, req).await.unwrap();
    receive(Conn::new(tx, resp.into_inner()), dest2.path(), &ReceiveOpts::default()).await.unwrap();
    assert_eq!(snapshot(src.path()), snapshot(dest2.path()));
    server.abort();
}

#[test]
fn sync_request_metadata_round_trips() {
    let r = SyncRequest {
        dir_name: "context".into(),
        opts: SendOpts { include: vec!["a".into(), "b/**".into()], exclude: vec!["!c".into()], follow_paths: vec![] },
        override_excludes: true,
    };
    let mut md = tonic::metadata::MetadataMap::new();
    r.to_metadata(&mut md).unwrap();
    assert_eq!(md.get_all("include-patterns").iter().count(), 2);
    assert_eq!(SyncRequest::from_metadata(&md).unwrap(), r);
    assert!(SyncRequest { dir_name: "é".into(), ..SyncRequest::default() }.to_metadata(&mut md).is_err());
}

#[test]
fn compare_path_is_walk_order() {
    use std::cmp::Ordering::*;
    use validate::compare_path;
    assert_eq!(compare_path("a/b", "a.b"), Less);
    assert_eq!(compare_path("a", "a/b"), Less);
    assert_eq!(compare_path("a.b", "a/b"), Greater);
    assert_eq!(compare_path("a", "a"), Equal);
    assert_eq!(compare_path("ab", "a/c"), Greater);
}

/// The digests recorded while receiving give the local source the checksum it computes by
/// reading the received files, with and without filters; and a tree linked from the staged dir
/// into a snapshot equals one copied from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_digests_and_linked_tree_match_the_disk() {
    use crate::source::local::{checksum_local, checksum_local_known, sync_local, sync_local_linked, LocalSource};
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    for exclude in [vec![], vec!["a/b".to_owned(), "fifo".to_owned()]] {
        let dest = tempfile::tempdir().unwrap();
        let sopts = SendOpts { exclude: exclude.clone(), ..SendOpts::default() };
        let ropts = ReceiveOpts { differ: Differ::None, hash: true, ..ReceiveOpts::default() };
        let (a, b) = pipe::<Packet>(8);
        let (s, r) = tokio::join!(send(a, src.path(), &sopts), receive_hashed(b, dest.path(), &ropts));
        s.unwrap();
        let digests = r.unwrap();
        // Every regular file received is listed (a hard link's second name has no data of its own).
        let expect = if exclude.is_empty() { 7 } else { 4 };
        assert_eq!(digests.len(), expect, "{exclude:?}: {:?}", digests.keys());
        let local = LocalSource { dir: dest.path().to_path_buf(), exclude: exclude.clone(), ..LocalSource::default() };
        assert_eq!(checksum_local_known(&local, &digests).unwrap(), checksum_local(&local).unwrap(), "{exclude:?}");
        let from_client = LocalSource { dir: src.path().to_path_buf(), exclude, ..LocalSource::default() };
        if is_root() {
            // Owners travel as they are on the client: the key is the embedded engine's.
            assert_eq!(checksum_local(&from_client).unwrap(), checksum_local(&local).unwrap());
        }
        // The recorded digests are what the checksum uses: a wrong one of the right size shows.
        let mut forged = digests.clone();
        if let Some(d) = forged.get_mut("zero") {
            d.sha256 = [1; 32];
        }
        assert_ne!(checksum_local_known(&local, &forged).unwrap(), checksum_local(&local).unwrap());
        // A stale digest (another size) is not trusted.
        let mut wrong = digests.clone();
        if let Some(d) = wrong.get_mut("a/small.txt") {
            d.sha256 = [0; 32];
            d.size += 1;
        }
        assert_eq!(checksum_local_known(&local, &wrong).unwrap(), checksum_local(&local).unwrap());

        let before = checksum_local(&local).unwrap();
        let (copied, linked) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let n = sync_local(&local, copied.path()).unwrap();
        assert_eq!(sync_local_linked(&local, linked.path(), true).unwrap(), n);
        // Links to the staged dir outside the tree are no links within it.
        let within = |root: &Path| {
            let mut m = snapshot(root);
            for (rel, v) in m.iter_mut() {
                *v = v.replace(&format!(" link-group={rel}"), "");
            }
            m
        };
        assert_eq!(within(linked.path()), within(copied.path()));
        // Linking changed nothing of the staged files.
        assert_eq!(checksum_local(&local).unwrap(), before);
        let m = std::fs::metadata(linked.path().join("zero")).unwrap();
        let staged = std::fs::metadata(dest.path().join("zero")).unwrap();
        if !is_root() || staged.uid() == 0 {
            assert_eq!((m.dev(), m.ino()), (staged.dev(), staged.ino()), "linked, not copied");
        }
    }
}
