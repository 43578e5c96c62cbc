//! The session's file transfer messages and tonic services, generated from
//! `core/proto/buildkit/{wire,filesync,stat}.proto` (field-compatible with BuildKit v0.11.6).
//! `server::proto` re-exports these modules, so the gateway's `Stat` is this `fsutil::types::Stat`.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `fsutil.types`: `Stat` (gateway ReadDir/StatFile, DiffCopy) and `Packet` (DiffCopy).
pub mod fsutil {
    /// `fsutil.types`.
    pub mod types {
        include!(concat!(env!("OUT_DIR"), "/fsutil.types.rs"));
    }
}

/// `moby.filesync`.
pub mod moby {
    /// `moby.filesync`.
    pub mod filesync {
        /// `moby.filesync.v1`: the `FileSync` and `FileSend` services, `BytesMessage`.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/moby.filesync.v1.rs"));
        }
    }
}

pub use moby::filesync::v1 as filesync;
