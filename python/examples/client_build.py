"""A client-side build: solve a first graph, read a file out of its result, and decide from what
it says what to build next (one step per component it lists), then export the result.

    sudo python examples/client_build.py WORKDIR

Needs root, runc, overlayfs and busybox-static (tests/fixtures/make-rootfs makes the base).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import kiln

REPO = pathlib.Path(__file__).resolve().parents[2]


def checkout() -> kiln.State:
    base = kiln.local("rootfs")
    return base.run(["/bin/sh", "-c", "mkdir -p /src && printf 'api\\nworker\\n' > /src/components"]).root()


def build(ctx: kiln.BuildContext) -> kiln.State:
    src = ctx.solve(checkout())
    components = src.read_file("/src/components").decode().split()
    for entry in src.read_dir("/src", include_pattern="comp*"):
        print(f"{entry.path}: {entry.size} bytes")
    try:
        src.stat_file("/src/build.conf")
    except kiln.NotFoundError:
        ctx.warn("checkout", "no /src/build.conf: default settings")
    out = kiln.scratch()
    for name in components:
        step = kiln.local("rootfs").run(["/bin/sh", "-c", f"echo built {name} > /{name}.txt"]).root()
        out = out.copy(step, f"/{name}.txt", f"/{name}.txt")
    return out


def main(work: pathlib.Path) -> None:
    rootfs = work / "rootfs"
    if not rootfs.exists():
        subprocess.run([str(REPO / "tests" / "fixtures" / "make-rootfs"), str(rootfs)], check=True)

    with kiln.Engine(root=work / "root-build") as engine:
        result = engine.build(
            build,
            locals={"rootfs": rootfs},
            outputs=[f"type=local,dest={work / 'components'}"],
            progress="plain",
        )
    print(f"client-side build: {result.executed} executed, {result.cached} cached")
    print(sorted(p.name for p in (work / "components").iterdir()))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(pathlib.Path(sys.argv[1]).resolve())
