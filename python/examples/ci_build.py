"""A CI build as users write one: a build stage (a cache mount for the toolchain's cache, a secret
the step reads but never stores), a slim runtime stage that copies only the artifact and carries
an image config, pushed to a registry; the build cache goes to a directory, and a second build in a
fresh engine root (another CI machine) imports it and runs nothing.

    sudo python examples/ci_build.py REGISTRY WORKDIR      # REGISTRY like 127.0.0.1:5000

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
    build = base.run(
        [
            "/bin/sh",
            "-c",
            "mkdir -p /out && printf '#!/bin/sh\\necho hello from app\\n' > /out/app && chmod 755 /out/app"
            " && wc -c < /run/secrets/token > /out/token-bytes && date >> /cache/builds",
        ],
        mounts=[
            kiln.cache_mount("/cache", id="ci-build"),
            kiln.secret_mount("/run/secrets/token", id="token"),
        ],
        custom_name="build the app",
    ).root()
    return (
        base.copy(build, "/out/app", "/usr/local/bin/app", create_dest_path=True)
        .with_env("MODE", "production")
        .with_exposed_port("8080")
        .with_cmd(["/usr/local/bin/app"])
    )


def main(registry: str, work: pathlib.Path) -> None:
    rootfs = work / "rootfs"
    if not rootfs.exists():
        subprocess.run([str(REPO / "tests" / "fixtures" / "make-rootfs"), str(rootfs)], check=True)
    image = f"{registry}/examples/app:1"
    cache = work / "cache"
    secrets = {"token": kiln.secret_value(b"not-a-real-token")}
    # SOURCE_DATE_EPOCH: both machines push the very same image digest.
    epoch = 1_700_000_000

    with kiln.Engine(root=work / "ci-machine-a") as engine:
        first = engine.solve(
            graph(),
            locals={"rootfs": rootfs},
            secrets=secrets,
            outputs=[f"type=image,name={image},push=true"],
            cache_exports=[f"type=local,dest={cache},mode=max"],
            source_date_epoch=epoch,
            progress="plain",
        )
    print(f"pushed {image}@{first.exporter_response['containerimage.digest']}: {first.executed} executed")

    with kiln.Engine(root=work / "ci-machine-b") as engine:
        second = engine.solve(
            graph(),
            locals={"rootfs": rootfs},
            secrets=secrets,
            outputs=[f"type=image,name={image},push=true"],
            cache_imports=[f"type=local,src={cache}"],
            source_date_epoch=epoch,
            progress="plain",
        )
    print(f"second machine: {second.executed} executed, {second.cached} cached")
    if second.exporter_response["containerimage.digest"] != first.exporter_response["containerimage.digest"]:
        sys.exit("the second machine pushed another image")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], pathlib.Path(sys.argv[2]))
