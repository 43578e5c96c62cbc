//! Writes the README example's LLB definitions to stdout, as Go programs using BuildKit's `llb`
//! package do; pipe them into `kiln build` (or `buildctl build`).
//!
//! `hello_llb base`          — a base image: the `rootfs` local directory as a single layer.
//! `hello_llb app LAYOUT`    — FROM oci-layout LAYOUT:1, RUN a step, COPY from the `ctx` local dir.

use kiln::graph::{CopyOptions, ExecOptions, OciRef, State};
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let state = match args.get(1).map(String::as_str) {
        Some("base") => State::scratch()
            .copy(&State::local("rootfs"), "/", "/", CopyOptions { dir_copy_contents: true, ..Default::default() })
            .with_custom_name("base: busybox rootfs"),
        Some("app") => {
            let layout = args.get(2).ok_or("usage: hello_llb app LAYOUT_DIR")?;
            State::oci_layout(layout, OciRef::Tag("1".into()))
                .run(
                    ExecOptions::shell("echo hello from kiln > /greeting && busybox | head -1 > /busybox-version")
                        .custom_name("RUN echo hello from kiln"),
                )
                .root()
                .copy(
                    &State::local("ctx"),
                    "/",
                    "/app/",
                    CopyOptions { dir_copy_contents: true, create_dest_path: true, ..Default::default() },
                )
                .with_custom_name("COPY ctx /app/")
        }
        _ => return Err("usage: hello_llb base | hello_llb app LAYOUT_DIR".into()),
    };
    std::io::stdout().write_all(&state.to_definition()?.to_bytes())?;
    Ok(())
}
