//! Generated LLB protobuf types (`pb.*`), field-compatible with BuildKit's solver/pb/ops.proto.
#![allow(missing_docs, clippy::all)]
include!(concat!(env!("OUT_DIR"), "/pb.rs"));
