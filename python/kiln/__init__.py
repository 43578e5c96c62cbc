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
