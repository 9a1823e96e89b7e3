//! End-to-end scenarios of the plugin, each run in both modes: thin (the real `plexus` binary
//! exec'd like a runtime) and thick (the real `plexus-shim` exec'd like a runtime, forwarding to
//! the real `plexusd`), with real delegates from /usr/lib/cni, real network namespaces, and the
//! fake API server over real HTTP. Assertions are on what the kernel shows, on the annotation
//! written, on the API requests made (thick mode serves the reads from its watch caches:
//! [`Bed::reads`]), and on cleanup (only `lo` left, no host-local lease, no cache entry).

use plexus_e2e::bed::{Bed, Mode, Sandbox};
use plexus_e2e::cni::{Call, exec_plugin, ipv4_of, link_names, mac_of, ping};
use plexus_e2e::daemon::DaemonOptions;
use plexus_e2e::fakeapi::FakeApiOptions;
use rstest::rstest;
use serde_json::{Value, json};

#[rstest]
fn no_annotation_gets_only_the_cluster_network(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::in_mode(mode);
    let sb = bed.sandbox("blue", "plain", None);
    let config = bed.config(json!({}));
    bed.api.clear_requests();
    let out = bed.add(&sb, &config);
    out.assert_ok();
    let result = out.json();
    assert_eq!(result["cniVersion"], "1.0.0");
    let ip = result["ips"][0]["address"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("10.77."), "{result}");
    assert_eq!(link_names(&sb.ns), vec!["eth0", "lo"]);
    assert_eq!(ipv4_of(&sb.ns, "eth0"), vec![ip.clone()]);

    let status = bed.status_of("blue", "plain");
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(status[0]["name"], "cluster");
    assert_eq!(status[0]["interface"], "eth0");
    assert_eq!(status[0]["default"], true);
    assert_eq!(status[0]["ips"], json!([ip.split('/').next().unwrap()]));
    assert_eq!(status[0]["mac"].as_str(), mac_of(&sb.ns, "eth0").as_deref());

    // The API budget for a pod with no annotation: one pod GET, one PATCH, nothing else.
    assert_eq!(bed.api.count("GET", "/pods/plain"), bed.reads(1));
    assert_eq!(bed.api.count("PATCH", "/pods/plain/status"), 1);
    assert_eq!(
        bed.cni_requests().len(),
        bed.reads(1) + 1,
        "{:?}",
        bed.cni_requests()
    );

    bed.api.clear_requests();
    bed.del(&sb, &config).assert_ok();
    assert!(
        bed.cni_requests().is_empty(),
        "DEL must not call the API: {:?}",
        bed.cni_requests()
    );
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn one_macvlan_network(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::in_mode(mode);
    bed.nad(
        "blue",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.78.1.0/24"),
    );
    let sb = bed.sandbox("blue", "mv", Some("macvlan-a"));
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();

    assert_eq!(link_names(&sb.ns), vec!["eth0", "lo", "net1"]);
    let net1 = ipv4_of(&sb.ns, "net1");
    assert_eq!(net1.len(), 1);
    assert!(
        net1[0].starts_with("10.78.1.") && net1[0].ends_with("/24"),
        "{net1:?}"
    );

    let status = bed.status_of("blue", "mv");
    assert_eq!(status.len(), 2, "{status:?}");
    assert_eq!(status[1]["name"], "blue/macvlan-a");
    assert_eq!(status[1]["interface"], "net1");
    assert!(status[1].get("default").is_none() || status[1]["default"] == false);
    assert_eq!(
        status[1]["ips"],
        json!([net1[0].split('/').next().unwrap()])
    );
    assert_eq!(status[1]["mac"].as_str(), mac_of(&sb.ns, "net1").as_deref());

    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn four_networks_mixing_bridge_macvlan_conflist_and_explicit_names(
    #[values(Mode::Thin, Mode::Thick)] mode: Mode,
) {
    let bed = Bed::in_mode(mode);
    let n = &bed.node;
    bed.nad(
        "blue",
        "macvlan-a",
        &n.macvlan_config("macvlan-a", "10.78.2.0/24"),
    );
    bed.nad(
        "blue",
        "bridge-a",
        &n.bridge_config("bridge-a", "10.79.2.0/24"),
    );
    bed.nad("other", "chain-a", &json!({
        "cniVersion": "0.4.0",
        "name": "chain-a",
        "plugins": [
            {"type": "bridge", "bridge": n.bridge2.name(),
             "ipam": {"type": "host-local", "dataDir": n.ipam_dir, "ranges": [[{"subnet": "10.80.2.0/24"}]]}},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1"}, "mtu": 1400}
        ]
    }));
    bed.nad(
        "blue",
        "macvlan-b",
        &n.macvlan_config("macvlan-b", "10.81.2.0/24"),
    );
    let sb = bed.sandbox(
        "blue",
        "four",
        Some("macvlan-a, bridge-a@data0, other/chain-a, macvlan-b"),
    );
    let config = bed.config(json!({}));
    bed.api.clear_requests();
    bed.add(&sb, &config).assert_ok();

    assert_eq!(
        link_names(&sb.ns),
        vec!["data0", "eth0", "lo", "net1", "net3", "net4"]
    );
    assert!(ipv4_of(&sb.ns, "net1")[0].starts_with("10.78.2."));
    assert!(ipv4_of(&sb.ns, "data0")[0].starts_with("10.79.2."));
    assert!(ipv4_of(&sb.ns, "net3")[0].starts_with("10.80.2."));
    assert!(ipv4_of(&sb.ns, "net4")[0].starts_with("10.81.2."));
    // The chained tuning plugin ran on the conflist's interface.
    let links = sb.ns.links();
    let net3 = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifname"] == "net3")
        .unwrap();
    assert_eq!(net3["mtu"], 1400);

    let status = bed.status_of("blue", "four");
    let names: Vec<(&str, &str)> = status
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
        vec![
            ("cluster", "eth0"),
            ("blue/macvlan-a", "net1"),
            ("blue/bridge-a", "data0"),
            ("other/chain-a", "net3"),
            ("blue/macvlan-b", "net4")
        ]
    );

    // API budget (DESIGN.md §3): 1 pod GET + N NAD GETs + 1 PATCH; thick mode: the PATCH.
    assert_eq!(bed.api.count("GET", "/pods/four"), bed.reads(1));
    assert_eq!(
        bed.api.count("GET", "/network-attachment-definitions/"),
        bed.reads(4)
    );
    assert_eq!(bed.api.count("PATCH", "/pods/four/status"), 1);
    assert_eq!(
        bed.cni_requests().len(),
        bed.reads(5) + 1,
        "{:?}",
        bed.cni_requests()
    );

    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn nad_without_spec_config_is_resolved_from_conf_dir(
    #[values(Mode::Thin, Mode::Thick)] mode: Mode,
) {
    let bed = Bed::in_mode(mode);
    let conf = bed.node.macvlan_config("from-disk", "10.78.3.0/24");
    std::fs::write(
        bed.node.conf_dir.join("20-from-disk.conf"),
        conf.to_string(),
    )
    .unwrap();
    bed.api.create_nad("blue", "from-disk", None);
    let sb = bed.sandbox("blue", "disk", Some("from-disk"));
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();
    assert!(ipv4_of(&sb.ns, "net1")[0].starts_with("10.78.3."));
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn missing_nad_fails_clearly_and_leaves_nothing(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::in_mode(mode);
    let sb = bed.sandbox("blue", "lost", Some("nope"));
    let config = bed.config(json!({}));
    let out = bed.add(&sb, &config);
    let msg = out.assert_error(103);
    assert!(msg.contains("blue/lost"), "names the pod: {msg}");
    assert!(
        msg.contains("network-attachment-definition blue/nope not found"),
        "{msg}"
    );
    assert_eq!(out.json()["cniVersion"], "1.0.0");
    assert_eq!(bed.api.count("PATCH", ""), 0);
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn delegate_failure_after_eth0_rolls_everything_back(
    #[values(Mode::Thin, Mode::Thick)] mode: Mode,
) {
    let bed = Bed::in_mode(mode);
    let mut broken = bed.node.macvlan_config("broken", "10.78.4.0/24");
    broken["master"] = json!("pxnomaster0");
    bed.nad(
        "blue",
        "good",
        &bed.node.macvlan_config("good", "10.78.5.0/24"),
    );
    bed.nad("blue", "broken", &broken);
    let sb = bed.sandbox("blue", "fail", Some("good, broken"));
    let config = bed.config(json!({}));
    let out = bed.add(&sb, &config);
    let msg = out.assert_error(100);
    assert!(
        msg.contains("blue/fail") && msg.contains("blue/broken") && msg.contains("net2"),
        "{msg}"
    );
    assert!(!msg.contains("rollback incomplete"), "{msg}");
    assert_eq!(bed.api.count("PATCH", ""), 0, "no status for a failed ADD");
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn failed_status_write_rolls_back(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::in_mode(mode);
    bed.nad(
        "blue",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.78.6.0/24"),
    );
    let sb = bed.sandbox("blue", "nostatus", Some("macvlan-a"));
    // Retried like any transient failure, so it takes a server that keeps failing.
    bed.api.inject(
        plexus_e2e::fakeapi::Fault::on("PATCH", "/pods/nostatus/status")
            .status(500)
            .always(),
    );
    let out = bed.add(&sb, &bed.config(json!({})));
    let msg = out.assert_error(11);
    assert!(msg.contains("network-status"), "{msg}");
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn uid_mismatch_fails_without_touching_the_pod(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::in_mode(mode);
    bed.pod("blue", "reborn", None);
    let sb = bed.sandbox_without_pod("blue", "reborn", "not-the-uid");
    let out = bed.add(&sb, &bed.config(json!({})));
    let msg = out.assert_error(104);
    assert!(msg.contains("not-the-uid"), "{msg}");
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn del_works_with_the_api_server_down_and_twice(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::in_mode(mode);
    bed.nad(
        "blue",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.78.7.0/24"),
    );
    let sb = bed.sandbox("blue", "offline", Some("macvlan-a"));
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();
    assert_eq!(bed.node.leases().len(), 2);
    bed.api.stop();
    bed.del(&sb, &config).assert_ok();
    assert_eq!(link_names(&sb.ns), vec!["lo"]);
    assert!(bed.node.leases().is_empty());
    assert!(bed.node.cache_entries().is_empty());
    bed.del(&sb, &config).assert_ok();
    // DEL after the netns is gone, too.
    let path = sb.ns.path().to_owned();
    drop(sb.ns);
    exec_plugin(
        &bed.plugin_bin(),
        &Call {
            command: "DEL",
            container_id: &sb.cid,
            netns: Some(&path),
            ifname: "eth0",
            args: String::new(),
            config: &config,
        },
        &bed.cni_path,
    )
    .unwrap()
    .assert_ok();
}

#[rstest]
fn cluster_network_as_conflist_file_directory_and_name(
    #[values(Mode::Thin, Mode::Thick)] mode: Mode,
) {
    let bed = Bed::in_mode(mode);
    let dir = bed
        .cluster_file
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    std::fs::write(
        bed.node.conf_dir.join("05-cluster.conflist"),
        bed.node.cluster_conflist("0.4.0").to_string(),
    )
    .unwrap();
    for (form, cluster) in [
        ("file", bed.cluster_file.to_str().unwrap().to_owned()),
        ("dir", dir),
        ("name", "cluster".to_owned()),
    ] {
        let sb = bed.sandbox("blue", &format!("cn-{form}"), None);
        let config = bed.config(json!({"clusterNetwork": cluster}));
        let out = bed.add(&sb, &config);
        out.assert_ok();
        assert_eq!(link_names(&sb.ns), vec!["eth0", "lo"], "{form}");
        assert_eq!(
            bed.node.leases().len(),
            1,
            "{form}: one lease while the pod exists"
        );
        bed.del(&sb, &config).assert_ok();
        bed.assert_clean(&sb.ns);
    }
}

#[rstest]
fn namespace_isolation_refuses_cross_namespace_nads(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::in_mode(mode);
    bed.nad(
        "red",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.78.8.0/24"),
    );
    let sb = bed.sandbox("blue", "iso", Some("red/macvlan-a"));
    let config = bed.config(json!({"namespaceIsolation": true}));
    let out = bed.add(&sb, &config);
    let msg = out.assert_error(7);
    assert!(
        msg.contains("namespace isolation")
            && msg.contains("red/macvlan-a")
            && msg.contains("blue/iso"),
        "{msg}"
    );
    assert_eq!(
        bed.api.count("GET", "/network-attachment-definitions/"),
        0,
        "refused before any NAD GET"
    );
    bed.assert_clean(&sb.ns);

    // A global namespace is allowed.
    let config = bed.config(json!({"namespaceIsolation": true, "globalNamespaces": "red"}));
    bed.add(&sb, &config).assert_ok();
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn twenty_pods_four_at_a_time(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::in_mode(mode);
    bed.nad(
        "blue",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.78.9.0/24"),
    );
    let config = bed.config(json!({}));
    let pods: Vec<Sandbox> = (0..20)
        .map(|i| bed.sandbox("blue", &format!("many-{i}"), Some("macvlan-a")))
        .collect();
    let run = |command: &'static str| {
        for batch in pods.chunks(4) {
            std::thread::scope(|s| {
                for sb in batch {
                    let (bed, config) = (&bed, &config);
                    s.spawn(move || bed.verb_on(command, sb, config).assert_ok().clone());
                }
            });
        }
    };
    run("ADD");
    let mut ips: Vec<String> = pods
        .iter()
        .flat_map(|sb| [ipv4_of(&sb.ns, "eth0"), ipv4_of(&sb.ns, "net1")].concat())
        .collect();
    assert_eq!(ips.len(), 40);
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 40, "duplicate IPs handed out");
    assert_eq!(bed.node.leases().len(), 40);
    run("DEL");
    for sb in &pods {
        assert_eq!(link_names(&sb.ns), vec!["lo"]);
    }
    assert!(bed.node.leases().is_empty());
    assert!(bed.node.cache_entries().is_empty());
}

#[rstest]
fn two_pods_ping_each_other_over_a_secondary_network(
    #[values(Mode::Thin, Mode::Thick)] mode: Mode,
) {
    let bed = Bed::in_mode(mode);
    bed.nad(
        "blue",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.78.10.0/24"),
    );
    let config = bed.config(json!({}));
    let a = bed.sandbox("blue", "pa", Some("macvlan-a"));
    let b = bed.sandbox("blue", "pb", Some("macvlan-a"));
    bed.add(&a, &config).assert_ok();
    bed.add(&b, &config).assert_ok();
    let ip_b = ipv4_of(&b.ns, "net1")[0]
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    ping(&a.ns, &ip_b).unwrap();
    bed.del(&a, &config).assert_ok();
    bed.del(&b, &config).assert_ok();
    bed.assert_clean(&a.ns);
    bed.assert_clean(&b.ns);
}

#[rstest]
fn https_with_a_bearer_token_file_and_ca_bundle(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::with_mode(
        mode,
        FakeApiOptions {
            tls: true,
            token: Some("s3cr3t-token".into()),
            ..Default::default()
        },
        DaemonOptions::default(),
    );
    assert!(bed.api.url().starts_with("https://"));
    bed.nad(
        "blue",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.78.11.0/24"),
    );
    let sb = bed.sandbox("blue", "tls", Some("macvlan-a"));
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();
    assert_eq!(bed.status_of("blue", "tls").len(), 2);
    assert!(
        bed.api.requests().iter().all(|r| r.status < 300),
        "{:?}",
        bed.api.requests()
    );
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);

    if mode == Mode::Thick {
        // The daemon's client re-reads the token file as kube's refresh period says, and this
        // pod's reads are cached: a token swapped under a running daemon is not a per-call event.
        return;
    }
    // A rotated (wrong) token is refused, and the ADD leaves nothing behind.
    let token_file = bed.kubeconfig.parent().unwrap().join("token");
    std::fs::write(&token_file, "stale-token").unwrap();
    let out = bed.add(&sb, &config);
    let msg = out.assert_error(101);
    assert!(msg.contains("blue/tls") && msg.contains("get pod"), "{msg}");
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn over_tls_a_call_uses_one_http2_connection(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::over_tls(mode);
    let n = &bed.node;
    let nads = ["mv-h1", "mv-h2", "br-h3", "br-h4"];
    for (i, name) in nads.iter().enumerate() {
        let subnet = format!("10.82.{}.0/24", 40 + i);
        let config = if name.starts_with("mv") {
            n.macvlan_config(name, &subnet)
        } else {
            n.bridge_config(name, &subnet)
        };
        bed.nad("blue", name, &config);
    }
    let config = bed.config(json!({}));
    for pod in ["h2-a", "h2-b"] {
        let sb = bed.sandbox("blue", pod, Some(&nads.join(", ")));
        bed.api.clear_requests();
        let before = bed.api.connections();
        bed.add(&sb, &config).assert_ok();
        assert_eq!(bed.status_of("blue", pod).len(), 5);
        // Thin: the pod GET, the 4 NAD GETs (in flight at once) and the PATCH multiplexed on the
        // call's one connection, so one TLS handshake per call rather than one per parallel
        // GET. Thick: the PATCH on the daemon's warm connection, no handshake at all.
        let reqs = bed.cni_requests();
        assert_eq!(reqs.len(), bed.reads(5) + 1, "{reqs:?}");
        assert!(
            reqs.iter()
                .all(|r| r.http_version == "HTTP/2.0" && r.connection == reqs[0].connection),
            "{reqs:?}"
        );
        let after = bed.api.connections();
        let new = after.handshakes - before.handshakes;
        assert_eq!(new, if mode == Mode::Thin { 1 } else { 0 }, "{after:?}");
        assert_eq!(after.accepted - before.accepted, new);
        bed.del(&sb, &config).assert_ok();
        bed.assert_clean(&sb.ns);
    }
}

#[rstest]
fn runtime_supplied_annotations_skip_the_pod_get(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::in_mode(mode);
    bed.nad(
        "blue",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.78.12.0/24"),
    );
    let sb = bed.sandbox("blue", "rt", None);
    let config = bed.config(json!({"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan-a"}}}));
    bed.api.clear_requests();
    bed.add(&sb, &config).assert_ok();
    assert_eq!(link_names(&sb.ns), vec!["eth0", "lo", "net1"]);
    assert_eq!(bed.api.count("GET", "/pods/"), 0);
    assert_eq!(
        bed.cni_requests().len(),
        bed.reads(1) + 1,
        "1 NAD GET (thin) + 1 PATCH: {:?}",
        bed.cni_requests()
    );
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn check_passes_after_add(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::in_mode(mode);
    bed.nad(
        "blue",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.78.13.0/24"),
    );
    let sb = bed.sandbox("blue", "chk", Some("macvlan-a"));
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();
    bed.check(&sb, &config).assert_ok();
    sb.ns.exec(&["ip", "link", "del", "net1"]).unwrap();
    let out = bed.check(&sb, &config);
    let msg = out.assert_error(100);
    assert!(
        msg.contains("blue/macvlan-a") && msg.contains("net1"),
        "{msg}"
    );
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn bad_requests_get_cni_errors(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::in_mode(mode);
    let config = bed.config(json!({}));
    // Missing CNI_NETNS on ADD: code 4 naming the variable.
    let out = exec_plugin(
        &bed.plugin_bin(),
        &Call {
            command: "ADD",
            container_id: "c1",
            netns: None,
            ifname: "eth0",
            args: String::new(),
            config: &config,
        },
        &bed.cni_path,
    )
    .unwrap();
    assert!(out.assert_error(4).contains("CNI_NETNS"));
    // A bad key: code 7 naming it and its value.
    let bad = bed.config(json!({"namespaceIsolation": "maybe"}));
    let unknown = bed.sandbox_without_pod("blue", "x", "u");
    let out = bed.add(&unknown, &bad);
    let msg = out.assert_error(7);
    assert!(
        msg.contains("namespaceIsolation") && msg.contains("maybe"),
        "{msg}"
    );
    // An invalid annotation: code 7 quoting the bad value.
    let badann = bed.sandbox("blue", "badann", Some("Not_A_Name"));
    let out = bed.add(&badann, &config);
    let msg = out.assert_error(7);
    assert!(
        msg.contains("blue/badann") && msg.contains("Not_A_Name"),
        "{msg}"
    );
    // Duplicate interface names.
    bed.nad(
        "blue",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.78.14.0/24"),
    );
    let dup = bed.sandbox("blue", "dup", Some("macvlan-a@data0, macvlan-a@data0"));
    let out = bed.add(&dup, &config);
    let msg = out.assert_error(7);
    assert!(msg.contains("interface data0 requested twice"), "{msg}");
    for sb in [&unknown, &badann, &dup] {
        bed.assert_clean(&sb.ns);
    }
    // VERSION.
    let out = bed.verb("VERSION", &json!({"cniVersion": "0.4.0"}));
    out.assert_ok();
    assert_eq!(out.json()["cniVersion"], "0.4.0");
    assert_eq!(out.json()["supportedVersions"].as_array().unwrap().len(), 7);
}

/// Thin mode only: in thick mode the engine's lines go to plexusd's JSON log (e2e_thick
/// `probes_metrics_and_status`), and the shim's stdout is checked by every scenario here.
#[test]
fn logs_go_to_the_log_file_and_never_to_stdout() {
    let bed = Bed::new();
    bed.nad(
        "blue",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.78.15.0/24"),
    );
    let sb = bed.sandbox("blue", "logs", Some("macvlan-a"));
    let log = bed.node.root.path().join("plexus.log");
    let config = bed.config(json!({"logFile": log, "logToStderr": false, "logLevel": "debug"}));
    let out = bed.add(&sb, &config);
    out.assert_ok();
    // stdout is exactly one JSON document: the result.
    let parsed: Value = serde_json::from_str(out.stdout.trim()).expect("stdout is one JSON value");
    assert!(parsed.get("ips").is_some(), "{parsed}");
    assert_eq!(out.stderr, "", "logToStderr=false");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("ADD delegate") && text.contains("macvlan"),
        "{text}"
    );
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn readiness_indicator_gates_add_without_blocking(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = Bed::in_mode(mode);
    let sb = bed.sandbox("blue", "ready", None);
    let flag = bed.node.root.path().join("cluster-ready");
    let config = bed.config(json!({"readinessindicatorfile": flag}));
    let msg = bed.add(&sb, &config).assert_error(11);
    assert!(
        msg.contains("readiness indicator") && msg.contains("cluster-ready"),
        "{msg}"
    );
    bed.assert_clean(&sb.ns);
    bed.verb("STATUS", &config).assert_error(50);

    std::fs::write(&flag, "").unwrap();
    bed.verb("STATUS", &config).assert_ok();
    bed.add(&sb, &config).assert_ok();
    // DEL never waits for readiness.
    std::fs::remove_file(&flag).unwrap();
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[rstest]
fn default_networks_from_conf_dir_come_before_the_annotation(
    #[values(Mode::Thin, Mode::Thick)] mode: Mode,
) {
    let bed = Bed::in_mode(mode);
    let always = bed.node.bridge_config("always", "10.79.16.0/24");
    std::fs::write(bed.node.conf_dir.join("30-always.conf"), always.to_string()).unwrap();
    bed.nad(
        "blue",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.78.16.0/24"),
    );
    let sb = bed.sandbox("blue", "defs", Some("macvlan-a"));
    let config = bed.config(json!({"defaultNetworks": ["always"]}));
    bed.add(&sb, &config).assert_ok();
    assert!(
        ipv4_of(&sb.ns, "net1")[0].starts_with("10.79.16."),
        "default network is net1"
    );
    assert!(
        ipv4_of(&sb.ns, "net2")[0].starts_with("10.78.16."),
        "annotation network is net2"
    );
    let names: Vec<String> = bed
        .status_of("blue", "defs")
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    // Multus names a delegate loaded from a file by its plain network name.
    assert_eq!(names, vec!["cluster", "always", "blue/macvlan-a"]);
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}
