"""kiln.connect(): the shared scenario's graph, its typed errors and a Dockerfile build run on a
`kiln serve` daemon and on a real buildkitd (KILN_BUILDKIT_ADDR, or ../shared/buildkit started
here) through the same Engine surface as an embedded engine."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import time

import pytest

import kiln
from conftest import REPO, read
from test_scenario import GREETING, app

BUILDKIT_DIR = pathlib.Path(os.environ.get("KILN_BUILDKIT_DIR", REPO.parent / "shared" / "buildkit"))


def _kiln_bin() -> pathlib.Path:
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    b = pathlib.Path(os.environ.get("KILN_BIN", target / "debug" / "kiln"))
    if not b.exists():
        raise RuntimeError(f"{b} does not exist: build it with `cargo build -p kiln-cli` (or set KILN_BIN)")
    return b


def _wait_for_socket(path: pathlib.Path, proc: subprocess.Popen, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(path))
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"kiln serve exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kiln serve did not listen on {path} within {limit} s")
            time.sleep(0.02)
        finally:
            s.close()


@pytest.fixture(scope="module")
def daemons(tmp_path_factory):
    """Addresses by name: a kiln serve started here, and buildkitd."""
    d = tmp_path_factory.mktemp("daemons")
    sock = d / "kiln.sock"
    serve = subprocess.Popen(
        [str(_kiln_bin()), "--root", str(d / "root"), "serve", "--addr", f"unix://{sock}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    stop_buildkitd = None
    try:
        _wait_for_socket(sock, serve)
        bk = os.environ.get("KILN_BUILDKIT_ADDR", "")
        if not bk:
            start = BUILDKIT_DIR / "start"
            if not start.exists():
                raise RuntimeError(f"no BuildKit at {BUILDKIT_DIR}: set KILN_BUILDKIT_DIR or KILN_BUILDKIT_ADDR")
            state = d / "buildkitd"
            bk = subprocess.run([str(start), str(state)], check=True, capture_output=True, text=True, timeout=120).stdout.strip()
            stop_buildkitd = [str(BUILDKIT_DIR / "stop"), str(state)]
        yield {"kiln-serve": f"unix://{sock}", "buildkitd": bk}
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(timeout=30)
        if stop_buildkitd:
            subprocess.run(stop_buildkitd, check=False, timeout=120)


@pytest.fixture(params=["kiln-serve", "buildkitd"])
def remote(request, daemons):
    addr = daemons[request.param]
    with kiln.connect(addr) as e:
        yield e


def test_connect_is_an_engine_on_the_daemon(daemons):
    for addr in daemons.values():
        with kiln.connect(addr) as e:
            assert isinstance(e, kiln.Engine)
            assert e.address == addr
            assert e.root is None
            assert len(e.workers()) >= 1


def test_scenario_graph_on_the_daemon(remote, rootfs, ctx, tmp_path):
    out = tmp_path / "out"
    events = []
    r = remote.solve(
        app(),
        locals={"rootfs": rootfs, "ctx": ctx},
        outputs=[f"type=local,dest={out}"],
        progress=events.append,
    )
    assert r.executed + r.cached >= 1
    assert read(out / "greeting") == GREETING
    assert read(out / "app" / "hello.txt") == GREETING
    assert any("cat /ctx/hello.txt" in (e.name or "") for e in events if e.type in ("vertex_completed", "vertex_cached"))
    assert remote.disk_usage()


def test_failing_step_raises_exec_error_on_the_daemon(remote, rootfs):
    bad = kiln.local("rootfs").run(["/bin/sh", "-c", "echo bad-step-output; exit 7"])
    with pytest.raises(kiln.ExecError) as info:
        remote.solve(bad, locals={"rootfs": rootfs}, progress="quiet")
    assert info.value.exit_code == 7
    assert any("bad-step-output" in line for line in info.value.log_tail)


def test_bad_option_is_an_option_error_before_the_daemon(remote, rootfs, ctx, tmp_path):
    with pytest.raises(kiln.OptionError) as info:
        remote.solve(app(), locals={"rootfs": rootfs, "ctx": ctx}, cache_exports=[f"type=local,dest={tmp_path / 'x'},mode=maxx"])
    assert "mode" in str(info.value) and "maxx" in str(info.value)


def test_dockerfile_frontend_on_the_daemon(remote, rootfs, tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "Dockerfile").write_text("FROM base\nCOPY msg.txt /msg.txt\nRUN cat /msg.txt > /copied\n")
    (proj / "msg.txt").write_text("through the daemon\n")
    out = tmp_path / "out"
    remote.solve(
        frontend="dockerfile.v0",
        frontend_opts={"context:base": "local:rootfs"},
        locals={"context": proj, "dockerfile": proj, "rootfs": rootfs},
        outputs=[f"type=local,dest={out}"],
        progress="quiet",
    )
    assert read(out / "copied") == "through the daemon\n"


def test_unreachable_daemon_names_the_address(tmp_path):
    addr = f"unix://{tmp_path / 'none.sock'}"
    with pytest.raises(kiln.KilnError) as info:
        kiln.connect(addr)
    assert "none.sock" in str(info.value)


def test_scenario_cache_export_then_import_through_the_daemon(request, remote, rootfs, ctx, tmp_path):
    """Scenario steps 2-3 through a daemon: the local cache directory is on this side; the
    emptied daemon (pruned) imports it. BuildKit keys a RUN on a local rootfs by its session, so
    only on kiln serve is the RUN a cache hit."""
    locals_ = {"rootfs": rootfs, "ctx": ctx}
    cache = tmp_path / "cache"
    remote.solve(app(), locals=locals_, outputs=[f"type=local,dest={tmp_path / 'out-a'}"],
                 cache_exports=[f"type=local,dest={cache},mode=max"], progress="quiet")
    assert '"org.opencontainers.image.ref.name":"latest"' in (cache / "index.json").read_text()
    remote.prune(all=True)
    events = []
    remote.solve(app(), locals=locals_, outputs=[f"type=local,dest={tmp_path / 'out-b'}"],
                 cache_imports=[f"type=local,src={cache}"], progress=events.append)
    for f in ["greeting", "app/hello.txt"]:
        assert read(tmp_path / "out-b" / f) == GREETING
    if request.node.callspec.params["remote"] == "kiln-serve":
        ran = [e.name for e in events if e.type == "vertex_completed"]
        assert not any("cat /ctx/hello.txt" in n for n in ran), ran


def test_client_side_build_on_the_daemon(remote, rootfs, ctx, tmp_path):
    """engine.build(fn) on a connected engine: the function runs here, its solves and reads go
    through the daemon's LLB bridge."""

    def fn(bctx):
        r = bctx.solve(app())
        greeting = r.read_file("/greeting").decode()
        names = [e.name for e in r.read_dir("/app")]
        with pytest.raises(kiln.NotFoundError):
            r.read_file("/nope")
        return bctx.solve(kiln.scratch().mkfile("/report", f"{bctx.frontend_opts['who']}: {greeting.strip()} {names}\n"))

    out = tmp_path / "out"
    remote.build(fn, locals={"rootfs": rootfs, "ctx": ctx}, outputs=[f"type=local,dest={out}"],
                 frontend_opts={"who": "python"}, progress="quiet")
    assert read(out / "report") == "python: hello from the shared scenario ['hello.txt']\n"
