//! `fake-kubelet`: serves the kubelet PodResources v1 API on a unix socket with fixed allocations,
//! for demos (hack/demo-sriov.sh) and manual tests. Runs until killed.
//!
//! `fake-kubelet --socket S --allocate ns/pod=resource=id1,id2 [--allocate ...] [--get MODE]
//! [--busy K]`

use anyhow::{Context, bail};
use clap::Parser;
use plexus_e2e::fakekubelet::{FakeKubelet, GetMode};
use std::path::PathBuf;

#[derive(Parser, Debug)]
struct Args {
    /// The socket to serve on.
    #[arg(long)]
    socket: PathBuf,
    /// `namespace/pod=resource=id1,id2`: devices allocated to the pod's container `app`.
    #[arg(long)]
    allocate: Vec<String>,
    /// How `Get` answers: served, unimplemented (kubelet < 1.27) or disabled (gate off).
    #[arg(long, default_value = "served")]
    get: String,
    /// Answer the first K calls RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 0)]
    busy: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kubelet = FakeKubelet::start(&args.socket)?;
    for a in &args.allocate {
        let mut parts = a.splitn(3, '=');
        let (Some(pod), Some(resource), Some(ids)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("--allocate {a:?}: expected namespace/pod=resource=id1,id2");
        };
        let (ns, name) = pod
            .split_once('/')
            .with_context(|| format!("--allocate {a:?}: the pod must be namespace/name"))?;
        let ids: Vec<&str> = ids.split(',').filter(|s| !s.is_empty()).collect();
        kubelet.allocate(ns, name, "app", resource, &ids);
    }
    kubelet.set_get(match args.get.as_str() {
        "served" => GetMode::Served,
        "unimplemented" => GetMode::Unimplemented,
        "disabled" => GetMode::Disabled,
        other => bail!("--get {other:?}: expected served, unimplemented or disabled"),
    });
    kubelet.busy_for(args.busy);
    eprintln!("fake kubelet serving on {}", args.socket.display());
    loop {
        std::thread::park();
    }
}
