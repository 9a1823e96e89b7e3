//! The installer and the plugin together, through the lifecycles docs/install.md documents:
//! install, token rotation, a DaemonSet rollout (the installer's pod deleted, its token
//! invalidated by the fake API server), upgrade, uninstall and rollback to Multus.
//!
//! `plexus-install` runs as a process against a "host" made of temporary dirs (a conf dir with a
//! real primary network config, an empty bin dir, a projected service-account dir); the plugin it
//! installs there is exec'd as a runtime would, with the conflist's plugin object on stdin, for
//! pods with a macvlan NAD in real network namespaces, against the fake API server over TLS.

use plexus_e2e::bed::Sandbox;
use plexus_e2e::cni::{
    CNI_BIN_DIR, Call, Node, Outcome, bin_path, exec_plugin, k8s_args, link_names,
};
use plexus_e2e::daemon::{Daemon, DaemonOptions};
use plexus_e2e::fakeapi::tokens::Bound;
use plexus_e2e::fakeapi::{FakeApiOptions, FakeApiServer};
use plexus_e2e::netns::{NetNs, unique_name};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STATUS_KEY: &str = "k8s.v1.cni.cncf.io/network-status";
const SYSTEM_NS: &str = "plexus-system";
const NODE: &str = "node-1";

/// A running `plexus-install`, stopped with SIGTERM (as the kubelet stops a container) on drop.
struct Installer {
    child: Child,
    log: PathBuf,
}

impl Installer {
    /// Stops it with SIGTERM and returns its log.
    fn stop(mut self) -> String {
        self.terminate();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Writes `data` to `dir/name` by rename, as the kubelet updates a projected volume.
fn put(dir: &Path, name: &str, data: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// A node with a fake API server (TLS), a host conf dir holding the primary, a host bin dir, and
/// the installer pod's service-account dir.
struct InstallBed {
    node: Node,
    api: FakeApiServer,
    host_conf: PathBuf,
    host_bin: PathBuf,
    sa: PathBuf,
    primary: PathBuf,
    runs: u32,
    /// The Node object exists (re-creating it would give it a new UID).
    node_created: std::cell::Cell<bool>,
}

impl InstallBed {
    fn new(opts: FakeApiOptions) -> Self {
        let node = Node::new().expect("node");
        let api =
            FakeApiServer::start(FakeApiOptions { tls: true, ..opts }).expect("fake API server");
        let host_conf = node.root.path().join("host-net.d");
        let host_bin = node.root.path().join("host-bin");
        let sa = node.root.path().join("sa");
        for d in [&host_conf, &host_bin, &sa] {
            std::fs::create_dir_all(d).unwrap();
        }
        let primary = host_conf.join("10-cluster.conflist");
        put(
            &host_conf,
            "10-cluster.conflist",
            &node.cluster_conflist("1.0.0").to_string(),
        );
        put(&sa, "ca.crt", &api.ca_pem().expect("TLS CA"));
        put(&sa, "namespace", SYSTEM_NS);
        api.create_nad(
            "blue",
            "macvlan-a",
            Some(&node.macvlan_config("macvlan-a", "10.78.9.0/24").to_string()),
        );
        Self {
            node,
            api,
            host_conf,
            host_bin,
            sa,
            primary,
            runs: 0,
            node_created: Default::default(),
        }
    }

    /// The cluster as the DaemonSet sees it: the plexus service account, this node, and a
    /// DaemonSet pod `pod` whose projected token (bound to the pod) is now in the SA dir.
    fn installer_pod(&self, pod: &str) -> String {
        self.api.create_service_account(SYSTEM_NS, "plexus");
        if !self.node_created.replace(true) {
            self.api.create_node(NODE);
        }
        self.api
            .create_pod(json!({"metadata": {"name": pod, "namespace": SYSTEM_NS},
            "spec": {"nodeName": NODE, "serviceAccountName": "plexus"}}));
        let token = self.api.issue_pod_token(SYSTEM_NS, pod).expect("pod token");
        put(&self.sa, "token", &token);
        token
    }

    fn our_config(&self) -> PathBuf {
        self.host_conf.join("00-plexus.conflist")
    }

    fn host_token(&self) -> String {
        std::fs::read_to_string(self.host_conf.join("plexus.d/token")).unwrap_or_default()
    }

    /// `plexus-install <sub>` with the host layout and plugin options of this bed.
    fn command(&mut self, sub: &str, binary: &Path, extra: &[&str]) -> (Command, PathBuf) {
        self.runs += 1;
        let log = self
            .node
            .root
            .path()
            .join(format!("install-{}-{sub}.log", self.runs));
        let mut cmd = Command::new(bin_path("plexus-install"));
        cmd.arg(sub)
            .args(["--host-root", "/"])
            .arg("--cni-conf-dir")
            .arg(&self.host_conf)
            .arg("--cni-bin-dir")
            .arg(&self.host_bin)
            .arg("--binary")
            .arg(binary);
        if sub != "uninstall" {
            cmd.arg("--service-account-dir")
                .arg(&self.sa)
                .arg("--api-server")
                .arg(self.api.url())
                .arg("--cache-dir")
                .arg(&self.node.cni_dir)
                .arg("--delegate-conf-dir")
                .arg(&self.node.conf_dir)
                // Delegates come from Debian's package dir, not the (test) host bin dir.
                .arg(format!("--set=binDir={CNI_BIN_DIR}"))
                .args(["--log-level", "debug", "--namespace-isolation", "true"]);
        }
        cmd.args(extra)
            .env_remove("PLEXUS_NODE_NAME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        (cmd, log)
    }

    /// Starts `plexus-install run` (the DaemonSet's keeper) and waits for its config.
    fn run(&mut self, binary: &Path, extra: &[&str]) -> Installer {
        let (mut cmd, log) = self.command("run", binary, extra);
        let inst = Installer {
            child: cmd.spawn().expect("spawn plexus-install"),
            log,
        };
        assert!(
            eventually(Duration::from_secs(20), || self.our_config().exists()
                && !self.host_token().is_empty()),
            "plexus-install wrote no config: {}",
            std::fs::read_to_string(&inst.log).unwrap_or_default()
        );
        inst
    }

    /// Runs a one-shot subcommand (`install`, `uninstall`) to completion; returns its log.
    fn once(&mut self, sub: &str, binary: &Path, extra: &[&str]) -> String {
        let (mut cmd, log) = self.command(sub, binary, extra);
        let status = cmd.status().expect("run plexus-install");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success(), "plexus-install {sub} failed: {text}");
        text
    }

    /// The plugin object a runtime passes for our conflist (plus the list's name and cniVersion).
    fn plugin_stdin(&self) -> Value {
        let conflist: Value =
            serde_json::from_slice(&std::fs::read(self.our_config()).unwrap()).unwrap();
        let mut p = conflist["plugins"][0].clone();
        p["name"] = conflist["name"].clone();
        p["cniVersion"] = conflist["cniVersion"].clone();
        p
    }

    /// Runs `command` through the plugin the installed config names (`plexus` or
    /// `plexus-shim`), from the host bin dir, as the runtime would.
    fn call(&self, command: &str, pod: &str, ns: &NetNs, cid: &str, uid: &str) -> Outcome {
        let config = self.plugin_stdin();
        let plugin = config["type"].as_str().expect("type").to_owned();
        exec_plugin(
            &self.host_bin.join(plugin),
            &Call {
                command,
                container_id: cid,
                netns: Some(ns.path()),
                ifname: "eth0",
                args: k8s_args("blue", pod, uid, cid),
                config: &config,
            },
            CNI_BIN_DIR,
        )
        .expect("exec the installed plexus")
    }

    /// Creates pod `name` asking for the macvlan NAD and runs ADD through the installed plugin.
    fn add(&self, name: &str) -> (Sandbox, Outcome) {
        let created = self.api.create_pod(json!({"metadata": {"name": name, "namespace": "blue",
            "annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan-a"}}, "spec": {"nodeName": NODE}}));
        let uid = created["metadata"]["uid"].as_str().unwrap().to_owned();
        let ns = NetNs::new("pxi").unwrap();
        let cid = unique_name("inst");
        let out = self.call("ADD", name, &ns, &cid, &uid);
        (
            Sandbox {
                ns,
                cid,
                namespace: "blue".to_owned(),
                pod: name.to_owned(),
                uid,
            },
            out,
        )
    }

    /// [`InstallBed::add`] that must succeed with both networks attached and reported.
    fn add_ok(&self, name: &str) -> Sandbox {
        let (pod, out) = self.add(name);
        out.assert_ok();
        assert_eq!(link_names(&pod.ns), vec!["eth0", "lo", "net1"]);
        let status: Vec<Value> = serde_json::from_str(
            self.api.get_pod("blue", name).unwrap()["metadata"]["annotations"][STATUS_KEY]
                .as_str()
                .expect("network-status written"),
        )
        .unwrap();
        assert_eq!(status.len(), 2, "{status:?}");
        assert_eq!(
            (status[1]["name"].as_str(), status[1]["interface"].as_str()),
            (Some("blue/macvlan-a"), Some("net1"))
        );
        pod
    }

    fn del_ok(&self, pod: &Sandbox) {
        self.call("DEL", &pod.pod, &pod.ns, &pod.cid, &pod.uid)
            .assert_ok();
        assert_eq!(link_names(&pod.ns), vec!["lo"]);
    }

    fn assert_clean(&self) {
        self.node.assert_released();
    }

    /// The conf dir's file names, sorted: the first is the one the runtime uses.
    fn conf_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.host_conf)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

#[test]
fn installer_generated_files_drive_the_real_plugin_through_a_token_rotation() {
    // Without --node-name the plugin uses the pod's projected token, kept current on rotation.
    let mut bed = InstallBed::new(FakeApiOptions {
        token: Some("sa-token-1".into()),
        ..Default::default()
    });
    put(&bed.sa, "token", "sa-token-1");
    let installer = bed.run(&bin_path("plexus"), &[]);
    assert!(
        bed.host_bin.join("plexus").is_file(),
        "plexus not installed"
    );
    let config = bed.plugin_stdin();
    assert_eq!(config["cniVersion"], "1.0.0");
    assert_eq!(config["clusterNetwork"], json!(bed.primary));

    let first = bed.add_ok("first");
    bed.del_ok(&first);

    // Rotation: the API server now accepts only the new token; the projected file changes.
    bed.api.set_token(Some("sa-token-2".into()));
    put(&bed.sa, "token", "sa-token-2");
    assert!(
        eventually(Duration::from_secs(5), || bed.host_token() == "sa-token-2"),
        "the installer did not follow the token rotation"
    );
    let second = bed.add_ok("second");
    bed.del_ok(&second);
    bed.assert_clean();
    let log = installer.stop();
    assert!(log.contains("no --node-name"), "{log}");
    assert!(
        bed.our_config().exists(),
        "SIGTERM must leave the config in place"
    );
}

#[test]
fn deleting_the_installers_pod_keeps_adds_working_with_the_node_bound_token() {
    let mut bed = InstallBed::new(FakeApiOptions::default());
    let pod_token = bed.installer_pod("plexus-a1b2c");
    let installer = bed.run(&bin_path("plexus"), &["--node-name", NODE]);

    // The plugin's token is not the pod's: it is the installer's own, bound to this Node, and it
    // names the node for the admission policy.
    let host_token = bed.host_token();
    assert_ne!(host_token, pod_token);
    let issued = bed
        .api
        .issued_token(&host_token)
        .expect("a token the API server issued");
    assert!(
        matches!(&issued.bound, Bound::Node { name, .. } if name == NODE),
        "{issued:?}"
    );
    assert_eq!(issued.node_name.as_deref(), Some(NODE));
    assert_eq!(issued.service_account, "plexus");
    assert_eq!(bed.api.count("POST", "/serviceaccounts/plexus/token"), 1);

    let first = bed.add_ok("first");

    // A rollout: the kubelet stops the container and the pod is deleted; the API server
    // invalidates the pod's token at once.
    let log = installer.stop();
    assert!(bed.api.delete_pod(SYSTEM_NS, "plexus-a1b2c").is_some());
    assert!(
        !log.contains(&host_token) && !log.contains(&pod_token),
        "a token was logged"
    );

    let second = bed.add_ok("second");
    bed.del_ok(&first);
    bed.del_ok(&second);
    bed.assert_clean();
}

#[test]
fn the_node_bound_token_is_refreshed_before_it_expires_and_adds_keep_working_after() {
    let mut bed = InstallBed::new(FakeApiOptions::default());
    bed.installer_pod("plexus-r3fr3");
    // `--service-account-max-token-expiration`: the API server grants far less than the 24 h the
    // keeper asks for (after the installer pod's own token was issued, which must outlive this
    // test). The keeper goes by the lifetime granted, refreshing at 80 % of it.
    let cap = Duration::from_secs(10);
    bed.api.set_max_token_expiration(Some(cap));
    let installer = bed.run(&bin_path("plexus"), &["--node-name", NODE]);
    let first = bed.host_token();
    let first_issued = bed
        .api
        .issued_token(&first)
        .expect("a token the API server issued");
    assert!(
        first_issued.expires <= std::time::SystemTime::now() + cap,
        "{first_issued:?}"
    );
    let pod = bed.add_ok("before");

    // The keeper replaces the token before it expires, without any file event to wake it.
    assert!(
        eventually(cap * 2, || bed.host_token() != first),
        "the token was not refreshed: {}",
        std::fs::read_to_string(&installer.log).unwrap_or_default()
    );
    let second = bed.host_token();
    let second_issued = bed.api.issued_token(&second).expect("an issued token");
    assert!(matches!(&second_issued.bound, Bound::Node { name, .. } if name == NODE));
    let issued_at = second_issued.claims["iat"].as_u64().expect("iat");
    let first_exp = first_issued.claims["exp"].as_u64().expect("exp");
    assert!(
        issued_at < first_exp,
        "refreshed at {issued_at}, after the first token expired at {first_exp}"
    );

    // Once the first token has expired (the fake API server then answers 401 to it), ADDs go on
    // with the token the keeper keeps current.
    while std::time::SystemTime::now() < first_issued.expires + Duration::from_millis(200) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = bed.add_ok("after");
    assert_ne!(bed.host_token(), first);
    bed.del_ok(&pod);
    bed.del_ok(&after);
    bed.assert_clean();

    // Each TokenRequest names the installer's build.
    let want = format!(
        "plexus-install/{} ({})",
        env!("CARGO_PKG_VERSION"),
        plexus_cni::build::COMMIT
    );
    let token_requests: Vec<_> = bed
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/serviceaccounts/plexus/token"))
        .collect();
    assert!(token_requests.len() >= 2, "{token_requests:?}");
    for r in &token_requests {
        assert_eq!(r.user_agent.as_deref(), Some(want.as_str()), "{r:?}");
    }
    let log = installer.stop();
    assert!(
        !log.contains(&first) && !log.contains(&second),
        "a token was logged"
    );
}

#[test]
fn where_nodes_cannot_be_bound_the_pod_token_is_used_and_dies_with_the_pod() {
    let mut bed = InstallBed::new(FakeApiOptions::default());
    bed.api.set_node_token_binding(false);
    let pod_token = bed.installer_pod("plexus-old");
    let installer = bed.run(&bin_path("plexus"), &["--node-name", NODE]);
    assert_eq!(
        bed.host_token(),
        pod_token,
        "fallback: the pod's projected token"
    );
    let first = bed.add_ok("first");
    let log = installer.stop();
    assert!(
        log.contains("ServiceAccountTokenNodeBinding")
            && log.contains("falling back to this pod's projected token"),
        "{log}"
    );
    // What the Node-bound token prevents: with the pod gone, the plugin's token is dead.
    bed.api.delete_pod(SYSTEM_NS, "plexus-old");
    let (second, out) = bed.add("second");
    assert_ne!(
        out.code, 0,
        "ADD succeeded with a deleted pod's token: {out:?}"
    );
    // docs/errors.md: the API server refused a request (401) is code 101.
    let err = out.json();
    assert_eq!(err["code"], 101, "{out:?}");
    let msg = err["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("401") || msg.contains("Unauthorized"),
        "{out:?}"
    );
    assert_eq!(
        link_names(&second.ns),
        vec!["lo"],
        "a failed ADD left interfaces"
    );
    bed.del_ok(&first);
    bed.assert_clean();
}

#[test]
fn upgrade_replaces_the_binary_and_pods_created_during_the_rollout_get_their_networks() {
    let mut bed = InstallBed::new(FakeApiOptions::default());
    bed.installer_pod("plexus-v1");
    let old = bed.run(&bin_path("plexus"), &["--node-name", NODE]);
    let before = bed.add_ok("before");

    // The new image: another build of the plugin (same code, different bytes).
    let new_dir = bed.node.root.path().join("image-v2");
    std::fs::create_dir_all(&new_dir).unwrap();
    let new_plexus = new_dir.join("plexus");
    let mut bytes = std::fs::read(bin_path("plexus")).unwrap();
    bytes.extend_from_slice(b"\0plexus-v2");
    std::fs::write(&new_plexus, &bytes).unwrap();
    std::fs::set_permissions(
        &new_plexus,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    // Rolling update on this node: the old pod goes (its token with it), the config stays.
    old.stop();
    bed.api.delete_pod(SYSTEM_NS, "plexus-v1");
    let during = bed.add_ok("during");

    // The new pod: its init container installs the new binary, its keeper takes over.
    bed.installer_pod("plexus-v2");
    let log = bed.once("install", &new_plexus, &["--node-name", NODE]);
    assert!(log.contains("answers VERSION"), "{log}");
    assert_eq!(
        std::fs::read(bed.host_bin.join("plexus")).unwrap(),
        bytes,
        "binary not upgraded"
    );
    let new = bed.run(&new_plexus, &["--node-name", NODE, "--skip-binaries"]);
    let after = bed.add_ok("after");
    // Pods attached by the old binary are torn down by the new one (the cache is shared).
    for p in [&before, &during, &after] {
        bed.del_ok(p);
    }
    bed.assert_clean();
    drop(new);
}

#[test]
fn documented_uninstall_restores_the_primary_and_removes_plexus_files() {
    let mut bed = InstallBed::new(FakeApiOptions::default());
    bed.installer_pod("plexus-x");
    let primary_bytes = std::fs::read(&bed.primary).unwrap();
    let installer = bed.run(&bin_path("plexus"), &["--node-name", NODE]);
    let pod = bed.add_ok("web");
    assert_eq!(
        bed.conf_files(),
        vec!["00-plexus.conflist", "10-cluster.conflist", "plexus.d"]
    );
    // Drain (docs/install.md, Uninstall step 1), then delete the DaemonSet.
    bed.del_ok(&pod);
    installer.stop();
    bed.api.delete_pod(SYSTEM_NS, "plexus-x");
    // The uninstall DaemonSet's command (deploy/uninstall), with this bed's host layout.
    let done = bed.node.root.path().join("uninstalled");
    let (mut cmd, log) = bed.command(
        "uninstall",
        &bin_path("plexus"),
        &["--then-wait", "--done-file", done.to_str().unwrap()],
    );
    let uninstaller = Installer {
        child: cmd.spawn().unwrap(),
        log,
    };
    assert!(
        eventually(Duration::from_secs(20), || done.exists()),
        "uninstall did not finish"
    );
    let log = uninstaller.stop();
    assert!(
        log.contains(&format!(
            "the container runtime now uses {}",
            bed.primary.display()
        )),
        "{log}"
    );
    // The runtime's view: the primary is the only config, unchanged; nothing of Plexus is left.
    assert_eq!(bed.conf_files(), vec!["10-cluster.conflist"]);
    assert_eq!(std::fs::read(&bed.primary).unwrap(), primary_bytes);
    assert_eq!(
        std::fs::read_dir(&bed.host_bin).unwrap().count(),
        0,
        "binaries left"
    );
    assert!(!bed.node.cni_dir.exists(), "the (empty) cache dir was left");
}

#[test]
fn rollback_to_multus_after_uninstall() {
    let mut bed = InstallBed::new(FakeApiOptions::default());
    bed.installer_pod("plexus-y");
    let installer = bed.run(&bin_path("plexus"), &["--node-name", NODE]);
    let pod = bed.add_ok("web");
    // Rollback procedure: drain, delete the DaemonSet, uninstall, then apply Multus.
    bed.del_ok(&pod);
    installer.stop();
    bed.once("uninstall", &bin_path("plexus"), &[]);
    // Multus's installer writes its config in front of the primary, which Plexus left untouched.
    let multus = json!({"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
        "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig", "clusterNetwork": bed.primary});
    put(&bed.host_conf, "00-multus.conf", &multus.to_string());
    assert_eq!(
        bed.conf_files(),
        vec!["00-multus.conf", "10-cluster.conflist"],
        "the runtime now uses Multus's config"
    );
    // Re-applying Plexus by mistake while Multus is there is refused, naming the winner.
    bed.installer_pod("plexus-z");
    let (mut cmd, log) = bed.command(
        "install",
        &bin_path("plexus"),
        &["--node-name", NODE, "--wait-timeout-seconds", "1"],
    );
    assert!(!cmd.status().unwrap().success());
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("00-multus.conf (a multus config) wins"),
        "{log}"
    );
    assert_eq!(
        bed.conf_files(),
        vec!["00-multus.conf", "10-cluster.conflist"]
    );
}

#[test]
fn thick_mode_end_to_end_through_the_installed_shim_and_daemon() {
    let mut bed = InstallBed::new(FakeApiOptions::default());
    bed.installer_pod("plexus-thick");
    let daemon_dir = bed.node.root.path().join("plexusd");
    let socket = daemon_dir.join("run/plexusd.sock");
    let log = bed.once(
        "install",
        &bin_path("plexus-shim"),
        &[
            "--node-name",
            NODE,
            "--mode",
            "thick",
            "--daemon-socket",
            socket.to_str().unwrap(),
        ],
    );
    assert!(log.contains("plexus-shim answers VERSION"), "{log}");
    let installed: Value =
        serde_json::from_slice(&std::fs::read(bed.our_config()).unwrap()).unwrap();
    assert_eq!(installed["plugins"][0]["type"], "plexus-shim");
    assert_eq!(installed["plugins"][0]["daemonSocket"], json!(socket));

    // plexusd reads what the installer wrote (deploy/thick: --config=<the installed conflist>),
    // with the installer's kubeconfig and Node-bound token.
    let start = |bed: &InstallBed| {
        let conf: Value =
            serde_json::from_slice(&std::fs::read(bed.our_config()).unwrap()).unwrap();
        let d = Daemon::start(
            &daemon_dir,
            &conf,
            DaemonOptions {
                node: NODE.into(),
                ..Default::default()
            },
        )
        .expect("plexusd starts on the installed config");
        assert_eq!(d.socket, socket);
        d
    };
    let mut daemon = start(&bed);
    let first = bed.add_ok("first");
    let second = bed.add_ok("second");
    bed.del_ok(&first);

    // The daemon down: ADD fails at once with code 11 and leaves nothing; DEL runs locally in
    // the shim, from the on-disk cache.
    daemon.kill();
    let (third, out) = bed.add("third");
    out.assert_error(11);
    assert_eq!(
        link_names(&third.ns),
        vec!["lo"],
        "a failed ADD left interfaces"
    );
    bed.del_ok(&second);
    bed.assert_clean();

    // Back to thin mode: the thin plugin tears down what the daemon attached (one cache).
    drop(daemon);
    let daemon = start(&bed);
    let fourth = bed.add_ok("fourth");
    drop(daemon);
    bed.once("install", &bin_path("plexus"), &["--node-name", NODE]);
    assert_eq!(bed.plugin_stdin()["type"], "plexus");
    assert!(bed.plugin_stdin().get("daemonSocket").is_none());
    bed.del_ok(&fourth);
    let fifth = bed.add_ok("fifth");
    bed.del_ok(&fifth);
    bed.assert_clean();
}
