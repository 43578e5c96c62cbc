//! The builder's option surface, described once: every options object the bindings accept
//! (name, the builder call it belongs to, the core struct it fills) and each of its fields (name,
//! type, the core field it sets, default as shown to users, doc). Defaults themselves are the core
//! structs' `Default` impls; `default` here is only how the stubs and docs show them.

/// The type of one option, as every language sees it.
#[derive(Clone, Copy)]
pub enum Ty {
    /// A boolean.
    Bool,
    /// A u32 (modes, ids).
    U32,
    /// A u64 (sizes).
    U64,
    /// An i64 (Unix nanosecond timestamps).
    I64,
    /// A string.
    Str,
    /// A list of strings.
    Strings,
    /// Ordered `KEY=value` pairs (a dict / object; Python also takes a list of pairs).
    EnvPairs,
    /// Labels (sorted by core).
    Labels,
    /// A numeric owner: one id for both, or uid and gid.
    Owner,
    /// A list of mounts.
    Mounts,
    /// A network mode name (core's `Network: FromStr`).
    Network,
    /// A cache sharing name (core's `CacheSharing: FromStr`).
    Sharing,
    /// A digest `sha256:...` (core's `parse_digest`).
    Digest,
    /// A platform `os/arch[/variant]` or `local` (core's `Platform: FromStr`).
    Platform,
}

/// One option.
pub struct Field {
    /// snake_case name (Python, C); Node uses its camelCase form.
    pub name: &'static str,
    /// Its type.
    pub ty: Ty,
    /// How the converted value `v` is stored: `o.FIELD = v` or `o.FIELD = Some(v)`.
    pub set: Set,
    /// The default as users see it, a Python literal (`None`, `False`, `0o755`, `"sandbox"`).
    pub default: &'static str,
    /// One line of documentation.
    pub doc: &'static str,
}

/// How a field is stored into the core struct.
pub enum Set {
    /// `o.<name> = v`.
    Plain,
    /// `o.<name> = Some(v)`.
    Some,
    /// A value beside the core struct (returned as the tuple's second element), with the Rust
    /// expression of its default.
    Extra(&'static str),
}

/// One options object.
pub struct Opts {
    /// The options type name in TypeScript (`MkdirOptions`).
    pub ts: &'static str,
    /// The builder call, as Python names it (`State.mkdir`).
    pub call: &'static str,
    /// The core struct filled (`kiln::graph::MkdirOptions`).
    pub core: &'static str,
    /// Documentation of the options object.
    pub doc: &'static str,
    /// The fields.
    pub fields: &'static [Field],
}

const fn f(name: &'static str, ty: Ty, set: Set, default: &'static str, doc: &'static str) -> Field {
    Field { name, ty, set, default, doc }
}

use Set::{Plain, Some as Opt};
use Ty::*;

/// Every options object of the builder.
pub const OPTIONS: &[Opts] = &[
    Opts {
        ts: "RunOptions",
        call: "State.run",
        core: "kiln::graph::ExecOptions",
        doc: "How a run runs (the process, its environment and mounts).",
        fields: &[
            f("cwd", Str, Opt, "None", "Working directory of the run (relative paths join the state's cwd)."),
            f("env", EnvPairs, Plain, "None", "Extra environment of this run only, in the given order."),
            f("user", Str, Opt, "None", "User to run as (`name`, `uid` or `uid:gid`)."),
            f("hostname", Str, Opt, "None", "Hostname inside the container."),
            f("mounts", Mounts, Plain, "None", "Extra mounts."),
            f(
                "readonly_rootfs",
                Bool,
                Plain,
                "False",
                "Make the root filesystem read-only (the run then has no rootfs output).",
            ),
            f("network", Network, Plain, "\"sandbox\"", "Network mode: sandbox, host or none."),
            f("custom_name", Str, Opt, "None", "Display name of the step in progress output."),
            f("worker_selector", Labels, Plain, "None", "Run only on workers having all these labels."),
            f("ignore_cache", Bool, Plain, "False", "Never use a cached result of this step."),
        ],
    },
    Opts {
        ts: "MkdirOptions",
        call: "State.mkdir",
        core: "kiln::graph::MkdirOptions",
        doc: "Options of a created directory.",
        fields: &[
            f("mode", U32, Plain, "0o755", "Permission bits."),
            f("make_parents", Bool, Plain, "False", "Create missing parents."),
            f("owner", Owner, Opt, "None", "Owner: one id for uid and gid, or both."),
            f("timestamp", I64, Opt, "None", "Modification time in Unix nanoseconds."),
        ],
    },
    Opts {
        ts: "MkfileOptions",
        call: "State.mkfile",
        core: "kiln::graph::MkfileOptions",
        doc: "Options of a created file.",
        fields: &[
            f("mode", U32, Set::Extra("kiln::graph::MkfileOptions::DEFAULT_MODE"), "0o644", "Permission bits."),
            f("owner", Owner, Opt, "None", "Owner: one id for uid and gid, or both."),
            f("timestamp", I64, Opt, "None", "Modification time in Unix nanoseconds."),
        ],
    },
    Opts {
        ts: "RmOptions",
        call: "State.rm",
        core: "kiln::graph::RmOptions",
        doc: "Options of a removal.",
        fields: &[
            f("allow_not_found", Bool, Plain, "False", "A missing path is not an error."),
            f("allow_wildcard", Bool, Plain, "False", "The path is a wildcard pattern."),
        ],
    },
    Opts {
        ts: "CopyOptions",
        call: "State.copy",
        core: "kiln::graph::CopyOptions",
        doc: "Options of a copy between states.",
        fields: &[
            f("follow_symlinks", Bool, Plain, "False", "Follow a symlink at the source path."),
            f("dir_copy_contents", Bool, Plain, "False", "Copy a directory's contents rather than the directory."),
            f("allow_wildcard", Bool, Plain, "False", "The source path is a wildcard pattern."),
            f("allow_empty_wildcard", Bool, Plain, "False", "A wildcard matching nothing is not an error."),
            f("include", Strings, Plain, "None", "Include patterns."),
            f("exclude", Strings, Plain, "None", "Exclude patterns."),
            f("create_dest_path", Bool, Plain, "False", "Create missing parents of the destination."),
            f("owner", Owner, Opt, "None", "Owner of copied files: one id for uid and gid, or both."),
            f("mode", U32, Opt, "None", "Mode of copied files."),
            f("timestamp", I64, Opt, "None", "Modification time of copied files in Unix nanoseconds."),
        ],
    },
    Opts {
        ts: "OciLayoutOptions",
        call: "oci_layout",
        core: "kiln::graph::OciLayoutOptions",
        doc: "Which image of an OCI layout: a tag or a digest, not both (default tag `latest`).",
        fields: &[
            f("tag", Str, Opt, "None", "Tag (the `org.opencontainers.image.ref.name` annotation)."),
            f("digest", Str, Opt, "None", "Manifest or index digest (`sha256:...`)."),
            f("platform", Platform, Opt, "None", "Platform `os/arch[/variant]` of the image (default: the host's)."),
        ],
    },
    Opts {
        ts: "ImageOptions",
        call: "image",
        core: "kiln::graph::ImageOptions",
        doc: "Which image a registry image source names and how an engine resolves it.",
        fields: &[
            f("platform", Platform, Opt, "None", "Platform `os/arch[/variant]` of the image (default: the host's)."),
            f(
                "resolve_digest",
                Bool,
                Plain,
                "False",
                "When an engine resolves the image: pin the source to the resolved manifest digest.",
            ),
        ],
    },
    Opts {
        ts: "DockerfileOptions",
        call: "dockerfile",
        core: "kiln::graph::DockerfileOptions",
        doc: "How a Dockerfile in a context directory becomes a State (BuildKit's dockerfile.v0 options).",
        fields: &[
            f(
                "dockerfile",
                Str,
                Plain,
                "\"Dockerfile\"",
                "The Dockerfile, relative to the context directory or absolute (BuildKit's `filename`).",
            ),
            f("target", Str, Opt, "None", "The stage to build (default: the last one)."),
            f("build_args", Labels, Plain, "None", "Build arguments (`build-arg:NAME`)."),
            f("labels", Labels, Plain, "None", "Labels added to the image config (`label:NAME`)."),
            f(
                "contexts",
                Labels,
                Plain,
                "None",
                "Named contexts (`context:NAME`): `docker-image://REF`, `oci-layout://DIR[:TAG]`, `local:NAME`, `https://URL`.",
            ),
            f("platform", Platform, Opt, "None", "Target platform `os/arch[/variant]` (only the host's is built)."),
            f("no_cache", Bool, Plain, "False", "No step uses the cache."),
            f(
                "context_name",
                Str,
                Plain,
                "\"context\"",
                "Name of the local source the context is read from: give the directory under it in the solve's locals.",
            ),
        ],
    },
    Opts {
        ts: "LocalOptions",
        call: "local",
        core: "kiln::graph::LocalOptions",
        doc: "Which files of a local directory a `local` source sends.",
        fields: &[
            f("include", Strings, Plain, "None", "Include patterns."),
            f("exclude", Strings, Plain, "None", "Exclude patterns."),
            f("follow_paths", Strings, Plain, "None", "Paths whose symlinks are followed."),
            f("shared_key_hint", Str, Opt, "None", "Shared key hint."),
        ],
    },
    Opts {
        ts: "HttpOptions",
        call: "http",
        core: "kiln::graph::HttpOptions",
        doc: "How an http source is verified and stored.",
        fields: &[
            f("checksum", Digest, Opt, "None", "Expected digest of the download (`sha256:...`)."),
            f("filename", Str, Opt, "None", "File name in the result (default: the URL's last segment)."),
            f("perm", U32, Opt, "None", "File mode."),
            f("uid", U32, Opt, "None", "Owner uid."),
            f("gid", U32, Opt, "None", "Owner gid."),
        ],
    },
    Opts {
        ts: "GitOptions",
        call: "git",
        core: "kiln::graph::GitOptions",
        doc: "What a git source keeps.",
        fields: &[
            f("keep_git_dir", Bool, Plain, "False", "Keep the `.git` directory."),
            f("subdir", Str, Opt, "None", "Only this subdirectory."),
        ],
    },
    Opts {
        ts: "BindMountOptions",
        call: "mount",
        core: "kiln::graph::BindMountOptions",
        doc: "Options of a bind mount.",
        fields: &[
            f("readonly", Bool, Plain, "False", "Mount read-only (such a mount has no output)."),
            f("selector", Str, Opt, "None", "Mount only this path of the state."),
        ],
    },
    Opts {
        ts: "CacheMountOptions",
        call: "cache_mount",
        core: "kiln::graph::CacheMountOptions",
        doc: "Options of a persistent cache mount.",
        fields: &[
            f("id", Str, Opt, "None", "Cache id (default: the destination path)."),
            f("sharing", Sharing, Plain, "\"shared\"", "How concurrent users share it: shared, private or locked."),
        ],
    },
    Opts {
        ts: "TmpfsMountOptions",
        call: "tmpfs_mount",
        core: "kiln::graph::TmpfsMountOptions",
        doc: "Options of a tmpfs mount.",
        fields: &[f("size", U64, Plain, "0", "Size limit in bytes (0: the runtime default).")],
    },
    Opts {
        ts: "SecretMountOptions",
        call: "secret_mount",
        core: "kiln::graph::SecretMountOptions",
        doc: "Options of a secret mount.",
        fields: &[
            f("id", Str, Opt, "None", "Secret id given at solve time (default: the file name of the destination)."),
            f("uid", U32, Plain, "0", "Owner uid."),
            f("gid", U32, Plain, "0", "Owner gid."),
            f("mode", U32, Plain, "0o400", "Permission bits (at most 0o7777)."),
            f("optional", Bool, Plain, "False", "A missing secret is not an error."),
        ],
    },
];
