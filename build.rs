//! Compiles the wire contract in `proto/` with protox (pure Rust, no system
//! `protoc`), keeps the encoded descriptor set for gRPC server reflection, and
//! generates the messages, and with the `server` feature the tonic client
//! and server code.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");

    let fds = protox::compile(
        ["gavel/v1/gavel.proto", "google/rpc/status.proto"],
        ["proto"],
    )?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("gavel_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // The services need tonic, which only the `server` feature brings.
    let services = std::env::var_os("CARGO_FEATURE_SERVER").is_some();
    tonic_prost_build::configure()
        .build_client(services)
        .build_server(services)
        .compile_fds(fds)?;
    Ok(())
}
