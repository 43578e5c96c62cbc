//! ExecOp features beyond the basics, end to end with real runc: extra hosts, ulimits, cgroup
//! parent, valid exit codes, secret env, SSH agent forwarding, entitlements (network.host,
//! security.insecure) and platform checks. Each test solves through the engine like a user would.

mod common;

use common::kit::{base, read, sh, Kit};
use kiln::engine::SolveOptions;
use kiln::graph::{pb, ExecOptions, Network, SshSocket, State};
use kiln::options::Entitlement;
use kiln::ErrorKind;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Runs `o` on busybox (so that it writes files under /out) and exports /out to a fresh dir.
async fn run_out(k: &Kit, o: ExecOptions, opts: SolveOptions) -> kiln::Result<PathBuf> {
    let st = base().run(o.mount(kiln::graph::MountSpec::bind("/out", &State::scratch(), false)));
    let out_state = st.mount_output("/out").expect("rw bind output");
    let out = k.path(&unique("out"));
    let (r, _) = k.solve(&out_state, opts.output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.map(|_| out)
}

fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread")]
async fn extra_hosts_are_appended_to_etc_hosts_in_order() {
    let k = Kit::new();
    let o = sh(&format!("cat /etc/hosts > /out/hosts # {}", unique("h")))
        .hostname("box")
        .extra_host("db.internal", "10.1.2.3".parse().unwrap())
        .extra_host("v6.internal", "fd00::1".parse().unwrap());
    let out = run_out(&k, o, k.opts()).await.unwrap();
    // BuildKit's hosts.go: localhost lines, then "IP\tHOST" per extra host in order.
    assert_eq!(
        read(&out.join("hosts")),
        "127.0.0.1\tlocalhost box\n::1\tlocalhost ip6-localhost ip6-loopback\n10.1.2.3\tdb.internal\nfd00::1\tv6.internal\n"
    );
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn ulimits_become_process_rlimits() {
    let k = Kit::new();
    let o = sh(&format!("ulimit -n > /out/n; ulimit -Hn >> /out/n; ulimit -s >> /out/n # {}", unique("u")))
        .ulimit("nofile", 1234, 2345)
        .ulimit("stack", 4096 * 1024, 8192 * 1024);
    let out = run_out(&k, o, k.opts()).await.unwrap();
    assert_eq!(read(&out.join("n")), "1234\n2345\n4096\n");
    // An unknown name is refused before anything runs.
    let bad = base().run(sh("true").ulimit("bogus", 1, 1)).root();
    let e = bad.to_definition().unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
}

/// Removes `/sys/fs/cgroup/*/NAME/buildkit` and `/sys/fs/cgroup/*/NAME` (runc removes only the
/// container's own cgroup; BuildKit leaves the parents too).
fn remove_cgroup_parent(name: &str) {
    let roots = [PathBuf::from("/sys/fs/cgroup")];
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.push(root.clone());
        for d in dirs {
            let _ = std::fs::remove_dir(d.join(name).join("buildkit"));
            let _ = std::fs::remove_dir(d.join(name));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cgroup_parent_places_the_container_under_parent_buildkit() {
    let k = Kit::new();
    let parent = unique("kiln-cgparent");
    let o = sh("cat /proc/self/cgroup > /out/cg").cgroup_parent(&parent);
    let r = run_out(&k, o, k.opts()).await;
    let cg = r.as_ref().map(|out| read(&out.join("cg")));
    remove_cgroup_parent(&parent);
    let cg = cg.unwrap();
    assert!(cg.contains(&format!("/{parent}/buildkit/kiln-")), "{cg}");
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_exit_codes_decide_success() {
    let k = Kit::new();
    let tag = unique("x");
    let ok = sh(&format!("echo {tag} > /out/r; exit 3")).valid_exit_codes([0, 3]);
    let out = run_out(&k, ok, k.opts()).await.unwrap();
    assert_eq!(read(&out.join("r")), format!("{tag}\n"));
    let e = run_out(&k, sh(&format!("exit 3 # {tag}")), k.opts()).await.unwrap_err();
    assert!(matches!(e, kiln::Error::Exec { exit_code: 3, .. }), "{e}");
    let e = run_out(&k, sh(&format!("exit 0 # {tag}")).valid_exit_codes([1]), k.opts()).await.unwrap_err();
    assert!(matches!(e, kiln::Error::Exec { exit_code: 0, .. }), "{e}");
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_env_sets_the_variable_and_never_leaks_the_value() {
    let k = Kit::new();
    let value = "s3cr3t-ENV-value-77";
    let o = sh(&format!("test \"$TOKEN\" = {value} && echo ok > /out/r # {}", unique("s")))
        .secret_env("TOKEN", "tok", false);
    // The command line above holds the value only to check it; the op itself carries the id.
    let out = run_out(&k, o, k.opts().secret("tok", value)).await.unwrap();
    assert_eq!(read(&out.join("r")), "ok\n");

    // Missing and required: the error names the id and the variable.
    let o = sh("echo $TOKEN > /out/r").secret_env("TOKEN", "missing-id", false);
    let e = run_out(&k, o, k.opts().secret("tok", value)).await.unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Source);
    assert!(msg.contains("\"missing-id\"") && msg.contains("TOKEN"), "{msg}");
    assert!(!msg.contains(value), "{msg}");

    // A failing run with the secret in its env: the error does not show the value.
    let o = sh("exit 5").secret_env("TOKEN", "tok", false);
    let e = run_out(&k, o, k.opts().secret("tok", value)).await.unwrap_err();
    assert!(!format!("{e} {e:?}").contains(value), "{e:?}");

    // Optional and missing: the variable is set and empty (BuildKit appends NAME=).
    let o = sh("test \"${OPT+set}\" = set && test -z \"$OPT\" && echo empty > /out/r").secret_env("OPT", "nope", true);
    let out = run_out(&k, o, k.opts()).await.unwrap();
    assert_eq!(read(&out.join("r")), "empty\n");
    k.assert_no_leaks();
}

/// A static client: connects to the unix socket argv[1], writes argv[2], prints the reply.
const SOCK_CLIENT_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a; memset(&a, 0, sizeof a); a.sun_family = AF_UNIX;
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
    if (write(fd, argv[2], strlen(argv[2])) < 0) { perror("write"); return 1; }
    char buf[64]; ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) { perror("read"); return 1; }
    buf[n] = 0; printf("%s\n", buf); return 0;
}
"#;

fn build_sock_client(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let src = dir.join("client.c");
    std::fs::write(&src, SOCK_CLIENT_C).unwrap();
    let bin = dir.join("sockclient");
    let st = std::process::Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("gcc (static glibc) is needed to build the socket client");
    assert!(st.success());
    std::fs::remove_file(&src).unwrap();
    bin
}

/// A fake agent: accepts connections, records what it reads, answers "pong".
fn fake_agent(path: &Path) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { break };
            let mut buf = [0u8; 64];
            let n = c.read(&mut buf).unwrap_or(0);
            let _ = tx.send(buf[..n].to_vec());
            let _ = c.write_all(b"pong");
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_socket_is_forwarded_with_owner_and_mode() {
    let k = Kit::new();
    let tools = k.path("tools");
    build_sock_client(&tools);
    let agent = k.path("agent.sock");
    let received = fake_agent(&agent);
    let o = sh(&format!(
        "stat -c '%a %u %g %F' \"$SSH_AUTH_SOCK\" > /out/stat && echo $SSH_AUTH_SOCK > /out/env && \
         /tools/sockclient \"$SSH_AUTH_SOCK\" ping > /out/reply # {}",
        unique("ssh")
    ))
    .mount(kiln::graph::MountSpec::bind("/tools", &State::local("tools"), true))
    .ssh(SshSocket::new("").owner(1000, 1001, 0o640));
    let opts = k.opts().local("tools", &tools).ssh("default", &agent);
    let out = run_out(&k, o, opts).await.unwrap();
    assert_eq!(read(&out.join("stat")), "640 1000 1001 socket\n");
    assert_eq!(read(&out.join("env")), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(read(&out.join("reply")), "pong\n");
    assert_eq!(received.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), b"ping");

    // Missing id: an error naming it and how to provide it; optional: runs without a socket.
    let o = sh("true").ssh(SshSocket::new("gh"));
    let e = run_out(&k, o, k.opts().ssh("default", &agent)).await.unwrap_err();
    assert!(e.to_string().contains("SSH agent \"gh\"") && e.to_string().contains("default"), "{e}");
    assert_eq!(e.missing(), Some((kiln::MissingInput::Ssh, "gh")));
    let o = sh("test ! -e /run/buildkit/ssh_agent.0 && echo none > /out/r").ssh(SshSocket::new("gh").optional());
    let out = run_out(&k, o, k.opts()).await.unwrap();
    assert_eq!(read(&out.join("r")), "none\n");
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn network_host_needs_the_entitlement() {
    let k = Kit::new();
    let o = || sh(&format!("cat /proc/net/dev > /out/dev # {}", unique("n"))).network(Network::Host);
    let e = run_out(&k, o(), k.opts()).await.unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Definition);
    assert!(msg.contains("network.host is not allowed") && msg.contains("--allow network.host"), "{msg}");
    let out = run_out(&k, o(), k.opts().allow(Entitlement::NetworkHost)).await.unwrap();
    // The host's interfaces are visible (a sandbox namespace would have only lo).
    let host_dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert_eq!(read(&out.join("dev")).lines().count(), host_dev.lines().count());
    k.assert_no_leaks();
}

fn own_cap_eff() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn security_insecure_needs_the_entitlement_and_is_privileged() {
    let k = Kit::new();
    let script = format!(
        "grep CapEff /proc/self/status | cut -f2 > /out/caps; mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && \
         echo mounted > /out/mount; grep ' /sys sysfs ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1 > /out/sys; \
         test -c /dev/fuse && echo fuse > /out/dev; true # {}",
        unique("i")
    );
    let e = run_out(&k, sh(&script).insecure(), k.opts()).await.unwrap_err();
    assert!(e.to_string().contains("security.insecure is not allowed"), "{e}");
    assert!(e.to_string().contains("--allow security.insecure"), "{e}");
    let out = run_out(&k, sh(&script).insecure(), k.opts().allow(Entitlement::SecurityInsecure)).await.unwrap();
    assert_eq!(read(&out.join("caps")).trim(), own_cap_eff());
    assert_eq!(read(&out.join("mount")), "mounted\n");
    assert_eq!(read(&out.join("sys")), "rw\n");
    assert_eq!(read(&out.join("dev")), "fuse\n");

    // The sandbox has neither.
    let out = run_out(&k, sh(&script.replace("# ", "# sandbox ")), k.opts()).await.unwrap();
    assert_eq!(read(&out.join("caps")).trim(), "00000000a80425fb");
    assert!(!out.join("mount").exists());
    assert_eq!(read(&out.join("sys")), "ro\n");
    k.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_platform_is_refused_native_accepted() {
    let k = Kit::new();
    let host = kiln::worker::platform::host();
    let other = if host.architecture == "arm64" { "amd64" } else { "arm64" };
    let plat = |arch: &str, variant: &str| pb::Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: variant.into(),
        ..Default::default()
    };
    let st = base().run(sh(&format!("true # {}", unique("p")))).root().with_platform(plat(other, ""));
    let (r, _) = k.solve(&st, k.opts().output(&format!("type=local,dest={}", k.path("pf").display())).unwrap()).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let msg = e.to_string();
    assert!(msg.contains(&format!("linux/{other}")) && msg.contains(&host.to_string()), "{msg}");

    // The host's platform, in another spelling (x86_64, amd64/v1), runs.
    let spelled = if host.architecture == "amd64" { plat("x86_64", "v1") } else { plat(&host.architecture, "") };
    let st = base().run(sh(&format!("echo ran > /r # {}", unique("p")))).root().with_platform(spelled);
    let out = k.path("pn");
    let (r, _) = k.solve(&st, k.opts().output(&format!("type=local,dest={}", out.display())).unwrap()).await;
    r.unwrap();
    assert_eq!(read(&out.join("r")), "ran\n");
    k.assert_no_leaks();
}

#[test]
fn builder_marshals_exec_features_like_go_llb() {
    let st = base()
        .run(
            sh("true")
                .extra_host("db", "10.0.0.1".parse().unwrap())
                .ulimit("nofile", 10, 20)
                .cgroup_parent("cg")
                .valid_exit_codes([0, 2])
                .secret_env("TOKEN", "tok", true)
                .ssh(SshSocket::new("gh"))
                .ssh(SshSocket::new("").target("/s/agent").owner(1, 2, 0o660).optional())
                .network(Network::Host)
                .insecure(),
        )
        .root();
    let def = st.to_definition().unwrap();
    let v = def.vertices().iter().find(|v| v.kind() == kiln::graph::OpKind::Exec).unwrap();
    let Some(pb::op::Op::Exec(e)) = &v.op.op else { panic!("not an exec") };
    let meta = e.meta.as_ref().unwrap();
    assert_eq!(meta.extra_hosts, vec![pb::HostIp { host: "db".into(), ip: "10.0.0.1".into() }]);
    assert_eq!(meta.ulimit, vec![pb::Ulimit { name: "nofile".into(), soft: 10, hard: 20 }]);
    assert_eq!(meta.cgroup_parent, "cg");
    assert_eq!(meta.valid_exit_codes, vec![0, 2]);
    // SSH_AUTH_SOCK: the first socket's target, appended (Go's EnvList.AddOrReplace).
    assert_eq!(meta.env.last().unwrap(), "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0");
    assert_eq!(e.secretenv, vec![pb::SecretEnv { id: "tok".into(), name: "TOKEN".into(), optional: true }]);
    assert_eq!(e.security, pb::SecurityMode::Insecure as i32);
    assert_eq!(e.network, pb::NetMode::Host as i32);
    let ssh: Vec<_> = e.mounts.iter().filter(|m| m.mount_type == pb::MountType::Ssh as i32).collect();
    assert_eq!(ssh.len(), 2);
    assert_eq!(ssh[0].dest, "/run/buildkit/ssh_agent.0");
    assert_eq!(ssh[0].ssh_opt, Some(pb::SshOpt { id: "gh".into(), uid: 0, gid: 0, mode: 0o600, optional: false }));
    assert_eq!(ssh[1].dest, "/s/agent");
    assert_eq!(ssh[1].ssh_opt, Some(pb::SshOpt { id: "".into(), uid: 1, gid: 2, mode: 0o660, optional: true }));
    assert_eq!((ssh[0].input, ssh[0].output), (-1, -1));
    let caps: Vec<&str> = v.metadata.caps.keys().map(String::as_str).collect();
    for c in [
        "exec.meta.ulimit",
        "exec.meta.security",
        "exec.meta.network",
        "exec.mount.secret",
        "exec.secretenv",
        "exec.mount.ssh",
        "exec.validexitcode",
    ] {
        assert!(caps.contains(&c), "{c} missing from {caps:?}");
    }
}
