//! The installer and the plugin together: `plexus-install run` installs the real `plexus` into a
//! temporary bin dir and writes conflist, kubeconfig, token and CA next to a real primary network
//! config; the conflist's plugin object (with the `name`/`cniVersion` a runtime injects) is then fed
//! to the real `plexus` for a pod with one NAD, against the fake API server over TLS with a bearer
//! token. The token is then rotated (server and projected file): the installer's copy follows and
//! the next pod works with the new token, so nothing the installer wrote outlives its validity.

use plexus_e2e::cni::{Call, Node, bin_path, exec_plexus, k8s_args, link_names};
use plexus_e2e::fakeapi::{FakeApiOptions, FakeApiServer};
use plexus_e2e::netns::{NetNs, unique_name};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STATUS_KEY: &str = "k8s.v1.cni.cncf.io/network-status";

/// A running `plexus-install run`, stopped with SIGTERM (or killed) on drop.
struct Installer(Child);

impl Drop for Installer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
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

/// What a runtime passes a conflist's plugin on stdin: the plugin object plus `name` and
/// `cniVersion` from the list.
fn plugin_stdin(conflist: &Value) -> Value {
    let mut p = conflist["plugins"][0].clone();
    p["name"] = conflist["name"].clone();
    p["cniVersion"] = conflist["cniVersion"].clone();
    p
}

#[test]
fn installer_generated_files_drive_the_real_plugin_through_a_token_rotation() {
    let node = Node::new().expect("node");
    let api = FakeApiServer::start(FakeApiOptions {
        tls: true,
        token: Some("sa-token-1".into()),
        ..FakeApiOptions::default()
    })
    .expect("fake API server");

    // The "host": a conf dir with the primary, an empty bin dir, and the pod's service account.
    let host_conf = node.root.path().join("host-net.d");
    let host_bin = node.root.path().join("host-bin");
    let sa = node.root.path().join("sa");
    for d in [&host_conf, &host_bin, &sa] {
        std::fs::create_dir_all(d).unwrap();
    }
    put(
        &host_conf,
        "10-cluster.conflist",
        &node.cluster_conflist("1.0.0").to_string(),
    );
    put(&sa, "token", "sa-token-1");
    put(&sa, "ca.crt", &api.ca_pem().expect("TLS CA"));

    let mut cmd = Command::new(bin_path("plexus-install"));
    cmd.arg("run")
        .args(["--host-root", "/"])
        .arg("--cni-conf-dir")
        .arg(&host_conf)
        .arg("--cni-bin-dir")
        .arg(&host_bin)
        .arg("--binary")
        .arg(bin_path("plexus"))
        .arg("--service-account-dir")
        .arg(&sa)
        .arg("--api-server")
        .arg(api.url())
        .arg("--cache-dir")
        .arg(&node.cni_dir)
        .arg("--delegate-conf-dir")
        .arg(&node.conf_dir)
        // Delegates come from Debian's package dir, not the (test) host bin dir.
        .arg(format!("--set=binDir={}", plexus_e2e::cni::CNI_BIN_DIR))
        .args(["--log-level", "debug", "--namespace-isolation", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let installer = Installer(cmd.spawn().expect("spawn plexus-install"));
    let our = host_conf.join("00-plexus.conflist");
    assert!(
        eventually(Duration::from_secs(20), || our.exists()),
        "plexus-install wrote no config"
    );
    assert!(host_bin.join("plexus").is_file(), "plexus not installed");
    let conflist: Value = serde_json::from_slice(&std::fs::read(&our).unwrap()).unwrap();
    assert_eq!(conflist["cniVersion"], "1.0.0");
    let config = plugin_stdin(&conflist);
    assert_eq!(
        config["clusterNetwork"],
        json!(host_conf.join("10-cluster.conflist"))
    );

    api.create_nad(
        "blue",
        "macvlan-a",
        Some(&node.macvlan_config("macvlan-a", "10.78.9.0/24").to_string()),
    );
    let add_pod = |pod: &str| -> (NetNs, String, String) {
        let created = api.create_pod(json!({"metadata": {"name": pod, "namespace": "blue",
            "annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan-a"}},
            "spec": {"nodeName": "node-1"}}));
        let uid = created["metadata"]["uid"].as_str().unwrap().to_owned();
        let ns = NetNs::new("pxi").unwrap();
        let cid = unique_name("inst");
        let out = exec_plexus(&Call {
            command: "ADD",
            container_id: &cid,
            netns: Some(ns.path()),
            ifname: "eth0",
            args: k8s_args("blue", pod, &uid, &cid),
            config: &config,
        })
        .unwrap();
        out.assert_ok();
        assert_eq!(link_names(&ns), vec!["eth0", "lo", "net1"]);
        let status: Vec<Value> = serde_json::from_str(
            api.get_pod("blue", pod).unwrap()["metadata"]["annotations"][STATUS_KEY]
                .as_str()
                .expect("network-status written"),
        )
        .unwrap();
        assert_eq!(status.len(), 2, "{status:?}");
        assert_eq!(status[1]["name"], "blue/macvlan-a");
        assert_eq!(status[1]["interface"], "net1");
        (ns, cid, uid)
    };
    let del_pod = |pod: &str, ns: &NetNs, cid: &str, uid: &str| {
        exec_plexus(&Call {
            command: "DEL",
            container_id: cid,
            netns: Some(ns.path()),
            ifname: "eth0",
            args: k8s_args("blue", pod, uid, cid),
            config: &config,
        })
        .unwrap()
        .assert_ok();
        assert_eq!(link_names(ns), vec!["lo"]);
    };

    let (ns1, cid1, uid1) = add_pod("first");
    del_pod("first", &ns1, &cid1, &uid1);

    // Rotation: the API server now accepts only the new token; the projected file changes.
    api.set_token(Some("sa-token-2".into()));
    put(&sa, "token", "sa-token-2");
    let host_token: PathBuf = host_conf.join("plexus.d/token");
    assert!(
        eventually(Duration::from_secs(5), || {
            std::fs::read_to_string(&host_token).is_ok_and(|t| t == "sa-token-2")
        }),
        "the installer did not follow the token rotation"
    );
    let (ns2, cid2, uid2) = add_pod("second");
    del_pod("second", &ns2, &cid2, &uid2);
    assert_eq!(node.leases(), Vec::<String>::new());
    assert_eq!(node.cache_entries(), Vec::<String>::new());
    drop(installer);
    assert!(our.exists(), "SIGTERM must leave the config in place");
}
