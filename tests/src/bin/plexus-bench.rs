//! `plexus-bench`: whole-process benchmarks of Plexus in both modes against a baseline of the same
//! delegates exec'd directly, measured in the same run (hack/bench.sh drives it). Thin mode execs
//! the real `plexus` binary; thick mode runs the real `plexusd` against the same fake API server
//! and execs `plexus-shim`, as a runtime would.
//!
//! Figures: ADD/CHECK/DEL wall time for 0, 1, 4 and 16 annotation networks (bridge + macvlan +
//! host-local), with 0 and 10 ms of API latency; peak RSS of `plexus`, `plexus-shim` and
//! `plexusd`; API requests and bytes per ADD/DEL; 110 pods added 8 at a time (thin, thick and the
//! bare delegates); plexusd's memory with 110 to 10,000 pods in its caches; the cost of a VERSION
//! call; binary sizes.

// The bench prints its report on stdout by design.
#![allow(clippy::print_stdout)]

use anyhow::{Context, Result, ensure};
use clap::Parser;
use plexus_cni::NetworkConfig;
use plexus_e2e::cni::{CNI_BIN_DIR, Call, Node, bin_path, exec_plugin, k8s_args};
use plexus_e2e::daemon::{Daemon, DaemonOptions};
use plexus_e2e::fakeapi::{FakeApiOptions, FakeApiServer};
use plexus_e2e::netns::NetNs;
use plexus_engine::ProcessExec;
use plexus_engine::delegate::{Chain, Invocation};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks the plexus binary against its delegates run directly")]
struct Args {
    /// Samples per figure (the median is reported).
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Network counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "0,1,4,16")]
    networks: Vec<usize>,
    /// Pods in the throughput run (0 skips it).
    #[arg(long, default_value_t = 110)]
    pods: usize,
    /// Throughput rounds: each runs every mode and the bare delegates, in alternating order, and
    /// the ratios are the medians of each round's ratio (the machine's speed drifts by more than
    /// the differences measured).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Before each throughput run, wait up to this many seconds for the machine to go idle (the
    /// kernel finishes tearing down the previous run's namespaces in the background); 0 skips it.
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Where to write every raw sample as JSON.
    #[arg(long, default_value = "target/bench/plexus-bench.json")]
    json: PathBuf,
    /// Modes to measure: thin (`plexus`), thick (`plexus-shim` + `plexusd`).
    #[arg(long, value_delimiter = ',', default_value = "thin,thick")]
    modes: Vec<ModeArg>,
    /// plexusd's memory curve: PODS:NADS points, each a daemon with that many objects in its
    /// caches ("none" skips it).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "110:100,1000:300,10000:1000"
    )]
    memory: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum ModeArg {
    Thin,
    Thick,
}

impl ModeArg {
    fn name(self) -> &'static str {
        match self {
            ModeArg::Thin => "thin",
            ModeArg::Thick => "thick",
        }
    }
}

/// The node the bench's pods are bound to (the daemon's pod watch selects them by it).
const NODE_NAME: &str = "node-1";

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len().is_multiple_of(2) {
        (s[m - 1] + s[m]) / 2.0
    } else {
        s[m]
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() as f64 * p).ceil() as usize).clamp(1, s.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One pod's delegates, for the baseline.
struct Delegates {
    list: Vec<(NetworkConfig, String)>,
}

/// A scenario: a node, an API server, a pod asking for `n` networks, and the plugin of `mode`
/// (in thick mode with its daemon running against that API server).
struct Scenario {
    /// Stopped first (drop order), before the node's links and the API server go.
    daemon: Option<Daemon>,
    /// Kept for its bridges, veths and directories, which the configs point at.
    _node: Node,
    api: FakeApiServer,
    /// What the runtime passes on stdin (the shim's config in thick mode).
    config: Value,
    plugin: PathBuf,
    delegates: Delegates,
    n: usize,
    tls: bool,
    mode: ModeArg,
}

impl Scenario {
    /// `tls`: HTTPS with a bearer token file and a CA, as on a real node.
    fn new(n: usize, tls: bool, mode: ModeArg) -> Result<Self> {
        let node = Node::new()?;
        let opts = if tls {
            FakeApiOptions {
                tls: true,
                token: Some("bench-token".into()),
                ..Default::default()
            }
        } else {
            FakeApiOptions::default()
        };
        let api = FakeApiServer::start(opts)?;
        let kubeconfig = api.write_kubeconfig(&node.root.path().join("kube"))?;
        let cluster = node.write_cluster_file("1.0.0")?;
        let mut list = vec![(
            NetworkConfig::from_value(node.cluster_conflist("1.0.0"))?,
            "eth0".to_owned(),
        )];
        let mut names = Vec::new();
        for j in 0..n {
            let name = format!("net-{j}");
            let subnet = format!("10.{}.0.0/16", 100 + j);
            let conf = if j % 2 == 0 {
                node.macvlan_config(&name, &subnet)
            } else {
                node.bridge_config(&name, &subnet)
            };
            api.create_nad("default", &name, Some(&conf.to_string()));
            list.push((NetworkConfig::from_value(conf)?, format!("net{}", j + 1)));
            names.push(name);
        }
        let thin = node.plexus_config(
            cluster.to_str().context("path")?,
            Some(&kubeconfig),
            json!({"logLevel": "error"}),
        );
        let (daemon, config, plugin) = match mode {
            ModeArg::Thin => (None, thin, plexus_e2e::cni::plexus_bin()),
            ModeArg::Thick => {
                let d = start_daemon(&node.root.path().join("plexusd"), &thin)?;
                let mut shim = thin;
                shim["type"] = json!("plexus-shim");
                shim["daemonSocket"] = json!(d.socket);
                (Some(d), shim, bin_path("plexus-shim"))
            }
        };
        let scenario = Self {
            daemon,
            _node: node,
            api,
            config,
            plugin,
            delegates: Delegates { list },
            n,
            tls,
            mode,
        };
        scenario.pod("bench", &names.join(","))?;
        Ok(scenario)
    }

    /// Creates a pod bound to the node; in thick mode returns once the daemon's cache has it
    /// (an ADD right after would otherwise measure the cache-miss GET, not the steady state).
    /// The pod is shaped like a real one (spec, status, managedFields), so that "API bytes per
    /// ADD" counts what a real API server would send.
    fn pod(&self, name: &str, networks: &str) -> Result<String> {
        let mut pod = realistic_pod("default", 0, networks);
        let meta = &mut pod["metadata"];
        meta["name"] = json!(name);
        if let Some(m) = meta.as_object_mut() {
            m.remove("generateName");
        }
        if networks.is_empty()
            && let Some(a) = meta["annotations"].as_object_mut()
        {
            a.remove("k8s.v1.cni.cncf.io/networks");
        }
        let pod = self.api.create_pod(pod);
        if let Some(d) = &self.daemon {
            let rv = pod["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .context("resourceVersion")?;
            ensure!(d.wait_version("pods", rv), "plexusd never saw pod {name}");
        }
        Ok(pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    fn call(&self, command: &str, cid: &str, ns: &Path, pod: &str, uid: &str) -> Result<Duration> {
        let start = Instant::now();
        let out = exec_plugin(
            &self.plugin,
            &Call {
                command,
                container_id: cid,
                netns: Some(ns),
                ifname: "eth0",
                args: k8s_args("default", pod, uid, cid),
                config: &self.config,
            },
            CNI_BIN_DIR,
        )?;
        let took = start.elapsed();
        ensure!(
            out.code == 0,
            "{} {command} failed: {out:?}",
            self.plugin.display()
        );
        Ok(took)
    }

    /// The same delegates exec'd directly: conflist rules, in order (DEL in reverse).
    fn baseline(
        &self,
        command: &str,
        cid: &str,
        ns: &Path,
        results: &mut Vec<Value>,
    ) -> Result<Duration> {
        let exec = ProcessExec::new(vec![CNI_BIN_DIR.into()]);
        let args = k8s_args("default", "bench", "uid", cid);
        let inv = Invocation {
            exec: &exec,
            container_id: cid,
            netns: Some(ns),
            args: &args,
        };
        let empty = Map::new();
        let start = Instant::now();
        let chains = self.delegates.list.iter().map(|(c, ifname)| Chain {
            config: c,
            version: c.effective_version().expect("valid version"),
            ifname,
            runtime_config: &empty,
        });
        match command {
            "ADD" => {
                results.clear();
                for chain in chains {
                    results.push(
                        chain
                            .add(&inv)
                            .map_err(|(e, _)| anyhow::anyhow!("baseline ADD: {e:?}"))?,
                    );
                }
            }
            "CHECK" => {
                for (chain, r) in chains.zip(results.iter()) {
                    chain.check(&inv, r)?;
                }
            }
            _ => {
                let all: Vec<_> = chains.collect();
                for (chain, r) in all.iter().zip(results.iter()).rev() {
                    let errors = chain.del(&inv, Some(r));
                    ensure!(errors.is_empty(), "baseline DEL: {errors:?}");
                }
            }
        }
        Ok(start.elapsed())
    }

    /// Peak RSS (KiB) of one plugin ADD and one DEL, from GNU time.
    fn rss(&self, ns: &Path, uid: &str) -> Result<(u64, u64)> {
        let mut peaks = Vec::new();
        for command in ["ADD", "DEL"] {
            let tmp = tempfile::NamedTempFile::new()?;
            let mut cmd = std::process::Command::new("/usr/bin/time");
            cmd.args(["-f", "%M", "-o"])
                .arg(tmp.path())
                .arg(&self.plugin);
            let cid = "rss";
            cmd.env_clear()
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", cid)
                .env("CNI_NETNS", ns)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", CNI_BIN_DIR)
                .env("CNI_ARGS", k8s_args("default", "bench", uid, cid))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null());
            let mut child = cmd
                .spawn()
                .context("/usr/bin/time (apt-get install time)")?;
            use std::io::Write;
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(self.config.to_string().as_bytes())?;
            ensure!(
                child.wait()?.success(),
                "{} {command} under /usr/bin/time failed",
                self.plugin.display()
            );
            peaks.push(std::fs::read_to_string(tmp.path())?.trim().parse::<u64>()?);
        }
        Ok((peaks[0], peaks[1]))
    }

    /// The API requests made for CNI calls since the last clear: the daemon's lists and watches
    /// of its caches are not counted (they are not per pod).
    fn cni_requests(&self) -> Vec<plexus_e2e::fakeapi::RequestRecord> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| !r.is_collection_read())
            .collect()
    }
}

/// Starts `plexusd` with the thin `config` (what it reads with `--config`) in `dir`, its caches
/// synced, logging at warn (a debug log would be part of what is measured).
fn start_daemon(dir: &Path, config: &Value) -> Result<Daemon> {
    Daemon::start(
        dir,
        config,
        DaemonOptions {
            node: NODE_NAME.into(),
            log: "warn".into(),
            // As deploy/thick runs it (`--chroot-dir=/hostroot`): every delegate is started
            // chrooted into the host's root, which is `/` here.
            chroot_dir: Some("/".into()),
            ..Default::default()
        },
    )
}

/// Peak and current RSS (KiB) of a running process: `VmHWM` and `VmRSS` of /proc/<pid>/status.
fn proc_rss(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

#[derive(Default, serde::Serialize)]
struct Samples {
    add: Vec<f64>,
    check: Vec<f64>,
    del: Vec<f64>,
    base_add: Vec<f64>,
    base_check: Vec<f64>,
    base_del: Vec<f64>,
}

#[derive(serde::Serialize)]
struct ScenarioReport {
    mode: ModeArg,
    networks: usize,
    tls: bool,
    latency_ms: u64,
    samples: Samples,
    /// Peak RSS of the plugin the runtime execs (`plexus` or `plexus-shim`).
    rss_kib_add: u64,
    rss_kib_del: u64,
    /// Thick mode: plexusd's peak RSS over the scenario so far.
    daemon_peak_rss_kib: Option<u64>,
    api_requests_add: usize,
    api_requests_del: usize,
    api_bytes_add: usize,
    /// Thick mode: plexusd's own time per ADD (ms), from its `/metrics`: request time from
    /// receipt to answer minus the time its delegates ran. What the shim's exec and the socket
    /// add comes on top.
    daemon_own_ms_add: Option<f64>,
    /// Thick mode: of that, the time spent waiting on the API server (the status PATCH) per ADD.
    daemon_api_ms_add: Option<f64>,
}

/// Sum over every series of `name` whose labels include `verb="<verb>"` in a Prometheus text
/// exposition.
fn metric_sum(text: &str, name: &str, verb: &str) -> f64 {
    let label = format!("verb=\"{verb}\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with('{') && rest.contains(&label))
        .filter_map(|rest| rest.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// plexusd's time so far, in seconds, for CNI `verb`.
#[derive(Debug, Clone, Copy)]
struct DaemonTimes {
    request: f64,
    delegates: f64,
    requests: f64,
    /// Waiting on the API server, whatever the CNI verb (only ADD patches the pod status).
    api: f64,
}

fn daemon_times(d: &Daemon, verb: &str) -> Result<DaemonTimes> {
    let (_, text) = d.health_get("/metrics")?;
    let api = text
        .lines()
        .filter_map(|l| l.strip_prefix("plexusd_api_wait_seconds_sum{"))
        .filter_map(|rest| rest.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    Ok(DaemonTimes {
        request: metric_sum(&text, "plexusd_request_duration_seconds_sum", verb),
        delegates: metric_sum(&text, "plexusd_delegate_duration_seconds_sum", verb),
        requests: metric_sum(&text, "plexusd_request_duration_seconds_count", verb),
        api,
    })
}

fn run_scenario(s: &Scenario, samples: usize, latency: Duration) -> Result<ScenarioReport> {
    s.api.set_latency(latency);
    let uid = s.api.get_pod("default", "bench").context("pod")?["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut out = Samples::default();
    let (mut req_add, mut req_del, mut bytes_add) = (0, 0, 0);
    let before = s
        .daemon
        .as_ref()
        .map(|d| daemon_times(d, "ADD"))
        .transpose()?;
    // The API wait is read around the ADDs only (DEL and CHECK make no request, but a CHECK
    // must not be counted should that change).
    let mut api_ms_add = Vec::new();
    for i in 0..samples {
        let ns = NetNs::new("pxbn")?;
        let cid = format!("b{}-{i}", s.n);
        let bcid = format!("base{}-{i}", s.n);
        let mut results = Vec::new();
        // Alternate which goes first, so that neither always pays for the other's leftovers (the
        // kernel tears veths down asynchronously).
        let plugin_first = i % 2 == 0;
        if !plugin_first {
            out.base_add
                .push(ms(s.baseline("ADD", &bcid, ns.path(), &mut results)?));
            out.base_check
                .push(ms(s.baseline("CHECK", &bcid, ns.path(), &mut results)?));
            out.base_del
                .push(ms(s.baseline("DEL", &bcid, ns.path(), &mut results)?));
        }
        s.api.clear_requests();
        let api_before = s
            .daemon
            .as_ref()
            .map(|d| daemon_times(d, "ADD"))
            .transpose()?;
        out.add
            .push(ms(s.call("ADD", &cid, ns.path(), "bench", &uid)?));
        if let (Some(d), Some(b)) = (&s.daemon, api_before) {
            api_ms_add.push((daemon_times(d, "ADD")?.api - b.api) * 1000.0);
        }
        let reqs = s.cni_requests();
        req_add = reqs.len();
        bytes_add = reqs
            .iter()
            .map(|r| r.request_bytes + r.response_bytes)
            .sum();
        out.check
            .push(ms(s.call("CHECK", &cid, ns.path(), "bench", &uid)?));
        s.api.clear_requests();
        out.del
            .push(ms(s.call("DEL", &cid, ns.path(), "bench", &uid)?));
        req_del = s.cni_requests().len();
        if plugin_first {
            out.base_add
                .push(ms(s.baseline("ADD", &bcid, ns.path(), &mut results)?));
            out.base_check
                .push(ms(s.baseline("CHECK", &bcid, ns.path(), &mut results)?));
            out.base_del
                .push(ms(s.baseline("DEL", &bcid, ns.path(), &mut results)?));
        }
    }
    let daemon_own_ms_add = match (&s.daemon, before) {
        (Some(d), Some(b)) => {
            let a = daemon_times(d, "ADD")?;
            Some(
                ((a.request - b.request) - (a.delegates - b.delegates))
                    / (a.requests - b.requests).max(1.0)
                    * 1000.0,
            )
        }
        _ => None,
    };
    let daemon_api_ms_add =
        (!api_ms_add.is_empty()).then(|| api_ms_add.iter().sum::<f64>() / api_ms_add.len() as f64);
    let ns = NetNs::new("pxbr")?;
    let (rss_kib_add, rss_kib_del) = s.rss(ns.path(), &uid)?;
    let daemon_peak_rss_kib = match s.daemon.as_ref().and_then(Daemon::pid) {
        Some(pid) => Some(proc_rss(pid)?.0),
        None => None,
    };
    Ok(ScenarioReport {
        mode: s.mode,
        networks: s.n,
        tls: s.tls,
        latency_ms: latency.as_millis() as u64,
        samples: out,
        rss_kib_add,
        rss_kib_del,
        daemon_peak_rss_kib,
        api_requests_add: req_add,
        api_requests_del: req_del,
        api_bytes_add: bytes_add,
        daemon_own_ms_add,
        daemon_api_ms_add,
    })
}

#[derive(serde::Serialize)]
struct Throughput {
    /// "thin", "thick", or "bare" (the delegates exec'd directly).
    what: &'static str,
    /// Which round of `--rounds` this run belongs to.
    round: usize,
    pods: usize,
    parallel: usize,
    add_total_ms: f64,
    add_p99_ms: f64,
    del_total_ms: f64,
    del_p99_ms: f64,
    per_pod_add_ms: Vec<f64>,
    per_pod_del_ms: Vec<f64>,
    /// CPU time the whole machine spent per pod ADD (every process and the kernel: delegates,
    /// shims, plexusd, the fake API server, the bench itself), from /proc/stat. With both cores
    /// busy it moves with the total; when it grows less than the total, the time went to waiting
    /// (thread and process wake-ups), not to work.
    add_cpu_ms_per_pod: f64,
    /// Thick mode: plexusd's own CPU time per pod ADD, from /proc/<pid>/stat.
    add_daemon_cpu_ms_per_pod: Option<f64>,
}

/// CPU time (ms) the machine has spent busy since boot: user, nice, system, irq and softirq of
/// the first line of /proc/stat (idle, iowait and steal left out).
fn machine_busy_ms() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    ensure!(f.len() >= 7, "short /proc/stat line: {line}");
    let busy = f[0] + f[1] + f[2] + f[5] + f[6];
    Ok(busy as f64 * 1000.0 / clock_ticks())
}

/// Waits (at most `limit`) until the machine is idle: under 10% busy over a quarter of a second.
/// The kernel tears network namespaces and veths down in the background (kworkers) for a while
/// after the previous run deleted its 110, and that work would otherwise be charged to whichever
/// run comes next.
fn settle(limit: Duration) -> Result<()> {
    const WINDOW: Duration = Duration::from_millis(250);
    if limit.is_zero() {
        return Ok(());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let before = machine_busy_ms()?;
        std::thread::sleep(WINDOW);
        let busy = (machine_busy_ms()? - before) / (ms(WINDOW) * cores);
        if busy < 0.10 {
            return Ok(());
        }
    }
    eprintln!("bench: the machine did not settle within {limit:?}; measuring anyway");
    Ok(())
}

/// User + system CPU time (ms) of process `pid` so far, from /proc/<pid>/stat.
fn process_cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are space-separated.
    let rest = stat.rsplit_once(')').context("/proc/pid/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    ensure!(f.len() > 13, "short /proc/{pid}/stat");
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 * 1000.0 / clock_ticks())
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// `pods` pods with 1 network each (HTTPS), ADDed `parallel` at a time, then DELed, through the
/// plugin of `mode`, or through the bare delegates when `mode` is `None`.
fn throughput(
    pods: usize,
    parallel: usize,
    mode: Option<ModeArg>,
    settle_limit: Duration,
) -> Result<Throughput> {
    let s = Scenario::new(1, true, mode.unwrap_or(ModeArg::Thin))?;
    let uids: Vec<String> = (0..pods)
        .map(|i| s.pod(&format!("tp-{i}"), "net-0"))
        .collect::<Result<_>>()?;
    let nss: Vec<NetNs> = (0..pods)
        .map(|_| NetNs::new("pxtp"))
        .collect::<Result<_>>()?;
    let results: Vec<std::sync::Mutex<Vec<Value>>> =
        (0..pods).map(|_| std::sync::Mutex::default()).collect();
    let one = |command: &str, i: usize| -> Result<Duration> {
        let cid = format!("tp{i}");
        match mode {
            Some(_) => s.call(command, &cid, nss[i].path(), &format!("tp-{i}"), &uids[i]),
            None => {
                let mut r = results[i].lock().expect("lock");
                s.baseline(command, &cid, nss[i].path(), &mut r)
            }
        }
    };
    let run = |command: &str| -> Result<(f64, Vec<f64>)> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let lat = std::sync::Mutex::new(Vec::new());
        let start = Instant::now();
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..parallel)
                .map(|_| {
                    sc.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            if i >= pods {
                                return Ok(());
                            }
                            let d = one(command, i)?;
                            lat.lock().expect("lock").push(ms(d));
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("worker"))
        })?;
        Ok((ms(start.elapsed()), lat.into_inner().expect("lock")))
    };
    let daemon = s.daemon.as_ref().and_then(Daemon::pid);
    settle(settle_limit)?;
    let (busy, daemon_cpu) = (machine_busy_ms()?, daemon.map(process_cpu_ms).transpose()?);
    let (add_total_ms, per_pod_add_ms) = run("ADD")?;
    let add_cpu_ms_per_pod = (machine_busy_ms()? - busy) / pods as f64;
    let add_daemon_cpu_ms_per_pod = match (daemon, daemon_cpu) {
        (Some(pid), Some(before)) => Some((process_cpu_ms(pid)? - before) / pods as f64),
        _ => None,
    };
    settle(settle_limit)?;
    let (del_total_ms, per_pod_del_ms) = run("DEL")?;
    Ok(Throughput {
        what: mode.map_or("bare", ModeArg::name),
        round: 0,
        pods,
        parallel,
        add_total_ms,
        add_p99_ms: percentile(&per_pod_add_ms, 0.99),
        del_total_ms,
        del_p99_ms: percentile(&per_pod_del_ms, 0.99),
        per_pod_add_ms,
        per_pod_del_ms,
        add_cpu_ms_per_pod,
        add_daemon_cpu_ms_per_pod,
    })
}

#[derive(serde::Serialize)]
struct MemoryPoint {
    pods: usize,
    nads: usize,
    /// From the daemon's start to its socket (caches synced).
    sync_ms: f64,
    rss_kib: u64,
    peak_rss_kib: u64,
}

/// A pod as a Deployment's ReplicaSet creates it and the kubelet reports it, the size a real
/// API server serves (managed fields included), bound to the bench's node.
fn realistic_pod(ns: &str, i: usize, networks: &str) -> Value {
    let app = format!("app-{}", i % 50);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": format!("{app}-7d9c5b6f4-{i:05}"), "generateName": format!("{app}-7d9c5b6f4-"),
        "namespace": ns,
        "labels": {"app": app, "pod-template-hash": "7d9c5b6f4", "tier": "backend"},
        "annotations": {"k8s.v1.cni.cncf.io/networks": networks,
            "kubectl.kubernetes.io/restartedAt": "2026-11-30T10:00:00Z"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": format!("{app}-7d9c5b6f4"), "uid": "6f1c0e0a-8d5e-4c7e-9a57-2b1d1c0f3e11",
            "controller": true, "blockOwnerDeletion": true}],
        "managedFields": [
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
             "time": "2026-11-30T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {
                "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {},
                    "f:pod-template-hash": {}, "f:tier": {}}, "f:ownerReferences": {".": {},
                    "k:{\"uid\":\"6f1c0e0a-8d5e-4c7e-9a57-2b1d1c0f3e11\"}": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"main\"}": {".": {}, "f:image": {},
                    "f:name": {}, "f:ports": {}, "f:resources": {}}}}}},
            {"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
             "time": "2026-11-30T10:00:05Z", "fieldsType": "FieldsV1", "subresource": "status",
             "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {},
                "f:hostIP": {}, "f:phase": {}, "f:podIP": {}, "f:podIPs": {}, "f:startTime": {}}}}]},
    "spec": {
        "nodeName": NODE_NAME, "serviceAccountName": "default", "restartPolicy": "Always",
        "containers": [{"name": "main", "image": format!("registry.example.org/{app}:1.4.2"),
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "POD_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
            "volumeMounts": [{"name": "kube-api-access", "readOnly": true,
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
        "volumes": [{"name": "kube-api-access", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 300}]},
    "status": {"phase": "Running", "hostIP": "192.0.2.10", "podIP": format!("10.244.{}.{}", i / 250 % 250, i % 250 + 2),
        "startTime": "2026-11-30T10:00:01Z",
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
        "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0,
            "image": format!("registry.example.org/{app}:1.4.2"),
            "containerID": format!("containerd://{:064x}", i),
            "state": {"running": {"startedAt": "2026-11-30T10:00:04Z"}}}]}})
}

/// plexusd idle with `pods` pods (bound to its node) and `nads` NADs in its caches, spread over
/// 10 namespaces: how long its caches take to sync, and its RSS once idle.
fn memory_point(pods: usize, nads: usize) -> Result<MemoryPoint> {
    let node = Node::new()?;
    let api = FakeApiServer::start(FakeApiOptions::default())?;
    let kubeconfig = api.write_kubeconfig(&node.root.path().join("kube"))?;
    let cluster = node.write_cluster_file("1.0.0")?;
    let namespaces = 10;
    for j in 0..nads {
        let name = format!("net-{j}");
        let conf = node.macvlan_config(&name, &format!("10.{}.{}.0/24", 100 + j / 250, j % 250));
        api.create_nad(
            &format!("ns-{}", j % namespaces),
            &name,
            Some(&conf.to_string()),
        );
    }
    for i in 0..pods {
        let ns = format!("ns-{}", i % namespaces);
        api.create_pod(realistic_pod(&ns, i, &format!("net-{}", i % nads.max(1))));
    }
    let config = node.plexus_config(
        cluster.to_str().context("path")?,
        Some(&kubeconfig),
        json!({"logLevel": "error"}),
    );
    let start = Instant::now();
    let d = start_daemon(&node.root.path().join("plexusd"), &config)?;
    let sync_ms = ms(start.elapsed());
    // The socket (what start_daemon waits for) appears once the caches have synced.
    let status = d.status()?;
    ensure!(
        status["caches"]["pods"]["objects"].as_u64() == Some(pods as u64)
            && status["caches"]["nads"]["objects"].as_u64() == Some(nads as u64),
        "plexusd's caches do not hold {pods} pods and {nads} NADs: {status}"
    );
    // Idle: what a node pays between pod starts, after the start-up garbage is returned.
    std::thread::sleep(Duration::from_secs(2));
    let (peak_rss_kib, rss_kib) = proc_rss(d.pid().context("plexusd pid")?)?;
    Ok(MemoryPoint {
        pods,
        nads,
        sync_ms,
        rss_kib,
        peak_rss_kib,
    })
}

fn version_cost(bin: &Path, samples: usize) -> Result<Vec<f64>> {
    (0..samples)
        .map(|_| {
            let start = Instant::now();
            let out = exec_plugin(
                bin,
                &Call {
                    command: "VERSION",
                    container_id: "",
                    netns: None,
                    ifname: "",
                    args: String::new(),
                    config: &json!({"cniVersion": "1.0.0"}),
                },
                CNI_BIN_DIR,
            )?;
            ensure!(out.code == 0, "VERSION failed: {out:?}");
            Ok(ms(start.elapsed()))
        })
        .collect()
}

fn row(r: &ScenarioReport) -> String {
    let s = &r.samples;
    // Each plugin sample was taken next to a baseline sample (same netns, alternating which went
    // first), so the overhead and the ratio are medians over those pairs: drift of the machine's
    // speed over the run cancels out, which the difference of two medians does not do.
    let f = |p: &[f64], b: &[f64]| {
        let diffs: Vec<f64> = p.iter().zip(b).map(|(p, b)| p - b).collect();
        let ratios: Vec<f64> = p.iter().zip(b).map(|(p, b)| p / b).collect();
        format!(
            "{:.1} | {:.1} | {:+.1} | {:.2}x",
            median(p),
            median(b),
            median(&diffs),
            median(&ratios)
        )
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} / {} | {} | {} |",
        r.mode.name(),
        r.networks,
        if r.tls { "https" } else { "http" },
        r.latency_ms,
        f(&s.add, &s.base_add),
        f(&s.del, &s.base_del),
        f(&s.check, &s.base_check),
        r.rss_kib_add.max(r.rss_kib_del) as f64 / 1024.0,
        r.daemon_peak_rss_kib
            .map_or("–".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)),
        r.api_requests_add,
        r.api_requests_del,
        r.api_bytes_add,
        match (r.daemon_own_ms_add, r.daemon_api_ms_add) {
            (Some(own), Some(api)) => format!("{own:.2} | {api:.2}"),
            _ => "– | –".to_owned(),
        }
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    let memory: Vec<(usize, usize)> = args
        .memory
        .iter()
        .filter(|m| m.as_str() != "none" && !m.is_empty())
        .map(|m| {
            let (p, n) = m.split_once(':').context("--memory PODS:NADS")?;
            Ok((p.parse()?, n.parse()?))
        })
        .collect::<Result<_>>()?;
    let mut reports = Vec::new();
    for &n in &args.networks {
        for &mode in &args.modes {
            for (tls, latencies) in [(false, &[0_u64, 10][..]), (true, &[0][..])] {
                let s = Scenario::new(n, tls, mode)?;
                for &latency in latencies {
                    eprintln!(
                        "bench: {} mode, {n} networks, tls {tls}, {latency} ms API latency, {} samples",
                        mode.name(),
                        args.samples
                    );
                    reports.push(run_scenario(
                        &s,
                        args.samples,
                        Duration::from_millis(latency),
                    )?);
                }
            }
        }
    }
    let mut tps = Vec::new();
    if args.pods > 0 {
        let whats: Vec<Option<ModeArg>> =
            args.modes.iter().copied().map(Some).chain([None]).collect();
        for round in 0..args.rounds.max(1) {
            let mut order = whats.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for mode in order {
                eprintln!(
                    "bench: throughput round {}, {}, {} pods",
                    round + 1,
                    mode.map_or("bare", ModeArg::name),
                    args.pods
                );
                let mut t = throughput(args.pods, 8, mode, Duration::from_secs(args.settle))?;
                t.round = round;
                tps.push(t);
            }
        }
    }
    let mut curve = Vec::new();
    if args.modes.contains(&ModeArg::Thick) {
        for &(pods, nads) in &memory {
            eprintln!("bench: plexusd memory with {pods} pods and {nads} NADs");
            curve.push(memory_point(pods, nads)?);
        }
    }
    let bins: Vec<(&str, PathBuf)> = args
        .modes
        .iter()
        .flat_map(|m| match m {
            ModeArg::Thin => vec!["plexus"],
            ModeArg::Thick => vec!["plexus-shim", "plexusd"],
        })
        .map(|b| (b, bin_path(b)))
        .collect();
    let mut versions = Vec::new();
    for (name, bin) in bins.iter().filter(|(n, _)| *n != "plexusd") {
        versions.push((*name, version_cost(bin, args.samples)?));
    }

    println!(
        "### ADD / DEL / CHECK, median of {} runs (ms); baseline = the same delegates exec'd directly; overhead and ratio = medians over the (plugin, baseline) pairs taken side by side\n",
        args.samples
    );
    println!(
        "| mode | networks | API | API latency ms | ADD | baseline ADD | overhead | ratio | DEL | baseline DEL | overhead | ratio | CHECK | baseline CHECK | overhead | ratio | plugin peak RSS MiB | plexusd peak RSS MiB | API requests ADD / DEL | API bytes per ADD | plexusd own ms per ADD | of which API wait ms |"
    );
    println!(
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in &reports {
        println!("{}", row(r));
    }
    if !tps.is_empty() {
        let rounds = args.rounds.max(1);
        println!(
            "\n### Throughput: {} pods with 1 network, {} at a time (https); medians of {rounds} rounds\n",
            args.pods, 8
        );
        println!(
            "| | ADD total ms | vs bare | ADD p99 per pod ms | DEL total ms | vs bare | DEL p99 per pod ms | machine CPU ms per ADD | vs bare | of which plexusd |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let mut names: Vec<&str> = Vec::new();
        for t in &tps {
            if !names.contains(&t.what) {
                names.push(t.what);
            }
        }
        for what in names {
            let runs: Vec<&Throughput> = tps.iter().filter(|t| t.what == what).collect();
            let of = |f: fn(&Throughput) -> f64| runs.iter().map(|t| f(t)).collect::<Vec<_>>();
            // Each round's ratio against the bare run of the same round.
            let vs = |f: fn(&Throughput) -> f64| {
                let ratios: Vec<f64> = runs
                    .iter()
                    .filter_map(|t| {
                        tps.iter()
                            .find(|b| b.what == "bare" && b.round == t.round)
                            .map(|b| f(t) / f(b))
                    })
                    .collect();
                if ratios.is_empty() {
                    "–".to_owned()
                } else {
                    format!("{:.2}x", median(&ratios))
                }
            };
            let daemon_cpu: Vec<f64> = runs
                .iter()
                .filter_map(|t| t.add_daemon_cpu_ms_per_pod)
                .collect();
            println!(
                "| {what} | {:.0} | {} | {:.1} | {:.0} | {} | {:.1} | {:.2} | {} | {} |",
                median(&of(|t| t.add_total_ms)),
                vs(|t| t.add_total_ms),
                median(&of(|t| t.add_p99_ms)),
                median(&of(|t| t.del_total_ms)),
                vs(|t| t.del_total_ms),
                median(&of(|t| t.del_p99_ms)),
                median(&of(|t| t.add_cpu_ms_per_pod)),
                vs(|t| t.add_cpu_ms_per_pod),
                if daemon_cpu.is_empty() {
                    "–".to_owned()
                } else {
                    format!("{:.2}", median(&daemon_cpu))
                },
            );
        }
    }
    if !curve.is_empty() {
        println!(
            "\n### plexusd memory: idle, with its caches holding (pods bound to its node, NADs)\n"
        );
        println!(
            "| pods | NADs | caches synced after ms | RSS MiB | peak RSS MiB |\n|---|---|---|---|---|"
        );
        for p in &curve {
            println!(
                "| {} | {} | {:.0} | {:.1} | {:.1} |",
                p.pods,
                p.nads,
                p.sync_ms,
                p.rss_kib as f64 / 1024.0,
                p.peak_rss_kib as f64 / 1024.0
            );
        }
    }
    println!("\n### Startup and size\n");
    println!("| binary | VERSION call, median ms | bytes |\n|---|---|---|");
    let mut sizes = Map::new();
    for (name, bin) in &bins {
        let size = std::fs::metadata(bin)?.len();
        sizes.insert((*name).to_owned(), json!(size));
        let v = versions
            .iter()
            .find(|(n, _)| n == name)
            .map_or("–".to_owned(), |(_, v)| format!("{:.2}", median(v)));
        println!("| `{name}` | {v} | {size} |");
    }

    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let raw = json!({
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "binary_bytes": sizes, "scenarios": reports, "throughput": tps, "memory": curve,
        "version_ms": versions.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    });
    std::fs::write(&args.json, serde_json::to_vec_pretty(&raw)?)?;
    eprintln!("bench: raw samples in {}", args.json.display());
    Ok(())
}
