"""The Dockerfile frontend from Python: kiln.dockerfile(...) as an extensible State and
engine.solve(frontend="dockerfile.v0", ...), built offline on the busybox rootfs as the named
context `base`; option and Dockerfile errors."""

from __future__ import annotations

import json

import pytest

import kiln

from conftest import read

DOCKERFILE = """\
ARG MSG=default
FROM base AS build
ARG MSG
ENV STAGE=build
WORKDIR /w
COPY . .
RUN echo "$MSG $STAGE" > msg && ls > list
FROM scratch
COPY --from=build /w /out
ENV K=v
WORKDIR /out
ENTRYPOINT ["/bin/sh"]
"""


@pytest.fixture()
def project(tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "a.txt").write_text("a\n")
    (ctx / "skip.log").write_text("x\n")
    (ctx / "sub" / "b.txt").write_text("b\n")
    (ctx / ".dockerignore").write_text("*.log\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def image_config_of(layout):
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    return json.loads((layout / "blobs/sha256" / manifest["config"]["digest"].split(":")[1]).read_text())


def test_dockerfile_state_is_extended_and_solved(engine, rootfs, project, tmp_path):
    st = kiln.dockerfile(project, build_args={"MSG": "hello"}, contexts={"base": "local:rootfs"},
                         labels={"org.example": "1"})
    cfg = st.image_config()
    assert cfg["env"][-1] == "K=v" and cfg["working_dir"] == "/out" and cfg["entrypoint"] == ["/bin/sh"]
    assert cfg["labels"] == {"org.example": "1"}
    extended = st.mkfile("/extra", b"more\n").with_env("EXTRA", "1")
    locals_ = {"context": project, "rootfs": rootfs}
    out = tmp_path / "out"
    engine.solve(extended, locals=locals_, outputs=[f"type=local,dest={out}"], progress="quiet")
    assert read(out / "out" / "msg") == "hello build\n"
    # .dockerignore kept skip.log out of the context.
    assert read(out / "out" / "list") == "Dockerfile\na.txt\nlist\nmsg\nsub\n"
    assert read(out / "out" / "sub" / "b.txt") == "b\n" and read(out / "extra") == "more\n"
    # The image config travels into image exports, extended by what the script set.
    layout = tmp_path / "img"
    engine.solve(extended, locals=locals_, outputs=[f"type=oci,dest={layout},tar=false"], progress="quiet")
    config = image_config_of(layout)["config"]
    assert config["Env"][-2:] == ["K=v", "EXTRA=1"] and config["Entrypoint"] == ["/bin/sh"]
    assert config["WorkingDir"] == "/out" and config["Labels"] == {"org.example": "1"}

    # The first stage only, through the engine (same resolution as kiln.dockerfile here).
    build = engine.dockerfile(project, target="build", contexts={"base": "local:rootfs"})
    assert build.cwd == "/w" and build.image_config()["env"][-1] == "STAGE=build"
    r = engine.solve(build.run(["/bin/sh", "-c", "cat msg > /w/copy"]).root(), locals=locals_,
                     outputs=[f"type=local,dest={tmp_path / 'stage'}"], progress="quiet")
    assert r.executed >= 1
    assert read(tmp_path / "stage" / "w" / "copy") == "default build\n"


def test_solve_with_the_dockerfile_frontend(engine, rootfs, project, tmp_path):
    out = tmp_path / "out"
    locals_ = {"context": project, "dockerfile": project, "rootfs": rootfs}
    opts = {"build-arg:MSG": "from-frontend", "context:base": "local:rootfs"}
    r = engine.solve(frontend="dockerfile.v0", frontend_opts=opts, locals=locals_,
                     outputs=[f"type=local,dest={out}"], progress="quiet")
    assert r.executed >= 1
    assert read(out / "out" / "msg") == "from-frontend build\n"
    layout = tmp_path / "img"
    r = engine.solve(frontend="dockerfile.v0", frontend_opts=opts, locals=locals_,
                     outputs=[f"type=oci,dest={layout},tar=false"], progress="quiet")
    assert r.executed == 0
    config = image_config_of(layout)["config"]
    assert config["Entrypoint"] == ["/bin/sh"] and config["Env"][-1] == "K=v"


def test_dockerfile_errors(engine, rootfs, project, tmp_path):
    locals_ = {"context": project, "dockerfile": project, "rootfs": rootfs}
    with pytest.raises(kiln.UnsupportedError, match='frontend "nope.v1" is not supported'):
        engine.solve(frontend="nope.v1", locals=locals_, progress="quiet")
    with pytest.raises(TypeError, match="not both"):
        engine.solve(kiln.scratch(), frontend="dockerfile.v0", progress="quiet")
    with pytest.raises(TypeError, match="frontend_opts= needs frontend="):
        engine.solve(kiln.scratch(), frontend_opts={"target": "x"}, progress="quiet")
    (project / "Dockerfile").write_text("FROM base\nRUNN true\n")
    with pytest.raises(kiln.DefinitionError, match="Dockerfile:2: unknown instruction: RUNN"):
        engine.solve(frontend="dockerfile.v0", frontend_opts={"context:base": "local:rootfs"}, locals=locals_,
                     progress="quiet")
    with pytest.raises(kiln.DefinitionError, match="Dockerfile:2: unknown instruction: RUNN"):
        kiln.dockerfile(project, contexts={"base": "local:rootfs"})
    with pytest.raises(kiln.OptionError, match="build_arg"):
        kiln.dockerfile(project, build_arg={"A": "1"})
    with pytest.raises(kiln.DefinitionError, match="failed to read dockerfile"):
        kiln.dockerfile(project, dockerfile="missing/Dockerfile")
    (project / "Dockerfile").write_text("FROM busybox\n")
    with pytest.raises(kiln.UnsupportedError, match="resolved through an engine"):
        kiln.dockerfile(project)


SSH_AND_HOST = """\
FROM base
RUN --mount=type=ssh (test -S "$SSH_AUTH_SOCK" && echo socket) > /ssh
RUN --network=host echo host > /net
"""


def test_ssh_agents_and_entitlements(engine, rootfs, tmp_path):
    """`ssh=` forwards agent sockets to `RUN --mount=type=ssh`; `allow=` grants entitlements
    (a `--network=host` RUN is refused without `network.host`)."""
    import subprocess
    import time

    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not listen within 30 s"
            time.sleep(0.02)
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(SSH_AND_HOST)
        locals_ = {"context": ctx, "dockerfile": ctx, "rootfs": rootfs}
        opts = {"context:base": "local:rootfs"}
        with pytest.raises(kiln.KilnError) as info:
            engine.solve(frontend="dockerfile.v0", frontend_opts=opts, locals=locals_, ssh={"default": sock},
                         progress="quiet")
        assert "network.host" in str(info.value)
        with pytest.raises(kiln.KilnError, match="unknown entitlement"):
            engine.solve(frontend="dockerfile.v0", frontend_opts=opts, locals=locals_, allow=["nope"],
                         progress="quiet")
        out = tmp_path / "out"
        engine.solve(frontend="dockerfile.v0", frontend_opts=opts, locals=locals_, ssh={"default": sock},
                     allow=["network.host"], outputs=[f"type=local,dest={out}"], progress="quiet")
        assert read(out / "ssh") == "socket\n"
        assert read(out / "net") == "host\n"
    finally:
        agent.kill()
        agent.wait(timeout=30)
