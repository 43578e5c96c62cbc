//! Content-addressed blob store and OCI image layout read/write (index.json guarded by a lock).
//!
//! - [`store`]: the blob store (`blobs/sha256/<hex>`), atomic writes, verified reads.
//! - [`layer`]: layer blobs written in one streaming pass and read back decompressed.
//! - [`layout`]: OCI image layout directories, tags in `index.json` under an flock.
//! - [`image`]: image manifests and configs.
//! - [`limits`]: caps on metadata documents read from outside (size, regular files only).
pub mod image;
pub mod layer;
pub mod layout;
pub mod limits;
pub mod store;

pub use image::{read_image, write_image, write_image_with, ImageWriteOptions, ResolvedImage};
pub use layer::{
    layer_reader, layer_reader_verified, media_type_for, verify_diff_id, write_layer, Compression, LayerBlob,
};
pub use layout::OciLayout;
pub use store::{BlobWriter, ContentStore};
