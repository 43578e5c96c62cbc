//! BuildKit's API types and tonic services, generated from `core/proto/buildkit/` (field-compatible
//! with BuildKit v0.11.6), shared by the client (`kiln::client`) and the server. The LLB types are
//! `crate::graph::pb`'s.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// BuildKit's packages under `moby.buildkit`.
pub mod moby {
    /// `moby.buildkit`.
    pub mod buildkit {
        /// `moby.buildkit.v1`: the control API.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/moby.buildkit.v1.rs"));
            /// `moby.buildkit.v1.types`: worker records.
            pub mod types {
                include!(concat!(env!("OUT_DIR"), "/moby.buildkit.v1.types.rs"));
            }
            /// `moby.buildkit.v1.frontend`: the gateway (LLB bridge).
            pub mod frontend {
                include!(concat!(env!("OUT_DIR"), "/moby.buildkit.v1.frontend.rs"));
            }
            /// `moby.buildkit.v1.apicaps`: capability records.
            pub mod apicaps {
                include!(concat!(env!("OUT_DIR"), "/moby.buildkit.v1.apicaps.rs"));
            }
            /// `moby.buildkit.v1.sourcepolicy`: source policies.
            pub mod sourcepolicy {
                include!(concat!(env!("OUT_DIR"), "/moby.buildkit.v1.sourcepolicy.rs"));
            }
        }
    }
}

/// `fsutil.types`: file stats of ReadDir and StatFile, DiffCopy packets. Generated once, in
/// `session::proto` (the layer below), so both modules share one `Stat` type; the generated
/// gateway code reaches it at this path.
pub use crate::session::proto::fsutil;

/// `moby.filesync.v1`: the session's `FileSync`/`FileSend` services and registry credentials
/// (`Auth`).
pub use crate::session::proto::filesync;

/// `grpc.health.v1`: the health service a BuildKit client serves on its session.
pub mod health {
    /// `grpc.health.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
    }
}

/// `moby.buildkit.secrets.v1`: the secrets a BuildKit client serves on its session.
pub mod secrets {
    /// `moby.buildkit.secrets.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/moby.buildkit.secrets.v1.rs"));
    }
}

/// `moby.sshforward.v1`: the SSH agents a BuildKit client forwards over its session.
pub mod sshforward {
    /// `moby.sshforward.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/moby.sshforward.v1.rs"));
    }
}

/// `containerd.services.content.v1`: the content store a BuildKit client serves on its session
/// (local cache export/import).
pub mod containerd {
    /// `moby.sshforward.v1`: the SSH agents a BuildKit client forwards over its session.
    pub mod sshforward {
        /// `moby.sshforward.v1`.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/moby.sshforward.v1.rs"));
        }
    }

    /// `containerd.services.content.v1`.
    pub mod content {
        include!(concat!(env!("OUT_DIR"), "/containerd.services.content.v1.rs"));
    }
}

/// `google.rpc`.
pub mod google {
    /// `google.rpc.Status`.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

pub use moby::buildkit::v1 as control;
pub use moby::buildkit::v1::frontend as gateway;
pub use moby::buildkit::v1::types;
