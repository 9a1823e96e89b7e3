//! Engine tests with recording fakes for the API and for delegate exec: the order, stdin and
//! environment of every delegate call, every API call, rollback and the cache.

#![allow(clippy::result_large_err)]

use plexus_cni::{CniEnv, Command};
use plexus_engine::testing::{Call, FakeDevices, FakeExec, FakeKube, FakeRoutes};
use plexus_engine::{Engine, EngineError, EventType, PlexusConfig};
use serde_json::{Value, json};
use std::collections::BTreeMap;

struct Bed {
    dir: tempfile::TempDir,
    exec: FakeExec,
    routes: FakeRoutes,
    devices: FakeDevices,
}

impl Bed {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            exec: FakeExec::default(),
            routes: FakeRoutes::default(),
            devices: FakeDevices::default(),
        }
    }
    fn config(&self, extra: Value) -> PlexusConfig {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": "plexus",
            "type": "plexus",
            "delegates": [{"cniVersion": "1.0.0", "name": "cluster", "type": "clusterplug"}],
            "cniDir": self.dir.path().join("cache"),
            "confDir": self.dir.path().join("conf"),
            "deviceInfoDir": self.dir.path().join("devinfo"),
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        PlexusConfig::from_map(c.as_object().unwrap()).unwrap()
    }
    fn env(&self, command: &str, ns: &str, pod: &str) -> CniEnv {
        let vars: BTreeMap<&str, String> = [
            ("CNI_COMMAND", command.to_owned()),
            ("CNI_CONTAINERID", "ctr1".to_owned()),
            ("CNI_NETNS", "/run/netns/x".to_owned()),
            ("CNI_IFNAME", "eth0".to_owned()),
            (
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};K8S_POD_UID=uid-1"),
            ),
            ("CNI_PATH", "/opt/cni/bin".to_owned()),
        ]
        .into_iter()
        .collect();
        CniEnv::from_lookup(|k| vars.get(k).cloned()).unwrap()
    }
    fn run<T>(
        &self,
        cfg: &PlexusConfig,
        command: &str,
        kube: &FakeKube,
        f: impl FnOnce(&Engine) -> T,
    ) -> T {
        self.run_as(cfg, command, "blue", "p", kube, f)
    }
    fn run_as<T>(
        &self,
        cfg: &PlexusConfig,
        command: &str,
        ns: &str,
        pod: &str,
        kube: &FakeKube,
        f: impl FnOnce(&Engine) -> T,
    ) -> T {
        let env = self.env(command, ns, pod);
        let engine = Engine {
            config: cfg,
            env: &env,
            exec: &self.exec,
            kube: Some(kube),
            routes: &self.routes,
            devices: Some(&self.devices),
        };
        f(&engine)
    }
    /// Every file in the cache directory (entries, previous generations, locks, temp files).
    fn all_cache_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path().join("cache"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
    /// The runtime's second DEL (containerd's RemovePodSandbox): no netns.
    fn del_without_netns(&self, cfg: &PlexusConfig, kube: &FakeKube) -> Result<(), EngineError> {
        let mut env = self.env("DEL", "blue", "p");
        env.netns = None;
        Engine {
            config: cfg,
            env: &env,
            exec: &self.exec,
            kube: Some(kube),
            routes: &self.routes,
            devices: Some(&self.devices),
        }
        .del()
    }
    fn cache_files(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("cache"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect()
    }
}

fn macvlan(name: &str) -> Value {
    json!({"cniVersion": "0.4.0", "name": name, "type": "macvlan", "master": "eth1"})
}

#[test]
fn add_runs_cluster_then_annotation_networks_and_patches_status_once() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a, red/b@data0"))
        .with_nad("blue", "a", macvlan("a"))
        .with_nad("red", "b", json!({"cniVersion": "1.0.0", "type": "bridge"}));
    let cfg = bed.config(json!({}));
    let result = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    assert_eq!(
        bed.exec.trace(),
        vec![
            "ADD clusterplug eth0",
            "ADD macvlan net1",
            "ADD bridge data0"
        ]
    );
    assert_eq!(
        kube.log(),
        vec![
            "GET pod blue/p",
            "GET nads blue/a,red/b",
            "PATCH blue/p uid=uid-1"
        ]
    );
    // The cluster network's result, in the request's version.
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["interfaces"][0]["name"], "eth0");

    let calls = bed.exec.calls();
    // name and cniVersion injected; a NAD config without a name gets the NAD's name.
    assert_eq!(calls[1].stdin["name"], "a");
    assert_eq!(calls[1].stdin["cniVersion"], "0.4.0");
    assert_eq!(calls[2].stdin["name"], "b");
    assert_eq!(
        calls[1].stdin["master"], "eth1",
        "unknown keys pass through"
    );
    for c in &calls {
        assert!(
            c.args.contains("IgnoreUnknown=true") && c.args.contains("K8S_POD_NAME=p"),
            "{}",
            c.args
        );
    }

    let status: Vec<Value> = serde_json::from_str(&kube.patches.lock().unwrap()[0]).unwrap();
    let names: Vec<_> = status
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["interface"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![("cluster", "eth0"), ("blue/a", "net1"), ("red/b", "data0")]
    );
    assert_eq!(status[0]["default"], true);
    assert_eq!(bed.cache_files(), vec!["ctr1.json"]);
}

#[test]
fn a_failing_delegate_rolls_back_everything_in_reverse() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a, b"))
        .with_nad("blue", "a", macvlan("a"))
        .with_nad(
            "blue",
            "b",
            json!({"cniVersion": "0.4.0", "type": "failer"}),
        );
    bed.exec.fail_on("failer", Command::Add);
    let cfg = bed.config(json!({}));
    let err = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert_eq!(
        bed.exec.trace(),
        vec![
            "ADD clusterplug eth0",
            "ADD macvlan net1",
            "ADD failer net2",
            "DEL failer net2",
            "DEL macvlan net1",
            "DEL clusterplug eth0"
        ]
    );
    let msg = err.to_string();
    assert!(
        msg.contains("blue/p")
            && msg.contains("blue/b")
            && msg.contains("net2")
            && msg.contains("scripted failure"),
        "{msg}"
    );
    assert_eq!(err.code(), 100);
    assert!(bed.cache_files().is_empty());
    assert!(kube.log().iter().all(|l| !l.starts_with("PATCH")));
}

#[test]
fn a_del_failure_of_the_attachment_that_never_came_up_does_not_block_teardown() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a, b"))
        .with_nad("blue", "a", macvlan("a"))
        .with_nad(
            "blue",
            "b",
            json!({"cniVersion": "0.4.0", "type": "failer"}),
        );
    bed.exec.fail_on("failer", Command::Add);
    bed.exec.fail_on("failer", Command::Del);
    let cfg = bed.config(json!({}));
    let err = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert!(!err.to_string().contains("rollback incomplete"), "{err}");
    assert!(bed.cache_files().is_empty());

    // But a DEL failure of an attachment that was added keeps the entry for the runtime's retry.
    let bed = Bed::new();
    let cfg = bed.config(json!({}));
    bed.exec.fail_on("failer", Command::Add);
    bed.exec.fail_on("macvlan", Command::Del);
    let err = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert!(
        err.to_string()
            .contains("rollback incomplete, DEL will retry: blue/a (net1)"),
        "{err}"
    );
    assert_eq!(bed.cache_files(), vec!["ctr1.json"]);
    bed.exec.fail.lock().unwrap().clear();
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    let dels: Vec<String> = bed
        .exec
        .trace()
        .into_iter()
        .filter(|t| t.starts_with("DEL"))
        .collect();
    assert_eq!(
        dels,
        [
            "DEL failer net2",
            "DEL macvlan net1",
            "DEL clusterplug eth0",
            "DEL macvlan net1"
        ],
        "the rollback DELs everything in reverse; the retry only what the rollback could not"
    );
    assert!(bed.cache_files().is_empty());
}

#[test]
fn a_failed_status_write_rolls_back() {
    let bed = Bed::new();
    let mut kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    kube.fail_patch = true;
    let cfg = bed.config(json!({}));
    let err = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert_eq!(err.code(), 11);
    assert_eq!(
        bed.exec.trace()[2..],
        ["DEL macvlan net1", "DEL clusterplug eth0"]
    );
    assert!(bed.cache_files().is_empty());
}

#[test]
fn del_runs_from_the_cache_in_reverse_without_the_api_and_keeps_the_entry_on_failure() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    let added = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    let api_calls = kube.log().len();

    bed.exec.fail_on("macvlan", Command::Del);
    let err = bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap_err();
    assert!(matches!(err, EngineError::Del { .. }));
    assert!(err.to_string().contains("blue/a (net1)"), "{err}");
    // Both DELs ran although the first failed, and the entry is kept for the runtime's retry.
    assert_eq!(
        bed.exec.trace()[2..],
        ["DEL macvlan net1", "DEL clusterplug eth0"]
    );
    assert_eq!(bed.cache_files(), vec!["ctr1.json"]);

    bed.exec.fail.lock().unwrap().clear();
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    assert!(bed.cache_files().is_empty());
    // DEL twice is fine.
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    assert_eq!(kube.log().len(), api_calls, "DEL never calls the API");

    // DEL hands 0.4.0+ plugins the cached result as prevResult.
    let dels: Vec<Call> = bed
        .exec
        .calls()
        .into_iter()
        .filter(|c| c.command == Command::Del)
        .collect();
    let cluster_del = dels.iter().find(|c| c.plugin == "clusterplug").unwrap();
    assert_eq!(
        cluster_del.stdin["prevResult"]["interfaces"],
        added["interfaces"]
    );
}

#[test]
fn conflists_chain_prev_result_and_del_in_reverse() {
    let bed = Bed::new();
    let chain = json!({"cniVersion": "0.4.0", "name": "chain", "plugins": [
        {"type": "bridge", "bridge": "br0"},
        {"type": "tuning", "mtu": 1400}
    ]});
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("chain"))
        .with_nad("blue", "chain", chain);
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    assert_eq!(
        bed.exec.trace(),
        vec![
            "ADD clusterplug eth0",
            "ADD bridge net1",
            "ADD tuning net1",
            "DEL tuning net1",
            "DEL bridge net1",
            "DEL clusterplug eth0"
        ]
    );
    let calls = bed.exec.calls();
    assert!(calls[1].stdin.get("prevResult").is_none());
    assert_eq!(
        calls[2].stdin["prevResult"]["interfaces"][0]["name"],
        "net1"
    );
    assert_eq!(calls[2].stdin["name"], "chain");
    assert_eq!(calls[2].stdin["cniVersion"], "0.4.0");
    assert_eq!(calls[3].stdin["prevResult"], calls[2].stdin["prevResult"]);
}

#[test]
fn default_networks_are_skipped_by_namespace_not_by_pod_name() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("kube-system", "p", None)
        .with_pod("blue", "kube-system", None)
        .with_nad("kube-system", "extra", macvlan("extra"));
    let cfg = bed.config(json!({"defaultNetworks": ["extra"]}));
    bed.run_as(&cfg, "ADD", "kube-system", "p", &kube, |e| e.add())
        .unwrap();
    assert_eq!(bed.exec.trace(), vec!["ADD clusterplug eth0"]);
    bed.exec.calls.lock().unwrap().clear();
    // Multus compares the pod *name* with systemNamespaces (#1205); we compare the namespace.
    let env = bed.env("ADD", "blue", "kube-system");
    let mut env2 = env.clone();
    env2.container_id = "ctr2".into();
    let engine = Engine {
        config: &cfg,
        env: &env2,
        exec: &bed.exec,
        kube: Some(&kube),
        routes: &bed.routes,
        devices: Some(&bed.devices),
    };
    engine.add().unwrap();
    assert_eq!(
        bed.exec.trace(),
        vec!["ADD clusterplug eth0", "ADD macvlan net1"]
    );
}

#[test]
fn a_retried_add_tears_the_previous_attempt_down_first() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    assert_eq!(
        bed.exec.trace(),
        vec![
            "ADD clusterplug eth0",
            "ADD macvlan net1",
            "DEL macvlan net1",
            "DEL clusterplug eth0",
            "ADD clusterplug eth0",
            "ADD macvlan net1"
        ]
    );
}

fn corrupt(bed: &Bed, file: &str) {
    std::fs::write(
        bed.dir.path().join("cache").join(file),
        b"{\"kind\": \"plexusCacheV1\", trunc",
    )
    .unwrap();
}

fn dels_of(bed: &Bed) -> Vec<String> {
    bed.exec
        .trace()
        .into_iter()
        .filter(|t| t.starts_with("DEL"))
        .collect()
}

#[test]
fn add_on_a_corrupt_entry_fails_clearly_and_touches_nothing() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    std::fs::create_dir_all(bed.dir.path().join("cache")).unwrap();
    corrupt(&bed, "ctr1.json");
    let before = std::fs::read(bed.dir.path().join("cache/ctr1.json")).unwrap();
    let err = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert_eq!(err.code(), 102);
    let msg = err.to_string();
    assert!(
        msg.contains("ctr1") && msg.contains("corrupt") && msg.contains("DEL"),
        "{msg}"
    );
    assert!(bed.exec.trace().is_empty(), "no delegate may run");
    assert_eq!(
        std::fs::read(bed.dir.path().join("cache/ctr1.json")).unwrap(),
        before,
        "the entry is left as found"
    );
    assert!(kube.patches.lock().unwrap().is_empty());
}

#[test]
fn del_rebuilds_a_corrupt_entry_from_the_pod_and_its_nads() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    // Every generation lost (e.g. a disk that lies about fsync).
    corrupt(&bed, "ctr1.json");
    kube.log.lock().unwrap().clear();
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    assert_eq!(dels_of(&bed), ["DEL macvlan net1", "DEL clusterplug eth0"]);
    let calls = bed.exec.calls();
    for c in calls.iter().filter(|c| c.command == Command::Del) {
        assert!(c.stdin.get("prevResult").is_none(), "no prevResult: {c:?}");
        assert_eq!(c.netns.as_deref(), Some("/run/netns/x"));
    }
    assert_eq!(kube.log(), ["GET pod blue/p", "GET nads blue/a"]);
    assert!(
        bed.all_cache_files().is_empty(),
        "{:?}",
        bed.all_cache_files()
    );

    // With the annotations passed by the runtime, no pod GET is needed.
    let bed = Bed::new();
    let cfg = bed.config(json!({"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": "a"}}}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    corrupt(&bed, "ctr1.json");
    kube.log.lock().unwrap().clear();
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    assert_eq!(dels_of(&bed), ["DEL macvlan net1", "DEL clusterplug eth0"]);
    assert_eq!(kube.log(), ["GET nads blue/a"]);
    assert!(bed.all_cache_files().is_empty());
}

#[test]
fn del_of_a_corrupt_entry_with_the_api_down_is_try_again_later() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    corrupt(&bed, "ctr1.json");
    let down = FakeKube {
        unreachable: true,
        ..FakeKube::default()
    };
    let err = bed.run(&cfg, "DEL", &down, |e| e.del()).unwrap_err();
    assert_eq!(err.code(), 11, "{err}");
    assert!(dels_of(&bed).is_empty(), "nothing torn down half-way");
    assert_eq!(bed.cache_files(), ["ctr1.json"], "kept for the retry");
    // The runtime retries once the API server is back.
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    assert_eq!(dels_of(&bed), ["DEL macvlan net1", "DEL clusterplug eth0"]);
    assert!(bed.all_cache_files().is_empty());
}

#[test]
fn del_of_a_corrupt_entry_of_a_deleted_pod_tears_down_the_configured_networks() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    corrupt(&bed, "ctr1.json");
    bed.run(&cfg, "DEL", &FakeKube::default(), |e| e.del())
        .unwrap();
    assert_eq!(dels_of(&bed), ["DEL clusterplug eth0"]);
    assert!(bed.all_cache_files().is_empty());
}

/// Cuts ctr1's cache entry file to its first `lines` generations (the appends after them never
/// reached the disk), or, with `None`, cuts a few bytes off its last one.
fn tear_entry(bed: &Bed, lines: Option<usize>) {
    let path = bed.dir.path().join("cache/ctr1.json");
    let bytes = std::fs::read(&path).unwrap();
    let keep = match lines {
        Some(n) => bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(n - 1)
            .map_or(bytes.len(), |(i, _)| i),
        None => bytes.len() - 5,
    };
    std::fs::write(&path, &bytes[..keep]).unwrap();
}

#[test]
fn a_torn_entry_is_torn_down_from_its_last_readable_generation() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    // The last generation cut short: the one before it has the cluster network's result.
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    tear_entry(&bed, None);
    kube.log.lock().unwrap().clear();
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    assert_eq!(dels_of(&bed), ["DEL macvlan net1", "DEL clusterplug eth0"]);
    assert!(
        kube.log().is_empty(),
        "no API request: the cache still knew"
    );
    let del_cluster = bed.exec.calls().pop().unwrap();
    assert!(
        del_cluster.stdin.get("prevResult").is_some(),
        "{del_cluster:?}"
    );
    assert!(bed.all_cache_files().is_empty());

    // Only the durable generation on disk (a node crash before the kernel wrote the appends):
    // it was written before any delegate ran and lists every attachment (so both are torn
    // down), but holds no result, which DEL does without.
    let bed = Bed::new();
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    tear_entry(&bed, Some(1));
    kube.log.lock().unwrap().clear();
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    assert_eq!(dels_of(&bed), ["DEL macvlan net1", "DEL clusterplug eth0"]);
    assert!(kube.log().is_empty());
    let del_cluster = bed.exec.calls().pop().unwrap();
    assert!(
        del_cluster.stdin.get("prevResult").is_none(),
        "the fallback is the durable generation written before the delegates ran"
    );
    assert!(bed.all_cache_files().is_empty());
}

#[test]
fn add_del_del_and_a_failed_add_then_del_leave_no_file() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    assert!(
        bed.all_cache_files().is_empty(),
        "{:?}",
        bed.all_cache_files()
    );
    // containerd's RemovePodSandbox: a second DEL, without netns.
    bed.del_without_netns(&cfg, &kube).unwrap();
    assert!(
        bed.all_cache_files().is_empty(),
        "{:?}",
        bed.all_cache_files()
    );

    bed.exec.fail_on("macvlan", Command::Add);
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert!(
        bed.all_cache_files().is_empty(),
        "{:?}",
        bed.all_cache_files()
    );
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    bed.del_without_netns(&cfg, &kube).unwrap();
    assert!(
        bed.all_cache_files().is_empty(),
        "{:?}",
        bed.all_cache_files()
    );
}

#[test]
fn a_del_arriving_during_a_retried_add_waits_for_it() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    // The retried ADD tears the first attempt down, then blocks in its macvlan ADD.
    let gate = bed.exec.gate("macvlan", Command::Add);
    std::thread::scope(|s| {
        let add = s.spawn(|| bed.run(&cfg, "ADD", &kube, |e| e.add()));
        gate.wait_reached();
        let (tx, rx) = std::sync::mpsc::channel();
        let (bed, cfg, kube) = (&bed, &cfg, &kube);
        let del = s.spawn(move || {
            let r = bed.run(cfg, "DEL", kube, |e| e.del());
            tx.send(()).unwrap();
            r
        });
        // The DEL must queue behind the ADD's lock rather than run alongside it.
        let finished_early = rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_ok();
        gate.open();
        add.join().unwrap().unwrap();
        del.join().unwrap().unwrap();
        assert!(!finished_early, "DEL finished while the ADD held the lock");
    });
    assert_eq!(
        bed.exec.trace()[2..],
        [
            "DEL macvlan net1",
            "DEL clusterplug eth0",
            "ADD clusterplug eth0",
            "ADD macvlan net1",
            "DEL macvlan net1",
            "DEL clusterplug eth0"
        ]
    );
    assert!(
        bed.all_cache_files().is_empty(),
        "the DEL came last, so nothing is left: {:?}",
        bed.all_cache_files()
    );
}

#[test]
fn an_incomplete_rollback_shows_in_the_error_and_keeps_only_what_needs_a_del() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a, b"))
        .with_nad("blue", "a", macvlan("a"))
        .with_nad("blue", "b", macvlan("b"));
    let mut failing = kube;
    failing.fail_patch = true;
    bed.exec.fail_on("clusterplug", Command::Del);
    let cfg = bed.config(json!({}));
    let err = bed.run(&cfg, "ADD", &failing, |e| e.add()).unwrap_err();
    assert_eq!(err.code(), 11, "the cause's code: {err}");
    let EngineError::RollbackIncomplete { cause, report } = &err else {
        panic!("expected an incomplete rollback: {err:?}");
    };
    assert!(matches!(**cause, EngineError::Status { .. }), "{cause:?}");
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].network, "cluster");
    assert_eq!(report.failures[0].ifname, "eth0");
    let cni = err.to_cni_error("1.0.0");
    assert!(
        cni.msg.contains("network-status")
            && cni
                .msg
                .contains("rollback incomplete, DEL will retry: cluster (eth0)"),
        "{}",
        cni.msg
    );
    assert_eq!(
        dels_of(&bed),
        [
            "DEL macvlan net2",
            "DEL macvlan net1",
            "DEL clusterplug eth0"
        ]
    );
    // The runtime's DEL only retries the cluster network.
    bed.exec.heal("clusterplug", Command::Del);
    bed.run(&cfg, "DEL", &failing, |e| e.del()).unwrap();
    assert_eq!(dels_of(&bed)[3..], ["DEL clusterplug eth0"]);
    assert!(bed.all_cache_files().is_empty());
}

#[test]
fn gc_without_valid_attachments_is_invalid_and_touches_nothing() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    let files = bed.all_cache_files();
    let err = bed.run(&cfg, "GC", &kube, |e| e.gc()).unwrap_err();
    assert_eq!(err.code(), 7, "{err}");
    assert!(
        err.to_string().contains("cni.dev/valid-attachments"),
        "{err}"
    );
    assert_eq!(
        bed.exec.trace().len(),
        2,
        "no DEL, no GC: {:?}",
        bed.exec.trace()
    );
    assert_eq!(bed.all_cache_files(), files);
    // An explicit empty list is a different request: every attachment is stale.
    let gc_cfg = bed.config(json!({"cni.dev/valid-attachments": []}));
    bed.run(&gc_cfg, "GC", &kube, |e| e.gc()).unwrap();
    assert_eq!(dels_of(&bed), ["DEL macvlan net1", "DEL clusterplug eth0"]);
    assert!(
        bed.all_cache_files().is_empty(),
        "{:?}",
        bed.all_cache_files()
    );
}

#[test]
fn gc_sweeps_stale_lock_and_temp_files_only() {
    let bed = Bed::new();
    let kube = FakeKube::default().with_pod("blue", "p", None);
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    let dir = bed.dir.path().join("cache");
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let old = |name: &str| {
        let f = std::fs::File::create(dir.join(name)).unwrap();
        f.set_modified(hour_ago).unwrap();
    };
    old("killed.lock");
    old(".tmp-killed.AbCd12");
    std::fs::File::create(dir.join("fresh.lock")).unwrap();
    // The live pod's lock is old too, but its entry exists.
    std::fs::File::options()
        .write(true)
        .open(dir.join("ctr1.lock"))
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let gc_cfg = bed
        .config(json!({"cni.dev/valid-attachments": [{"containerID": "ctr1", "ifname": "eth0"}]}));
    bed.run(&gc_cfg, "GC", &kube, |e| e.gc()).unwrap();
    assert_eq!(
        bed.all_cache_files(),
        ["ctr1.json", "ctr1.lock", "fresh.lock"]
    );
}

#[test]
fn runtime_supplied_annotations_avoid_the_pod_get() {
    let bed = Bed::new();
    let kube = FakeKube::default().with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": "a"}}}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    assert_eq!(
        kube.log(),
        vec!["GET nads blue/a", "PATCH blue/p uid=uid-1"]
    );
}

#[test]
fn capability_requests_need_a_declaring_plugin_and_reach_only_it() {
    let bed = Bed::new();
    let chain = json!({"cniVersion": "1.0.0", "name": "c", "plugins": [
        {"type": "macvlan", "master": "eth1"},
        {"type": "tuning", "capabilities": {"mac": true}}
    ]});
    let ann = r#"[{"name": "c", "mac": "02:11:22:33:44:55", "cni-args": {"foo": "bar"}}, {"name": "plain", "portMappings": [{"hostPort": 8080, "containerPort": 80}]}]"#;
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some(ann))
        .with_nad("blue", "c", chain.clone())
        .with_nad("blue", "plain", macvlan("plain"));
    let cfg = bed.config(json!({}));
    let err = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert_eq!(err.code(), 7);
    assert!(
        err.to_string().contains("\"portMappings\"") && err.to_string().contains("blue/plain"),
        "{err}"
    );
    assert!(
        bed.exec.calls().is_empty(),
        "nothing runs when a request cannot be honoured"
    );

    let kube = FakeKube::default()
        .with_pod(
            "blue",
            "p",
            Some(r#"[{"name": "c", "mac": "02:11:22:33:44:55", "cni-args": {"foo": "bar"}}]"#),
        )
        .with_nad("blue", "c", chain);
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    let calls = bed.exec.calls();
    assert!(
        calls[1].stdin.get("runtimeConfig").is_none(),
        "macvlan did not declare mac"
    );
    assert_eq!(
        calls[2].stdin["runtimeConfig"],
        json!({"mac": "02:11:22:33:44:55"})
    );
    assert_eq!(calls[1].stdin["args"]["cni"]["foo"], "bar");
    assert_eq!(calls[2].stdin["args"]["cni"]["foo"], "bar");
    // Declared: runtimeConfig only, not CNI_ARGS.
    assert!(!calls[1].args.contains("MAC="), "{}", calls[1].args);
}

#[test]
fn ips_and_mac_without_the_capability_reach_the_delegate_in_cni_args() {
    let bed = Bed::new();
    let ann = r#"[{"name": "plain", "ips": ["10.1.1.21/24", "fd00::21/64"], "mac": "02:11:22:33:44:55"}, {"name": "other"}]"#;
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some(ann))
        .with_nad("blue", "plain", macvlan("plain"))
        .with_nad("blue", "other", macvlan("other"));
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    let calls = bed.exec.calls();
    assert!(
        calls[1]
            .args
            .ends_with(";IP=10.1.1.21/24,fd00::21/64;MAC=02:11:22:33:44:55")
            && calls[1].args.contains("K8S_POD_NAME=p"),
        "{}",
        calls[1].args
    );
    assert!(calls[1].stdin.get("runtimeConfig").is_none());
    // Only the attachment that asked gets them; the cluster network and the others do not.
    assert!(
        !calls[0].args.contains("IP=") && !calls[2].args.contains("IP="),
        "{calls:?}"
    );
    // DEL hands the delegate the same CNI_ARGS as its ADD (from the cache).
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    let calls = bed.exec.calls();
    let del = calls
        .iter()
        .find(|c| c.command == Command::Del && c.ifname == "net1")
        .unwrap();
    assert!(
        del.args
            .ends_with(";IP=10.1.1.21/24,fd00::21/64;MAC=02:11:22:33:44:55"),
        "{}",
        del.args
    );
}

#[test]
fn ips_with_the_capability_declared_reach_the_delegate_in_runtime_config_only() {
    let bed = Bed::new();
    let nad = json!({"cniVersion": "1.0.0", "name": "declared", "plugins": [
        {"type": "macvlan", "master": "eth1", "capabilities": {"ips": true},
         "ipam": {"type": "static"}}
    ]});
    let ann = r#"[{"name": "declared", "ips": ["10.1.1.21/24", "fd00::21/64"]}]"#;
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some(ann))
        .with_nad("blue", "declared", nad);
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    let calls = bed.exec.calls();
    assert_eq!(
        calls[1].stdin["runtimeConfig"],
        json!({"ips": ["10.1.1.21/24", "fd00::21/64"]})
    );
    // Declared: Multus's CNI_ARGS convention is only the fallback for undeclaring plugins.
    assert!(
        !calls[1].args.contains("IP=") && calls[1].args.contains("K8S_POD_NAME=p"),
        "{}",
        calls[1].args
    );
}

#[test]
fn missing_nad_fails_before_anything_runs() {
    let bed = Bed::new();
    let kube = FakeKube::default().with_pod("blue", "p", Some("ghost"));
    let cfg = bed.config(json!({}));
    let err = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert_eq!(err.code(), 103);
    assert_eq!(
        err.to_string(),
        "pod blue/p: network blue/ghost: network-attachment-definition blue/ghost not found"
    );
    assert!(bed.exec.calls().is_empty());
    assert!(bed.cache_files().is_empty());
}

#[test]
fn check_uses_the_cached_results_and_skips_old_versions() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a, old"))
        .with_nad("blue", "a", macvlan("a"))
        .with_nad("blue", "old", json!({"cniVersion": "0.3.1", "type": "ptp"}));
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    bed.run(&cfg, "CHECK", &kube, |e| e.check()).unwrap();
    let checks: Vec<String> = bed
        .exec
        .trace()
        .into_iter()
        .filter(|t| t.starts_with("CHECK"))
        .collect();
    assert_eq!(checks, vec!["CHECK clusterplug eth0", "CHECK macvlan net1"]);
    let check = bed
        .exec
        .calls()
        .into_iter()
        .find(|c| c.command == Command::Check && c.plugin == "macvlan")
        .unwrap();
    assert_eq!(check.stdin["prevResult"]["interfaces"][0]["name"], "net1");

    bed.exec.fail_on("macvlan", Command::Check);
    let err = bed.run(&cfg, "CHECK", &kube, |e| e.check()).unwrap_err();
    assert!(err.to_string().contains("blue/a (net1)"), "{err}");

    // CHECK of a container without an entry fails and leaves no lock file behind.
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    let err = bed.run(&cfg, "CHECK", &kube, |e| e.check()).unwrap_err();
    assert!(err.to_string().contains("no ADD is recorded"), "{err}");
    assert!(
        bed.all_cache_files().is_empty(),
        "{:?}",
        bed.all_cache_files()
    );
}

// ---- NPWG v1.3 / CNI 1.1.0 behaviour (issue 3) ----

/// The newest generation of ctr1's cache entry, as JSON.
fn cached(bed: &Bed) -> Value {
    let entry = plexus_engine::cache::Cache::new(bed.dir.path().join("cache"))
        .read("ctr1")
        .unwrap()
        .expect("an entry");
    serde_json::to_value(entry).unwrap()
}

#[test]
fn default_network_annotation_replaces_the_cluster_network() {
    let bed = Bed::new();
    let mut kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"))
        .with_nad(
            "kube-system",
            "alt",
            json!({"cniVersion": "1.0.0", "name": "alt", "type": "altplug"}),
        );
    kube.pods
        .get_mut(&("blue".into(), "p".into()))
        .unwrap()
        .annotations
        .insert("v1.multus-cni.io/default-network".into(), "alt".into());
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    assert_eq!(
        bed.exec.trace(),
        vec!["ADD altplug eth0", "ADD macvlan net1"]
    );
    assert_eq!(kube.log()[1], "GET nads kube-system/alt,blue/a");
    let status: Vec<Value> = serde_json::from_str(&kube.patches.lock().unwrap()[0]).unwrap();
    // Multus names the override `<multusNamespace>/<name>`, not by its config's name.
    assert_eq!(status[0]["name"], "kube-system/alt");
    assert_eq!(status[0]["default"], true);
}

#[test]
fn default_network_annotation_with_two_entries_is_invalid() {
    let bed = Bed::new();
    let mut kube = FakeKube::default().with_pod("blue", "p", None);
    kube.pods
        .get_mut(&("blue".into(), "p".into()))
        .unwrap()
        .annotations
        .insert("v1.multus-cni.io/default-network".into(), "a, b".into());
    let cfg = bed.config(json!({}));
    let e = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert_eq!(e.code(), 7, "{e}");
    assert!(
        e.to_string().contains("blue/p") && e.to_string().contains("exactly one"),
        "{e}"
    );
    assert!(bed.exec.calls().is_empty());
}

#[test]
fn default_route_moves_the_route_fixes_the_cache_and_reports_the_gateway() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod(
            "blue",
            "p",
            Some(r#"[{"name": "a", "default-route": ["10.0.2.1"]}]"#),
        )
        .with_nad(
            "blue",
            "a",
            json!({"cniVersion": "1.0.0", "name": "a", "type": "macvlan"}),
        );
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    assert_eq!(
        *bed.routes.log.lock().unwrap(),
        vec!["del V4 eth0", "replace net1 via 10.0.2.1"]
    );
    let entry = cached(&bed);
    assert_eq!(
        entry["attachments"][1]["result"]["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.0.2.1"}])
    );
    let status: Vec<Value> = serde_json::from_str(&kube.patches.lock().unwrap()[0]).unwrap();
    assert_eq!(status[1]["gateway"], json!(["10.0.2.1"]));
    assert!(status[0].get("gateway").is_none());
    // CHECK gets the fixed result as prevResult.
    bed.exec.calls.lock().unwrap().clear();
    bed.run(&cfg, "CHECK", &kube, |e| e.check()).unwrap();
    let calls = bed.exec.calls();
    assert_eq!(calls[1].stdin["prevResult"]["routes"][0]["gw"], "10.0.2.1");
}

#[test]
fn two_default_routes_of_one_family_fail_before_anything_runs() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod(
            "blue",
            "p",
            Some(r#"[{"name": "a", "default-route": ["10.0.2.1"]}, {"name": "b", "default-route": ["10.0.3.1"]}]"#),
        )
        .with_nad("blue", "a", macvlan("a"))
        .with_nad("blue", "b", macvlan("b"));
    let cfg = bed.config(json!({}));
    let e = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert_eq!(e.code(), 7, "{e}");
    assert!(
        e.to_string().contains("more than one IPv4 default-route"),
        "{e}"
    );
    assert!(bed.exec.calls().is_empty());
    assert!(bed.cache_files().is_empty());
}

#[test]
fn a_failed_route_change_rolls_back() {
    let mut bed = Bed::new();
    bed.routes.fail = true;
    let kube = FakeKube::default()
        .with_pod(
            "blue",
            "p",
            Some(r#"[{"name": "a", "default-route": ["10.0.2.1"]}]"#),
        )
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    let e = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert!(
        e.to_string().contains("setting the default route failed"),
        "{e}"
    );
    assert_eq!(
        bed.exec.trace(),
        vec![
            "ADD clusterplug eth0",
            "ADD macvlan net1",
            "DEL macvlan net1",
            "DEL clusterplug eth0"
        ]
    );
    assert!(bed.cache_files().is_empty());
    assert!(kube.patches.lock().unwrap().is_empty());
}

#[test]
fn a_mirror_pod_is_accepted_and_its_api_uid_guards_the_patch() {
    let bed = Bed::new();
    let mut kube = FakeKube::default().with_pod("blue", "p", None);
    {
        let pod = kube.pods.get_mut(&("blue".into(), "p".into())).unwrap();
        pod.uid = "mirror-uid".into();
        pod.annotations
            .insert("kubernetes.io/config.mirror".into(), "abc".into());
    }
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    assert_eq!(kube.log()[1], "PATCH blue/p uid=mirror-uid");
}

#[test]
fn a_missing_pod_is_retried_then_code_11_and_nothing_runs() {
    let bed = Bed::new();
    let kube = FakeKube::default();
    let cfg = bed.config(json!({}));
    let t = std::time::Instant::now();
    let e = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert_eq!(e.code(), 11, "{e}");
    assert!(
        e.to_string().contains("blue/p") && e.to_string().contains("3 tries"),
        "{e}"
    );
    assert_eq!(kube.log(), vec!["GET pod blue/p"; 3]);
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    assert!(bed.exec.calls().is_empty());
    assert!(
        kube.events.lock().unwrap().is_empty(),
        "no event for a pod that is not there"
    );
}

#[test]
fn events_report_success_and_failure_and_never_fail_the_add() {
    let bed = Bed::new();
    let mut kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    kube.fail_events = true;
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    let ev = kube.events.lock().unwrap()[0].clone();
    assert_eq!(ev.kind, EventType::Normal);
    assert_eq!(
        (ev.namespace.as_str(), ev.pod.as_str(), ev.uid.as_str()),
        ("blue", "p", "uid-1")
    );
    assert_eq!(
        ev.message,
        "eth0 10.0.1.5/24 from cluster, net1 10.0.2.5/24 from blue/a"
    );

    let bed = Bed::new();
    bed.exec.fail_on("macvlan", Command::Add);
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let e = bed
        .run(&cfg_for(&bed), "ADD", &kube, |e| e.add())
        .unwrap_err();
    let ev = kube.events.lock().unwrap()[0].clone();
    assert_eq!(ev.kind, EventType::Warning);
    assert_eq!(ev.reason, "AddFailed");
    assert_eq!(ev.message, e.to_string());

    let bed = Bed::new();
    let kube = FakeKube::default().with_pod("blue", "p", None);
    let cfg = bed.config(json!({"events": false}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    assert!(kube.events.lock().unwrap().is_empty());
}

fn cfg_for(bed: &Bed) -> PlexusConfig {
    bed.config(json!({}))
}

#[test]
fn status_checks_readiness_and_the_cluster_networks_own_status() {
    let bed = Bed::new();
    let kube = FakeKube::default();
    let missing = bed.dir.path().join("ready");
    let cfg = bed.config(json!({"readinessindicatorfile": missing}));
    let e = bed.run(&cfg, "STATUS", &kube, |e| e.status()).unwrap_err();
    assert_eq!(e.code(), 50, "{e}");
    std::fs::write(&missing, "").unwrap();
    bed.run(&cfg, "STATUS", &kube, |e| e.status()).unwrap();
    assert!(
        bed.exec.calls().is_empty(),
        "a 1.0.0 cluster network is not asked"
    );

    let cfg = bed.config(json!({"delegates": [{"cniVersion": "1.1.0", "name": "cluster", "plugins": [{"type": "p1"}, {"type": "p2"}]}]}));
    bed.run(&cfg, "STATUS", &kube, |e| e.status()).unwrap();
    assert_eq!(bed.exec.trace(), vec!["STATUS p1 ", "STATUS p2 "]);
    assert_eq!(
        bed.exec.calls()[0].stdin,
        json!({"type": "p1", "cniVersion": "1.1.0", "name": "cluster"})
    );
    bed.exec.fail_on("p2", Command::Status);
    let e = bed.run(&cfg, "STATUS", &kube, |e| e.status()).unwrap_err();
    assert_eq!(e.code(), 50);
    assert!(
        e.to_string().contains("cluster network cluster") && e.to_string().contains("p2"),
        "{e}"
    );
    assert!(kube.log().is_empty(), "STATUS never calls the API");
}

#[test]
fn gc_dels_stale_containers_keeps_valid_ones_and_forwards_gc() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad(
            "blue",
            "a",
            json!({"cniVersion": "1.1.0", "name": "a", "type": "newplug"}),
        );
    let cfg = bed.config(json!({}));
    // Two containers: ctr1 (valid) and ctr2 (stale).
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    let env = bed.env("ADD", "blue", "p");
    let mut env2 = env.clone();
    env2.container_id = "ctr2".into();
    Engine {
        config: &cfg,
        env: &env2,
        exec: &bed.exec,
        kube: Some(&kube),
        routes: &bed.routes,
        devices: Some(&bed.devices),
    }
    .add()
    .unwrap();
    bed.exec.calls.lock().unwrap().clear();
    bed.exec.fail_on("clusterplug", Command::Gc); // never called: cluster network is 1.0.0
    let gc_cfg = bed
        .config(json!({"cni.dev/valid-attachments": [{"containerID": "ctr1", "ifname": "eth0"}]}));
    bed.run(&gc_cfg, "GC", &kube, |e| e.gc()).unwrap();
    assert_eq!(
        bed.exec.trace(),
        vec!["DEL newplug net1", "DEL clusterplug eth0", "GC newplug "]
    );
    assert_eq!(bed.cache_files(), vec!["ctr1.json"]);
    let gc = &bed.exec.calls()[2];
    let valid = json!([{"containerID": "ctr1", "ifname": "net1"}]);
    assert_eq!(gc.stdin["cni.dev/valid-attachments"], valid);
    assert_eq!(gc.stdin["cni.dev/attachments"], valid);

    // The legacy key works, and failures are collected without stopping the sweep.
    bed.exec.calls.lock().unwrap().clear();
    bed.exec.fail_on("newplug", Command::Gc);
    bed.exec.fail_on("newplug", Command::Del);
    let gc_cfg = bed.config(json!({"cni.dev/attachments": []}));
    let e = bed.run(&gc_cfg, "GC", &kube, |e| e.gc()).unwrap_err();
    assert!(
        e.to_string().contains("container ctr1") && e.to_string().contains("network a: GC"),
        "{e}"
    );
    assert_eq!(
        bed.exec.trace(),
        vec!["DEL newplug net1", "DEL clusterplug eth0", "GC newplug "]
    );
    assert_eq!(bed.cache_files(), vec!["ctr1.json"], "kept for a retry");
}

#[test]
fn an_ipam_claim_reference_reaches_the_delegate_in_args_cni() {
    let bed = Bed::new();
    let ann = r#"[{"name": "a", "ipam-claim-reference": "claim-1", "cni-args": {"k": "v"}}]"#;
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some(ann))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    let calls = bed.exec.calls();
    assert_eq!(
        calls[1].stdin["args"]["cni"],
        json!({"ipam-claim-reference": "claim-1", "k": "v"})
    );
    assert!(
        calls[0].stdin.get("args").is_none(),
        "the cluster network is not affected"
    );
}

#[test]
fn the_phases_compose_and_a_guard_dropped_by_a_panic_still_rolls_back() {
    use plexus_engine::attach::Attach;
    use plexus_engine::plan::{Purpose, plan};
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    let outcome = bed.run(&cfg, "ADD", &kube, |e| {
        let plan = plan(e, Purpose::Add).unwrap();
        assert_eq!(plan.label, "blue/p");
        assert_eq!(plan.attachments.len(), 2);
        assert!(bed.all_cache_files().is_empty(), "planning writes nothing");
        assert!(bed.exec.trace().is_empty(), "planning runs nothing");
        let attach = Attach::begin(e, &plan).unwrap();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            attach.run(|a| {
                a.add_delegates(&plan)?;
                panic!("a bug in a later step");
                #[allow(unreachable_code)]
                Ok(())
            })
        }))
    });
    assert!(outcome.is_err(), "the step panicked");
    assert_eq!(
        bed.exec.trace(),
        [
            "ADD clusterplug eth0",
            "ADD macvlan net1",
            "DEL macvlan net1",
            "DEL clusterplug eth0"
        ]
    );
    assert!(
        bed.all_cache_files().is_empty(),
        "{:?}",
        bed.all_cache_files()
    );
}

#[test]
fn del_of_a_corrupt_entry_with_an_unusable_kubeconfig_is_try_again_later() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({"kubeconfig": "/nonexistent/kubeconfig"}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    corrupt(&bed, "ctr1.json");
    // The binary passes no client when the configured kubeconfig cannot be loaded.
    let env = bed.env("DEL", "blue", "p");
    let err = Engine {
        config: &cfg,
        env: &env,
        exec: &bed.exec,
        kube: None,
        routes: &bed.routes,
        devices: Some(&bed.devices),
    }
    .del()
    .unwrap_err();
    assert_eq!(err.code(), 11, "{err}");
    assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
    assert!(dels_of(&bed).is_empty());
    assert_eq!(bed.cache_files(), ["ctr1.json"]);
}

fn sriov_nad(name: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "sriov", "vlan": 100,
        "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true}})
}

fn stdin_of(calls: &[Call], command: Command, ifname: &str) -> Value {
    calls
        .iter()
        .find(|c| c.command == command && c.ifname == ifname)
        .unwrap_or_else(|| panic!("no {command:?} for {ifname}"))
        .stdin
        .clone()
}

#[test]
fn resource_nads_get_distinct_sorted_devices_and_del_check_reuse_them_from_the_cache() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("vf-a, vf-b, other"))
        .with_resource_nad("blue", "vf-a", "intel.com/vf", sriov_nad("vf-a"))
        .with_resource_nad("blue", "vf-b", "intel.com/vf", sriov_nad("vf-b"))
        .with_resource_nad("blue", "other", "intel.com/other", sriov_nad("other"));
    // The kubelet's order is arbitrary; the mapping follows the sorted IDs.
    bed.devices
        .allocate("blue/p", "intel.com/vf", &["0000:03:02.1", "0000:03:02.0"]);
    bed.devices
        .allocate("blue/p", "intel.com/other", &["0000:05:00.2"]);
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    assert_eq!(
        bed.devices.log(),
        ["blue/p wanted=intel.com/other,intel.com/vf"],
        "one lookup per ADD"
    );
    let calls = bed.exec.calls();
    let cluster = stdin_of(&calls, Command::Add, "eth0");
    assert!(cluster.get("deviceID").is_none(), "{cluster}");
    for (ifname, dev) in [
        ("net1", "0000:03:02.0"),
        ("net2", "0000:03:02.1"),
        ("net3", "0000:05:00.2"),
    ] {
        let stdin = stdin_of(&calls, Command::Add, ifname);
        assert_eq!(stdin["deviceID"], dev, "{stdin}");
        assert_eq!(stdin["pciBusID"], dev, "{stdin}");
        assert_eq!(stdin["runtimeConfig"]["deviceID"], dev, "{stdin}");
        assert_eq!(stdin["vlan"], 100);
    }
    let entry = cached(&bed);
    assert_eq!(
        entry["attachments"][2]["device"]["deviceID"], "0000:03:02.1",
        "{entry}"
    );
    assert_eq!(
        entry["attachments"][2]["device"]["resourceName"],
        "intel.com/vf"
    );

    // The kubelet has released the devices (and answers nothing): CHECK and DEL need only the
    // cache.
    *bed.devices.fail.lock().unwrap() = Some(plexus_engine::DeviceError::Unavailable(
        "kubelet gone".into(),
    ));
    bed.exec.calls.lock().unwrap().clear();
    bed.run(&cfg, "CHECK", &kube, |e| e.check()).unwrap();
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    assert_eq!(bed.devices.log().len(), 1, "no lookup at CHECK or DEL");
    let calls = bed.exec.calls();
    for command in [Command::Check, Command::Del] {
        let stdin = stdin_of(&calls, command, "net2");
        assert_eq!(stdin["deviceID"], "0000:03:02.1", "{command:?}: {stdin}");
        assert_eq!(stdin["runtimeConfig"]["deviceID"], "0000:03:02.1");
    }
    assert!(bed.all_cache_files().is_empty());
}

#[test]
fn more_resource_nads_than_devices_fails_before_any_delegate() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("vf-a, vf-b"))
        .with_resource_nad("blue", "vf-a", "intel.com/vf", sriov_nad("vf-a"))
        .with_resource_nad("blue", "vf-b", "intel.com/vf", sriov_nad("vf-b"));
    bed.devices
        .allocate("blue/p", "intel.com/vf", &["0000:03:02.0"]);
    let cfg = bed.config(json!({}));
    let err = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert_eq!(err.code(), plexus_cni::codes::DEVICES);
    let msg = err.to_string();
    for part in ["blue/p", "intel.com/vf", "2 networks", "allocated 1 device"] {
        assert!(msg.contains(part), "{part:?} missing: {msg}");
    }
    assert!(bed.exec.calls().is_empty(), "no delegate ran");
    assert!(bed.all_cache_files().is_empty(), "no file left");
    assert!(kube.log().iter().all(|l| !l.starts_with("PATCH")));
}

#[test]
fn a_busy_device_source_is_try_again_later_and_an_absent_one_is_code_105() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("vf-a"))
        .with_resource_nad("blue", "vf-a", "intel.com/vf", sriov_nad("vf-a"));
    let cfg = bed.config(json!({}));
    *bed.devices.fail.lock().unwrap() = Some(plexus_engine::DeviceError::Busy("busy".into()));
    let err = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert_eq!(err.code(), plexus_cni::codes::TRY_AGAIN_LATER, "{err}");
    assert!(err.to_string().contains("blue/vf-a"), "{err}");
    *bed.devices.fail.lock().unwrap() = Some(plexus_engine::DeviceError::Unavailable(
        "no socket, no checkpoint".into(),
    ));
    let err = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert_eq!(err.code(), plexus_cni::codes::DEVICES, "{err}");
    assert!(
        err.to_string().contains("no socket, no checkpoint"),
        "{err}"
    );
    assert!(bed.exec.calls().is_empty());
    assert!(bed.all_cache_files().is_empty());
}

#[test]
fn the_selection_device_id_counts_only_without_a_resource_and_no_resource_means_no_lookup() {
    let bed = Bed::new();
    let sel = r#"[{"name": "plain", "deviceID": "0000:09:00.1", "interface": "net1"},
                  {"name": "vf-a", "deviceID": "0000:09:00.2", "interface": "net2"}]"#;
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some(sel))
        .with_nad("blue", "plain", sriov_nad("plain"))
        .with_resource_nad("blue", "vf-a", "intel.com/vf", sriov_nad("vf-a"));
    bed.devices
        .allocate("blue/p", "intel.com/vf", &["0000:03:02.0"]);
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    let calls = bed.exec.calls();
    let plain = stdin_of(&calls, Command::Add, "net1");
    assert_eq!(plain["runtimeConfig"]["deviceID"], "0000:09:00.1");
    assert!(
        plain.get("deviceID").is_none(),
        "only a capability argument: {plain}"
    );
    let vf = stdin_of(&calls, Command::Add, "net2");
    assert_eq!(vf["runtimeConfig"]["deviceID"], "0000:03:02.0", "{vf}");
    assert_eq!(vf["deviceID"], "0000:03:02.0");

    // A pod without resource NADs never asks for devices.
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    assert!(bed.devices.log().is_empty());
}

#[test]
fn device_info_is_copied_reported_in_network_status_and_removed_on_del() {
    let bed = Bed::new();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("vf-a"))
        .with_resource_nad("blue", "vf-a", "intel.com/sriov_net_A", sriov_nad("vf-a"));
    bed.devices
        .allocate("blue/p", "intel.com/sriov_net_A", &["0000:03:02.3"]);
    let dp = bed.dir.path().join("devinfo/dp");
    std::fs::create_dir_all(&dp).unwrap();
    let doc = json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:02.3"}});
    std::fs::write(
        dp.join("intel.com-sriov_net_A-0000:03:02.3-device.json"),
        doc.to_string(),
    )
    .unwrap();
    let cfg = bed.config(json!({}));
    bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    let cni_file = bed.dir.path().join("devinfo/cni/blue-vf-a-ctr1_net1");
    let stdin = stdin_of(&bed.exec.calls(), Command::Add, "net1");
    assert_eq!(
        stdin["runtimeConfig"]["CNIDeviceInfoFile"],
        cni_file.display().to_string()
    );
    let copied: Value = serde_json::from_slice(&std::fs::read(&cni_file).unwrap()).unwrap();
    assert_eq!(copied, doc);
    let status: Vec<Value> = serde_json::from_str(&kube.patches.lock().unwrap()[0]).unwrap();
    let vf = status
        .iter()
        .find(|e| e["name"] == "blue/vf-a")
        .expect("an entry for blue/vf-a");
    assert_eq!(vf["device-info"], doc, "{vf}");
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    assert!(!cni_file.exists(), "removed on DEL");
}

#[test]
fn the_auxiliary_chain_continues_the_cluster_result_on_its_interface_last() {
    let bed = Bed::new();
    let net_d = bed.dir.path().join("net.d");
    std::fs::create_dir_all(net_d.join("aux")).unwrap();
    let cluster_file = net_d.join("10-c.conflist");
    std::fs::write(
        &cluster_file,
        json!({"cniVersion": "1.0.0", "name": "c", "plugins": [{"type": "clusterplug"}]})
            .to_string(),
    )
    .unwrap();
    std::fs::write(
        net_d.join("aux/20-b.conf"),
        json!({"type": "bplug"}).to_string(),
    )
    .unwrap();
    std::fs::write(
        net_d.join("aux/10-a.conf"),
        json!({"type": "aplug"}).to_string(),
    )
    .unwrap();
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some("a"))
        .with_nad("blue", "a", macvlan("a"));
    let cfg = bed.config(json!({"clusterNetwork": cluster_file, "auxiliaryCNIChainName": "aux"}));
    let result = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap();
    assert_eq!(
        bed.exec.trace(),
        vec![
            "ADD clusterplug eth0",
            "ADD macvlan net1",
            "ADD aplug eth0",
            "ADD bplug eth0"
        ]
    );
    let calls = bed.exec.calls();
    // The chain starts from the cluster network's result, at its version, under its own name.
    let cluster_result: Value = serde_json::from_value(result.clone()).unwrap();
    assert_eq!(calls[2].stdin["prevResult"], cluster_result);
    assert_eq!(calls[2].stdin["name"], "aux");
    assert_eq!(calls[2].stdin["cniVersion"], "1.0.0");
    // No network-status entry of its own.
    let status: Vec<Value> = serde_json::from_str(&kube.patches.lock().unwrap()[0]).unwrap();
    let names: Vec<&str> = status.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["c", "blue/a"]);
    // DEL undoes the chain first.
    bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap();
    let trace = bed.exec.trace();
    assert_eq!(
        trace[4..],
        [
            "DEL bplug eth0",
            "DEL aplug eth0",
            "DEL macvlan net1",
            "DEL clusterplug eth0"
        ]
    );
}
