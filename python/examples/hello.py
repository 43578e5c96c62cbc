"""Builds a small graph with kiln, exports its cache, then rebuilds in a fresh engine root from
that cache: the second build runs nothing.

    sudo python examples/hello.py WORKDIR

Needs root, runc, overlayfs and busybox-static (tests/fixtures/make-rootfs makes the base).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import kiln

REPO = pathlib.Path(__file__).resolve().parents[2]


def graph() -> kiln.State:
    base = kiln.local("rootfs")
    return (
        base.run(
            ["/bin/sh", "-c", "mkdir -p /out && cat /ctx/hello.txt > /out/greeting"],
            env={"GREETING": "hello"},
            mounts=[
                kiln.mount("/ctx", kiln.local("ctx"), readonly=True),
                kiln.cache_mount("/root/.cache", id="hello"),
            ],
        )
        .root()
        .copy(kiln.local("ctx"), "/hello.txt", "/app/hello.txt", create_dest_path=True)
        .with_cmd(["cat", "/app/hello.txt"])
    )


def main(work: pathlib.Path) -> None:
    rootfs = work / "rootfs"
    if not rootfs.exists():
        subprocess.run([str(REPO / "tests" / "fixtures" / "make-rootfs"), str(rootfs)], check=True)
    locals_ = {"rootfs": rootfs, "ctx": REPO / "tests" / "fixtures" / "scenario" / "ctx"}
    cache = work / "cache"

    with kiln.Engine(root=work / "root-a") as engine:
        first = engine.solve(
            graph(),
            locals=locals_,
            outputs=[f"type=local,dest={work / 'out'}"],
            cache_exports=[f"type=local,dest={cache},mode=max"],
            progress="auto",
        )
    print(f"first build: {first.executed} executed, {first.cached} cached")

    with kiln.Engine(root=work / "root-b") as engine:
        second = engine.solve(
            graph(),
            locals=locals_,
            outputs=[f"type=local,dest={work / 'out-again'}"],
            cache_imports=[f"type=local,src={cache}"],
            progress="plain",
        )
    print(f"second build from the imported cache: {second.executed} executed, {second.cached} cached")
    print((work / "out-again" / "out" / "greeting").read_text(), end="")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(pathlib.Path(sys.argv[1]).resolve())
