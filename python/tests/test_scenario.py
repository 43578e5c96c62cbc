"""The shared cross-language scenario (tests/fixtures/scenario/README.md)."""

from __future__ import annotations

import filecmp

import pytest

import kiln
from conftest import read

GREETING = "hello from the shared scenario\n"


def app() -> kiln.State:
    base = kiln.local("rootfs")
    return (
        base.run(
            ["/bin/sh", "-c", "cat /ctx/hello.txt > /greeting"],
            mounts=[kiln.mount("/ctx", kiln.local("ctx"), readonly=True)],
        )
        .root()
        .copy(kiln.local("ctx"), "/hello.txt", "/app/hello.txt", create_dest_path=True)
    )


def test_solve_export_then_import_in_a_fresh_root(tmp_path, rootfs, ctx):
    locals_ = {"rootfs": rootfs, "ctx": ctx}
    cache = tmp_path / "cache"
    with kiln.Engine(tmp_path / "root-a") as a:
        r = a.solve(
            app(),
            locals=locals_,
            outputs=[f"type=local,dest={tmp_path / 'out-a'}"],
            cache_exports=[f"type=local,dest={cache},mode=max"],
            progress="quiet",
        )
    assert r.executed >= 1
    assert read(tmp_path / "out-a" / "greeting") == GREETING
    assert read(tmp_path / "out-a" / "app" / "hello.txt") == GREETING
    assert (cache / "index.json").is_file()

    with kiln.Engine(tmp_path / "root-b") as b:
        r = b.solve(
            app(),
            locals=locals_,
            outputs=[f"type=local,dest={tmp_path / 'out-b'}"],
            cache_imports=[f"type=local,src={cache}"],
            progress="quiet",
        )
    assert r.executed == 0, r
    assert r.cached >= 1
    for f in ["greeting", "app/hello.txt"]:
        assert filecmp.cmp(tmp_path / "out-a" / f, tmp_path / "out-b" / f, shallow=False)


def test_failing_step_raises_exec_error(engine, rootfs):
    bad = kiln.local("rootfs").run(["/bin/sh", "-c", "echo bad-step-output; exit 7"])
    with pytest.raises(kiln.ExecError) as info:
        engine.solve(bad, locals={"rootfs": rootfs}, progress="quiet")
    e = info.value
    assert isinstance(e, kiln.KilnError)
    assert e.exit_code == 7
    assert e.kind == "exec"
    assert e.vertex
    assert any("bad-step-output" in line for line in e.log_tail), e.log_tail


def test_bad_cache_mode_raises_option_error(engine, rootfs, ctx, tmp_path):
    with pytest.raises(kiln.OptionError) as info:
        engine.solve(
            app(),
            locals={"rootfs": rootfs, "ctx": ctx},
            cache_exports=[f"type=local,dest={tmp_path / 'x'},mode=maxx"],
            progress="quiet",
        )
    msg = str(info.value)
    assert "mode" in msg and "maxx" in msg and "min" in msg and "max" in msg, msg
    assert info.value.key == "mode"
    assert info.value.value == "maxx"


def test_golden_definition_is_byte_identical_to_every_face():
    """Step 6: the same bytes as Rust, Node and C (tests/fixtures/scenario/definition.pb)."""
    import hashlib
    import pathlib

    fixtures = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "scenario"
    golden = (
        app()
        .run(
            ["/bin/sh", "-c", "true"],
            env={"Z": "1", "A": "2"},
            network="none",
            custom_name="golden",
            mounts=[kiln.cache_mount("/cache"), kiln.secret_mount("/run/secrets/tok")],
        )
        .root()
        .mkdir("/p/q", mode=0o750, make_parents=True)
    )
    data = golden.to_bytes()
    assert hashlib.sha256(data).hexdigest() == (fixtures / "definition.sha256").read_text().strip()
    assert data == (fixtures / "definition.pb").read_bytes()
