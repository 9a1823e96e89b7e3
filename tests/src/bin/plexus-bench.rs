//! `plexus-bench`: whole-process benchmarks of the real `plexus` binary against a baseline of the
//! same delegates exec'd directly, measured in the same run (hack/bench.sh drives it).
//!
//! Figures: ADD/CHECK/DEL wall time for 0, 1, 4 and 16 annotation networks (bridge + macvlan +
//! host-local), with 0 and 10 ms of API latency; peak RSS of `plexus`; API requests and bytes per
//! ADD/DEL; 110 pods added 8 at a time; the cost of a VERSION call; binary sizes.

// The bench prints its report on stdout by design.
#![allow(clippy::print_stdout)]

use anyhow::{Context, Result, ensure};
use clap::Parser;
use plexus_cni::NetworkConfig;
use plexus_e2e::cni::{CNI_BIN_DIR, Call, Node, exec_plexus, k8s_args};
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
    /// Where to write every raw sample as JSON.
    #[arg(long, default_value = "target/bench/plexus-bench.json")]
    json: PathBuf,
}

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

/// A scenario: a node, an API server and a pod asking for `n` networks.
struct Scenario {
    /// Kept for its bridges, veths and directories, which the configs point at.
    _node: Node,
    api: FakeApiServer,
    config: Value,
    delegates: Delegates,
    n: usize,
    tls: bool,
}

impl Scenario {
    /// `tls`: HTTPS with a bearer token file and a CA, as on a real node.
    fn new(n: usize, tls: bool) -> Result<Self> {
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
        let config = node.plexus_config(
            cluster.to_str().context("path")?,
            Some(&kubeconfig),
            json!({"logLevel": "error"}),
        );
        let scenario = Self {
            _node: node,
            api,
            config,
            delegates: Delegates { list },
            n,
            tls,
        };
        scenario.pod("bench", &names.join(","));
        Ok(scenario)
    }

    fn pod(&self, name: &str, networks: &str) -> String {
        let mut meta = json!({"name": name, "namespace": "default"});
        if !networks.is_empty() {
            meta["annotations"] = json!({"k8s.v1.cni.cncf.io/networks": networks});
        }
        let pod = self
            .api
            .create_pod(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta}));
        pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn plexus(
        &self,
        command: &str,
        cid: &str,
        ns: &Path,
        pod: &str,
        uid: &str,
    ) -> Result<Duration> {
        let start = Instant::now();
        let out = exec_plexus(&Call {
            command,
            container_id: cid,
            netns: Some(ns),
            ifname: "eth0",
            args: k8s_args("default", pod, uid, cid),
            config: &self.config,
        })?;
        let took = start.elapsed();
        ensure!(out.code == 0, "plexus {command} failed: {out:?}");
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

    /// Peak RSS (KiB) of one plexus ADD and one DEL, from GNU time.
    fn rss(&self, ns: &Path, uid: &str) -> Result<(u64, u64)> {
        let mut peaks = Vec::new();
        for command in ["ADD", "DEL"] {
            let tmp = tempfile::NamedTempFile::new()?;
            let mut cmd = std::process::Command::new("/usr/bin/time");
            cmd.args(["-f", "%M", "-o"])
                .arg(tmp.path())
                .arg(plexus_e2e::cni::plexus_bin());
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
                "plexus {command} under /usr/bin/time failed"
            );
            peaks.push(std::fs::read_to_string(tmp.path())?.trim().parse::<u64>()?);
        }
        Ok((peaks[0], peaks[1]))
    }
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
    networks: usize,
    tls: bool,
    latency_ms: u64,
    samples: Samples,
    rss_kib_add: u64,
    rss_kib_del: u64,
    api_requests_add: usize,
    api_requests_del: usize,
    api_bytes_add: usize,
}

fn run_scenario(s: &Scenario, samples: usize, latency: Duration) -> Result<ScenarioReport> {
    s.api.set_latency(latency);
    let uid = s.api.get_pod("default", "bench").context("pod")?["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut out = Samples::default();
    let (mut req_add, mut req_del, mut bytes_add) = (0, 0, 0);
    for i in 0..samples {
        let ns = NetNs::new("pxbn")?;
        let cid = format!("b{}-{i}", s.n);
        let bcid = format!("base{}-{i}", s.n);
        let mut results = Vec::new();
        // Alternate which goes first, so that neither always pays for the other's leftovers (the
        // kernel tears veths down asynchronously).
        let plexus_first = i % 2 == 0;
        if !plexus_first {
            out.base_add
                .push(ms(s.baseline("ADD", &bcid, ns.path(), &mut results)?));
            out.base_check
                .push(ms(s.baseline("CHECK", &bcid, ns.path(), &mut results)?));
            out.base_del
                .push(ms(s.baseline("DEL", &bcid, ns.path(), &mut results)?));
        }
        s.api.clear_requests();
        out.add
            .push(ms(s.plexus("ADD", &cid, ns.path(), "bench", &uid)?));
        let reqs = s.api.requests();
        req_add = reqs.len();
        bytes_add = reqs
            .iter()
            .map(|r| r.request_bytes + r.response_bytes)
            .sum();
        out.check
            .push(ms(s.plexus("CHECK", &cid, ns.path(), "bench", &uid)?));
        s.api.clear_requests();
        out.del
            .push(ms(s.plexus("DEL", &cid, ns.path(), "bench", &uid)?));
        req_del = s.api.requests().len();
        if plexus_first {
            out.base_add
                .push(ms(s.baseline("ADD", &bcid, ns.path(), &mut results)?));
            out.base_check
                .push(ms(s.baseline("CHECK", &bcid, ns.path(), &mut results)?));
            out.base_del
                .push(ms(s.baseline("DEL", &bcid, ns.path(), &mut results)?));
        }
    }
    let ns = NetNs::new("pxbr")?;
    let (rss_kib_add, rss_kib_del) = s.rss(ns.path(), &uid)?;
    Ok(ScenarioReport {
        networks: s.n,
        tls: s.tls,
        latency_ms: latency.as_millis() as u64,
        samples: out,
        rss_kib_add,
        rss_kib_del,
        api_requests_add: req_add,
        api_requests_del: req_del,
        api_bytes_add: bytes_add,
    })
}

#[derive(serde::Serialize)]
struct Throughput {
    pods: usize,
    parallel: usize,
    add_total_ms: f64,
    add_p99_ms: f64,
    del_total_ms: f64,
    del_p99_ms: f64,
    per_pod_add_ms: Vec<f64>,
    per_pod_del_ms: Vec<f64>,
}

fn throughput(pods: usize, parallel: usize) -> Result<Throughput> {
    let s = Scenario::new(1, true)?;
    let uids: Vec<String> = (0..pods)
        .map(|i| s.pod(&format!("tp-{i}"), "net-0"))
        .collect();
    let nss: Vec<NetNs> = (0..pods)
        .map(|_| NetNs::new("pxtp"))
        .collect::<Result<_>>()?;
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
                            let d = s.plexus(
                                command,
                                &format!("tp{i}"),
                                nss[i].path(),
                                &format!("tp-{i}"),
                                &uids[i],
                            )?;
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
    let (add_total_ms, per_pod_add_ms) = run("ADD")?;
    let (del_total_ms, per_pod_del_ms) = run("DEL")?;
    Ok(Throughput {
        pods,
        parallel,
        add_total_ms,
        add_p99_ms: percentile(&per_pod_add_ms, 0.99),
        del_total_ms,
        del_p99_ms: percentile(&per_pod_del_ms, 0.99),
        per_pod_add_ms,
        per_pod_del_ms,
    })
}

fn version_cost(samples: usize) -> Result<Vec<f64>> {
    (0..samples)
        .map(|_| {
            let start = Instant::now();
            let out = exec_plexus(&Call {
                command: "VERSION",
                container_id: "",
                netns: None,
                ifname: "",
                args: String::new(),
                config: &json!({"cniVersion": "1.0.0"}),
            })?;
            ensure!(out.code == 0, "VERSION failed: {out:?}");
            Ok(ms(start.elapsed()))
        })
        .collect()
}

fn row(r: &ScenarioReport) -> String {
    let s = &r.samples;
    let f = |p: &[f64], b: &[f64]| {
        let (mp, mb) = (median(p), median(b));
        format!("{mp:.1} | {mb:.1} | {:+.1} | {:.2}x", mp - mb, mp / mb)
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {:.1} | {} / {} | {} |",
        r.networks,
        if r.tls { "https" } else { "http" },
        r.latency_ms,
        f(&s.add, &s.base_add),
        f(&s.del, &s.base_del),
        f(&s.check, &s.base_check),
        r.rss_kib_add.max(r.rss_kib_del) as f64 / 1024.0,
        r.api_requests_add,
        r.api_requests_del,
        r.api_bytes_add
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut reports = Vec::new();
    for &n in &args.networks {
        for (tls, latencies) in [(false, &[0_u64, 10][..]), (true, &[0][..])] {
            let s = Scenario::new(n, tls)?;
            for &latency in latencies {
                eprintln!(
                    "bench: {n} networks, tls {tls}, {latency} ms API latency, {} samples",
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
    let tp = if args.pods > 0 {
        Some(throughput(args.pods, 8)?)
    } else {
        None
    };
    let version = version_cost(args.samples)?;
    let bin = plexus_e2e::cni::plexus_bin();
    let size = std::fs::metadata(&bin)?.len();

    println!(
        "### ADD / DEL / CHECK, median of {} runs (ms); baseline = the same delegates exec'd directly\n",
        args.samples
    );
    println!(
        "| networks | API | API latency ms | plexus ADD | baseline ADD | overhead | ratio | plexus DEL | baseline DEL | overhead | ratio | plexus CHECK | baseline CHECK | overhead | ratio | peak RSS MiB | API requests ADD / DEL | API bytes per ADD |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        println!("{}", row(r));
    }
    if let Some(tp) = &tp {
        println!(
            "\n### Throughput: {} pods with 1 network, {} at a time (https)\n",
            tp.pods, tp.parallel
        );
        println!("| | total ms | p99 per pod ms |\n|---|---|---|");
        println!("| ADD | {:.0} | {:.1} |", tp.add_total_ms, tp.add_p99_ms);
        println!("| DEL | {:.0} | {:.1} |", tp.del_total_ms, tp.del_p99_ms);
    }
    println!("\n### Startup and size\n");
    println!("| VERSION call, median ms | `plexus` binary bytes |\n|---|---|");
    println!("| {:.2} | {size} |", median(&version));

    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let raw = json!({
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "binary": bin, "binary_bytes": size, "scenarios": reports, "throughput": tp, "version_ms": version,
    });
    std::fs::write(&args.json, serde_json::to_vec_pretty(&raw)?)?;
    eprintln!("bench: raw samples in {}", args.json.display());
    Ok(())
}
