//! `plexusd`: the Plexus node daemon (thick mode). `plexus-shim`, installed as the node's CNI
//! plugin, forwards every CNI call to it over a unix socket; it runs the same engine as the thin
//! `plexus` binary, with the pod and NAD reads served from watch caches (docs/architecture.md).

mod admit;
mod cni;
mod health;
mod metrics;
mod server;

use anyhow::{Context, bail};
use clap::Parser;
use plexus_engine::PlexusConfig;
use plexus_engine::exec::{Watchdog, watchdog};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a NAD missing from the cache is waited for (it was most likely created a moment
/// ago and its watch event is on the way) before one GET.
const NAD_WAIT: Duration = Duration::from_millis(250);

/// How long graceful shutdown waits for requests in flight: the longest call budget
/// (`callTimeoutSeconds` is at most what the kubelet waits) plus slack.
const DRAIN_LIMIT: Duration = Duration::from_secs(130);

/// The most `--max-inflight` allows.
const MAX_INFLIGHT: u64 = 1024;

#[derive(Debug, Parser)]
#[command(
    name = "plexusd",
    version,
    about = "The Plexus node daemon (thick mode)"
)]
struct Args {
    /// The plexus conflist or conf that the thin plugin would read (its kubeconfig is used for
    /// the watch caches).
    #[arg(long)]
    config: PathBuf,
    /// The daemon API's unix socket (its directory is made 0700).
    #[arg(long, default_value = "/run/plexus/plexusd.sock")]
    socket: PathBuf,
    /// `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, default_value = "0.0.0.0:9455")]
    health_addr: std::net::SocketAddr,
    /// CNI requests that run the engine at once (1 to 1024: each holds a blocking thread, and a
    /// huge number would overflow the runtime's and the semaphore's limits).
    #[arg(long, default_value_t = 16,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_INFLIGHT))]
    max_inflight: usize,
    /// CNI requests that may wait for a free slot; more are answered code 11 at once.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// This node's name (only its pods are cached).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Watch the NADs of these namespaces only (repeatable or comma-separated; default: every
    /// namespace). For RBAC that grants list/watch of NADs in some namespaces; a NAD elsewhere
    /// costs one GET.
    #[arg(long = "nad-namespace", value_delimiter = ',')]
    nad_namespaces: Vec<String>,
    /// Run delegates chrooted into this directory: the host's root mounted into the daemon's
    /// container (deploy/thick mounts it at /hostroot), so that delegates use the host's tools
    /// (iptables for portmap, tc for bandwidth) and files. Multus's `chrootDir`.
    #[arg(long)]
    chroot_dir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    if std::env::var_os(watchdog::WATCHDOG_ENV).is_some() {
        watchdog::serve_stdin();
        return std::process::ExitCode::SUCCESS;
    }
    let args = Args::parse();
    init_logging();
    // The build first, so a log line can be tied to the image that wrote it during a rollout.
    tracing::info!(
        version = plexus_cni::build::VERSION,
        commit = plexus_cni::build::COMMIT,
        "plexusd {} starting",
        plexus_cni::build::long_version()
    );
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", plexus_cni::report::chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// JSON lines on stderr; each line carries the fields of its request's span (command, pod,
/// container, ifname).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLEXUSD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The plugin config a runtime would hand the thin plugin: a conflist's first plugin with the
/// list's `name` and `cniVersion`, or a single conf as it is.
fn plugin_config(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let v: Value =
        serde_json::from_slice(&text).with_context(|| format!("parse {}", path.display()))?;
    let Value::Object(mut top) = v else {
        bail!("{}: not a JSON object", path.display());
    };
    let Some(Value::Array(plugins)) = top.remove("plugins") else {
        return Ok(top);
    };
    let Some(Value::Object(mut first)) = plugins.into_iter().next() else {
        bail!("{}: \"plugins\" is empty", path.display());
    };
    for key in ["name", "cniVersion"] {
        if let Some(v) = top.get(key) {
            first.insert(key.to_owned(), v.clone());
        }
    }
    Ok(first)
}

fn run(args: Args) -> anyhow::Result<()> {
    let conf = plugin_config(&args.config)?;
    let config = PlexusConfig::from_map(&conf)
        .with_context(|| format!("{}: invalid plexus configuration", args.config.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(args.max_inflight + 8)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let handle = rt.handle().clone();
    rt.block_on(serve(args, config, handle))
}

async fn serve(
    args: Args,
    config: PlexusConfig,
    handle: tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let api_timeout = Duration::from_secs(config.api_timeout_secs);
    let kube = match plexus_kube::Credentials::detect(config.kubeconfig.as_deref()) {
        None => {
            tracing::warn!(
                "no kubeconfig and not in a pod: no API server; only the cluster network is attached"
            );
            None
        }
        Some(creds) => {
            let node = args
                .node_name
                .clone()
                .filter(|n| !n.is_empty())
                .context("the node's name is required (--node-name or NODE_NAME)")?;
            let (client, server) = plexus_kube::build_client(&creds, api_timeout)
                .await
                .context("Kubernetes client")?;
            // One request before the caches start, so that their lists and watches find the
            // connection open (one HTTP/2 connection over TLS) instead of each dialling one at
            // the same instant and leaving the spares idle in the pool. A failure is only
            // logged: the caches retry, and readiness waits for them.
            match tokio::time::timeout(api_timeout, client.kube().apiserver_version()).await {
                Ok(Ok(info)) => tracing::info!(%server, version = %info.git_version, "API server"),
                Ok(Err(e)) => {
                    tracing::warn!(%server, "API server version: {}", plexus_cni::report::chain(&e))
                }
                Err(_) => {
                    tracing::warn!(%server, "API server version: no answer within {api_timeout:?}")
                }
            }
            let caches = plexus_kube::watch::Caches::start(
                client.kube().clone(),
                &node,
                &args.nad_namespaces,
            );
            if args.nad_namespaces.is_empty() {
                tracing::info!(%server, %node, "watching this node's pods and every NAD");
            } else {
                tracing::info!(%server, %node, nad_namespaces = ?args.nad_namespaces, "watching this node's pods and the NADs of some namespaces");
            }
            Some(cni::Kube {
                caches,
                client,
                server,
                timeout: api_timeout,
            })
        }
    };
    let watchdog = match Watchdog::for_current_exe() {
        Ok(w) => Some(Arc::new(w)),
        Err(e) => {
            tracing::warn!("no delegate watchdog ({e}); delegates will outlive a killed plexusd");
            None
        }
    };
    let api = Arc::new(server::Api {
        shared: Arc::new(cni::Shared {
            kube,
            counters: Default::default(),
            metrics: Default::default(),
            watchdog,
            handle,
            nad_wait: NAD_WAIT,
            chroot_dir: args.chroot_dir.clone(),
        }),
        admission: admit::Admission::new(args.max_inflight, args.queue),
        ready: AtomicBool::new(false),
        stopping: tokio::sync::watch::Sender::new(false),
        connections: Default::default(),
    });
    let health = tokio::net::TcpListener::bind(args.health_addr)
        .await
        .with_context(|| format!("bind {}", args.health_addr))?;
    tracing::info!(addr = %health.local_addr()?, "health and metrics");
    tokio::spawn(health::serve(health, api.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let synced = Instant::now();
    if let Some(k) = &api.shared.kube {
        tokio::select! {
            () = k.caches.wait_synced() => {}
            _ = term.recv() => {
                tracing::info!("SIGTERM before the caches synced; exiting");
                return Ok(());
            }
        }
        tracing::info!(
            pods = k.caches.pod_count(),
            nads = k.caches.nad_count(),
            took_ms = synced.elapsed().as_millis() as u64,
            "caches synced"
        );
    }
    // The socket appears only once the daemon can serve from its caches: until then the shim
    // finds nothing and answers "try again later" at once.
    let listener = server::bind(&args.socket)?;
    api.ready.store(true, Ordering::SeqCst);
    tracing::info!(socket = %args.socket.display(), max_inflight = args.max_inflight, queue = args.queue, "ready");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(server::connection(api.clone(), stream));
                }
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = term.recv() => break,
        }
    }
    // Graceful shutdown: no new requests (the shim sees no socket and runs DEL locally, fails
    // ADD with code 11), finish the ones in flight, leave the CNI config alone.
    drop(listener);
    api.ready.store(false, Ordering::SeqCst);
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!(inflight = api.admission.inflight(), "SIGTERM: draining");
    api.stopping.send_replace(true);
    let deadline = Instant::now() + DRAIN_LIMIT;
    // Engine runs first (a run whose connection broke still finishes its work), then the
    // connections, which close once their answer is written.
    if !(api.admission.drain(deadline).await && api.connections_closed(deadline).await) {
        tracing::warn!("requests still running after {DRAIN_LIMIT:?}; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_inflight_is_range_checked_naming_the_flag() {
        let parse =
            |n: &str| Args::try_parse_from(["plexusd", "--config", "c", "--max-inflight", n]);
        assert_eq!(parse("1").unwrap().max_inflight, 1);
        assert_eq!(parse("1024").unwrap().max_inflight, 1024);
        for bad in ["0", "1025", "4611686018427387904", "18446744073709551615"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("--max-inflight") && e.contains(bad),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_conflist_yields_its_first_plugin_with_the_list_name_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("00-plexus.conflist");
        std::fs::write(
            &p,
            r#"{"cniVersion": "1.0.0", "name": "plexus-network", "plugins": [{"type": "plexus-shim", "clusterNetwork": "c"}]}"#,
        )
        .unwrap();
        let c = plugin_config(&p).unwrap();
        assert_eq!(c["name"], "plexus-network");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["clusterNetwork"], "c");
        std::fs::write(&p, r#"{"type": "plexus", "clusterNetwork": "c"}"#).unwrap();
        assert_eq!(plugin_config(&p).unwrap()["type"], "plexus");
        std::fs::write(&p, r#"{"plugins": []}"#).unwrap();
        assert!(plugin_config(&p).unwrap_err().to_string().contains("empty"));
    }
}
