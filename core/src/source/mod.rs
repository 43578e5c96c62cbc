//! Sources: oci-layout, local directories, http, git, registry images.
pub mod oci_layout;
