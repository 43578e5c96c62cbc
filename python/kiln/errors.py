"""kiln's exception hierarchy.

Every error the engine raises is an instance of :class:`KilnError`; the native layer picks the
subclass from the core error's kind (``kiln._native.error_kinds()`` lists the mapping), so
``except kiln.ExecError`` and ``except kiln.KilnError`` both work without matching messages.
"""

from __future__ import annotations

from typing import Any, List, Optional

__all__ = [
    "KilnError",
    "DefinitionError",
    "OptionError",
    "ExecError",
    "SourceError",
    "FileOpError",
    "NotFoundError",
    "WorkerError",
    "SnapshotError",
    "ContentError",
    "CacheError",
    "RegistryError",
    "ExportError",
    "RootInUseError",
    "UnsupportedError",
    "CancelledError",
    "IoError",
    "InternalError",
]


class KilnError(Exception):
    """Base of every kiln error.

    ``kind`` is the core's stable error kind name (``"exec"``, ``"option"``, ...); the typed
    fields of subclasses are keyword arguments and default to None.
    """

    kind: Optional[str] = None

    def __init__(self, message: str = "", *, kind: Optional[str] = None, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        for name, value in fields.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        return self.message


class DefinitionError(KilnError):
    """The build definition is invalid; ``op`` names the offending op digest when known."""

    kind = "definition"
    op: Optional[str] = None


class OptionError(KilnError, ValueError):
    """An option (output, cache export/import, progress, ...) is malformed.

    ``key``, ``value`` and ``expected`` say which key, what was given and what is accepted.
    """

    kind = "option"
    key: Optional[str] = None
    value: Optional[str] = None
    expected: Optional[str] = None


class ExecError(KilnError):
    """A process in a ``run`` step exited non-zero.

    ``exit_code`` (128+signal when killed), ``vertex`` (the step's name), ``command`` and
    ``log_tail`` (the last lines of its output).
    """

    kind = "exec"
    exit_code: Optional[int] = None
    vertex: Optional[str] = None
    command: Optional[str] = None
    log_tail: List[str] = []


class SourceError(KilnError):
    """A source (local dir, image, http, git) could not be resolved or read."""

    kind = "source"


class FileOpError(KilnError):
    """A file operation (copy, mkdir, mkfile, rm, symlink) failed."""

    kind = "file_op"


class NotFoundError(FileOpError, FileNotFoundError):
    """A path read from a build result (``Ref.read_file``, ``read_dir``, ``stat_file``) does not
    exist; ``path`` is the path as asked. Also a ``FileNotFoundError``."""

    kind = "file_op"
    path: Optional[str] = None

    def __init__(self, message: str = "", **fields: Any) -> None:
        KilnError.__init__(self, message, **fields)
        self.filename = self.path

    def __str__(self) -> str:
        return self.message


class WorkerError(KilnError):
    """The worker or container runtime failed (runc missing, bundle setup, mounts)."""

    kind = "worker"


class SnapshotError(KilnError):
    """Snapshot storage failed (overlay mount, layer apply, unsafe layer content)."""

    kind = "snapshot"


class ContentError(KilnError):
    """The content store or an OCI layout is missing data or is corrupt."""

    kind = "content"


class CacheError(KilnError):
    """The build cache, its metadata or a cache import/export failed."""

    kind = "cache"


class RegistryError(KilnError):
    """A registry request failed."""

    kind = "registry"


class ExportError(KilnError):
    """A result exporter failed."""

    kind = "export"


class RootInUseError(KilnError):
    """The engine root is held by another engine; ``path`` and ``pid`` name it."""

    kind = "root_in_use"
    path: Optional[str] = None
    pid: Optional[int] = None


class UnsupportedError(KilnError):
    """A requested capability is not supported by kiln."""

    kind = "unsupported"


class CancelledError(KilnError):
    """The solve was cancelled."""

    kind = "cancelled"


class IoError(KilnError, OSError):
    """An I/O error; ``path`` is the file involved."""

    kind = "io"
    path: Optional[str] = None

    def __init__(self, message: str = "", **fields: Any) -> None:
        KilnError.__init__(self, message, **fields)

    def __str__(self) -> str:
        return self.message


class InternalError(KilnError):
    """A bug in kiln: an invariant did not hold. Please report it."""

    kind = "internal"
