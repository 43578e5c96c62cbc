"""Shared fixtures: a busybox rootfs made by tests/fixtures/make-rootfs, a fresh engine root per
test, and the shared scenario's context directory. Real runc and overlayfs: no mocks."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

import kiln

REPO = pathlib.Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "fixtures" / "scenario"


def _require(cond: bool, what: str) -> None:
    # A missing real component must fail loudly, never skip.
    if not cond:
        raise RuntimeError(f"python tests need {what}")


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory) -> pathlib.Path:
    _require(os.geteuid() == 0, "root (runc and overlayfs)")
    _require(shutil.which("runc") is not None, "runc on PATH")
    d = tmp_path_factory.mktemp("rootfs")
    subprocess.run([str(REPO / "tests" / "fixtures" / "make-rootfs"), str(d)], check=True)
    return d


@pytest.fixture()
def ctx() -> pathlib.Path:
    return SCENARIO / "ctx"


@pytest.fixture()
def engine(tmp_path):
    with kiln.Engine(tmp_path / "root") as e:
        yield e


@pytest.fixture()
def base() -> kiln.State:
    return kiln.local("rootfs")


def mounts_under(root) -> list:
    root = str(root)
    with open("/proc/self/mountinfo") as f:
        return [l for l in f if l.split(" ")[4].startswith(root)]


def read(p) -> str:
    return pathlib.Path(p).read_text()
