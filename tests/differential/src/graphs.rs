//! The graph table. One function per graph; adding a graph is one entry in [`GRAPHS`].
//!
//! Locals every graph may use: `rootfs` (busybox rootfs, see `fixtures::rootfs`), `ctx` (see
//! `fixtures::ctx`) and `owned` (non-root owners, `fixtures::owned`); secret `mysecret`; SSH agent
//! socket `default` (a listening socket nobody answers: graphs only look at the mount). Graphs that export a Run's whole rootfs also exercise
//! mount-stub cleanup; graphs that copy a Run's result out with a file op isolate one behaviour.

use crate::{Built, Graph};
use kiln::graph::pb;
use kiln::graph::{
    CacheSharing, CopyOptions, ExecOptions, LocalOptions, MkdirOptions, MkfileOptions, MountSpec, Network, Owner,
    RmOptions, SshSocket, State,
};
use kiln::Digest;
use prost::Message;

type R = Result<Built, String>;

/// A pinned timestamp (ns): 2023-11-14T22:13:20Z.
const TS: i64 = 1_700_000_000_000_000_000;

const fn ok(name: &'static str, build: fn() -> R) -> Graph {
    Graph { name, build, refused: false, mtime: &[] }
}

const fn refused(name: &'static str, build: fn() -> R) -> Graph {
    Graph { name, build, refused: true, mtime: &[] }
}

const fn pinned(name: &'static str, build: fn() -> R, mtime: &'static [&'static str]) -> Graph {
    Graph { name, build, refused: false, mtime }
}

/// Every graph of the suite, in the order they run.
pub const GRAPHS: &[Graph] = &[
    // -- sources --------------------------------------------------------------------------------
    ok("local_ctx", local_ctx),
    ok("local_include", local_include),
    ok("local_exclude", local_exclude),
    ok("local_include_exclude_dir", local_include_exclude_dir),
    ok("local_follow_paths", local_follow_paths),
    ok("local_owned", local_owned),
    // -- mkdir ----------------------------------------------------------------------------------
    ok("mkdir_basic", mkdir_basic),
    ok("mkdir_parents", mkdir_parents),
    ok("mkdir_mode", mkdir_mode),
    ok("mkdir_owner", mkdir_owner),
    pinned("mkdir_timestamp", mkdir_timestamp, &["*"]),
    // Only the leaf is pinned: BuildKit creates each child after timing its parent.
    pinned("mkdir_parents_owner_timestamp", mkdir_parents_owner_timestamp, &["p/q/r"]),
    ok("mkdir_existing", mkdir_existing),
    refused("mkdir_missing_parent", mkdir_missing_parent),
    // -- mkfile ---------------------------------------------------------------------------------
    ok("mkfile_basic", mkfile_basic),
    ok("mkfile_mode", mkfile_mode),
    ok("mkfile_owner", mkfile_owner),
    pinned("mkfile_timestamp", mkfile_timestamp, &["*"]),
    ok("mkfile_empty", mkfile_empty),
    ok("mkfile_overwrite", mkfile_overwrite),
    ok("mkfile_odd_names", mkfile_odd_names),
    refused("mkfile_missing_parent", mkfile_missing_parent),
    ok("file_chain", file_chain),
    // -- rm -------------------------------------------------------------------------------------
    ok("rm_file", rm_file),
    ok("rm_dir", rm_dir),
    ok("rm_wildcard", rm_wildcard),
    ok("rm_allow_not_found", rm_allow_not_found),
    // BuildKit v0.11.6 removes with os.RemoveAll: a missing path is never an error.
    ok("rm_missing_without_allow_not_found", rm_not_found),
    // -- copy -----------------------------------------------------------------------------------
    ok("copy_file", copy_file),
    ok("copy_file_rename", copy_file_rename),
    ok("copy_file_into_dir", copy_file_into_dir),
    ok("copy_dir", copy_dir),
    ok("copy_dir_contents", copy_dir_contents),
    ok("copy_root_contents", copy_root_contents),
    ok("copy_follow_symlink", copy_follow_symlink),
    ok("copy_symlink_nofollow", copy_symlink_nofollow),
    ok("copy_dangling_symlink", copy_dangling_symlink),
    ok("copy_wildcard", copy_wildcard),
    ok("copy_wildcard_dirs", copy_wildcard_dirs),
    ok("copy_empty_wildcard", copy_empty_wildcard),
    refused("copy_empty_wildcard_refused", copy_empty_wildcard_refused),
    ok("copy_include", copy_include),
    ok("copy_exclude", copy_exclude),
    ok("copy_create_dest_path", copy_create_dest_path),
    refused("copy_no_dest_path", copy_no_dest_path),
    ok("copy_owner", copy_owner),
    ok("copy_mode", copy_mode),
    pinned("copy_timestamp", copy_timestamp, &["*"]),
    ok("copy_special_bits", copy_special_bits),
    ok("copy_owned", copy_owned),
    ok("copy_hardlinks", copy_hardlinks),
    ok("copy_onto_existing", copy_onto_existing),
    refused("copy_missing_source", copy_missing_source),
    // -- exec -----------------------------------------------------------------------------------
    ok("exec_basic", exec_basic),
    ok("exec_extract", exec_extract),
    ok("exec_env", exec_env),
    ok("exec_cwd_existing", exec_cwd_existing),
    ok("exec_cwd_missing_root", exec_cwd_missing_root),
    ok("exec_cwd_missing_user", exec_cwd_missing_user),
    ok("exec_user_numeric", exec_user_numeric),
    ok("exec_user_name", exec_user_name),
    ok("exec_hostname", exec_hostname),
    ok("exec_network_none", exec_network_none),
    ok("exec_readonly_rootfs", exec_readonly_rootfs),
    ok("exec_bind_readonly", exec_bind_readonly),
    ok("exec_bind_rw_output", exec_bind_rw_output),
    ok("exec_bind_selector", exec_bind_selector),
    ok("exec_multi_output", exec_multi_output),
    ok("exec_cache_shared", exec_cache_shared),
    ok("exec_cache_private", exec_cache_private),
    ok("exec_cache_locked", exec_cache_locked),
    ok("exec_tmpfs", exec_tmpfs),
    ok("exec_secret", exec_secret),
    ok("exec_secret_owner_mode", exec_secret_owner_mode),
    ok("exec_secret_optional_missing", exec_secret_optional_missing),
    refused("exec_secret_missing", exec_secret_missing),
    ok("exec_umask", exec_umask),
    ok("exec_special_bits", exec_special_bits),
    ok("exec_hardlink", exec_hardlink),
    ok("exec_symlinks", exec_symlinks),
    ok("exec_chained", exec_chained),
    ok("exec_metadata", exec_metadata),
    refused("exec_exit_nonzero", exec_exit_nonzero),
    refused("exec_no_args", exec_no_args),
    refused("exec_bad_mount_input", exec_bad_mount_input),
    // -- whiteouts ------------------------------------------------------------------------------
    ok("whiteout_file_to_dir", whiteout_file_to_dir),
    ok("whiteout_dir_to_file", whiteout_dir_to_file),
    ok("whiteout_deleted_dir", whiteout_deleted_dir),
    ok("whiteout_deleted_file", whiteout_deleted_file),
    ok("whiteout_opaque_dir", whiteout_opaque_dir),
    // -- merge ----------------------------------------------------------------------------------
    ok("merge_two", merge_two),
    ok("merge_overlap", merge_overlap),
    ok("merge_dir_and_file", merge_dir_and_file),
    ok("merge_execs", merge_execs),
    ok("copy_from_merge", copy_from_merge),
    // -- diff -----------------------------------------------------------------------------------
    ok("diff_run_alone", diff_run_alone),
    ok("diff_merged_onto_other_base", diff_merged_onto_other_base),
    ok("diff_two_runs_merged", diff_two_runs_merged),
    ok("diff_scratch_lower", diff_scratch_lower),
    ok("diff_not_ancestor", diff_not_ancestor),
    ok("diff_as_mount", diff_as_mount),
    // -- exec features --------------------------------------------------------------------------
    ok("exec_default_hostname_and_hosts", exec_default_hostname_and_hosts),
    ok("exec_extra_hosts", exec_extra_hosts),
    ok("exec_ulimit", exec_ulimit),
    ok("exec_secret_env", exec_secret_env),
    ok("exec_secret_env_optional_missing", exec_secret_env_optional_missing),
    refused("exec_secret_env_missing", exec_secret_env_missing),
    ok("exec_ssh_mount", exec_ssh_mount),
    ok("exec_ssh_mount_owner_mode", exec_ssh_mount_owner_mode),
    ok("exec_ssh_optional_missing", exec_ssh_optional_missing),
    refused("exec_ssh_missing", exec_ssh_missing),
    ok("exec_cgroup_parent", exec_cgroup_parent),
    refused("exec_network_host_not_granted", exec_network_host_not_granted),
    refused("exec_insecure_not_granted", exec_insecure_not_granted),
    ok("exec_outputs_and_readonly_mounts", exec_outputs_and_readonly_mounts),
];

// ---------------------------------------------------------------------------------------------
// helpers

fn st(s: State) -> R {
    Ok(Built::State(s))
}

fn rootfs() -> State {
    State::local("rootfs")
}

fn ctx() -> State {
    State::local("ctx")
}

fn sh(script: &str) -> ExecOptions {
    ExecOptions::shell(script)
}

fn run(base: &State, script: &str) -> State {
    base.run(sh(script)).root()
}

/// `scratch` with the contents of `src:/path` copied to `/`.
fn extract(src: &State, path: &str) -> State {
    State::scratch().copy(src, path, "/", CopyOptions { dir_copy_contents: true, ..Default::default() })
}

fn copy(src_path: &str, dest: &str, o: CopyOptions) -> State {
    State::scratch().copy(&ctx(), src_path, dest, o)
}

fn md() -> MkdirOptions {
    MkdirOptions::default()
}

fn mf() -> MkfileOptions {
    MkfileOptions::default()
}

fn owner(uid: u32, gid: u32) -> Option<Owner> {
    Some(Owner { uid, gid })
}

/// Marshals `s`, lets `f` change the op the terminal points to, re-encodes it with prost and
/// re-links the terminal: for definitions kiln's builder refuses to produce.
fn mutate_result_op(s: &State, f: fn(&mut pb::Op)) -> R {
    let def = s.to_definition().map_err(|e| e.to_string())?;
    let mut p = def.to_pb();
    let last = p.def.len().checked_sub(1).ok_or("empty definition")?;
    let mut term = pb::Op::decode(p.def[last].as_slice()).map_err(|e| e.to_string())?;
    let old_term = Digest::of(&p.def[last]).to_string();
    let target = term.inputs.first().ok_or("terminal without input")?.digest.clone();
    let i = p.def.iter().position(|b| Digest::of(b).to_string() == target).ok_or("result op not found")?;
    let mut op = pb::Op::decode(p.def[i].as_slice()).map_err(|e| e.to_string())?;
    f(&mut op);
    p.def[i] = op.encode_to_vec();
    let new = Digest::of(&p.def[i]).to_string();
    if let Some(m) = p.metadata.remove(&target) {
        p.metadata.insert(new.clone(), m);
    }
    term.inputs[0].digest = new;
    p.def[last] = term.encode_to_vec();
    if let Some(m) = p.metadata.remove(&old_term) {
        p.metadata.insert(Digest::of(&p.def[last]).to_string(), m);
    }
    Ok(Built::Raw(p))
}

// ---------------------------------------------------------------------------------------------
// sources

fn local_ctx() -> R {
    st(ctx())
}

fn local_include() -> R {
    st(State::local_with("ctx", LocalOptions { include: vec!["*.txt".into(), "dir".into()], ..Default::default() }))
}

fn local_exclude() -> R {
    st(State::local_with("ctx", LocalOptions { exclude: vec!["dir".into(), "*.sh".into()], ..Default::default() }))
}

fn local_include_exclude_dir() -> R {
    st(State::local_with(
        "ctx",
        LocalOptions { include: vec!["dir".into()], exclude: vec!["dir/**/*.log".into()], ..Default::default() },
    ))
}

fn local_follow_paths() -> R {
    st(State::local_with(
        "ctx",
        LocalOptions { include: vec!["link-rel".into()], follow_paths: vec!["link-rel".into()], ..Default::default() },
    ))
}

// ---------------------------------------------------------------------------------------------
// mkdir

fn mkdir_basic() -> R {
    st(State::scratch().mkdir("/a", md()))
}

fn mkdir_parents() -> R {
    st(State::scratch().mkdir("/a/b/c", MkdirOptions { make_parents: true, ..md() }))
}

fn mkdir_mode() -> R {
    st(State::scratch()
        .mkdir("/private", MkdirOptions { mode: 0o700, ..md() })
        .mkdir("/private/open", MkdirOptions { mode: 0o777, ..md() }))
}

fn mkdir_owner() -> R {
    st(State::scratch().mkdir("/owned", MkdirOptions { owner: owner(1000, 1000), ..md() }))
}

fn mkdir_timestamp() -> R {
    st(State::scratch().mkdir("/t", MkdirOptions { timestamp: Some(TS), ..md() }))
}

fn mkdir_parents_owner_timestamp() -> R {
    st(State::scratch().mkdir(
        "/p/q/r",
        MkdirOptions { make_parents: true, owner: owner(12, 34), timestamp: Some(TS), mode: 0o750, user: None },
    ))
}

fn mkdir_existing() -> R {
    st(State::scratch().mkdir("/a", md()).mkdir("/a", MkdirOptions { make_parents: true, mode: 0o700, ..md() }))
}

fn mkdir_missing_parent() -> R {
    st(State::scratch().mkdir("/x/y", md()))
}

// ---------------------------------------------------------------------------------------------
// mkfile

fn mkfile_basic() -> R {
    st(State::scratch().mkfile("/hello.txt", 0o644, "hello\n", mf()))
}

fn mkfile_mode() -> R {
    st(State::scratch().mkfile("/x", 0o600, "x", mf()).mkfile("/y", 0o755, "#!/bin/sh\n", mf()))
}

fn mkfile_owner() -> R {
    st(State::scratch().mkfile("/o", 0o644, "o", MkfileOptions { owner: owner(1000, 50), ..mf() }))
}

fn mkfile_timestamp() -> R {
    st(State::scratch().mkfile("/t", 0o644, "t", MkfileOptions { timestamp: Some(TS), ..mf() }))
}

fn mkfile_empty() -> R {
    st(State::scratch().mkfile("/empty", 0o644, Vec::new(), mf()))
}

fn mkfile_overwrite() -> R {
    st(State::scratch().mkfile("/f", 0o644, "first", mf()).mkfile("/f", 0o600, "second", mf()))
}

fn mkfile_odd_names() -> R {
    st(State::scratch().mkfile("/a <b> & \"c\".txt", 0o644, "<html>&amp;\u{2028}\n", mf()).mkfile(
        "/ünïcödé",
        0o644,
        [0u8, 1, 2, 255],
        mf(),
    ))
}

fn mkfile_missing_parent() -> R {
    st(State::scratch().mkfile("/nodir/f", 0o644, "x", mf()))
}

fn file_chain() -> R {
    st(State::scratch()
        .mkdir("/d", md())
        .mkfile("/d/f", 0o644, "f", mf())
        .copy(&ctx(), "/file.txt", "/d/copied", CopyOptions::default())
        .rm("/d/f", RmOptions::default())
        .mkdir("/d/e", MkdirOptions { mode: 0o711, ..md() }))
}

// ---------------------------------------------------------------------------------------------
// rm

fn rm_file() -> R {
    st(ctx().rm("/file.txt", RmOptions::default()))
}

fn rm_dir() -> R {
    st(ctx().rm("/dir", RmOptions::default()))
}

fn rm_wildcard() -> R {
    st(ctx()
        .rm("/dir/*.txt", RmOptions { allow_wildcard: true, ..Default::default() })
        .rm("/*.sh", RmOptions { allow_wildcard: true, ..Default::default() }))
}

fn rm_allow_not_found() -> R {
    st(State::scratch()
        .mkfile("/keep", 0o644, "k", mf())
        .rm("/missing", RmOptions { allow_not_found: true, ..Default::default() }))
}

fn rm_not_found() -> R {
    st(State::scratch().mkfile("/keep", 0o644, "k", mf()).rm("/missing", RmOptions::default()))
}

// ---------------------------------------------------------------------------------------------
// copy

fn copy_file() -> R {
    st(copy("/file.txt", "/file.txt", CopyOptions::default()))
}

fn copy_file_rename() -> R {
    st(copy("/exec.sh", "/renamed", CopyOptions::default()))
}

fn copy_file_into_dir() -> R {
    st(State::scratch().mkdir("/out", md()).copy(&ctx(), "/file.txt", "/out/", CopyOptions::default()))
}

fn copy_dir() -> R {
    st(copy("/dir", "/dir", CopyOptions::default()))
}

fn copy_dir_contents() -> R {
    st(copy("/dir", "/out", CopyOptions { dir_copy_contents: true, create_dest_path: true, ..Default::default() }))
}

fn copy_root_contents() -> R {
    st(copy("/", "/", CopyOptions { dir_copy_contents: true, ..Default::default() }))
}

fn copy_follow_symlink() -> R {
    st(copy("/link-rel", "/followed", CopyOptions { follow_symlinks: true, ..Default::default() }))
}

fn copy_symlink_nofollow() -> R {
    st(copy("/link-abs", "/kept", CopyOptions::default()).copy(&ctx(), "/dirlink", "/dirlink", CopyOptions::default()))
}

fn copy_dangling_symlink() -> R {
    st(copy("/dangling", "/dangling", CopyOptions::default()))
}

fn copy_wildcard() -> R {
    st(copy("/dir/*.txt", "/out/", CopyOptions { allow_wildcard: true, create_dest_path: true, ..Default::default() }))
}

fn copy_wildcard_dirs() -> R {
    st(copy("/*-dir", "/out/", CopyOptions { allow_wildcard: true, create_dest_path: true, ..Default::default() }))
}

fn copy_empty_wildcard() -> R {
    st(State::scratch().mkfile("/keep", 0o644, "k", mf()).copy(
        &ctx(),
        "/nomatch*",
        "/out/",
        CopyOptions { allow_wildcard: true, allow_empty_wildcard: true, create_dest_path: true, ..Default::default() },
    ))
}

fn copy_empty_wildcard_refused() -> R {
    st(copy("/nomatch*", "/out/", CopyOptions { allow_wildcard: true, create_dest_path: true, ..Default::default() }))
}

fn copy_include() -> R {
    st(copy(
        "/dir",
        "/out",
        CopyOptions {
            dir_copy_contents: true,
            create_dest_path: true,
            include: vec!["*.txt".into(), "sub/*.log".into()],
            ..Default::default()
        },
    ))
}

fn copy_exclude() -> R {
    st(copy(
        "/",
        "/",
        CopyOptions { dir_copy_contents: true, exclude: vec!["dir/sub".into(), "*.sh".into()], ..Default::default() },
    ))
}

fn copy_create_dest_path() -> R {
    st(copy("/file.txt", "/x/y/z/file.txt", CopyOptions { create_dest_path: true, ..Default::default() }))
}

fn copy_no_dest_path() -> R {
    st(copy("/file.txt", "/x/y/z/file.txt", CopyOptions::default()))
}

fn copy_owner() -> R {
    st(copy("/dir", "/dir", CopyOptions { owner: owner(1000, 1000), ..Default::default() }))
}

fn copy_mode() -> R {
    st(copy("/dir", "/dir", CopyOptions { mode: Some(0o600), ..Default::default() }).copy(
        &ctx(),
        "/file.txt",
        "/f",
        CopyOptions { mode: Some(0o4755), ..Default::default() },
    ))
}

fn copy_timestamp() -> R {
    st(copy("/dir", "/dir", CopyOptions { timestamp: Some(TS), ..Default::default() }))
}

fn copy_special_bits() -> R {
    st(State::scratch()
        .copy(&ctx(), "/suid", "/suid", CopyOptions::default())
        .copy(&ctx(), "/sgid", "/sgid", CopyOptions::default())
        .copy(&ctx(), "/sgid-dir", "/sgid-dir", CopyOptions::default())
        .copy(&ctx(), "/sticky-dir", "/sticky-dir", CopyOptions::default()))
}

fn local_owned() -> R {
    st(State::local("owned"))
}

fn copy_owned() -> R {
    st(State::scratch().copy(&State::local("owned"), "/sub", "/sub", CopyOptions::default()))
}

fn copy_hardlinks() -> R {
    st(copy("/", "/all", CopyOptions { dir_copy_contents: true, create_dest_path: true, ..Default::default() }))
}

fn copy_onto_existing() -> R {
    st(State::scratch()
        .mkdir("/dir", md())
        .mkfile("/dir/a.txt", 0o600, "old", mf())
        .copy(&ctx(), "/dir", "/dir", CopyOptions::default())
        .copy(&ctx(), "/file.txt", "/dir/a.txt", CopyOptions::default()))
}

fn copy_missing_source() -> R {
    st(copy("/nope", "/nope", CopyOptions::default()))
}

// ---------------------------------------------------------------------------------------------
// exec

fn exec_basic() -> R {
    st(run(&rootfs(), "echo hi > /out.txt"))
}

fn exec_extract() -> R {
    st(extract(&run(&rootfs(), "mkdir -p /out && echo hi > /out/a && ls /bin > /out/bins"), "/out"))
}

fn exec_env() -> R {
    let base = rootfs().with_env("FOO", "from-state").with_env("BAR", "bar");
    // BuildKit adds OTEL_*/TRACEPARENT trace-context variables with per-build ids: left out.
    let s = base.run(
        sh("mkdir /out && env | grep -v -e ^OTEL_ -e ^TRACEPARENT= | sort > /out/env")
            .env("FOO", "from-run")
            .env("BAZ", "a=b c"),
    );
    st(extract(&s, "/out"))
}

fn exec_cwd_existing() -> R {
    st(extract(&rootfs().with_cwd("/tmp").run(sh("pwd > /tmp/pwd")).root(), "/tmp"))
}

fn exec_cwd_missing_root() -> R {
    st(run(&rootfs(), "pwd > /pwd").with_cwd("/work/dir").run(sh("pwd > here")).root())
}

fn exec_cwd_missing_user() -> R {
    st(rootfs().run(sh("id > /tmp/id").cwd("/made/by/run").user("1000:1000")).root())
}

fn exec_user_numeric() -> R {
    let s = rootfs().run(sh("id > /tmp/id; touch /tmp/mine; mkdir /tmp/mydir").user("1000:50"));
    st(extract(&s, "/tmp"))
}

fn exec_user_name() -> R {
    let s = rootfs().run(sh("id > /tmp/id; touch /tmp/mine").user("app"));
    st(extract(&s, "/tmp"))
}

fn exec_hostname() -> R {
    st(extract(&rootfs().run(sh("hostname > /tmp/h").hostname("diffhost")).root(), "/tmp"))
}

fn exec_network_none() -> R {
    st(extract(&rootfs().run(sh("ls /sys/class/net | sort > /tmp/net").network(Network::None)).root(), "/tmp"))
}

fn exec_readonly_rootfs() -> R {
    let s = rootfs().run(
        sh("touch /nope 2>/dev/null && echo writable > /out/r || echo readonly > /out/r")
            .readonly_rootfs()
            .mount(MountSpec::bind("/out", &State::scratch(), false)),
    );
    st(s.mount_output("/out").ok_or("no /out output")?)
}

fn exec_bind_readonly() -> R {
    let s = rootfs().run(
        sh("cp -a /ctx/file.txt /ctx/dir /tmp/ && (touch /ctx/x 2>/dev/null || echo ro > /tmp/ro)")
            .mount(MountSpec::bind("/ctx", &ctx(), true)),
    );
    st(extract(&s, "/tmp"))
}

fn exec_bind_rw_output() -> R {
    let data = State::scratch().mkdir("/pre", md());
    let s = rootfs().run(
        sh("echo new > /data/new && rm -r /data/pre && mkdir /data/d && chmod 0710 /data/d")
            .mount(MountSpec::bind("/data", &data, false)),
    );
    st(s.mount_output("/data").ok_or("no /data output")?)
}

fn exec_bind_selector() -> R {
    let s = rootfs().run(
        sh("ls -la /sel > /dev/null && cp -a /sel /tmp/sel")
            .mount(MountSpec::bind("/sel", &ctx(), true).with_selector("/dir")),
    );
    st(extract(&s, "/tmp"))
}

fn exec_multi_output() -> R {
    let s = rootfs().run(
        sh("echo a > /a/a; echo b > /b/b; echo root > /root-out")
            .mount(MountSpec::bind("/a", &State::scratch(), false))
            .mount(MountSpec::bind("/b", &State::scratch().mkdir("/keep", md()), false)),
    );
    let a = s.mount_output("/a").ok_or("no /a output")?;
    let b = s.mount_output("/b").ok_or("no /b output")?;
    st(State::scratch()
        .copy(&a, "/", "/a", CopyOptions { dir_copy_contents: true, create_dest_path: true, ..Default::default() })
        .copy(&b, "/", "/b", CopyOptions { dir_copy_contents: true, create_dest_path: true, ..Default::default() })
        .copy(&s.root(), "/root-out", "/root-out", CopyOptions::default()))
}

/// A cache id unique to this run of the suite: a daemon given with KILN_BUILDKIT_ADDR keeps its
/// cache mounts across runs, kiln's roots are fresh.
fn run_cache_id(base: &str) -> String {
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let n = NONCE.get_or_init(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{}-{t}", std::process::id())
    });
    format!("{base}-{n}")
}

fn cache_graph(id: &str, sharing: CacheSharing) -> R {
    let id = run_cache_id(id);
    let s = rootfs().run(
        sh("echo one >> /cache/log; mkdir -p /cache/d; cp /cache/log /tmp/log; ls -la /cache | wc -l > /tmp/n")
            .mount(MountSpec::cache("/cache", id, sharing)),
    );
    st(extract(&s, "/tmp"))
}

fn exec_cache_shared() -> R {
    cache_graph("diff-cache-shared", CacheSharing::Shared)
}

fn exec_cache_private() -> R {
    cache_graph("diff-cache-private", CacheSharing::Private)
}

fn exec_cache_locked() -> R {
    cache_graph("diff-cache-locked", CacheSharing::Locked)
}

fn exec_tmpfs() -> R {
    st(rootfs().run(sh("echo t > /scratch/t && cp /scratch/t /t").mount(MountSpec::tmpfs("/scratch", 0))).root())
}

fn exec_secret() -> R {
    let s = rootfs().run(sh("cat /run/secrets/mysecret > /tmp/s").mount(MountSpec::secret(
        "/run/secrets/mysecret",
        "mysecret",
        0,
        0,
        0o400,
        false,
    )));
    st(extract(&s, "/tmp"))
}

fn exec_secret_owner_mode() -> R {
    let s = rootfs().run(
        sh("stat -c '%u %g %a' /s > /tmp/stat; cat /s > /tmp/s")
            .user("1000")
            .mount(MountSpec::secret("/s", "mysecret", 1000, 50, 0o440, false)),
    );
    st(s.root())
}

fn exec_secret_optional_missing() -> R {
    let s =
        rootfs().run(sh("test -e /opt/s && echo present > /tmp/r || echo absent > /tmp/r").mount(MountSpec::secret(
            "/opt/s",
            "nosuchsecret",
            0,
            0,
            0o400,
            true,
        )));
    st(extract(&s, "/tmp"))
}

fn exec_secret_missing() -> R {
    let s = rootfs().run(sh("true").mount(MountSpec::secret("/opt/s", "nosuchsecret", 0, 0, 0o400, false)));
    st(s.root())
}

fn exec_umask() -> R {
    st(extract(&rootfs().run(sh("umask 027; mkdir /tmp/o; touch /tmp/o/f; umask 0; touch /tmp/o/g")).root(), "/tmp"))
}

fn exec_special_bits() -> R {
    st(run(
        &rootfs(),
        "mkdir /bits && cd /bits && touch u g && chmod 4755 u && chmod 2755 g && mkdir s gd && chmod 1777 s && chmod 2770 gd && chown 1000:50 gd",
    ))
}

fn exec_hardlink() -> R {
    st(run(&rootfs(), "mkdir /h && echo x > /h/a && ln /h/a /h/b && ln /bin/busybox /h/bb"))
}

fn exec_symlinks() -> R {
    st(extract(
        &run(&rootfs(), "mkdir /tmp/l && cd /tmp/l && ln -s /etc/passwd abs && ln -s ../l/abs rel && ln -s missing dangling && ln -s . self"),
        "/tmp",
    ))
}

fn exec_chained() -> R {
    let a = run(&rootfs(), "echo 1 > /tmp/1");
    let b = run(&a, "cat /tmp/1 > /tmp/2 && rm /tmp/1");
    st(extract(&b, "/tmp"))
}

/// Display names, descriptions and ignore-cache: metadata only (dump-llb), same result.
fn exec_metadata() -> R {
    let s = rootfs()
        .run(sh("echo meta > /tmp/m").custom_name("build <it> & \"go\"").ignore_cache())
        .root()
        .with_description("com.example.note", "a\tb");
    st(extract(&s, "/tmp"))
}

fn exec_exit_nonzero() -> R {
    st(run(&rootfs(), "echo failing >&2; exit 3"))
}

fn exec_no_args() -> R {
    mutate_result_op(&run(&rootfs(), "true"), |op| {
        if let Some(pb::op::Op::Exec(e)) = &mut op.op {
            if let Some(m) = &mut e.meta {
                m.args.clear();
            }
        }
    })
}

fn exec_bad_mount_input() -> R {
    mutate_result_op(&run(&rootfs(), "true"), |op| {
        if let Some(pb::op::Op::Exec(e)) = &mut op.op {
            if let Some(m) = e.mounts.first_mut() {
                m.input = 5;
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// whiteouts (a Run changing earlier layers)

fn layered() -> State {
    rootfs()
        .copy(&ctx(), "/dir", "/data/dir", CopyOptions { create_dest_path: true, ..Default::default() })
        .mkfile("/data/file", 0o644, "file", mf())
        .mkdir("/data/todir", md())
}

fn whiteout_file_to_dir() -> R {
    st(run(&layered(), "rm /data/file && mkdir /data/file && echo in > /data/file/in"))
}

fn whiteout_dir_to_file() -> R {
    st(run(&layered(), "rm -r /data/dir && echo now-a-file > /data/dir"))
}

fn whiteout_deleted_dir() -> R {
    st(run(&layered(), "rm -r /data/dir/sub /data/todir"))
}

fn whiteout_deleted_file() -> R {
    st(run(&layered(), "rm /data/file /data/dir/a.txt /etc/group"))
}

fn whiteout_opaque_dir() -> R {
    st(run(&layered(), "rm -r /data/dir && mkdir /data/dir && echo fresh > /data/dir/fresh"))
}

// ---------------------------------------------------------------------------------------------
// merge

fn merge_two() -> R {
    st(State::merge(vec![
        State::scratch().mkfile("/a", 0o644, "a", mf()),
        State::scratch().mkdir("/d", md()).mkfile("/d/b", 0o600, "b", mf()),
    ]))
}

fn merge_overlap() -> R {
    st(State::merge(vec![
        State::scratch().mkdir("/d", MkdirOptions { mode: 0o700, ..md() }).mkfile("/d/x", 0o644, "first", mf()),
        State::scratch().mkdir("/d", md()).mkfile("/d/x", 0o600, "second", mf()).mkfile("/d/y", 0o644, "y", mf()),
    ]))
}

fn merge_dir_and_file() -> R {
    st(State::merge(vec![
        State::scratch().mkdir("/p", md()).mkfile("/p/in", 0o644, "in", mf()),
        State::scratch().mkfile("/p", 0o644, "file wins", mf()),
        ctx(),
    ]))
}

fn merge_execs() -> R {
    let a = rootfs().run(sh("echo a > /tmp/a && rm /etc/group")).root();
    let b = rootfs().run(sh("echo b > /tmp/b")).root();
    st(State::merge(vec![a, b]))
}

fn copy_from_merge() -> R {
    let m = State::merge(vec![ctx(), State::scratch().mkdir("/dir", md()).mkfile("/dir/extra", 0o644, "e", mf())]);
    st(State::scratch().copy(&m, "/dir", "/merged", CopyOptions::default()))
}

// ---------------------------------------------------------------------------------------------
// diff

/// A Run on the rootfs that adds, changes and deletes files (and dirs) under /data.
fn data_base() -> State {
    run(
        &rootfs(),
        "mkdir -p /data/sub /data/keep && echo a > /data/a && echo m > /data/m && echo d > /data/del && \
         echo s > /data/sub/s && echo k > /data/keep/k",
    )
}

fn data_changes(base: &State) -> State {
    run(
        base,
        "echo new > /data/new && echo changed > /data/m && rm /data/del && rm -r /data/sub && echo k2 > /data/keep/k2",
    )
}

fn other_base() -> State {
    State::scratch()
        .mkdir("/data", md())
        .mkfile("/data/a", 0o644, "a2", mf())
        .mkfile("/data/del", 0o644, "other del", mf())
        .mkdir("/data/sub", md())
        .mkfile("/data/sub/s", 0o644, "other s", mf())
}

fn diff_run_alone() -> R {
    let base = data_base();
    st(State::diff(&base, &data_changes(&base)))
}

fn diff_merged_onto_other_base() -> R {
    let base = data_base();
    st(State::merge(vec![other_base(), State::diff(&base, &data_changes(&base))]))
}

fn diff_two_runs_merged() -> R {
    let base = data_base();
    let one = run(&base, "echo t > /data/tmpf && echo x > /data/x");
    let two = run(&one, "rm /data/tmpf /data/a");
    st(State::merge(vec![other_base().mkfile("/data/tmpf", 0o644, "t2", mf()), State::diff(&base, &two)]))
}

fn diff_scratch_lower() -> R {
    st(State::diff(&State::scratch(), &State::scratch().mkdir("/d", md()).mkfile("/d/f", 0o600, "f", mf())))
}

fn diff_not_ancestor() -> R {
    let lower = State::scratch().mkfile("/same", 0o644, "same", mf()).mkfile("/gone", 0o644, "gone", mf());
    let upper = State::scratch().mkfile("/same", 0o644, "same", mf()).mkfile("/added", 0o644, "added", mf());
    st(State::merge(vec![lower.clone(), State::diff(&lower, &upper)]))
}

fn diff_as_mount() -> R {
    let base = data_base();
    let d = State::diff(&base, &data_changes(&base));
    let s = rootfs().run(sh("find /mnt | sort > /tmp/found").mount(MountSpec::bind("/mnt", &d, true)));
    st(extract(&s, "/tmp"))
}

// ---------------------------------------------------------------------------------------------
// exec features

fn exec_default_hostname_and_hosts() -> R {
    st(extract(&rootfs().run(sh("hostname > /tmp/h && cat /etc/hosts > /tmp/hosts")).root(), "/tmp"))
}

fn exec_extra_hosts() -> R {
    let o = sh("cat /etc/hosts > /tmp/hosts")
        .extra_host("db.internal", "10.1.2.3".parse().map_err(|e| format!("{e}"))?)
        .extra_host("v6.internal", "fd00::1".parse().map_err(|e| format!("{e}"))?);
    st(extract(&rootfs().run(o).root(), "/tmp"))
}

fn exec_ulimit() -> R {
    let o = sh("{ ulimit -n; ulimit -Hn; ulimit -s; } > /tmp/limits").ulimit("nofile", 1024, 2048).ulimit(
        "stack",
        8192 * 1024,
        8192 * 1024,
    );
    st(extract(&rootfs().run(o).root(), "/tmp"))
}

fn exec_secret_env() -> R {
    let o = sh("echo \"[$TOKEN]\" > /tmp/env").secret_env("TOKEN", "mysecret", false);
    st(extract(&rootfs().run(o).root(), "/tmp"))
}

fn exec_secret_env_optional_missing() -> R {
    let o = sh("echo \"[${NOPE-unset}]\" > /tmp/env").secret_env("NOPE", "not-given", true);
    st(extract(&rootfs().run(o).root(), "/tmp"))
}

fn exec_secret_env_missing() -> R {
    st(rootfs().run(sh("true").secret_env("NOPE", "not-given", false)).root())
}

fn exec_ssh_mount() -> R {
    let o = sh("stat -c '%a %u %g %F' /run/buildkit/ssh_agent.0 > /tmp/ssh && echo $SSH_AUTH_SOCK >> /tmp/ssh")
        .ssh(SshSocket::new("default"));
    st(extract(&rootfs().run(o).root(), "/tmp"))
}

fn exec_ssh_mount_owner_mode() -> R {
    let o = sh("stat -c '%a %u %g %F' /agent/sock > /tmp/ssh && echo $SSH_AUTH_SOCK >> /tmp/ssh")
        .ssh(SshSocket::new("default").target("/agent/sock").owner(1000, 50, 0o640));
    st(extract(&rootfs().run(o).root(), "/tmp"))
}

fn exec_ssh_optional_missing() -> R {
    let o = sh("test -e /run/buildkit && echo mounted > /tmp/run || echo absent > /tmp/run")
        .ssh(SshSocket::new("not-given").optional());
    st(extract(&rootfs().run(o).root(), "/tmp"))
}

fn exec_ssh_missing() -> R {
    st(rootfs().run(sh("true").ssh(SshSocket::new("not-given"))).root())
}

fn exec_cgroup_parent() -> R {
    st(extract(&rootfs().run(sh("echo ran > /tmp/ran").cgroup_parent("kilndiff")).root(), "/tmp"))
}

fn exec_network_host_not_granted() -> R {
    st(rootfs().run(sh("true").network(Network::Host)).root())
}

fn exec_insecure_not_granted() -> R {
    st(rootfs().run(sh("true").insecure()).root())
}

fn exec_outputs_and_readonly_mounts() -> R {
    let e = rootfs().run(
        sh("echo one > /o1/f && echo two > /o2/f && cat /ro/dir/a.txt > /o1/copied")
            .mount(MountSpec::bind("/o1", &State::scratch(), false))
            .mount(MountSpec::bind("/o2", &State::scratch().mkdir("/keep", md()), false))
            .mount(MountSpec::bind("/ro", &ctx(), true)),
    );
    let o1 = e.mount_output("/o1").ok_or("no /o1 output")?;
    let o2 = e.mount_output("/o2").ok_or("no /o2 output")?;
    st(State::merge(vec![o1, State::scratch().copy(&o2, "/", "/second", CopyOptions::default())]))
}
