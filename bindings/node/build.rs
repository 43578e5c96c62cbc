//! Link settings for the Node-API addon (napi-build).
fn main() {
    napi_build::setup();
}
