//! Recording fakes of the engine's seams ([`DelegateExec`], [`KubeApi`], [`NetnsRoutes`]), for
//! the engine's own tests and for any crate that drives the engine (the thick-mode daemon).
//! They shipped next to the traits so that no test file grows its own copy.

use crate::api::{ApiError, KubeApi, NadInfo, PodEvent, PodInfo};
use crate::exec::{DelegateExec, ExecError, ExecRequest};
use crate::routes::{DefaultRoute, Family, NetnsRoutes};
use plexus_cni::{CniError, Command};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

/// One delegate invocation as [`FakeExec`] saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub plugin: String,
    pub command: Command,
    pub ifname: String,
    pub args: String,
    /// `CNI_NETNS` (`None` when the runtime gave none).
    pub netns: Option<String>,
    pub stdin: Value,
}

/// A one-shot rendezvous: the call it is set on blocks until [`Gate::open`].
#[derive(Debug, Default)]
pub struct Gate {
    /// (a call reached the gate, the gate is open)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Gate {
    /// Blocks until a call reached the gate.
    pub fn wait_reached(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.0 {
            s = self.cv.wait(s).unwrap();
        }
    }

    /// Lets the blocked call (or the next one to arrive) through.
    pub fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }

    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = true;
        self.cv.notify_all();
        while !s.1 {
            s = self.cv.wait(s).unwrap();
        }
    }
}

/// Records every call; ADD returns a result naming the interface (a chained plugin passes
/// `prevResult` through); fails and blocks where told to.
#[derive(Debug, Default)]
pub struct FakeExec {
    pub calls: Mutex<Vec<Call>>,
    /// (plugin, command) pairs that fail with code 7.
    pub fail: Mutex<Vec<(String, Command)>>,
    gates: Mutex<Vec<(String, Command, Arc<Gate>)>>,
}

impl FakeExec {
    /// Makes every later `command` of `plugin` fail.
    pub fn fail_on(&self, plugin: &str, command: Command) {
        self.fail.lock().unwrap().push((plugin.into(), command));
    }

    /// Makes every later `command` of `plugin` succeed again.
    pub fn heal(&self, plugin: &str, command: Command) {
        self.fail
            .lock()
            .unwrap()
            .retain(|(p, c)| !(p == plugin && *c == command));
    }

    /// The next `command` of `plugin` is recorded, then blocks until the gate opens.
    pub fn gate(&self, plugin: &str, command: Command) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        self.gates
            .lock()
            .unwrap()
            .push((plugin.into(), command, gate.clone()));
        gate
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// `"<COMMAND> <plugin> <ifname>"` per call.
    pub fn trace(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{} {} {}", c.command.as_str(), c.plugin, c.ifname))
            .collect()
    }
}

impl DelegateExec for FakeExec {
    fn exec(&self, req: &ExecRequest<'_>) -> Result<Vec<u8>, ExecError> {
        let stdin: Value = serde_json::from_slice(req.stdin).expect("delegate stdin is JSON");
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Call {
                plugin: req.plugin.into(),
                command: req.command,
                ifname: req.ifname.into(),
                args: req.args.into(),
                netns: req.netns.map(|p| p.display().to_string()),
                stdin: stdin.clone(),
            });
            calls.len()
        };
        let gate = {
            let mut gates = self.gates.lock().unwrap();
            let hit = gates
                .iter()
                .position(|(p, c, _)| p == req.plugin && *c == req.command);
            hit.map(|i| gates.remove(i).2)
        };
        if let Some(g) = gate {
            g.pass();
        }
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
        if let Some(prev) = stdin.get("prevResult") {
            return Ok(serde_json::to_vec(prev).expect("JSON"));
        }
        let r = json!({
            "cniVersion": stdin["cniVersion"],
            "interfaces": [{"name": req.ifname, "mac": format!("02:00:00:00:00:{n:02x}"), "sandbox": "/run/netns/x"}],
            "ips": [{"address": format!("10.0.{n}.5/24"), "gateway": format!("10.0.{n}.1"), "interface": 0}]
        });
        Ok(serde_json::to_vec(&r).expect("JSON"))
    }
}

/// An API server of pods and NADs held in memory; logs every call.
#[derive(Debug, Default)]
pub struct FakeKube {
    pub pods: BTreeMap<(String, String), PodInfo>,
    pub nads: BTreeMap<(String, String), NadInfo>,
    /// `"GET pod ns/name"`, `"GET nads a/b,c/d"`, `"PATCH ns/name uid=..."`.
    pub log: Mutex<Vec<String>>,
    /// Bodies of the status patches that succeeded.
    pub patches: Mutex<Vec<String>>,
    pub fail_patch: bool,
    /// Every read answers "unreachable" (CNI code 11).
    pub unreachable: bool,
    pub events: Mutex<Vec<PodEvent>>,
    pub fail_events: bool,
}

impl FakeKube {
    /// Adds a pod with UID `uid-1` and `networks` as its selection annotation.
    pub fn with_pod(mut self, ns: &str, name: &str, networks: Option<&str>) -> Self {
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

    /// Adds a NAD whose `spec.config` is `config`.
    pub fn with_nad(mut self, ns: &str, name: &str, config: Value) -> Self {
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

    /// Every call so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn unreachable_error(&self) -> Option<ApiError> {
        self.unreachable
            .then(|| ApiError::Unreachable("scripted: connection refused".into()))
    }
}

impl KubeApi for FakeKube {
    fn get_pod(&self, namespace: &str, name: &str) -> Result<PodInfo, ApiError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("GET pod {namespace}/{name}"));
        if let Some(e) = self.unreachable_error() {
            return Err(e);
        }
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
                if let Some(e) = self.unreachable_error() {
                    return Err(e);
                }
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

/// Records route operations; the pod's table starts with eth0's IPv4 default route via
/// 10.0.1.1.
#[derive(Debug, Default)]
pub struct FakeRoutes {
    pub log: Mutex<Vec<String>>,
    /// Every route replacement fails.
    pub fail: bool,
}

impl NetnsRoutes for FakeRoutes {
    fn default_routes(&self, _: &Path, family: Family) -> Result<Vec<DefaultRoute>, String> {
        Ok(match family {
            Family::V4 => vec![DefaultRoute {
                ifname: "eth0".into(),
                gateway: Some("10.0.1.1".parse().expect("an IPv4 address")),
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
