"""kiln: an embeddable, BuildKit-style container build engine.

Describe a build as a graph of states, then solve it with an :class:`Engine`::

    import kiln

    base = kiln.image("127.0.0.1:5000/base:1")
    app = (base.run(["sh", "-c", "make"], cwd="/src",
                    mounts=[kiln.mount("/src", kiln.local("ctx"))])
               .root()
               .mkdir("/out"))
    with kiln.Engine(root="/var/lib/kiln") as engine:
        engine.solve(app, locals={"ctx": "."}, outputs=["type=local,dest=out"])
"""

from __future__ import annotations

from . import _native
from . import errors as _errors
from ._native import (
    BuildContext,
    Definition,
    DirEntry,
    Engine,
    ExecState,
    Mount,
    ProgressEvent,
    PruneReport,
    Ref,
    Secret,
    SolveResult,
    State,
    UsageRecord,
    WorkerInfo,
    cache_mount,
    dockerfile,
    error_kinds,
    git,
    http,
    image,
    local,
    merge,
    mount,
    oci_layout,
    scratch,
    secret_file,
    secret_mount,
    secret_value,
    tmpfs_mount,
)
from .errors import (
    CacheError,
    CancelledError,
    ContentError,
    DefinitionError,
    ExecError,
    ExportError,
    FileOpError,
    InternalError,
    IoError,
    KilnError,
    NotFoundError,
    OptionError,
    RegistryError,
    RootInUseError,
    SnapshotError,
    SourceError,
    UnsupportedError,
    WorkerError,
)

__version__: str = _native.__version__


def connect(
    addr: str,
    *,
    ca_cert: "str | None" = None,
    cert: "str | None" = None,
    key: "str | None" = None,
    server_name: "str | None" = None,
) -> Engine:
    """An :class:`Engine` that builds on the daemon at ``addr`` (``unix:///path/to.sock`` or
    ``tcp://host:port``): ``kiln serve`` or a BuildKit daemon. Switch a script from in-process to a
    daemon by replacing ``kiln.Engine(root)`` with ``kiln.connect(addr)``; locals and secrets
    are read here, ``local``/``tar``/``oci`` outputs are written here. TLS (tcp only):
    ``ca_cert``, ``cert``, ``key`` (PEM files) and ``server_name``."""
    return Engine.connect(addr, ca_cert=ca_cert, cert=cert, key=key, server_name=server_name)


__all__ = [
    "BuildContext",
    "Definition",
    "DirEntry",
    "Engine",
    "ExecState",
    "Mount",
    "ProgressEvent",
    "PruneReport",
    "Ref",
    "Secret",
    "SolveResult",
    "State",
    "UsageRecord",
    "WorkerInfo",
    "cache_mount",
    "connect",
    "dockerfile",
    "error_kinds",
    "git",
    "http",
    "image",
    "local",
    "merge",
    "mount",
    "oci_layout",
    "scratch",
    "secret_file",
    "secret_mount",
    "secret_value",
    "tmpfs_mount",
    # every exception class, listed once in errors.py
    *_errors.__all__,
]
