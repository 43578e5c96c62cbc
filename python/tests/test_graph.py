"""The graph builder and the engine's other features, against real builds."""

from __future__ import annotations

import os

import pytest

import kiln
from conftest import read


def test_definition_round_trip():
    st = kiln.scratch().mkdir("/a", make_parents=True).mkfile("/a/f", b"x").symlink("f", "/a/l")
    b = st.to_bytes()
    d = kiln.Definition.from_bytes(b)
    assert d.to_bytes() == b
    assert len(d) == len(st.to_definition())
    assert d.digest and d.digest.startswith("sha256:")
    assert kiln.scratch().to_definition().digest is None


def test_state_metadata():
    st = kiln.scratch().with_env("A", "1").with_cwd("/w").with_user("nobody").with_cmd(["sh"]).with_label("k", "v")
    assert st.env == [("A", "1")]
    assert st.cwd == "/w"
    assert st.user == "nobody"
    cfg = st.image_config()
    assert cfg["env"] == ["A=1"] and cfg["working_dir"] == "/w" and cfg["cmd"] == ["sh"]
    assert cfg["labels"] == {"k": "v"}
    assert kiln.scratch().is_scratch


def test_sources_build_definitions(tmp_path):
    for st in [
        kiln.image("busybox"),
        kiln.oci_layout(tmp_path, tag="1"),
        kiln.http("http://127.0.0.1:1/x", checksum="sha256:" + "0" * 64, filename="x"),
        kiln.git("https://example.invalid/r.git", "main", keep_git_dir=True),
        kiln.local("ctx", include=["*.txt"], exclude=["b"]),
    ]:
        assert len(st.to_definition()) == 1
    with pytest.raises(kiln.KilnError):
        kiln.http("http://127.0.0.1:1/x", checksum="md5:nope")


def test_file_ops_merge_and_mounts(engine, rootfs, tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "dist").mkdir(parents=True)
    (ctx / "dist" / "a.txt").write_text("A")
    (ctx / "dist" / "b.log").write_text("B")
    base = kiln.local("rootfs")
    files = (
        kiln.scratch()
        .mkdir("/out/sub", make_parents=True, mode=0o700)
        .mkfile("/out/f", "text", mode=0o600)
        .symlink("f", "/out/link")
        .copy(kiln.local("ctx"), "/dist/", "/out/dist/", include=["*.txt"], create_dest_path=True,
              dir_copy_contents=True)
        .mkfile("/out/gone", b"")
        .rm("/out/gone")
    )
    other = kiln.scratch().mkfile("/other", "o")
    built = base.run(
        ["/bin/sh", "-c", "cat /run/secrets/tok > /seen; ls /c > /dev/null; test -d /t; echo $CC > /cc; "
         "pwd > /pwd; touch /cache/x; test ! -e /proc/net/dev || true"],
        cwd="/tmp",
        env={"CC": "gcc"},
        mounts=[
            kiln.secret_mount("/run/secrets/tok", id="tok"),
            kiln.cache_mount("/cache", id="build"),
            kiln.tmpfs_mount("/t"),
            kiln.mount("/c", kiln.local("ctx"), readonly=True),
        ],
        network="none",
    ).root()
    out = kiln.merge([files, other, built.copy(built, "/seen", "/seen2")])
    r = engine.solve(
        out, locals={"rootfs": rootfs, "ctx": ctx}, secrets={"tok": kiln.secret_value(b"s3cret")},
        outputs=[f"type=local,dest={tmp_path / 'o'}"], progress="quiet",
    )
    o = tmp_path / "o"
    assert read(o / "out" / "f") == "text"
    assert os.readlink(o / "out" / "link") == "f"
    assert read(o / "out" / "dist" / "a.txt") == "A"
    assert not (o / "out" / "dist" / "b.log").exists()
    assert not (o / "out" / "gone").exists()
    assert read(o / "other") == "o"
    assert read(o / "seen2") == "s3cret"
    assert read(o / "cc") == "gcc\n"
    assert read(o / "pwd") == "/tmp\n"
    assert not (o / "run" / "secrets" / "tok").exists() or read(o / "run" / "secrets" / "tok") == ""
    assert r.executed >= 1


def test_secret_from_file_and_readonly_rootfs(engine, rootfs, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("from-file")
    st = kiln.local("rootfs").run(
        ["/bin/sh", "-c", "cat /s > /o/v; if touch /x 2>/dev/null; then echo rw; else echo ro; fi >> /o/v"],
        mounts=[kiln.secret_mount("/s", id="s"), kiln.mount("/o", kiln.scratch())],
        readonly_rootfs=True,
    )
    r = engine.solve(
        st.mount_output("/o"), locals={"rootfs": rootfs}, secrets={"s": kiln.secret_file(secret)},
        outputs=[f"type=local,dest={tmp_path / 'out'}"], progress="quiet",
    )
    assert read(tmp_path / "out" / "v") == "from-filero\n"
    assert r.executed >= 1


def test_engine_maintenance(engine, rootfs):
    assert engine.workers() and engine.workers()[0].labels["executor"] == "runc"
    engine.solve(kiln.local("rootfs").run(["/bin/sh", "-c", "echo x > /x"]), locals={"rootfs": rootfs},
                 progress="quiet")
    du = engine.disk_usage()
    assert du and all(isinstance(u.size, int) for u in du)
    rep = engine.prune(all=True)
    assert rep.removed >= 1
    assert engine.disk_usage() == []
    engine.close()
    assert engine.closed
    with pytest.raises(kiln.UnsupportedError, match="engine is closed"):
        engine.workers()


def test_solve_a_definition_and_custom_name(engine, rootfs):
    events = []
    st = kiln.local("rootfs").run(["/bin/true"]).root().with_custom_name("my step")
    d = kiln.Definition.from_bytes(st.to_bytes())
    engine.solve(d, locals={"rootfs": rootfs}, progress=events.append)
    assert any(e.name == "my step" for e in events if e.type == "vertex_started")


def test_secrets_have_one_explicit_meaning(engine, rootfs, tmp_path):
    st = kiln.local("rootfs").run(["/bin/true"], mounts=[kiln.secret_mount("/run/secrets/tok")])
    for plain in ("hunter2", b"hunter2", tmp_path / "tok"):
        with pytest.raises(kiln.OptionError) as info:
            engine.solve(st, locals={"rootfs": rootfs}, secrets={"tok": plain}, progress="quiet")
        msg = str(info.value)
        assert "secret_file" in msg and "secret_value" in msg and "hunter2" not in msg, msg
        assert info.value.key == "secrets"
    # A value given where a path was meant: the error names the id and the kind, never the value.
    with pytest.raises(kiln.KilnError) as info:
        engine.solve(st, locals={"rootfs": rootfs}, secrets={"tok": kiln.secret_file("hunter2")}, progress="quiet")
    assert "hunter2" not in str(info.value) and "tok" in str(info.value), str(info.value)
    assert "hunter2" not in repr(kiln.secret_value("hunter2"))
    assert "hunter2" not in repr(kiln.secret_file("hunter2"))


def test_mount_ids_default_in_core():
    assert kiln.cache_mount("/root/.cache").dest == "/root/.cache"
    assert kiln.secret_mount("/run/secrets/tok").dest == "/run/secrets/tok"
    a = kiln.scratch().run(["/bin/true"], mounts=[kiln.secret_mount("/run/secrets/tok")]).root()
    b = kiln.scratch().run(["/bin/true"], mounts=[kiln.secret_mount("/run/secrets/tok", id="tok")]).root()
    assert a.to_bytes() == b.to_bytes()
    with pytest.raises(kiln.OptionError) as info:
        kiln.secret_mount("/s", mode=0o17777)
    assert info.value.key == "mode"
