"""The example users copy (python/examples/ci_build.py) runs end to end against a real
docker-registry on 127.0.0.1: multi-stage build, cache mount, secret, image push, cache export and
re-import in a fresh root."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import REPO

REGISTRY = pathlib.Path("/usr/bin/docker-registry")


@pytest.fixture()
def registry(tmp_path):
    assert REGISTRY.is_file(), f"{REGISTRY} is missing: install the docker-registry package (scripts/setup)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"127.0.0.1:{port}"
    cfg = tmp_path / "registry.yml"
    cfg.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry'}\nhttp:\n  addr: {addr}\n"
    )
    log = open(tmp_path / "registry.log", "w")
    proc = subprocess.Popen([str(REGISTRY), "serve", str(cfg)], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://{addr}/v2/", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"docker-registry did not start: {(tmp_path / 'registry.log').read_text()}")
            time.sleep(0.05)
    yield addr
    proc.terminate()
    proc.wait(timeout=30)


def test_ci_build_example(registry, tmp_path):
    r = subprocess.run(
        [sys.executable, str(REPO / "python" / "examples" / "ci_build.py"), registry, str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "second machine: 0 executed" in r.stdout, r.stdout + r.stderr
    assert "not-a-real-token" not in r.stdout + r.stderr
    with urllib.request.urlopen(f"http://{registry}/v2/examples/app/tags/list", timeout=10) as resp:
        assert b'"1"' in resp.read()
