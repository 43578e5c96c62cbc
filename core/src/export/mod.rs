//! Result exporters: local directory, tar file, OCI image layout.
//!
//! - [`local`]: `type=local` — copy the result tree into a directory.
//! - [`tar`]: `type=tar` — one tar archive of the result tree (file or stdout).
//! - [`oci`]: `type=oci` — an OCI image layout directory or a tar of one.
pub mod local;
pub mod oci;
pub mod tar;

pub use local::export_local;
pub use oci::{export_oci, export_oci_with};
pub use tar::export_tar;
