//! Sources: oci-layout, local directories, http, git, registry images.
pub mod git;
pub mod http;
pub mod local;
pub mod oci_layout;
