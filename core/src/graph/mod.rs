//! The build graph: LLB ops (`pb`), validated `Definition`s and the fluent `State` builder.
pub mod builder;
pub mod definition;
pub mod dockerfile_options;
pub mod image_config;
pub mod json;
pub mod named;
pub mod op;
pub mod pb;
pub mod platform;
pub mod resolve;
pub mod source;
pub mod state;

pub use definition::{
    parse_worker_filter, Definition, DefinitionLimits, OpKind, Vertex, CUSTOM_NAME_KEY, SUPPORTED_CAPS,
};
pub use dockerfile_options::DockerfileOptions;
pub use image_config::{Healthcheck, HistoryEntry, ImageConfig};
pub use platform::Platform;
pub use resolve::{ImageMetaResolver, ImageOptions, ImageRef, ResolvedImageConfig};
pub use source::{OciRef, SourceSpec};
pub use state::{
    normalize_image_ref, parse_digest, BindMountOptions, CacheMountOptions, OciLayoutOptions, SecretMountOptions,
    TmpfsMountOptions,
};
pub use state::{
    CacheSharing, CopyOptions, ExecOptions, ExecState, GitOptions, HttpOptions, LocalOptions, MkdirOptions,
    MkfileOptions, MountSpec, Network, Owner, RmOptions, SecretEnv, Security, SshSocket, State,
};
