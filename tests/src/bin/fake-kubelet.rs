//! `fake-kubelet`: serves the kubelet PodResources v1 API on a unix socket, for demos
//! (hack/demo-sriov.sh) and manual tests. Runs until killed.
//!
//! `fake-kubelet --socket S [--allocate ns/pod=resource=id1,id2 ...] [--get MODE] [--busy K]`
//! `[--device-plugins DIR [--request ns/pod=resource=N ...] [--ready-file F]]`
//!
//! With `--device-plugins` it also serves the device-plugin `Registration` API on
//! `DIR/kubelet.sock`, follows each registered plugin's ListAndWatch, and for each `--request`
//! waits until the plugin of that resource advertises enough healthy devices, then has it
//! allocate N of them to the pod (GetPreferredAllocation + Allocate), as the kubelet does when the
//! pod is admitted. The allocations are what PodResources reports. `--ready-file` is written once
//! every request is done.

use anyhow::{Context, bail};
use clap::Parser;
use plexus_e2e::fakekubelet::{FakeKubelet, GetMode};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// The PodResources socket to serve on.
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
    /// Also serve device-plugin registration in this directory (`kubelet.sock`).
    #[arg(long)]
    device_plugins: Option<PathBuf>,
    /// `namespace/pod=resource=N`: have the resource's device plugin allocate N devices to the
    /// pod's container `app` (needs --device-plugins).
    #[arg(long)]
    request: Vec<String>,
    /// Written once every --request is allocated.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// How long a --request waits for its plugin.
    #[arg(long, default_value_t = 30)]
    wait_seconds: u64,
}

/// `namespace/pod=resource=rest` → `(ns, pod, resource, rest)`.
fn split(flag: &str, a: &str) -> anyhow::Result<(String, String, String, String)> {
    let mut parts = a.splitn(3, '=');
    let (Some(pod), Some(resource), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("{flag} {a:?}: expected namespace/pod=resource=...");
    };
    let (ns, name) = pod
        .split_once('/')
        .with_context(|| format!("{flag} {a:?}: the pod must be namespace/name"))?;
    Ok((ns.into(), name.into(), resource.into(), rest.into()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut kubelet = FakeKubelet::start(&args.socket)?;
    for a in &args.allocate {
        let (ns, name, resource, ids) = split("--allocate", a)?;
        let ids: Vec<&str> = ids.split(',').filter(|s| !s.is_empty()).collect();
        kubelet.allocate(&ns, &name, "app", &resource, &ids);
    }
    kubelet.set_get(match args.get.as_str() {
        "served" => GetMode::Served,
        "unimplemented" => GetMode::Unimplemented,
        "disabled" => GetMode::Disabled,
        other => bail!("--get {other:?}: expected served, unimplemented or disabled"),
    });
    kubelet.busy_for(args.busy);
    eprintln!(
        "fake kubelet: PodResources API on {}",
        args.socket.display()
    );
    if let Some(dir) = &args.device_plugins {
        kubelet.serve_device_plugins(dir)?;
        eprintln!(
            "fake kubelet: device-plugin registration on {}",
            dir.join("kubelet.sock").display()
        );
    } else if !args.request.is_empty() {
        bail!("--request needs --device-plugins");
    }
    let mut shown = 0;
    for r in &args.request {
        let (ns, name, resource, n) = split("--request", r)?;
        let n: usize = n
            .parse()
            .with_context(|| format!("--request {r:?}: the count must be a number"))?;
        let deadline = Instant::now() + Duration::from_secs(args.wait_seconds);
        loop {
            let healthy = kubelet
                .advertised(&resource)
                .map(|d| d.iter().filter(|(_, h, _)| h == "Healthy").count());
            if healthy.is_some_and(|h| h >= n) {
                break;
            }
            if Instant::now() > deadline {
                bail!("--request {r:?}: {resource} not advertised with {n} healthy devices");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for reg in kubelet.registrations().iter().skip(shown) {
            eprintln!(
                "fake kubelet: plugin registered {} at {} ({})",
                reg.resource, reg.endpoint, reg.version
            );
        }
        shown = kubelet.registrations().len();
        eprintln!(
            "fake kubelet: {resource} advertised: {:?}",
            kubelet.advertised(&resource).unwrap_or_default()
        );
        let a = kubelet.allocate_from_plugin(&ns, &name, "app", &resource, n)?;
        let mut envs: Vec<_> = a.response.envs.iter().collect();
        envs.sort();
        eprintln!(
            "fake kubelet: pod {ns}/{name} admitted: {resource} → {} (Allocate env: {envs:?})",
            a.ids.join(",")
        );
    }
    if let Some(f) = &args.ready_file {
        std::fs::write(f, "ready\n").with_context(|| format!("write {}", f.display()))?;
    }
    loop {
        std::thread::park();
    }
}
