//! Compiles proto/deviceplugin.proto with protox (pure Rust: no system `protoc`). Both sides are
//! generated: the plugin serves `DevicePlugin` and calls `Registration`; the test bed's fake
//! kubelet does the opposite.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/deviceplugin.proto");
    let fds = protox::compile(["deviceplugin.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Both ends run over unix sockets with their own connector/listener.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
