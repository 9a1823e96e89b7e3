//! The end-to-end test bed shared by the test files: a [`Node`], a fake API server, the plexus
//! config pointing at both, and helpers to create pods and NADs, call `plexus` like a runtime
//! and check that nothing is left behind.

use crate::cni::{
    Call, Node, Outcome, bin_path, exec_plugin, k8s_args, link_names, recorded, recorder_cni_path,
    spawn_plugin_env,
};
use crate::daemon::{Daemon, DaemonOptions};
use crate::fakeapi::{FakeApiOptions, FakeApiServer};
use crate::netns::NetNs;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The pod annotation plexus writes.
pub const STATUS_KEY: &str = "k8s.v1.cni.cncf.io/network-status";

/// How the bed's runtime calls Plexus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The runtime execs `plexus` for every call.
    Thin,
    /// `plexusd` runs against the fake API server; the runtime execs `plexus-shim`, which
    /// forwards each call to it.
    Thick,
}

/// A node with a fake API server. `CNI_PATH` holds the Debian plugins and the `cni-recorder`.
#[derive(Debug)]
pub struct Bed {
    /// Thick mode's daemon (first, so that it stops before the node's links go).
    pub daemon: Option<Daemon>,
    pub mode: Mode,
    pub node: Node,
    pub api: FakeApiServer,
    pub kubeconfig: PathBuf,
    /// The cluster network conflist (bridge + host-local, cniVersion 1.0.0).
    pub cluster_file: PathBuf,
    pub cni_path: String,
    /// Where `cni-recorder` plugins of [`Bed::recorder_conf`] write their calls.
    pub record: PathBuf,
}

impl Default for Bed {
    fn default() -> Self {
        Self::new()
    }
}

impl Bed {
    pub fn new() -> Self {
        Self::with_options(FakeApiOptions::default())
    }

    /// A bed in `mode` (thick: `plexusd` started and synced).
    pub fn in_mode(mode: Mode) -> Self {
        Self::with_mode(mode, FakeApiOptions::default(), DaemonOptions::default())
    }

    /// A bed in `mode` with these fake API server and daemon options.
    pub fn with_mode(mode: Mode, opts: FakeApiOptions, daemon: DaemonOptions) -> Self {
        let mut bed = Self::with_options(opts);
        if mode == Mode::Thick {
            let conf = bed.thin_config(json!({}));
            bed.daemon = Some(
                Daemon::start(&bed.node.root.path().join("plexusd"), &conf, daemon)
                    .expect("plexusd starts"),
            );
            bed.mode = Mode::Thick;
        }
        bed
    }

    /// A bed in `mode` whose API server is HTTPS with a bearer token file and a CA bundle, as on
    /// a real node (the server offers HTTP/2, as kube-apiserver does).
    pub fn over_tls(mode: Mode) -> Self {
        let opts = FakeApiOptions {
            tls: true,
            token: Some("s3cr3t-token".into()),
            ..FakeApiOptions::default()
        };
        Self::with_mode(mode, opts, DaemonOptions::default())
    }

    /// The running daemon (panics in thin mode).
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("a thick-mode bed")
    }

    /// The daemon, mutably (to kill or restart it).
    pub fn daemon_mut(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("a thick-mode bed")
    }

    /// The plugin binary the runtime execs in this bed's mode.
    pub fn plugin_bin(&self) -> PathBuf {
        match self.mode {
            Mode::Thin => bin_path("plexus"),
            Mode::Thick => bin_path("plexus-shim"),
        }
    }

    /// In thin mode `n`, in thick mode 0: the reads (pod and NAD GETs) that thick mode serves
    /// from its watch caches.
    pub fn reads(&self, n: usize) -> usize {
        match self.mode {
            Mode::Thin => n,
            Mode::Thick => 0,
        }
    }

    /// The API requests made for CNI calls: all of them but the daemon's lists and watches of
    /// its caches (collections; a CNI call only ever reads or writes one named object).
    pub fn cni_requests(&self) -> Vec<crate::fakeapi::RequestRecord> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| {
                !(r.method == "GET"
                    && (r.path.ends_with("/pods")
                        || r.path.ends_with("/network-attachment-definitions")))
            })
            .collect()
    }

    pub fn with_options(opts: FakeApiOptions) -> Self {
        let node = Node::new().expect("node");
        let api = FakeApiServer::start(opts).expect("fake API server");
        let kubeconfig = api
            .write_kubeconfig(&node.root.path().join("kube"))
            .expect("kubeconfig");
        let cluster_file = node.write_cluster_file("1.0.0").expect("cluster file");
        let cni_path = recorder_cni_path(&node.root.path().join("recbin")).expect("recorder");
        let gate = node.root.path().join("recbin").join("cni-gate");
        std::os::unix::fs::symlink(bin_path("cni-gate"), &gate).expect("link cni-gate");
        let record = node.root.path().join("record.jsonl");
        Self {
            daemon: None,
            mode: Mode::Thin,
            node,
            api,
            kubeconfig,
            cluster_file,
            cni_path,
            record,
        }
    }

    /// The plexus config with the cluster network given as a conflist path, `extra` merged in.
    /// In thick mode, the shim's: `"type": "plexus-shim"` and the daemon's socket.
    pub fn config(&self, extra: Value) -> Value {
        let mut c = self.thin_config(extra);
        if let Some(d) = &self.daemon {
            c["type"] = json!("plexus-shim");
            c["daemonSocket"] = json!(d.socket);
        }
        c
    }

    /// The thin plugin's config (also what the daemon reads with `--config`).
    pub fn thin_config(&self, extra: Value) -> Value {
        self.node.plexus_config(
            self.cluster_file.to_str().expect("utf-8 path"),
            Some(&self.kubeconfig),
            extra,
        )
    }

    /// Creates NAD `ns/name`; in thick mode, returns once the daemon's cache holds it.
    pub fn nad(&self, ns: &str, name: &str, config: &Value) {
        let nad = self.api.create_nad(ns, name, Some(&config.to_string()));
        self.synced("nads", &nad);
    }

    /// In thick mode with the daemon running, waits until the daemon's `cache` (`pods` or `nads`) has seen `obj`'s
    /// resourceVersion, so that the next call does not race the watch (tests of the cache-miss
    /// path create their objects through `self.api` directly).
    pub fn synced(&self, cache: &str, obj: &Value) {
        let (Some(d), Some(rv)) = (
            self.daemon.as_ref().filter(|d| d.pid().is_some()),
            obj["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok()),
        ) else {
            return;
        };
        assert!(
            d.wait_version(cache, rv),
            "plexusd's {cache} cache never saw resourceVersion {rv}"
        );
    }

    /// Creates a pod with `networks` (when given) as its selection annotation; returns its UID.
    pub fn pod(&self, ns: &str, name: &str, networks: Option<&str>) -> String {
        let annotations = match networks {
            Some(n) => json!({"k8s.v1.cni.cncf.io/networks": n}),
            None => json!({}),
        };
        self.pod_annotated(ns, name, annotations)
    }

    /// Creates a pod with these annotations; returns its UID.
    pub fn pod_annotated(&self, ns: &str, name: &str, annotations: Value) -> String {
        let pod = self.api.create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {"nodeName": "node-1"}
        }));
        self.synced("pods", &pod);
        pod["metadata"]["uid"].as_str().expect("uid").to_owned()
    }

    /// The pod's network-status entries.
    pub fn status_of(&self, ns: &str, name: &str) -> Vec<Value> {
        let pod = self.api.get_pod(ns, name).expect("pod exists");
        let text = pod["metadata"]["annotations"][STATUS_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no network-status on {pod}"))
            .to_owned();
        serde_json::from_str(&text).expect("network-status is JSON")
    }

    /// One CNI call for a pod, with kubelet's `CNI_ARGS` and `CNI_IFNAME=eth0`.
    #[allow(clippy::too_many_arguments)] // mirrors the CNI environment one-to-one
    pub fn call(
        &self,
        command: &str,
        cid: &str,
        netns: Option<&Path>,
        ns: &str,
        pod: &str,
        uid: &str,
        config: &Value,
    ) -> Outcome {
        self.call_env(command, cid, netns, ns, pod, uid, config, &[])
    }

    /// [`Bed::call`] with extra environment variables for plexus, which its delegates inherit
    /// (the `sriov` plugin's test hooks, see [`crate::sriov::SriovNode::hooks`]).
    #[allow(clippy::too_many_arguments)] // mirrors the CNI environment one-to-one
    pub fn call_env(
        &self,
        command: &str,
        cid: &str,
        netns: Option<&Path>,
        ns: &str,
        pod: &str,
        uid: &str,
        config: &Value,
        env: &[(String, String)],
    ) -> Outcome {
        let child = self.start(command, cid, netns, ns, pod, uid, config, env);
        Outcome::from(child.wait_with_output().expect("wait plexus"))
    }

    /// [`Bed::call`] without waiting: the returned [`Running`] can be killed mid-command.
    #[allow(clippy::too_many_arguments)] // mirrors the CNI environment one-to-one
    pub fn spawn(
        &self,
        command: &str,
        cid: &str,
        netns: Option<&Path>,
        ns: &str,
        pod: &str,
        uid: &str,
        config: &Value,
    ) -> Running {
        Running {
            child: Some(self.start(command, cid, netns, ns, pod, uid, config, &[])),
        }
    }

    /// Starts the runtime's plugin (plexus, or the shim in thick mode) for one pod call.
    #[allow(clippy::too_many_arguments)] // mirrors the CNI environment one-to-one
    fn start(
        &self,
        command: &str,
        cid: &str,
        netns: Option<&Path>,
        ns: &str,
        pod: &str,
        uid: &str,
        config: &Value,
        env: &[(String, String)],
    ) -> std::process::Child {
        let call = Call {
            command,
            container_id: cid,
            netns,
            ifname: "eth0",
            args: k8s_args(ns, pod, uid, cid),
            config,
        };
        spawn_plugin_env(&self.plugin_bin(), &call, &self.cni_path, env).expect("spawn plexus")
    }

    /// The two DELs containerd (1.6/1.7) sends for one sandbox after an ADD: StopPodSandbox's, with
    /// `CNI_NETNS` and, when the ADD succeeded, its result as `prevResult` (libcni's result cache);
    /// then RemovePodSandbox's, with `CNI_NETNS` empty and no `prevResult` (the netns and the
    /// libcni cache are gone by then). containerd also sends the first one after a failed ADD.
    #[allow(clippy::too_many_arguments)] // mirrors the CNI environment one-to-one
    pub fn containerd_dels(
        &self,
        cid: &str,
        netns: &Path,
        ns: &str,
        pod: &str,
        uid: &str,
        config: &Value,
        prev_result: Option<&Value>,
    ) -> [Outcome; 2] {
        let mut stop = config.clone();
        if let Some(r) = prev_result {
            stop["prevResult"] = r.clone();
        }
        let first = self.call("DEL", cid, Some(netns), ns, pod, uid, &stop);
        let second = self.call("DEL", cid, None, ns, pod, uid, config);
        [first, second]
    }

    /// Everything a pod's sandbox left on this node, one line per finding (empty: clean): links
    /// in `pod_ns` but `lo`, host-local leases, ports on the node's bridges, any file in `cniDir`
    /// (entries, locks, `.tmp-*`), and processes still running with `CNI_CONTAINERID=cid` (a
    /// delegate must not outlive the plexus that ran it; killed delegates get `settle` to go).
    pub fn leaks(&self, pod_ns: &NetNs, cid: &str, settle: Duration) -> Vec<String> {
        let mut out = Vec::new();
        let links: Vec<String> = link_names(pod_ns)
            .into_iter()
            .filter(|l| l != "lo")
            .collect();
        if !links.is_empty() {
            out.push(format!("links left in the pod netns: {links:?}"));
        }
        let leases = self.node.leases();
        if !leases.is_empty() {
            out.push(format!("host-local leases left: {leases:?}"));
        }
        for bridge in [&self.node.bridge, &self.node.bridge2] {
            let ports = bridge_ports(bridge.name());
            if !ports.is_empty() {
                out.push(format!("ports left on bridge {}: {ports:?}", bridge.name()));
            }
        }
        let files = self.cni_dir_files();
        if !files.is_empty() {
            out.push(format!("files left in cniDir: {files:?}"));
        }
        let deadline = Instant::now() + settle;
        let mut procs = container_processes(cid);
        while !procs.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            procs = container_processes(cid);
        }
        if !procs.is_empty() {
            out.push(format!("delegate processes still running: {procs:?}"));
        }
        out
    }

    /// Asserts [`Bed::leaks`] finds nothing (5 s for killed delegates to exit).
    pub fn assert_no_leaks(&self, pod_ns: &NetNs, cid: &str) {
        let leaks = self.leaks(pod_ns, cid, Duration::from_secs(5));
        assert!(
            leaks.is_empty(),
            "container {cid} leaked:\n  {}",
            leaks.join("\n  ")
        );
    }

    /// Every file name in `cniDir`, sorted (the directory may not exist yet).
    pub fn cni_dir_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.node.cni_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// STATUS/GC/VERSION: no attachment parameters.
    pub fn verb(&self, command: &str, config: &Value) -> Outcome {
        let call = Call {
            command,
            container_id: "",
            netns: None,
            ifname: "",
            args: String::new(),
            config,
        };
        exec_plugin(&self.plugin_bin(), &call, &self.cni_path).expect("exec plexus")
    }

    /// A recorder conf (one plugin) declaring every capability a selection can request.
    pub fn recorder_conf(&self, name: &str) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": name,
            "type": "cni-recorder",
            "recordFile": self.record,
            "capabilities": {"ips": true, "mac": true, "infinibandGUID": true, "portMappings": true, "bandwidth": true, "deviceID": true}
        })
    }

    /// Creates a NAD with `k8s.v1.cni.cncf.io/resourceName: <resource>` (a device-plugin or DRA
    /// resource whose device the delegate needs).
    pub fn resource_nad(&self, ns: &str, name: &str, resource: &str, config: &Value) {
        self.api
            .create_object(json!({
                "apiVersion": "k8s.cni.cncf.io/v1",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name, "namespace": ns,
                    "annotations": {"k8s.v1.cni.cncf.io/resourceName": resource}},
                "spec": {"config": config.to_string()},
            }))
            .expect("create NAD");
    }

    /// A recorder conf standing in for the `sriov` plugin (no VFs on these machines): `vlan` 100
    /// and the `deviceID` and `CNIDeviceInfoFile` capabilities, like the sriov NADs in the wild.
    pub fn vf_conf(&self, name: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "cni-recorder",
            "recordFile": self.record,
            "vlan": 100,
            "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true}
        })
    }

    /// The kubelet's PodResources socket of this node (nothing listens until a fake kubelet
    /// starts on it).
    pub fn kubelet_socket(&self) -> PathBuf {
        self.node
            .root
            .path()
            .join("kubelet/pod-resources/kubelet.sock")
    }

    /// The kubelet's device-manager checkpoint of this node.
    pub fn checkpoint_file(&self) -> PathBuf {
        self.node
            .root
            .path()
            .join("kubelet/device-plugins/kubelet_internal_checkpoint")
    }

    /// The device-info root (`dp/`, `cni/`) of this node.
    pub fn device_info_dir(&self) -> PathBuf {
        self.node.root.path().join("devinfo")
    }

    /// [`Bed::config`] with the kubelet and device-info paths of this node.
    pub fn device_config(&self, extra: Value) -> Value {
        let mut c = self.config(json!({
            "podResourcesSocket": self.kubelet_socket(),
            "deviceCheckpointFile": self.checkpoint_file(),
            "deviceInfoDir": self.device_info_dir(),
            "kubeletTimeoutSeconds": 5,
        }));
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    }

    /// Every call the recorder plugins saw.
    pub fn records(&self) -> Vec<Value> {
        recorded(&self.record)
    }

    /// A recorder cluster conflist file of version 1.1.0 (`fail` scripts failing verbs).
    pub fn recorder_cluster(&self, fail: Value) -> PathBuf {
        self.recorder_cluster_with(json!({"fail": fail}))
    }

    /// A recorder cluster conflist file of version 1.1.0 with `extra` keys in its plugin.
    pub fn recorder_cluster_with(&self, extra: Value) -> PathBuf {
        let p = self.node.root.path().join("cluster-rec.conflist");
        let mut plugin =
            json!({"type": "cni-recorder", "recordFile": self.record, "address": "10.99.0.5/24"});
        if let (Some(c), Some(e)) = (plugin.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let c = json!({
            "cniVersion": "1.1.0",
            "name": "rec-cluster",
            "plugins": [plugin]
        });
        std::fs::write(&p, c.to_string()).expect("write cluster conflist");
        p
    }

    /// A directory on this bed's `CNI_PATH` (after the Debian plugins) where tests put plugins.
    pub fn plugin_dir(&self) -> PathBuf {
        self.node.root.path().join("recbin")
    }

    /// Installs an executable shell script as plugin `name` in [`Bed::plugin_dir`].
    pub fn install_script_plugin(&self, name: &str, script: &str) -> PathBuf {
        write_script(&self.plugin_dir().join(name), script)
    }

    /// Installs `target` under the plugin name `name` in [`Bed::plugin_dir`] (a symlink, as a
    /// package or an installer would leave it).
    pub fn install_plugin_link(&self, name: &str, target: &Path) {
        std::os::unix::fs::symlink(target, self.plugin_dir().join(name)).expect("symlink plugin");
    }

    /// Every file in `cniDir` that belongs to container `cid`: entry, previous generation, lock,
    /// temp files.
    pub fn cni_files_of(&self, cid: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.node.cni_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(cid))
            .collect();
        v.sort();
        v
    }

    /// The fake API server's events once there are at least `n` (Events are posted by a detached
    /// process after the CNI result is returned); panics after 10 s.
    pub fn wait_for_events(&self, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let events = self.api.events();
            if events.len() >= n || std::time::Instant::now() > deadline {
                assert!(events.len() >= n, "expected {n} events, got {events:?}");
                return events;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Asserts that nothing of `pod_ns` is left: only `lo`, no lease, no cache entry.
    pub fn assert_clean(&self, pod_ns: &NetNs) {
        assert_eq!(
            link_names(pod_ns),
            vec!["lo"],
            "interfaces left in the pod netns"
        );
        self.node.assert_released();
    }
}

/// One pod sandbox as the runtime sees it: the pod in the API server, its netns and its
/// container ID.
#[derive(Debug)]
pub struct Sandbox {
    pub ns: NetNs,
    pub cid: String,
    pub namespace: String,
    pub pod: String,
    pub uid: String,
}

impl Bed {
    /// Creates pod `namespace/pod` (with `networks` as its selection annotation, when given), a
    /// netns and a container ID for its sandbox.
    pub fn sandbox(&self, namespace: &str, pod: &str, networks: Option<&str>) -> Sandbox {
        let uid = self.pod(namespace, pod, networks);
        let ns = NetNs::new("pxf").expect("netns");
        Sandbox {
            ns,
            cid: cid(pod),
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            uid,
        }
    }

    /// ADD of the sandbox, as the runtime's RunPodSandbox does it.
    pub fn add(&self, sb: &Sandbox, config: &Value) -> Outcome {
        let Sandbox {
            ns,
            cid,
            namespace,
            pod,
            uid,
        } = sb;
        self.call("ADD", cid, Some(ns.path()), namespace, pod, uid, config)
    }

    /// Starts the ADD of the sandbox and returns at once (to SIGKILL plexus mid-call).
    pub fn spawn_add(&self, sb: &Sandbox, config: &Value) -> Running {
        let Sandbox {
            ns,
            cid,
            namespace,
            pod,
            uid,
        } = sb;
        self.spawn("ADD", cid, Some(ns.path()), namespace, pod, uid, config)
    }

    /// containerd's two DELs of the sandbox ([`Bed::containerd_dels`]); both must succeed.
    pub fn teardown(&self, sb: &Sandbox, config: &Value) {
        let Sandbox {
            ns,
            cid,
            namespace,
            pod,
            uid,
        } = sb;
        for out in self.containerd_dels(cid, ns.path(), namespace, pod, uid, config, None) {
            out.assert_ok();
        }
    }

    /// Creates NAD `ns/name` running the `cni-recorder` with `extra` keys (`sleep`, `background`,
    /// `fail`, ... see the recorder's docs).
    pub fn recorder_nad(&self, ns: &str, name: &str, extra: Value) {
        let mut conf = self.recorder_conf(name);
        if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        self.nad(ns, name, &conf);
    }

    /// The recorder's records of `command` for network `name`.
    pub fn records_of(&self, command: &str, name: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["command"] == command && r["stdin"]["name"] == name)
            .collect()
    }
}

/// Whether any live (not zombie) process is in process group `pgid`. A killed delegate whose
/// parent died stays a zombie until init reaps it, and a zombie runs nothing.
pub fn group_alive(pgid: u64) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after its ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
        })
}

/// Polls `cond` every 50 ms for up to `limit`; true once it holds. For waiting on effects of
/// another process (never for asserting how long something took).
pub fn wait_for(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A container ID unique across tests and test processes.
pub fn cid(tag: &str) -> String {
    format!("{tag}-{}", crate::netns::unique_name("c"))
}

/// Writes `script` to `path`, mode 0755, and returns the path.
pub fn write_script(path: &Path, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, script).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
    path.to_owned()
}

/// A `plexus` process started by [`Bed::spawn`]; killed (SIGKILL) and reaped on drop if the test
/// did not wait for it.
#[derive(Debug)]
pub struct Running {
    child: Option<Child>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the process has exited (its status and output stay for [`Running::wait`]).
    pub fn finished(&mut self) -> bool {
        let child = self.child.as_mut().expect("running");
        matches!(child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the process to exit by itself.
    pub fn wait(mut self) -> Outcome {
        let child = self.child.take().expect("running");
        Outcome::from(child.wait_with_output().expect("wait for plexus"))
    }

    /// SIGKILLs the process (as a runtime's timeout or an OOM kill does) and reaps it.
    pub fn kill(mut self) -> Outcome {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        Outcome::from(child.wait_with_output().expect("reap plexus"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The state letter of a `/proc/<pid>/stat` line (`R`, `S`, `Z`...).
fn stat_state(stat: &str) -> Option<char> {
    // The command name is in parentheses and may contain spaces or parentheses itself.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Live (non-zombie) processes whose environment has `CNI_CONTAINERID=cid`, as `pid comm`.
pub fn container_processes(cid: &str) -> Vec<String> {
    let needle = format!("CNI_CONTAINERID={cid}");
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if matches!(stat_state(&stat), Some('Z') | None) {
            continue;
        }
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        out.push(format!("{pid} {}", comm.trim()));
    }
    out
}

/// Names of the links enslaved to `bridge` in the host namespace.
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-j", "link", "show", "master", bridge])
        .output()
        .expect("run ip");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(Vec::new()));
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}

/// Kills (SIGKILL) the processes [`container_processes`] finds for `cid`: a test's cleanup of
/// delegates that a defect left running, after their presence has been reported.
pub fn kill_container_processes(cid: &str) {
    for p in container_processes(cid) {
        if let Some(pid) = p.split(' ').next() {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid])
                .status();
        }
    }
}
