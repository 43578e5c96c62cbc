//! `kiln`: the command-line face of the kiln build engine (buildctl-compatible `build`).
fn main() {
    println!("kiln {}", env!("CARGO_PKG_VERSION"));
}
