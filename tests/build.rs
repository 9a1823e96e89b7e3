//! Compiles the CRI subset in proto/cri.proto into a tonic client with protox (pure Rust), so no
//! system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/cri.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/cri.proto");
    Ok(())
}
