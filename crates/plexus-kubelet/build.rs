//! Compiles proto/podresources.proto with protox (pure Rust: no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/podresources.proto");
    let fds = protox::compile(["podresources.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        // The client connects over a unix socket with its own connector.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
