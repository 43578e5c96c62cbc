//! The build graph: LLB ops (`pb`), validated `Definition`s and the fluent `State` builder.
pub mod image_config;
pub mod pb;

pub use image_config::ImageConfig;
