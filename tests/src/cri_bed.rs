//! The kubelet's side of a node running containerd: a [`Bed`] (fake API server, bridges, the
//! macvlan master, plexus's config) plus a private [`Containerd`] whose CRI plugin calls `plexus`
//! from a `00-plexus.conflist`, and one helper per step of a pod's life as the kubelet drives it
//! over CRI (run, inspect, stop, remove) and for checking that nothing of a pod is left.

use crate::bed::{Bed, Mode, bridge_ports};
use crate::cni::link_names;
use crate::containerd::Containerd;
use crate::cri::{CriClient, PodRef, kubelet_sandbox_config, pb};
use crate::netns::NetNs;
use serde_json::{Value, json};
use std::path::PathBuf;

/// The file containerd loads its CNI config from (the first by name, `max_conf_num = 1`).
pub const CONFLIST_NAME: &str = "00-plexus.conflist";

/// How the bed configures the runtime.
#[derive(Debug, Clone)]
pub struct CriBedOptions {
    /// Thin: containerd execs `plexus`; thick: it execs `plexus-shim`, which forwards to the
    /// bed's `plexusd`.
    pub mode: Mode,
    /// Declare the `io.kubernetes.cri.pod-annotations` capability on the plexus plugin, so that
    /// containerd passes the pod's annotations in `runtimeConfig`.
    pub pod_annotations_capability: bool,
}

impl Default for CriBedOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Thin,
            pod_annotations_capability: false,
        }
    }
}

impl CriBedOptions {
    /// The defaults in `mode`.
    pub fn in_mode(mode: Mode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }
}

/// A node with containerd (see the module docs).
#[derive(Debug)]
pub struct CriBed {
    // Field order is drop order: the client before the runtime, the runtime before the bed whose
    // bridges and API server its pods use.
    cri: CriClient,
    pub containerd: Containerd,
    pub bed: Bed,
}

/// A running pod sandbox.
#[derive(Debug)]
pub struct Sandbox {
    pub id: String,
    pub pod: PodRef,
    /// The sandbox's network namespace, attached under /run/netns so the test can look inside.
    /// The attachment keeps the namespace alive after the runtime drops it, so what plexus's DEL
    /// removed (or not) stays visible.
    pub netns: NetNs,
    /// The IP the runtime reports for the pod (from the CNI result of the cluster network).
    pub ip: String,
}

impl CriBed {
    pub fn new(opts: CriBedOptions) -> CriBed {
        let bed = Bed::in_mode(opts.mode);
        let mut containerd = Containerd::prepare().expect("prepare containerd");
        let mut plugin = bed.config(json!({}));
        if opts.pod_annotations_capability {
            plugin["capabilities"] = json!({"io.kubernetes.cri.pod-annotations": true});
        }
        // In a conflist, name and cniVersion belong to the list; libcni injects them into each
        // plugin's config.
        let version = plugin.as_object_mut().and_then(|m| m.remove("cniVersion"));
        let name = plugin.as_object_mut().and_then(|m| m.remove("name"));
        let conflist = json!({"cniVersion": version, "name": name, "plugins": [plugin]});
        std::fs::write(
            containerd.cni_conf_dir.join(CONFLIST_NAME),
            serde_json::to_vec_pretty(&conflist).expect("JSON"),
        )
        .expect("write conflist");
        let cri = containerd.start().expect("start containerd");
        CriBed {
            cri,
            containerd,
            bed,
        }
    }

    /// The CRI client of the running containerd.
    pub fn cri(&self) -> &CriClient {
        &self.cri
    }

    /// Creates a pod in the fake API server (with `annotations`) and returns what the kubelet
    /// would know of it.
    pub fn pod(&self, ns: &str, name: &str, annotations: Value) -> PodRef {
        self.bed.pod_annotated(ns, name, annotations);
        PodRef::from_pod(&self.bed.api.get_pod(ns, name).expect("pod just created"))
    }

    /// `RunPodSandbox` as the kubelet sends it for `pod`; the runtime's error when it fails.
    pub fn try_run(&self, pod: &PodRef) -> Result<String, tonic::Status> {
        let config = kubelet_sandbox_config(
            pod,
            0,
            &self.containerd.cgroup_root,
            &self.containerd.log_root,
        );
        self.cri.run_pod_sandbox(config)
    }

    /// Runs the pod's sandbox, checks the runtime reports it ready, and attaches its netns.
    pub fn run(&self, pod: &PodRef) -> Sandbox {
        let id = self.try_run(pod).unwrap_or_else(|e| {
            panic!(
                "RunPodSandbox {}/{}: {e}\ncontainerd log:\n{}",
                pod.namespace,
                pod.name,
                self.containerd.log_tail()
            )
        });
        let (status, info) = self.cri.pod_sandbox_status(&id).expect("PodSandboxStatus");
        assert_eq!(
            status.state(),
            pb::PodSandboxState::SandboxReady,
            "{status:?}"
        );
        let pid = info["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("no pid in the sandbox info: {info}"));
        let netns = NetNs::attach("pxs", u32::try_from(pid).expect("pid"))
            .expect("attach the sandbox netns");
        let ip = status.network.map(|n| n.ip).unwrap_or_default();
        Sandbox {
            id,
            pod: pod.clone(),
            netns,
            ip,
        }
    }

    /// `StopPodSandbox` (the runtime's first DEL, with the cached result), which must succeed.
    pub fn stop(&self, sandbox: &Sandbox) {
        self.cri.stop_pod_sandbox(&sandbox.id).unwrap_or_else(|e| {
            panic!(
                "StopPodSandbox {}: {e}\ncontainerd log:\n{}",
                sandbox.id,
                self.containerd.log_tail()
            )
        });
        let (status, _) = self
            .cri
            .pod_sandbox_status(&sandbox.id)
            .expect("PodSandboxStatus");
        assert_eq!(
            status.state(),
            pb::PodSandboxState::SandboxNotready,
            "{status:?}"
        );
    }

    /// `RemovePodSandbox` (containerd's second DEL, without netns or result), which must succeed.
    pub fn remove(&self, sandbox: &Sandbox) {
        self.cri
            .remove_pod_sandbox(&sandbox.id)
            .unwrap_or_else(|e| {
                panic!(
                    "RemovePodSandbox {}: {e}\ncontainerd log:\n{}",
                    sandbox.id,
                    self.containerd.log_tail()
                )
            });
    }

    /// Stops and starts containerd; the pods keep running.
    pub fn restart_containerd(&mut self) {
        self.cri = self.containerd.restart().expect("restart containerd");
    }

    /// Every file in plexus's `cniDir` (cache entries, lock files, temporary files), sorted.
    pub fn cni_dir_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.bed.node.cni_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Asserts that the runtime and plexus left nothing of any pod: no sandbox, no netns held by
    /// the runtime, no port on either bridge, no host-local lease, no file at all in `cniDir`;
    /// and, for each attached sandbox netns, only `lo` in it.
    pub fn assert_nothing_left(&self, sandboxes: &[&Sandbox]) {
        for s in sandboxes {
            assert_eq!(
                link_names(&s.netns),
                vec!["lo"],
                "interfaces left in the netns of sandbox {} (plexus DEL did not remove them)",
                s.id
            );
        }
        let listed = self.cri.list_pod_sandboxes().expect("ListPodSandbox");
        assert!(listed.is_empty(), "sandboxes left: {listed:?}");
        assert_eq!(
            self.containerd.netns_files(),
            Vec::<PathBuf>::new(),
            "netns left by the runtime"
        );
        let node = &self.bed.node;
        assert_eq!(
            bridge_ports(node.bridge.name()),
            Vec::<String>::new(),
            "ports left on the cluster bridge"
        );
        assert_eq!(
            bridge_ports(node.bridge2.name()),
            Vec::<String>::new(),
            "ports left on the NAD bridge"
        );
        assert_eq!(
            node.leases(),
            Vec::<String>::new(),
            "host-local leases left"
        );
        assert_eq!(
            self.cni_dir_files(),
            Vec::<String>::new(),
            "files left in plexus's cniDir"
        );
    }
}

impl Drop for CriBed {
    /// Tears down what a failed test left running through the runtime, so plexus's DEL runs while
    /// the API server and bridges still exist; [`Containerd`]'s drop then removes the rest.
    fn drop(&mut self) {
        let Ok(items) = self.cri.list_pod_sandboxes() else {
            return;
        };
        for s in items {
            let _ = self.cri.stop_pod_sandbox(&s.id);
            let _ = self.cri.remove_pod_sandbox(&s.id);
        }
    }
}
