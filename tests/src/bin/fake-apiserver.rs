//! The fake Kubernetes API server as a process, for the demo and the benchmarks: serves until
//! SIGTERM/SIGINT. See `plexus_e2e::fakeapi` for what it implements.

use anyhow::Context;
use clap::Parser;
use plexus_e2e::fakeapi::{FakeApiOptions, FakeApiServer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// In-process fake Kubernetes API server (pods, NADs, events) for Plexus tests and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "fake-apiserver", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the server URL (e.g. http://127.0.0.1:34567) to this file once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Write a kubeconfig (plus ca.crt / token files) into this directory.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Serve HTTPS with a freshly generated CA.
    #[arg(long)]
    tls: bool,
    /// Require this bearer token.
    #[arg(long)]
    token: Option<String>,
    /// Delay every response by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// YAML or JSON file of NADs/pods to load at start (repeatable; multi-document YAML allowed).
    #[arg(long)]
    seed: Vec<PathBuf>,
    /// Append one JSON line per request to this file.
    #[arg(long)]
    request_log: Option<PathBuf>,
    /// Seconds between BOOKMARK events on watches that allow them.
    #[arg(long, default_value_t = 2)]
    bookmark_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = FakeApiServer::start(FakeApiOptions {
        tls: args.tls,
        token: args.token.clone(),
        latency: Duration::from_millis(args.latency_ms),
        listen: args.listen,
        request_log: args.request_log.clone(),
        bookmark_interval: Duration::from_secs(args.bookmark_secs.max(1)),
    })?;
    let mut loaded = 0;
    for seed in &args.seed {
        loaded += server.load_file(seed)?;
    }
    if let Some(dir) = &args.kubeconfig_out {
        let p = server.write_kubeconfig(dir)?;
        eprintln!("fake-apiserver: kubeconfig {}", p.display());
    }
    // The port file is written last, so a script that waits for it finds everything ready.
    if let Some(p) = &args.port_file {
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, server.url()).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, p)?;
    }
    eprintln!(
        "fake-apiserver: serving {} ({loaded} objects loaded)",
        server.url()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r?,
        }
        anyhow::Ok(())
    })?;
    eprintln!(
        "fake-apiserver: {} requests served, stopping",
        server.requests().len()
    );
    server.stop();
    Ok(())
}
