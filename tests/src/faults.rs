//! Fault runs: one pod (the cluster network and two NADs, all real delegates) whose ADD is killed
//! or failed at a chosen step, then torn down with containerd's two DELs and checked for leaks.
//! Shared by `tests/tests/e2e_kill.rs` and the `plexus-soak` driver.
//!
//! Every delegate chain carries `cni-gate` plugins (see `src/bin/cni-gate.rs`) at fixed points;
//! a gate whose release file exists passes through, so [`GatedNode::arm`] (removing it) is what
//! makes the ADD stop there:
//!
//! | gate | chain | held with |
//! |---|---|---|
//! | `c0` | cluster, before `bridge` | the cache entry written, nothing added yet |
//! | `c1` | cluster, after `bridge` | `eth0` and its lease made, result not cached |
//! | `m1` | NAD `mv`, after `macvlan` | `net1` made, result not cached |
//! | `b0` | NAD `br`, before `bridge` | between delegates: `net1` cached, `net2` not started |
//! | `b1` | NAD `br`, after `bridge` | `net2` and its bridge port made, result not cached |

use crate::bed::{Bed, Running, kill_container_processes};
use crate::cni::Outcome;
use crate::fakeapi::Fault as ApiFault;
use crate::netns::NetNs;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The namespace of the pod and its NADs.
pub const NS: &str = "faults";

/// How long a run waits for plexus to reach a step before calling it a failure of the run
/// (a guard against hangs, far above any ADD's duration).
const REACH_TIMEOUT: Duration = Duration::from_secs(30);

/// A point of the ADD where a run can stop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Waiting on the API server (the pod GET): before the cache entry exists.
    PodGet,
    /// Gate `c0`: the cache entry written, the first delegate started, nothing added yet.
    ClusterStart,
    /// Gate `c1`: during the first delegate, after it made `eth0`.
    ClusterEnd,
    /// Gate `m1`: during the second delegate (macvlan), after it made `net1`.
    MacvlanEnd,
    /// Gate `b0`: between delegates.
    Between,
    /// Gate `b1`: during the last delegate (bridge), after it made `net2`.
    BridgeEnd,
    /// Every delegate done: the network-status PATCH in flight.
    StatusWrite,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::PodGet,
        Step::ClusterStart,
        Step::ClusterEnd,
        Step::MacvlanEnd,
        Step::Between,
        Step::BridgeEnd,
        Step::StatusWrite,
    ];

    /// The gate that holds the ADD at this step (`None`: held by the API server instead).
    pub fn gate(self) -> Option<&'static str> {
        match self {
            Step::PodGet | Step::StatusWrite => None,
            Step::ClusterStart => Some("c0"),
            Step::ClusterEnd => Some("c1"),
            Step::MacvlanEnd => Some("m1"),
            Step::Between => Some("b0"),
            Step::BridgeEnd => Some("b1"),
        }
    }
}

/// What happens to the ADD at its [`Step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL `plexus` there (a runtime's timeout, an OOM kill, a node shutdown).
    Kill,
    /// Make the step fail: the gate delegate errors, or the API answers 403.
    Fail,
}

/// One fault of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Stop the ADD at a precise step.
    At(Step, Action),
    /// SIGKILL `plexus` this long after it started, wherever it is.
    KillAfter(Duration),
    /// Scripted API faults installed before the ADD, under a label for the counts.
    Api(&'static str, Vec<ApiFault>),
    /// Every API response delayed this long.
    ApiLatency(Duration),
}

/// Faults of the API server a pod's ADD must ride out: each is retried within the call's budget,
/// so the ADD succeeds with the full network-status.
pub fn transient_api_faults() -> Vec<Fault> {
    let nads = "/network-attachment-definitions/";
    vec![
        Fault::Api(
            "500 twice on the pod GET",
            vec![ApiFault::on("GET", "/pods/").status(500).times(2)],
        ),
        Fault::Api(
            "429 + Retry-After on the pod GET",
            vec![ApiFault::on("GET", "/pods/").too_many_requests(1)],
        ),
        Fault::Api(
            "504 on the pod GET",
            vec![ApiFault::on("GET", "/pods/").status(504)],
        ),
        Fault::Api(
            "500 on a NAD GET",
            vec![ApiFault::on("GET", nads).status(500)],
        ),
        Fault::Api(
            "dropped connection on a NAD GET",
            vec![ApiFault::on("GET", nads).drop_connection()],
        ),
        Fault::Api(
            "dropped connection on the pod GET",
            vec![ApiFault::on("GET", "/pods/").drop_connection()],
        ),
        Fault::Api(
            "500 on the status PATCH",
            vec![ApiFault::on("PATCH", "/status").status(500)],
        ),
        Fault::Api(
            "dropped connection on the status PATCH",
            vec![ApiFault::on("PATCH", "/status").drop_connection()],
        ),
        Fault::Api(
            "2 s latency on the NAD GETs",
            vec![
                ApiFault::on("GET", nads)
                    .delay(Duration::from_secs(2))
                    .times(2),
            ],
        ),
        Fault::Api(
            "flapping 503 (1 down, 1 up)",
            vec![ApiFault::on("*", "/").status(503).flapping(1, 1)],
        ),
        Fault::Api(
            "flapping dropped connections",
            vec![ApiFault::on("*", "/").drop_connection().flapping(1, 2)],
        ),
    ]
}

/// Answers that no retry can fix: the ADD fails (and must leave nothing).
pub fn permanent_api_faults() -> Vec<Fault> {
    vec![
        Fault::Api(
            "410 on the pod GET",
            vec![ApiFault::on("GET", "/pods/").status(410)],
        ),
        Fault::Api(
            "403 on a NAD GET",
            vec![ApiFault::on("GET", "/network-attachment-definitions/").status(403)],
        ),
        Fault::Api(
            "409 on the status PATCH",
            vec![ApiFault::on("PATCH", "/status").status(409)],
        ),
    ]
}

impl Fault {
    /// A short label for counting runs by kind.
    pub fn kind(&self) -> String {
        match self {
            Fault::At(step, Action::Kill) => format!("kill at {step:?}"),
            Fault::At(step, Action::Fail) => format!("fail at {step:?}"),
            Fault::KillAfter(_) => "kill at a random moment".into(),
            Fault::Api(label, _) => format!("API {label}"),
            // One kind for every delay, so the counts add up per kind.
            Fault::ApiLatency(_) => "API latency".into(),
        }
    }
}

/// How the ADD of a run ended.
#[derive(Debug, Clone)]
pub enum AddEnd {
    /// Exit 0 with this result.
    Ok(Value),
    /// A CNI error.
    Failed(Outcome),
    /// Killed by the run.
    Killed,
}

impl AddEnd {
    pub fn is_ok(&self) -> bool {
        matches!(self, AddEnd::Ok(_))
    }
}

/// What one run saw.
#[derive(Debug)]
pub struct RunReport {
    pub fault: Fault,
    pub add: AddEnd,
    /// containerd's two DELs (StopPodSandbox's, RemovePodSandbox's).
    pub dels: [Outcome; 2],
    /// The pod's network-status after the ADD (`None`: not written).
    pub network_status: Option<Vec<Value>>,
    /// The API server's log of the run (faulted answers included; 0: a dropped connection).
    pub requests: Vec<crate::fakeapi::RequestRecord>,
    /// Everything left behind after the DELs, plus DELs that did not succeed (empty: clean).
    pub leaks: Vec<String>,
    pub elapsed: Duration,
    /// From the ADD's start to its end (exit or kill).
    pub add_elapsed: Duration,
}

/// A [`Bed`] with the gated cluster network and the two NADs (`mv`: macvlan, `br`: bridge).
#[derive(Debug)]
pub struct GatedNode {
    pub bed: Bed,
    gate_dir: PathBuf,
    cluster_file: PathBuf,
}

impl Default for GatedNode {
    fn default() -> Self {
        Self::new()
    }
}

impl GatedNode {
    pub const GATES: [&'static str; 5] = ["c0", "c1", "m1", "b0", "b1"];

    pub fn new() -> Self {
        let bed = Bed::new();
        let gate_dir = bed.node.root.path().join("gates");
        std::fs::create_dir_all(&gate_dir).expect("gate dir");
        let node = GatedNode {
            cluster_file: bed.node.root.path().join("cluster-gated.conflist"),
            bed,
            gate_dir,
        };
        for g in Self::GATES {
            node.release(g, false);
        }
        let n = &node.bed.node;
        let bridge = n.cluster_conflist("1.0.0")["plugins"][0].clone();
        let cluster = json!({
            "cniVersion": "1.0.0",
            "name": "cluster",
            "plugins": [node.gate("c0"), bridge, node.gate("c1")],
        });
        std::fs::write(&node.cluster_file, cluster.to_string()).expect("write cluster conflist");
        let mut mv = n.macvlan_config("mv", "10.78.0.0/16");
        mv.as_object_mut().expect("object").remove("cniVersion");
        mv.as_object_mut().expect("object").remove("name");
        node.bed.nad(
            NS,
            "mv",
            &json!({"cniVersion": "0.4.0", "name": "mv", "plugins": [mv, node.gate("m1")]}),
        );
        let mut br = n.bridge_config("br", "10.79.0.0/16");
        br.as_object_mut().expect("object").remove("cniVersion");
        br.as_object_mut().expect("object").remove("name");
        node.bed.nad(
            NS,
            "br",
            &json!({"cniVersion": "1.0.0", "name": "br", "plugins": [node.gate("b0"), br, node.gate("b1")]}),
        );
        node
    }

    fn gate(&self, name: &str) -> Value {
        json!({"type": "cni-gate", "gate": name, "markerDir": self.gate_dir, "releaseFile": self.release_file(name)})
    }

    fn release_file(&self, gate: &str) -> PathBuf {
        self.gate_dir.join(format!("release-{gate}"))
    }

    /// Makes the next ADD that reaches `gate` stop there until [`GatedNode::release`].
    pub fn arm(&self, gate: &str) {
        let _ = std::fs::remove_file(self.release_file(gate));
    }

    /// Lets `gate` pass (`fail`: its ADD fails instead).
    pub fn release(&self, gate: &str, fail: bool) {
        std::fs::write(self.release_file(gate), if fail { "fail" } else { "go" })
            .expect("write release file");
    }

    /// The plexus config, with the gated cluster network.
    pub fn config(&self) -> Value {
        self.bed
            .config(json!({"clusterNetwork": self.cluster_file}))
    }

    /// A pod selecting both NADs, with its netns.
    pub fn pod(&self, tag: &str) -> Pod<'_> {
        let name = crate::netns::unique_name(tag);
        let uid = self.bed.pod(NS, &name, Some("mv,br"));
        let netns = NetNs::new(tag).expect("netns");
        Pod {
            node: self,
            cid: crate::bed::cid(tag),
            name,
            uid,
            netns,
            config: self.config(),
        }
    }

    /// Waits until an ADD of `cid` is held at `gate` and returns the gate's pid; `None` when
    /// `running` exited first (or nothing arrived within [`REACH_TIMEOUT`]). Consumes the marker,
    /// so a retried ADD reaching the same gate is seen again.
    pub fn wait_gate(&self, gate: &str, cid: &str, running: &mut Running) -> Option<u32> {
        let deadline = Instant::now() + REACH_TIMEOUT;
        while Instant::now() < deadline {
            for e in std::fs::read_dir(&self.gate_dir)
                .into_iter()
                .flatten()
                .flatten()
            {
                let n = e.file_name().to_string_lossy().into_owned();
                if !(n.starts_with("gate-") && n.ends_with(".json")) {
                    continue;
                }
                let Ok(m) = std::fs::read(e.path())
                    .map(|b| serde_json::from_slice::<Value>(&b).unwrap_or_default())
                else {
                    continue;
                };
                if m["gate"] == gate && m["containerID"] == cid {
                    let _ = std::fs::remove_file(e.path());
                    return m["pid"].as_u64().map(|p| p as u32);
                }
            }
            if running.finished() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Waits until the API server has logged more than `before` `method` requests on a path
    /// containing `path`; `false` when `running` exited first.
    pub fn wait_request(
        &self,
        method: &str,
        path: &str,
        before: usize,
        running: &mut Running,
    ) -> bool {
        let deadline = Instant::now() + REACH_TIMEOUT;
        while Instant::now() < deadline {
            if self.bed.api.count(method, path) > before {
                return true;
            }
            if running.finished() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// One pod of a [`GatedNode`]: its container ID, UID and netns.
#[derive(Debug)]
pub struct Pod<'n> {
    pub node: &'n GatedNode,
    pub cid: String,
    pub name: String,
    pub uid: String,
    pub netns: NetNs,
    pub config: Value,
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        // Delegates a defect left running (already reported by `leaks`) must not outlive the test.
        kill_container_processes(&self.cid);
    }
}

impl Pod<'_> {
    pub fn spawn_add(&self) -> Running {
        self.node.bed.spawn(
            "ADD",
            &self.cid,
            Some(self.netns.path()),
            NS,
            &self.name,
            &self.uid,
            &self.config,
        )
    }

    pub fn spawn_del(&self) -> Running {
        self.node.bed.spawn(
            "DEL",
            &self.cid,
            Some(self.netns.path()),
            NS,
            &self.name,
            &self.uid,
            &self.config,
        )
    }

    /// containerd's two DELs (see [`Bed::containerd_dels`]).
    pub fn containerd_dels(&self, prev_result: Option<&Value>) -> [Outcome; 2] {
        self.node.bed.containerd_dels(
            &self.cid,
            self.netns.path(),
            NS,
            &self.name,
            &self.uid,
            &self.config,
            prev_result,
        )
    }

    /// See [`Bed::leaks`].
    pub fn leaks(&self) -> Vec<String> {
        self.node
            .bed
            .leaks(&self.netns, &self.cid, Duration::from_secs(5))
    }

    /// Panics with every leak found.
    pub fn assert_no_leaks(&self) {
        self.node.bed.assert_no_leaks(&self.netns, &self.cid);
    }

    /// Waits for `running` to reach `step` and applies `action` there; `Err` when it never got
    /// there (it finished first or hung before it).
    pub fn stop_at(
        &self,
        mut running: Running,
        step: Step,
        action: Action,
    ) -> Result<AddEnd, String> {
        let api = &self.node.bed.api;
        let reached = match step.gate() {
            Some(g) => self.node.wait_gate(g, &self.cid, &mut running).is_some(),
            None if step == Step::PodGet => {
                // Armed by `arm_api` before the spawn; the request is logged before its delay.
                self.node
                    .wait_request("GET", &format!("/pods/{}", self.name), 0, &mut running)
            }
            None => {
                // The last gate holds the ADD while the API is slowed down, then lets it go.
                let reached = self.node.wait_gate("b1", &self.cid, &mut running).is_some();
                if reached && action == Action::Kill {
                    api.set_latency(Duration::from_secs(3600));
                } else if reached {
                    api.set_fail_next("PATCH", &format!("/pods/{}/status", self.name), 403);
                }
                self.node.release("b1", false);
                reached
                    && (action == Action::Fail
                        || self.node.wait_request(
                            "PATCH",
                            &format!("/pods/{}/status", self.name),
                            0,
                            &mut running,
                        ))
            }
        };
        if !reached {
            api.set_latency(Duration::ZERO);
            let out = if running.finished() {
                running.wait()
            } else {
                running.kill()
            };
            return Err(format!(
                "the ADD never reached {step:?} ({action:?}): {out:#?}"
            ));
        }
        let end = match action {
            Action::Kill => {
                running.kill();
                AddEnd::Killed
            }
            Action::Fail => {
                if let Some(g) = step.gate() {
                    self.node.release(g, true);
                }
                let out = running.wait();
                if out.code == 0 {
                    AddEnd::Ok(out.json())
                } else {
                    AddEnd::Failed(out)
                }
            }
        };
        api.set_latency(Duration::ZERO);
        Ok(end)
    }

    /// Prepares the node for `step` before the ADD starts: arms its gate, or the API fault.
    pub fn arm(&self, step: Step, action: Action) {
        match (step, step.gate()) {
            (_, Some(g)) => self.node.arm(g),
            (Step::PodGet, None) if action == Action::Kill => {
                self.node.bed.api.set_latency(Duration::from_secs(3600))
            }
            (Step::PodGet, None) => {
                self.node
                    .bed
                    .api
                    .set_fail_next("GET", &format!("/pods/{}", self.name), 403);
            }
            (_, None) => self.node.arm("b1"),
        }
    }
}

/// One whole run on a fresh node: ADD under `fault`, containerd's DELs, leak check. Leaks and
/// DELs that did not succeed are reported, not panicked on, so a soak can count them.
pub fn run(fault: &Fault) -> RunReport {
    let started = Instant::now();
    let node = GatedNode::new();
    let pod = node.pod("soak");
    let api = &node.bed.api;
    let mut leaks = Vec::new();
    let add_started = Instant::now();
    let add = match fault {
        Fault::At(step, action) => {
            pod.arm(*step, *action);
            let running = pod.spawn_add();
            match pod.stop_at(running, *step, *action) {
                Ok(end) => end,
                Err(e) => {
                    leaks.push(e);
                    AddEnd::Killed
                }
            }
        }
        Fault::KillAfter(after) => {
            let mut running = pod.spawn_add();
            let deadline = Instant::now() + *after;
            while Instant::now() < deadline && !running.finished() {
                std::thread::sleep(Duration::from_millis(2));
            }
            if running.finished() {
                end_of(running.wait())
            } else {
                running.kill();
                AddEnd::Killed
            }
        }
        Fault::Api(_, faults) => {
            for f in faults {
                api.inject(f.clone());
            }
            let end = end_of(pod.spawn_add().wait());
            api.clear_faults();
            end
        }
        Fault::ApiLatency(d) => {
            api.set_latency(*d);
            let end = end_of(pod.spawn_add().wait());
            api.set_latency(Duration::ZERO);
            end
        }
    };
    let add_elapsed = add_started.elapsed();
    let network_status = api
        .get_pod(NS, &pod.name)
        .and_then(|p| {
            p["metadata"]["annotations"][crate::bed::STATUS_KEY]
                .as_str()
                .map(str::to_owned)
        })
        .and_then(|t| serde_json::from_str(&t).ok());
    let prev = match &add {
        AddEnd::Ok(r) => Some(r),
        _ => None,
    };
    let dels = pod.containerd_dels(prev);
    for (i, d) in dels.iter().enumerate() {
        if d.code != 0 {
            leaks.push(format!("DEL {} failed: {}", i + 1, d.stdout.trim()));
        }
    }
    leaks.extend(pod.leaks());
    kill_container_processes(&pod.cid);
    RunReport {
        fault: fault.clone(),
        add,
        dels,
        network_status,
        requests: api.requests(),
        leaks,
        elapsed: started.elapsed(),
        add_elapsed,
    }
}

fn end_of(out: Outcome) -> AddEnd {
    if out.code == 0 {
        AddEnd::Ok(out.json())
    } else {
        AddEnd::Failed(out)
    }
}
