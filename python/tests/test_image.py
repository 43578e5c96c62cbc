"""Base-image config inheritance (Engine.oci_layout), image config setters, SOURCE_DATE_EPOCH
reproducibility across two roots, platforms, and cache mounts in disk usage and prune."""

from __future__ import annotations

import json
import platform as host

import pytest

import kiln

from conftest import read

EPOCH = 1_700_000_000


def make_base(engine, rootfs, layout):
    base = (
        kiln.local("rootfs")
        .with_env("GREETING", "hello")
        .with_cwd("/srv/app")
        .with_user("1000")
        .with_exposed_port("8080")
        .with_volume("/data")
        .with_stop_signal("SIGINT")
        .with_label("org.example.base", "1")
        .with_cmd(["serve"])
    )
    engine.solve(base, locals={"rootfs": rootfs}, outputs=[f"type=oci,dest={layout},tar=false,name=base"],
                 progress="quiet")


def test_base_image_config_is_inherited_by_runs_and_exports(engine, rootfs, tmp_path):
    layout = tmp_path / "layout"
    make_base(engine, rootfs, layout)
    pure = kiln.oci_layout(layout, tag="base")
    assert pure.image_config()["env"] == []  # nothing resolved without an engine
    st = engine.oci_layout(layout, tag="base")
    cfg = st.image_config()
    assert cfg["env"][-1] == "GREETING=hello" and cfg["working_dir"] == "/srv/app" and cfg["user"] == "1000"
    assert "8080/tcp" in cfg["exposed_ports"] and "/data" in cfg["volumes"] and cfg["stop_signal"] == "SIGINT"
    assert st.cwd == "/srv/app" and st.user == "1000"
    out = tmp_path / "out"
    run = (
        st.with_env("EXTRA", "x")
        .run(["/bin/sh", "-c", "mkdir -p /tmp/o && { echo \"$GREETING $EXTRA\"; pwd; id -u; } > /tmp/o/report"])
        .root()
        .with_annotation("org.opencontainers.image.title", "demo")
    )
    img = tmp_path / "img"
    engine.solve(run, outputs=[f"type=oci,dest={img},tar=false,name=app"], progress="quiet")
    engine.solve(run, outputs=[f"type=local,dest={out}"], progress="quiet")
    assert read(out / "tmp" / "o" / "report") == "hello x\n/srv/app\n1000\n"
    index = json.loads((img / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((img / "blobs" / "sha256" / manifest_digest).read_text())
    assert manifest["annotations"]["org.opencontainers.image.title"] == "demo"
    config = json.loads((img / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    assert config["config"]["Env"][-2:] == ["GREETING=hello", "EXTRA=x"]
    assert config["config"]["WorkingDir"] == "/srv/app" and config["config"]["User"] == "1000"
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}} and config["config"]["Cmd"] == ["serve"]


def test_source_date_epoch_gives_one_digest_from_two_roots(rootfs, tmp_path):
    # The RUN writes the same bytes on both roots at different times: with the epoch, file times
    # and the config's `created` are clamped, so the two image digests are equal.
    digests = []
    for name in ("a", "b"):
        with kiln.Engine(root=tmp_path / f"root-{name}") as e:
            st = kiln.local("rootfs").run(["/bin/sh", "-c", "echo fixed > /built"]).root()
            r = e.solve(st, locals={"rootfs": rootfs}, outputs=[f"type=oci,dest={tmp_path / name}.tar"],
                        source_date_epoch=EPOCH, progress="quiet")
            digests.append(r.exporter_response["containerimage.digest"])
    assert digests[0].startswith("sha256:") and digests[0] == digests[1]


def test_platform_is_checked_and_recorded(engine, rootfs):
    with pytest.raises(kiln.OptionError, match="platform"):
        engine.solve(kiln.scratch(), platform="not a platform", progress="quiet")
    foreign = "linux/s390x" if host.machine() != "s390x" else "linux/amd64"
    with pytest.raises(kiln.KilnError, match="s390x|amd64"):
        engine.solve(kiln.local("rootfs").run(["/bin/true"]).root(), locals={"rootfs": rootfs}, platform=foreign,
                     progress="quiet")
    with pytest.raises(kiln.KilnError):
        engine.solve(kiln.image("busybox", platform=foreign).run(["/bin/true"]).root(), progress="quiet")


def test_cache_mounts_are_listed_and_pruned(engine, rootfs):
    st = kiln.local("rootfs").run(
        ["/bin/sh", "-c", "head -c 4096 /dev/zero > /cache/blob"], mounts=[kiln.cache_mount("/cache", id="pycache")]
    ).root()
    engine.solve(st, locals={"rootfs": rootfs}, progress="quiet")
    mounts = [u for u in engine.disk_usage() if u.record_type == "exec.cachemount"]
    assert len(mounts) == 1 and mounts[0].size >= 4096, engine.disk_usage()
    engine.prune(all=True)
    assert [u for u in engine.disk_usage() if u.record_type == "exec.cachemount"] == []
