//! Engine tests with recording fakes for the API and for delegate exec: the order, stdin and
//! environment of every delegate call, every API call, rollback and the cache.

#![allow(clippy::result_large_err)]

use plexus_cni::{CniEnv, CniError, Command};
use plexus_engine::exec::{DelegateExec, ExecError, ExecRequest};
use plexus_engine::routes::{DefaultRoute, Family, NetnsRoutes};
use plexus_engine::{
    ApiError, Engine, EngineError, EventType, KubeApi, NadInfo, PlexusConfig, PodEvent, PodInfo,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Clone)]
struct Call {
    plugin: String,
    command: Command,
    ifname: String,
    args: String,
    stdin: Value,
}

/// Returns a 1.0.0-style result naming the interface; fails where told to.
#[derive(Default)]
struct FakeExec {
    calls: Mutex<Vec<Call>>,
    /// (plugin, command) pairs that fail.
    fail: Mutex<Vec<(String, Command)>>,
}

impl FakeExec {
    fn fail_on(&self, plugin: &str, command: Command) {
        self.fail.lock().unwrap().push((plugin.into(), command));
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn trace(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{} {} {}", c.command.as_str(), c.plugin, c.ifname))
            .collect()
    }
}

impl DelegateExec for FakeExec {
    fn exec(&self, req: &ExecRequest<'_>) -> Result<Vec<u8>, ExecError> {
        let stdin: Value = serde_json::from_slice(req.stdin).unwrap();
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Call {
                plugin: req.plugin.into(),
                command: req.command,
                ifname: req.ifname.into(),
                args: req.args.into(),
                stdin: stdin.clone(),
            });
            calls.len()
        };
        if self
            .fail
            .lock()
            .unwrap()
            .iter()
            .any(|(p, c)| p == req.plugin && *c == req.command)
        {
            return Err(ExecError::Failed {
                plugin: req.plugin.into(),
                error: CniError::new(7, "scripted failure"),
            });
        }
        if req.command != Command::Add {
            return Ok(Vec::new());
        }
        // A chained plugin passes prevResult through.
        if let Some(prev) = stdin.get("prevResult") {
            return Ok(serde_json::to_vec(prev).unwrap());
        }
        let r = json!({
            "cniVersion": stdin["cniVersion"],
            "interfaces": [{"name": req.ifname, "mac": format!("02:00:00:00:00:{n:02x}"), "sandbox": "/run/netns/x"}],
            "ips": [{"address": format!("10.0.{n}.5/24"), "gateway": format!("10.0.{n}.1"), "interface": 0}]
        });
        Ok(serde_json::to_vec(&r).unwrap())
    }
}

#[derive(Default)]
struct FakeKube {
    pods: BTreeMap<(String, String), PodInfo>,
    nads: BTreeMap<(String, String), NadInfo>,
    log: Mutex<Vec<String>>,
    patches: Mutex<Vec<String>>,
    fail_patch: bool,
    events: Mutex<Vec<PodEvent>>,
    fail_events: bool,
}

/// Records route operations; the pod's table starts with eth0's IPv4 default route.
#[derive(Default)]
struct FakeRoutes {
    log: Mutex<Vec<String>>,
    fail: bool,
}

impl NetnsRoutes for FakeRoutes {
    fn default_routes(&self, _: &Path, family: Family) -> Result<Vec<DefaultRoute>, String> {
        Ok(match family {
            Family::V4 => vec![DefaultRoute {
                ifname: "eth0".into(),
                gateway: Some("10.0.1.1".parse().unwrap()),
            }],
            Family::V6 => vec![],
        })
    }
    fn delete_default(&self, _: &Path, f: Family, r: &DefaultRoute) -> Result<(), String> {
        self.log
            .lock()
            .unwrap()
            .push(format!("del {f:?} {}", r.ifname));
        Ok(())
    }
    fn replace_default(&self, _: &Path, ifname: &str, gw: IpAddr) -> Result<(), String> {
        if self.fail {
            return Err("scripted route failure".into());
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("replace {ifname} via {gw}"));
        Ok(())
    }
}

impl FakeKube {
    fn with_pod(mut self, ns: &str, name: &str, networks: Option<&str>) -> Self {
        let mut annotations = BTreeMap::new();
        if let Some(n) = networks {
            annotations.insert("k8s.v1.cni.cncf.io/networks".to_owned(), n.to_owned());
        }
        self.pods.insert(
            (ns.into(), name.into()),
            PodInfo {
                namespace: ns.into(),
                name: name.into(),
                uid: "uid-1".into(),
                annotations,
            },
        );
        self
    }
    fn with_nad(mut self, ns: &str, name: &str, config: Value) -> Self {
        self.nads.insert(
            (ns.into(), name.into()),
            NadInfo {
                namespace: ns.into(),
                name: name.into(),
                config: Some(config.to_string()),
                annotations: BTreeMap::new(),
            },
        );
        self
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl KubeApi for FakeKube {
    fn get_pod(&self, namespace: &str, name: &str) -> Result<PodInfo, ApiError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("GET pod {namespace}/{name}"));
        self.pods
            .get(&(namespace.into(), name.into()))
            .cloned()
            .ok_or_else(|| ApiError::NotFound {
                kind: "pod",
                namespace: namespace.into(),
                name: name.into(),
            })
    }
    fn get_nads(&self, refs: &[(String, String)]) -> Vec<Result<NadInfo, ApiError>> {
        let names: Vec<String> = refs.iter().map(|(n, m)| format!("{n}/{m}")).collect();
        self.log
            .lock()
            .unwrap()
            .push(format!("GET nads {}", names.join(",")));
        refs.iter()
            .map(|r| {
                self.nads.get(r).cloned().ok_or_else(|| ApiError::NotFound {
                    kind: "network-attachment-definition",
                    namespace: r.0.clone(),
                    name: r.1.clone(),
                })
            })
            .collect()
    }
    fn patch_network_status(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        status_json: &str,
    ) -> Result<(), ApiError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("PATCH {namespace}/{name} uid={uid}"));
        if self.fail_patch {
            return Err(ApiError::Unreachable("scripted".into()));
        }
        self.patches.lock().unwrap().push(status_json.into());
        Ok(())
    }
    fn post_event(&self, event: &PodEvent) -> Result<(), ApiError> {
        self.events.lock().unwrap().push(event.clone());
        if self.fail_events {
            return Err(ApiError::Unreachable("scripted".into()));
        }
        Ok(())
    }
}

struct Bed {
    dir: tempfile::TempDir,
    exec: FakeExec,
    routes: FakeRoutes,
}

impl Bed {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            exec: FakeExec::default(),
            routes: FakeRoutes::default(),
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
        };
        f(&engine)
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
        dels[dels.len() - 2..],
        ["DEL macvlan net1", "DEL clusterplug eth0"],
        "the retry DELs what was added"
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

#[test]
fn a_corrupt_cache_entry_is_an_error_not_a_silent_success() {
    let bed = Bed::new();
    let kube = FakeKube::default();
    let cfg = bed.config(json!({}));
    std::fs::create_dir_all(bed.dir.path().join("cache")).unwrap();
    std::fs::write(
        bed.dir.path().join("cache/ctr1.json"),
        b"{\"kind\": \"plexusCacheV1\", trunc",
    )
    .unwrap();
    let err = bed.run(&cfg, "DEL", &kube, |e| e.del()).unwrap_err();
    assert_eq!(err.code(), 102);
    assert!(err.to_string().contains("corrupt"), "{err}");
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
    let ann = r#"[{"name": "c", "mac": "02:11:22:33:44:55", "cni-args": {"foo": "bar"}}, {"name": "plain", "ips": ["10.1.1.1/24"]}]"#;
    let kube = FakeKube::default()
        .with_pod("blue", "p", Some(ann))
        .with_nad("blue", "c", chain.clone())
        .with_nad("blue", "plain", macvlan("plain"));
    let cfg = bed.config(json!({}));
    let err = bed.run(&cfg, "ADD", &kube, |e| e.add()).unwrap_err();
    assert_eq!(err.code(), 7);
    assert!(
        err.to_string().contains("\"ips\"") && err.to_string().contains("blue/plain"),
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
}

// ---- NPWG v1.3 / CNI 1.1.0 behaviour (issue 3) ----

fn cached(bed: &Bed) -> Value {
    let text = std::fs::read_to_string(bed.dir.path().join("cache/ctr1.json")).unwrap();
    serde_json::from_str(&text).unwrap()
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
    assert_eq!(status[0]["name"], "alt");
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
