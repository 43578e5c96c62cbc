//! Sources: oci-layout, local directories, http, git, registry images.
pub mod local;
pub mod oci_layout;
