"""Type stubs of the native module ``kiln._native`` (checked against it by tests/test_stubs.py)."""

import os
from typing import Any, Awaitable, Callable, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, TypedDict, Union, final

from typing_extensions import Unpack

_Path = Union[str, "os.PathLike[str]"]
_Owner = Union[int, Tuple[int, int]]
_AnyState = Union["State", "ExecState"]
_Progress = Union[str, Callable[["ProgressEvent"], Any]]

__version__: str

@final
class State:
    def run(self, args: Union[str, Sequence[str]], **options: Unpack[_RunOptions]) -> "ExecState": ...
    def mkdir(self, path: str, **options: Unpack[_MkdirOptions]) -> "State": ...
    def mkfile(self, path: str, data: Union[bytes, str], **options: Unpack[_MkfileOptions]) -> "State": ...
    def rm(self, path: str, **options: Unpack[_RmOptions]) -> "State": ...
    def symlink(self, oldpath: str, newpath: str) -> "State": ...
    def copy(self, src: _AnyState, src_path: str, dest_path: str, **options: Unpack[_CopyOptions]) -> "State": ...
    def with_env(self, key: str, value: str) -> "State": ...
    def with_cwd(self, dir: str) -> "State": ...
    def with_user(self, user: str) -> "State": ...
    def with_hostname(self, hostname: str) -> "State": ...
    def with_entrypoint(self, args: Sequence[str]) -> "State": ...
    def with_cmd(self, args: Sequence[str]) -> "State": ...
    def with_label(self, key: str, value: str) -> "State": ...
    def with_exposed_port(self, port: str) -> "State": ...
    def with_volume(self, path: str) -> "State": ...
    def with_stop_signal(self, signal: str) -> "State": ...
    def with_shell(self, args: Sequence[str]) -> "State": ...
    def with_annotation(self, key: str, value: str) -> "State": ...
    def with_image_config(self, config: Mapping[str, Any]) -> "State": ...
    def with_custom_name(self, name: str) -> "State": ...
    def with_description(self, key: str, value: str) -> "State": ...
    def with_worker_selector(self, labels: Mapping[str, str]) -> "State": ...
    def ignore_cache(self) -> "State": ...
    @property
    def env(self) -> List[Tuple[str, str]]: ...
    @property
    def cwd(self) -> str: ...
    @property
    def user(self) -> Optional[str]: ...
    @property
    def is_scratch(self) -> bool: ...
    def image_config(self) -> Dict[str, Any]: ...
    def to_definition(self) -> "Definition": ...
    def to_bytes(self) -> bytes: ...

@final
class ExecState:
    def root(self) -> State: ...
    def mount_output(self, dest: str) -> Optional[State]: ...

@final
class Mount:
    @property
    def dest(self) -> str: ...

@final
class Secret:
    """A build secret: ``secret_file(path)`` or ``secret_value(data)``."""

@final
class Definition:
    @staticmethod
    def from_bytes(data: bytes) -> "Definition": ...
    def to_bytes(self) -> bytes: ...
    @property
    def digest(self) -> Optional[str]: ...
    def vertices(self) -> List[Tuple[str, str]]: ...
    def __len__(self) -> int: ...

@final
class ProgressEvent:
    @property
    def type(self) -> str: ...
    @property
    def vertex(self) -> Optional[str]: ...
    @property
    def name(self) -> Optional[str]: ...
    @property
    def duration(self) -> Optional[float]: ...
    @property
    def stream(self) -> Optional[str]: ...
    @property
    def data(self) -> Optional[bytes]: ...
    @property
    def error(self) -> Optional[str]: ...
    @property
    def id(self) -> Optional[str]: ...
    @property
    def current(self) -> Optional[int]: ...
    @property
    def total(self) -> Optional[int]: ...
    @property
    def message(self) -> Optional[str]: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class SolveResult:
    @property
    def exporter_response(self) -> Dict[str, str]: ...
    @property
    def cached(self) -> int: ...
    @property
    def executed(self) -> int: ...

@final
class UsageRecord:
    @property
    def id(self) -> str: ...
    @property
    def worker(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def last_used(self) -> int: ...
    @property
    def record_type(self) -> str: ...

@final
class PruneReport:
    @property
    def removed(self) -> int: ...
    @property
    def freed_bytes(self) -> int: ...

@final
class WorkerInfo:
    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Dict[str, str]: ...

@final
class Engine:
    def __init__(
        self,
        root: Optional[_Path] = None,
        *,
        parallelism: Optional[int] = None,
        runtime: str = "runc",
        snapshotters: Optional[Sequence[str]] = None,
    ) -> None: ...
    @staticmethod
    def connect(
        addr: str,
        *,
        ca_cert: Optional[_Path] = None,
        cert: Optional[_Path] = None,
        key: Optional[_Path] = None,
        server_name: Optional[str] = None,
    ) -> "Engine": ...
    @property
    def root(self) -> Optional[str]: ...
    @property
    def address(self) -> Optional[str]: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Engine": ...
    def __exit__(self, *args: Any) -> bool: ...
    def solve(
        self,
        target: Union[State, ExecState, Definition, None] = None,
        *,
        locals: Optional[Mapping[str, _Path]] = None,
        outputs: Optional[Sequence[str]] = None,
        cache_exports: Optional[Sequence[str]] = None,
        cache_imports: Optional[Sequence[str]] = None,
        secrets: Optional[Mapping[str, "Secret"]] = None,
        image_config: Optional[Mapping[str, Any]] = None,
        progress: _Progress = "auto",
        source_date_epoch: Optional[int] = None,
        platform: Optional[str] = None,
        ssh: Optional[Mapping[str, _Path]] = None,
        allow: Optional[Sequence[str]] = None,
        frontend: Optional[str] = None,
        frontend_opts: Optional[Mapping[str, str]] = None,
    ) -> SolveResult: ...
    async def solve_async(
        self,
        target: Union[State, ExecState, Definition, None] = None,
        *,
        locals: Optional[Mapping[str, _Path]] = None,
        outputs: Optional[Sequence[str]] = None,
        cache_exports: Optional[Sequence[str]] = None,
        cache_imports: Optional[Sequence[str]] = None,
        secrets: Optional[Mapping[str, "Secret"]] = None,
        image_config: Optional[Mapping[str, Any]] = None,
        progress: _Progress = "auto",
        source_date_epoch: Optional[int] = None,
        platform: Optional[str] = None,
        ssh: Optional[Mapping[str, _Path]] = None,
        allow: Optional[Sequence[str]] = None,
        frontend: Optional[str] = None,
        frontend_opts: Optional[Mapping[str, str]] = None,
    ) -> SolveResult: ...
    def build(
        self,
        function: Callable[["BuildContext"], Any],
        *,
        locals: Optional[Mapping[str, _Path]] = None,
        outputs: Optional[Sequence[str]] = None,
        cache_exports: Optional[Sequence[str]] = None,
        cache_imports: Optional[Sequence[str]] = None,
        secrets: Optional[Mapping[str, "Secret"]] = None,
        image_config: Optional[Mapping[str, Any]] = None,
        progress: _Progress = "auto",
        source_date_epoch: Optional[int] = None,
        platform: Optional[str] = None,
        ssh: Optional[Mapping[str, _Path]] = None,
        allow: Optional[Sequence[str]] = None,
        frontend_opts: Optional[Mapping[str, str]] = None,
    ) -> SolveResult:
        """Runs a client-side build (BuildKit's gateway frontend, embedded).

        ``function(ctx)`` solves graphs with ``ctx.solve(...)`` into :class:`Ref` objects, reads
        files from them, decides what to build next, and returns the build's result: a
        ``State``, ``ExecState`` or ``Definition`` (solved), a ``Ref``, or None (then the result
        set with ``ctx.set_result(...)`` is used, else the empty filesystem). The result goes to
        ``outputs`` and ``cache_exports`` as ``solve`` sends a solve's. The options are
        ``solve``'s and apply to every inner solve (``cache_imports`` included);
        ``frontend_opts`` are readable as ``ctx.frontend_opts`` (a ``cache-imports`` entry in
        BuildKit's JSON form adds cache imports). A returned ``State``'s image config is what
        image outputs write unless ``image_config`` is given.

        Threads: a plain ``function`` runs on the calling thread and the blocking methods of
        ``ctx`` and its refs release the GIL while they wait. A coroutine function runs on a new
        event loop on this thread (an error if one already runs here: use ``build_async``) and
        should await the ``*_async`` methods. A callable ``progress`` is called on a kiln thread,
        in order.

        Errors: an exception raised by ``function`` fails the build and is raised here, the same
        object, once the build has cleaned up (every ref released; a ref kept past the build
        raises ``UnsupportedError``). An exception raised by a ``progress`` callable cancels the
        build and is raised here. Ctrl-C cancels the build cleanly and raises
        ``KeyboardInterrupt``. Returning a result after ``ctx.set_result`` raises
        ``DefinitionError`` "result already set".
        """
    async def build_async(
        self,
        function: Callable[["BuildContext"], Any],
        *,
        locals: Optional[Mapping[str, _Path]] = None,
        outputs: Optional[Sequence[str]] = None,
        cache_exports: Optional[Sequence[str]] = None,
        cache_imports: Optional[Sequence[str]] = None,
        secrets: Optional[Mapping[str, "Secret"]] = None,
        image_config: Optional[Mapping[str, Any]] = None,
        progress: _Progress = "auto",
        source_date_epoch: Optional[int] = None,
        platform: Optional[str] = None,
        ssh: Optional[Mapping[str, _Path]] = None,
        allow: Optional[Sequence[str]] = None,
        frontend_opts: Optional[Mapping[str, str]] = None,
    ) -> SolveResult:
        """``build`` as an asyncio coroutine (the build starts when called).

        A coroutine ``function`` runs on the running loop and awaits the ``*_async`` methods; a
        plain one runs in a worker thread (``asyncio.to_thread``) and uses the blocking ones. A
        callable ``progress`` is called on the event loop. Cancelling the awaiting task cancels
        the build; its ``CancelledError`` propagates once the build has cleaned up.
        """
    def image(self, reference: str, **options: Unpack[_ImageOptions]) -> State: ...
    def oci_layout(self, path: _Path, **options: Unpack[_OciLayoutOptions]) -> State: ...
    def dockerfile(self, context: _Path, **options: Unpack[_DockerfileOptions]) -> State:
        """``kiln.dockerfile`` with base images resolved through this engine (registry images
        and OCI layouts: the state inherits their configs, as ``Engine.image``)."""
    def disk_usage(self) -> List[UsageRecord]: ...
    def prune(self, *, keep_bytes: int = 0, all: bool = False) -> PruneReport: ...
    def workers(self) -> List[WorkerInfo]: ...
    def running_containers(self) -> List[str]: ...

@final
class BuildContext:
    """What a build function gets from ``Engine.build``.

    The blocking methods release the GIL while they wait (Ctrl-C cancels the build); the
    ``*_async`` methods return awaitables for coroutine build functions. Usable from any thread
    until the build ends.
    """

    def solve(
        self,
        target: Union[State, ExecState, Definition],
        *,
        cache_imports: Optional[Sequence[str]] = None,
        evaluate: bool = False,
    ) -> "Ref":
        """Solves ``target`` with the build's options (plus ``cache_imports`` for this solve),
        sharing work with every other solve on the engine. Raises the solve's ``KilnError``
        (e.g. ``ExecError``). ``evaluate=True`` loads the result even when a cache knows it."""
    def solve_async(
        self,
        target: Union[State, ExecState, Definition],
        *,
        cache_imports: Optional[Sequence[str]] = None,
        evaluate: bool = False,
    ) -> Awaitable["Ref"]:
        """``solve`` as an awaitable."""
    def set_result(
        self, result: Union["Ref", State, ExecState, Definition], image_config: Optional[Mapping[str, Any]] = None
    ) -> None:
        """Sets the build's result (a State, ExecState or Definition is solved first, blocking).
        ``image_config`` is what image outputs write (default: a State's own config, else the
        build's). Once only: a second call, or the function then returning a result, raises
        ``DefinitionError`` "result already set"."""
    def warn(self, vertex: str, message: str) -> None:
        """Reports a ``warning`` progress event ``"vertex: message"``."""
    @property
    def frontend_opts(self) -> Dict[str, str]:
        """The build's ``frontend_opts``."""

@final
class Ref:
    """The result of ``BuildContext.solve``: read it, or return it as the build's result.

    Paths resolve inside the result only (``..`` and symlinks, absolute or relative, never leave
    it) and nothing is copied. A missing path raises :class:`NotFoundError`. After the build
    ended every method raises ``UnsupportedError``.
    """

    def read_file(self, path: str, offset: int = 0, length: Optional[int] = None) -> bytes:
        """The file's contents, or ``length`` bytes from ``offset`` (fewer at the end, none
        past it). Symlinks are followed inside the result; a directory raises ``FileOpError``."""
    def read_file_async(self, path: str, offset: int = 0, length: Optional[int] = None) -> Awaitable[bytes]:
        """``read_file`` as an awaitable."""
    def read_dir(self, path: str, include_pattern: Optional[str] = None) -> List["DirEntry"]:
        """The directory's entries sorted by name; with ``include_pattern`` (``*``, ``?``,
        ``[...]``, ``**``) only those whose name matches."""
    def read_dir_async(self, path: str, include_pattern: Optional[str] = None) -> Awaitable[List["DirEntry"]]:
        """``read_dir`` as an awaitable."""
    def stat_file(self, path: str) -> "DirEntry":
        """What is at ``path`` (symlinks followed inside the result)."""
    def stat_file_async(self, path: str) -> Awaitable["DirEntry"]:
        """``stat_file`` as an awaitable."""
    def evaluate(self) -> None:
        """Forces the result to exist locally (runs it, or fetches it from an imported cache)."""
    def evaluate_async(self) -> Awaitable[None]:
        """``evaluate`` as an awaitable."""
    @property
    def is_scratch(self) -> bool:
        """True for the empty filesystem."""

@final
class DirEntry:
    """One path of a :class:`Ref` (BuildKit's fsutil stat)."""

    @property
    def name(self) -> str:
        """The base name."""
    @property
    def path(self) -> str:
        """The listed directory joined with ``name`` (``read_dir``), or the path asked (``stat_file``)."""
    @property
    def mode(self) -> int:
        """Unix ``st_mode`` (type and permission bits: use ``stat.S_ISDIR``, ``stat.S_IMODE``)."""
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    @property
    def size(self) -> int:
        """Bytes (0 for a directory)."""
    @property
    def mtime(self) -> float:
        """Modification time, seconds since the epoch."""
    @property
    def mtime_ns(self) -> int:
        """Modification time, nanoseconds since the epoch."""
    @property
    def link_target(self) -> Optional[str]:
        """A symlink's target as stored (not resolved), else None."""
    def is_dir(self) -> bool: ...
    def is_file(self) -> bool: ...
    def is_symlink(self) -> bool: ...

def scratch() -> State: ...
def image(reference: str, **options: Unpack[_ImageOptions]) -> State: ...
def oci_layout(path: _Path, **options: Unpack[_OciLayoutOptions]) -> State: ...
def dockerfile(context: _Path, **options: Unpack[_DockerfileOptions]) -> State:
    """The Dockerfile of the directory ``context`` as its target stage's State.

    The state carries the target's image config (image outputs write it) and can be extended.
    Solve it with ``locals={"context": context}`` (``context_name=`` renames the local). Bases
    come from named contexts (``contexts={"base": "local:rootfs"}``) or scratch; registry and
    OCI-layout bases need ``Engine.dockerfile``, which resolves their configs."""
def local(name: str, **options: Unpack[_LocalOptions]) -> State: ...
def http(url: str, **options: Unpack[_HttpOptions]) -> State: ...
def git(url: str, ref: str = "", **options: Unpack[_GitOptions]) -> State: ...
def merge(states: Sequence[_AnyState]) -> State: ...
def mount(dest: str, state: _AnyState, **options: Unpack[_BindMountOptions]) -> Mount: ...
def cache_mount(dest: str, **options: Unpack[_CacheMountOptions]) -> Mount: ...
def tmpfs_mount(dest: str, **options: Unpack[_TmpfsMountOptions]) -> Mount: ...
def secret_mount(dest: str, **options: Unpack[_SecretMountOptions]) -> Mount: ...
def secret_file(path: _Path) -> Secret: ...
def secret_value(data: Union[bytes, str]) -> Secret: ...
def error_kinds() -> List[Tuple[str, str]]: ...
def _raise_error(kind: str, message: str) -> None: ...

class _SolveTask:
    """A solve started by ``Engine.solve_async`` (internal; ``kiln._aio.run`` drives it)."""

    def result(self) -> Awaitable[SolveResult]: ...
    def cancel(self) -> Awaitable[None]: ...

class _BuildTask:
    """A build started by ``Engine.build``/``build_async`` (internal; ``kiln._build`` drives it)."""

    def started_wait(self) -> Optional[BuildContext]: ...
    def started(self) -> Awaitable[Optional[BuildContext]]: ...
    def finish(self, value: Any) -> None: ...
    def fail(self) -> None: ...
    def wait(self) -> SolveResult: ...
    def result(self) -> Awaitable[SolveResult]: ...
    def cancel(self) -> Awaitable[None]: ...
    def progress_error(self) -> Optional[BaseException]: ...

# --- kiln-gen: option dicts (generated by kiln-gen; do not edit) ---

class _RunOptions(TypedDict, total=False):
    """Keyword options of ``State.run``: How a run runs (the process, its environment and mounts)."""

    cwd: str
    """Working directory of the run (relative paths join the state's cwd)."""
    env: Union[Mapping[str, str], Sequence[Tuple[str, str]]]
    """Extra environment of this run only, in the given order."""
    user: str
    """User to run as (`name`, `uid` or `uid:gid`)."""
    hostname: str
    """Hostname inside the container."""
    mounts: Sequence[Mount]
    """Extra mounts."""
    readonly_rootfs: bool
    """Make the root filesystem read-only (the run then has no rootfs output). Default ``False``."""
    network: Literal["sandbox", "host", "none"]
    """Network mode: sandbox, host or none. Default ``"sandbox"``."""
    custom_name: str
    """Display name of the step in progress output."""
    worker_selector: Mapping[str, str]
    """Run only on workers having all these labels."""
    ignore_cache: bool
    """Never use a cached result of this step. Default ``False``."""

class _MkdirOptions(TypedDict, total=False):
    """Keyword options of ``State.mkdir``: Options of a created directory."""

    mode: int
    """Permission bits. Default ``0o755``."""
    make_parents: bool
    """Create missing parents. Default ``False``."""
    owner: _Owner
    """Owner: one id for uid and gid, or both."""
    timestamp: int
    """Modification time in Unix nanoseconds."""

class _MkfileOptions(TypedDict, total=False):
    """Keyword options of ``State.mkfile``: Options of a created file."""

    mode: int
    """Permission bits. Default ``0o644``."""
    owner: _Owner
    """Owner: one id for uid and gid, or both."""
    timestamp: int
    """Modification time in Unix nanoseconds."""

class _RmOptions(TypedDict, total=False):
    """Keyword options of ``State.rm``: Options of a removal."""

    allow_not_found: bool
    """A missing path is not an error. Default ``False``."""
    allow_wildcard: bool
    """The path is a wildcard pattern. Default ``False``."""

class _CopyOptions(TypedDict, total=False):
    """Keyword options of ``State.copy``: Options of a copy between states."""

    follow_symlinks: bool
    """Follow a symlink at the source path. Default ``False``."""
    dir_copy_contents: bool
    """Copy a directory's contents rather than the directory. Default ``False``."""
    allow_wildcard: bool
    """The source path is a wildcard pattern. Default ``False``."""
    allow_empty_wildcard: bool
    """A wildcard matching nothing is not an error. Default ``False``."""
    include: Sequence[str]
    """Include patterns."""
    exclude: Sequence[str]
    """Exclude patterns."""
    create_dest_path: bool
    """Create missing parents of the destination. Default ``False``."""
    owner: _Owner
    """Owner of copied files: one id for uid and gid, or both."""
    mode: int
    """Mode of copied files."""
    timestamp: int
    """Modification time of copied files in Unix nanoseconds."""

class _OciLayoutOptions(TypedDict, total=False):
    """Keyword options of ``oci_layout``: Which image of an OCI layout: a tag or a digest, not both (default tag `latest`)."""

    tag: str
    """Tag (the `org.opencontainers.image.ref.name` annotation)."""
    digest: str
    """Manifest or index digest (`sha256:...`)."""
    platform: str
    """Platform `os/arch[/variant]` of the image (default: the host's)."""

class _ImageOptions(TypedDict, total=False):
    """Keyword options of ``image``: Which image a registry image source names and how an engine resolves it."""

    platform: str
    """Platform `os/arch[/variant]` of the image (default: the host's)."""
    resolve_digest: bool
    """When an engine resolves the image: pin the source to the resolved manifest digest. Default ``False``."""

class _DockerfileOptions(TypedDict, total=False):
    """Keyword options of ``dockerfile``: How a Dockerfile in a context directory becomes a State (BuildKit's dockerfile.v0 options)."""

    dockerfile: str
    """The Dockerfile, relative to the context directory or absolute (BuildKit's `filename`). Default ``"Dockerfile"``."""
    target: str
    """The stage to build (default: the last one)."""
    build_args: Mapping[str, str]
    """Build arguments (`build-arg:NAME`)."""
    labels: Mapping[str, str]
    """Labels added to the image config (`label:NAME`)."""
    contexts: Mapping[str, str]
    """Named contexts (`context:NAME`): `docker-image://REF`, `oci-layout://DIR[:TAG]`, `local:NAME`, `https://URL`."""
    platform: str
    """Target platform `os/arch[/variant]` (only the host's is built)."""
    no_cache: bool
    """No step uses the cache. Default ``False``."""
    context_name: str
    """Name of the local source the context is read from: give the directory under it in the solve's locals. Default ``"context"``."""

class _LocalOptions(TypedDict, total=False):
    """Keyword options of ``local``: Which files of a local directory a `local` source sends."""

    include: Sequence[str]
    """Include patterns."""
    exclude: Sequence[str]
    """Exclude patterns."""
    follow_paths: Sequence[str]
    """Paths whose symlinks are followed."""
    shared_key_hint: str
    """Shared key hint."""

class _HttpOptions(TypedDict, total=False):
    """Keyword options of ``http``: How an http source is verified and stored."""

    checksum: str
    """Expected digest of the download (`sha256:...`)."""
    filename: str
    """File name in the result (default: the URL's last segment)."""
    perm: int
    """File mode."""
    uid: int
    """Owner uid."""
    gid: int
    """Owner gid."""

class _GitOptions(TypedDict, total=False):
    """Keyword options of ``git``: What a git source keeps."""

    keep_git_dir: bool
    """Keep the `.git` directory. Default ``False``."""
    subdir: str
    """Only this subdirectory."""

class _BindMountOptions(TypedDict, total=False):
    """Keyword options of ``mount``: Options of a bind mount."""

    readonly: bool
    """Mount read-only (such a mount has no output). Default ``False``."""
    selector: str
    """Mount only this path of the state."""

class _CacheMountOptions(TypedDict, total=False):
    """Keyword options of ``cache_mount``: Options of a persistent cache mount."""

    id: str
    """Cache id (default: the destination path)."""
    sharing: Literal["shared", "private", "locked"]
    """How concurrent users share it: shared, private or locked. Default ``"shared"``."""

class _TmpfsMountOptions(TypedDict, total=False):
    """Keyword options of ``tmpfs_mount``: Options of a tmpfs mount."""

    size: int
    """Size limit in bytes (0: the runtime default). Default ``0``."""

class _SecretMountOptions(TypedDict, total=False):
    """Keyword options of ``secret_mount``: Options of a secret mount."""

    id: str
    """Secret id given at solve time (default: the file name of the destination)."""
    uid: int
    """Owner uid. Default ``0``."""
    gid: int
    """Owner gid. Default ``0``."""
    mode: int
    """Permission bits (at most 0o7777). Default ``0o400``."""
    optional: bool
    """A missing secret is not an error. Default ``False``."""

# --- kiln-gen: end ---
