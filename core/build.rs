//! Generates the LLB protobuf types from core/proto/ops.proto.
//! Maps are BTreeMaps so that encoding is deterministic (an op's digest is the sha256 of its bytes).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/ops.proto");
    let mut cfg = prost_build::Config::new();
    cfg.btree_map(["."]);
    cfg.compile_protos(&["proto/ops.proto"], &["proto"])?;
    Ok(())
}
