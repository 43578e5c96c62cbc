//! Generates the LLB protobuf types from core/proto/ops.proto and, with the `api` feature,
//! BuildKit's control API and session file transfer (core/proto/buildkit/) with tonic services.
//! Maps are BTreeMaps so that encoding is deterministic (an op's digest is the sha256 of its bytes).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut cfg = prost_build::Config::new();
    cfg.btree_map(["."]);
    cfg.compile_protos(&["proto/ops.proto"], &["proto"])?;
    #[cfg(feature = "api")]
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .btree_map(".")
        // The LLB types are the ones above: one `pb::Definition` type in the whole crate.
        .extern_path(".pb", "crate::graph::pb")
        // The session's bulk payloads as `Bytes`: decoding then slices the received buffer and
        // encoding reads a chunk that was never copied into a `Vec` (a file transfer crosses two
        // gRPC layers, each a copy per message otherwise).
        .bytes(".fsutil.types.Packet.data")
        .bytes(".moby.buildkit.v1.BytesMessage.data")
        .bytes(".moby.filesync.v1.BytesMessage.data")
        // One call for every package: prost writes one file per package (fsutil.types holds both
        // the gateway's Stat and filesync's Packet).
        .compile_protos(
            &[
                "proto/buildkit/control.proto",
                "proto/buildkit/gateway.proto",
                "proto/buildkit/filesync.proto",
                "proto/buildkit/health.proto",
                "proto/buildkit/secrets.proto",
                "proto/buildkit/sshforward.proto",
                "proto/buildkit/auth.proto",
                "proto/buildkit/content.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
