//! End-to-end tests of Multus drop-in compatibility (issue #15): configs, NADs and annotations
//! written for Multus run unchanged. The real `plexus` binary, real netns, Debian delegates and the
//! fake API server.

use plexus_e2e::bed::{Bed, STATUS_KEY, cid};
use plexus_e2e::cni::{default_routes, ipv4_of, mac_of};
use plexus_e2e::netns::NetNs;
use serde_json::{Value, json};

fn names(statuses: &[Value]) -> Vec<String> {
    statuses
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The cluster network as a NAD config: this node's bridge, with a `dns` the bridge plugin copies
/// into its result.
fn cluster_nad_config(bed: &Bed, name: &str) -> Value {
    let mut c = bed.node.cluster_conflist("1.0.0");
    c["name"] = json!(name);
    c["plugins"][0]["dns"] =
        json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]});
    c
}

#[test]
fn network_status_names_and_dns_match_multus() {
    let bed = Bed::new();
    // Config names differ from the NAD names on purpose: Multus names by the NAD.
    bed.nad(
        "kube-system",
        "hx-cluster",
        &cluster_nad_config(&bed, "hx-cluster-net"),
    );
    bed.nad(
        "kube-system",
        "calico-conf",
        &cluster_nad_config(&bed, "calico-net"),
    );
    let always = bed.node.bridge_config("always", "10.79.30.0/24");
    std::fs::write(bed.node.conf_dir.join("30-always.conf"), always.to_string()).unwrap();
    bed.macvlan_nad("blue", "macvlan-s", "10.78.30.0/24");
    let config = bed.config(json!({"clusterNetwork": "hx-cluster", "defaultNetworks": ["always"]}));

    let sb = bed.sandbox("blue", "st", Some("macvlan-s"));
    bed.add(&sb, &config).assert_ok();
    let status = bed.status_of("blue", "st");
    assert_eq!(
        names(&status),
        vec!["kube-system/hx-cluster", "always", "blue/macvlan-s"]
    );
    assert_eq!(
        status[0]["dns"],
        json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]})
    );
    assert_eq!(status[0]["default"], true);
    // No DNS from the delegate: `"dns": {}`, as Multus writes on every entry.
    assert_eq!(status[1]["dns"], json!({}));
    assert_eq!(status[2]["dns"], json!({}));
    let raw = bed.api.get_pod("blue", "st").unwrap()["metadata"]["annotations"][STATUS_KEY]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(raw.contains("\n    \"dns\": {}\n"), "{raw}");
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);

    // The default-network override is named `<multusNamespace>/<name>` too.
    let sb = bed.sandbox_annotated(
        "blue",
        "ovr",
        json!({"v1.multus-cni.io/default-network": "calico-conf"}),
    );
    bed.add(&sb, &config).assert_ok();
    assert!(ipv4_of(&sb.ns, "eth0")[0].starts_with("10.77."));
    let status = bed.status_of("blue", "ovr");
    assert_eq!(names(&status), vec!["kube-system/calico-conf", "always"]);
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

/// The NAD of Multus's `examples/macvlan-pod.yml` on this node's macvlan master.
fn multus_macvlan_conf(bed: &Bed) -> Value {
    json!({
        "cniVersion": "0.3.1",
        "plugins": [
            {
                "type": "macvlan",
                "capabilities": {"ips": true},
                "master": bed.node.macvlan_master,
                "mode": "bridge",
                "ipam": {"type": "static", "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.1.1"}]}
            },
            {"capabilities": {"mac": true}, "type": "tuning"}
        ]
    })
}

/// The annotation of Multus's `examples/macvlan-pod.yml`, verbatim: `gateway` is a pre-NPWG key.
const MULTUS_MACVLAN_POD: &str = r#"[
            { "name": "macvlan-conf",
              "ips": [ "10.1.1.101/24" ],
              "mac": "c2:b0:57:49:47:f1",
              "gateway": [ "10.1.1.1" ]
            }]"#;

#[test]
fn multus_example_with_a_gateway_key_attaches_with_a_warning() {
    let bed = Bed::new();
    bed.nad("blue", "macvlan-conf", &multus_macvlan_conf(&bed));
    let sb = bed.sandbox("blue", "samplepod", Some(MULTUS_MACVLAN_POD));
    let config = bed.config(json!({"events": true}));
    let out = bed.add(&sb, &config);
    out.assert_ok();
    assert_eq!(ipv4_of(&sb.ns, "net1"), vec!["10.1.1.101/24"]);
    assert_eq!(mac_of(&sb.ns, "net1").as_deref(), Some("c2:b0:57:49:47:f1"));
    let warning = r#"k8s.v1.cni.cncf.io/networks: network selection element 1 ("blue/macvlan-conf"): unknown key "gateway" ignored"#;
    assert!(out.stderr.contains(warning), "{}", out.stderr);
    let events = bed.wait_for_events(2);
    let warn = events
        .iter()
        .find(|e| e["type"] == "Warning")
        .unwrap_or_else(|| panic!("no Warning event in {events:?}"));
    assert_eq!(warn["reason"], "IgnoredSelectionKeys");
    assert_eq!(warn["involvedObject"]["name"], "samplepod");
    let msg = warn["message"].as_str().unwrap();
    assert!(
        msg.starts_with(warning) && msg.contains("strictSelection"),
        "{msg}"
    );
    assert!(events.iter().any(|e| e["type"] == "Normal"), "{events:?}");
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[test]
fn strict_selection_rejects_unknown_keys_and_wrong_types_always_fail() {
    let bed = Bed::new();
    bed.nad("blue", "macvlan-conf", &multus_macvlan_conf(&bed));
    let strict = bed.config(json!({"strictSelection": true}));
    let sb = bed.sandbox("blue", "strict", Some(MULTUS_MACVLAN_POD));
    let msg = bed.add(&sb, &strict).assert_error(7);
    assert!(
        msg.contains("blue/strict")
            && msg.contains("blue/macvlan-conf")
            && msg.contains(r#"unknown key "gateway""#),
        "{msg}"
    );
    bed.assert_clean(&sb.ns);

    // A known key with the wrong type is an error in the default (lenient) mode too.
    let lenient = bed.config(json!({}));
    let sb = bed.sandbox(
        "blue",
        "badmac",
        Some(r#"[{"name": "macvlan-conf", "mac": 5}]"#),
    );
    let msg = bed.add(&sb, &lenient).assert_error(7);
    assert!(
        msg.contains("blue/badmac") && msg.contains(r#""mac" must be a string, found 5"#),
        "{msg}"
    );
    bed.assert_clean(&sb.ns);
}

/// Multus's e2e `default-route1`: a static-IPAM macvlan NAD that declares no capability, and pods
/// asking for `ips` (one also for the default route). The addresses reach `static` via `IP=`.
#[test]
fn ips_for_a_nad_without_the_capability_reach_static_ipam_through_cni_args() {
    let bed = Bed::new();
    let nad = json!({
        "cniVersion": "0.4.0",
        "plugins": [{
            "type": "macvlan",
            "master": bed.node.macvlan_master,
            "mode": "bridge",
            "ipam": {"type": "static"}
        }]
    });
    bed.nad("blue", "default-route-config", &nad);
    let config = bed.config(json!({}));
    let ann1 = r#"[
            { "name": "default-route-config",
              "ips": [ "10.1.1.21/24" ] ,
              "default-route": [ "10.1.1.254" ] }
    ]"#;
    let ann2 = r#"[
            { "name": "default-route-config",
              "ips": [ "10.1.1.22/24" ] }
    ]"#;
    let sb1 = bed.sandbox("blue", "default-route-worker1", Some(ann1));
    let sb2 = bed.sandbox("blue", "default-route-worker2", Some(ann2));
    bed.add(&sb1, &config).assert_ok();
    bed.add(&sb2, &config).assert_ok();
    let (ns1, ns2) = (&sb1.ns, &sb2.ns);
    assert_eq!(ipv4_of(ns1, "net1"), vec!["10.1.1.21/24"]);
    assert_eq!(ipv4_of(ns2, "net1"), vec!["10.1.1.22/24"]);
    assert_eq!(
        default_routes(ns1),
        vec![("net1".to_owned(), "10.1.1.254".to_owned())]
    );
    assert!(default_routes(ns2).is_empty());
    let status = bed.status_of("blue", "default-route-worker1");
    assert_eq!(status[1]["ips"], json!(["10.1.1.21"]));
    assert_eq!(status[1]["gateway"], json!(["10.1.1.254"]));
    bed.del(&sb1, &config).assert_ok();
    bed.del(&sb2, &config).assert_ok();
    bed.assert_clean(ns1);
    bed.assert_clean(ns2);
}

/// `mac` for a NAD without the `mac` capability reaches the delegate as `MAC=` (the macvlan and
/// tuning plugins read it there).
#[test]
fn mac_for_a_nad_without_the_capability_reaches_the_delegate_through_cni_args() {
    let bed = Bed::new();
    bed.macvlan_nad("blue", "plain-mac", "10.78.31.0/24");
    let sb = bed.sandbox(
        "blue",
        "mac",
        Some(r#"[{"name": "plain-mac", "mac": "c2:b0:57:49:47:f2"}]"#),
    );
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();
    assert_eq!(mac_of(&sb.ns, "net1").as_deref(), Some("c2:b0:57:49:47:f2"));
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

fn sysctl(ns: &NetNs, key: &str) -> String {
    ns.exec(&["sysctl", "-n", key]).unwrap().trim().to_owned()
}

fn promisc(ns: &NetNs, ifname: &str) -> bool {
    let links = ns.links();
    let link = links
        .as_array()
        .and_then(|l| l.iter().find(|l| l["ifname"] == ifname))
        .unwrap_or_else(|| panic!("no {ifname}: {links}"));
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == "PROMISC"))
}

/// Where tuning (≥ 0.9, Debian's 1.1.1 included) records, on an ADD that changes a link's
/// mac/mtu/promisc, what its DEL restores; DEL removes the file. Its presence after ADD and absence
/// after DEL show that the delegate's DEL ran with the ADD's container ID and interface name.
fn tuning_backup(
    data_dir: &std::path::Path,
    container_id: &str,
    ifname: &str,
) -> std::path::PathBuf {
    data_dir.join(format!("{container_id}_{ifname}.json"))
}

/// Multus's e2e `subdirectory-chaining`: a `tuning` conf in the subdirectory named after the
/// cluster network (next to its conflist) runs after the conflist's own plugins.
#[test]
fn a_conflist_cluster_network_runs_the_plugins_of_its_subdirectory() {
    let bed = Bed::new();
    let subdir = bed.cluster_file.parent().unwrap().join("cluster");
    std::fs::create_dir_all(&subdir).unwrap();
    let tuning = |name: &str, sysctl: Value| json!({"cniVersion": "1.0.0", "name": name, "type": "tuning", "sysctl": sysctl});
    // promisc makes tuning record a backup that its DEL consumes: the trace of the chain's DEL.
    let data_dir = bed.node.root.path().join("tuning-subdir");
    let mut twiddle = tuning(
        "sysctltwiddle",
        json!({"net.ipv4.conf.IFNAME.arp_filter": "1"}),
    );
    twiddle["promisc"] = json!(true);
    twiddle["dataDir"] = json!(data_dir);
    std::fs::write(subdir.join("sysctltwiddle.conf"), twiddle.to_string()).unwrap();
    // Lexical order: 10-a before 20-b (the last write wins), and `.json` files are not plugins.
    std::fs::write(
        subdir.join("10-a.conf"),
        tuning("a", json!({"net.ipv4.conf.eth0.arp_ignore": "1"})).to_string(),
    )
    .unwrap();
    std::fs::write(
        subdir.join("20-b.conf"),
        tuning("b", json!({"net.ipv4.conf.eth0.arp_ignore": "2"})).to_string(),
    )
    .unwrap();
    std::fs::write(
        subdir.join("30-c.json"),
        tuning("c", json!({"net.ipv4.conf.eth0.arp_ignore": "3"})).to_string(),
    )
    .unwrap();
    let sb = bed.sandbox("blue", "sysctl-modified", None);
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();
    assert_eq!(sysctl(&sb.ns, "net.ipv4.conf.eth0.arp_filter"), "1");
    assert_eq!(sysctl(&sb.ns, "net.ipv4.conf.eth0.arp_ignore"), "2");
    assert!(promisc(&sb.ns, "eth0"));
    assert!(ipv4_of(&sb.ns, "eth0")[0].starts_with("10.77."));
    let backup = tuning_backup(&data_dir, &sb.cid, "eth0");
    assert!(
        backup.is_file(),
        "tuning's ADD left no {}",
        backup.display()
    );
    bed.del(&sb, &config).assert_ok();
    assert!(
        !backup.exists(),
        "tuning's DEL did not run: {}",
        backup.display()
    );
    bed.assert_clean(&sb.ns);

    // `loadOnlyInlinedPlugins` keeps the subdirectory out.
    let mut inline_only = bed.node.cluster_conflist("1.0.0");
    inline_only["loadOnlyInlinedPlugins"] = json!(true);
    std::fs::write(&bed.cluster_file, inline_only.to_string()).unwrap();
    let sb = sb.with_cid(cid("inl"));
    bed.add(&sb, &config).assert_ok();
    assert_eq!(sysctl(&sb.ns, "net.ipv4.conf.eth0.arp_filter"), "0");
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

/// Multus's e2e `subdirectory-chaining-passthru`: `auxiliaryCNIChainName` names a directory next
/// to the cluster network's config whose `tuning` conf sets a sysctl of the pod's interface. Multus
/// runs it on `net<N>`, which does not exist; Plexus runs it on the cluster network's interface,
/// after every attachment, and tears it down on DEL.
#[test]
fn the_auxiliary_chain_runs_for_every_pod_on_the_cluster_interface() {
    let bed = Bed::new();
    let chain_dir = bed.cluster_file.parent().unwrap().join("vendor-cni-chain");
    std::fs::create_dir_all(&chain_dir).unwrap();
    let sysctls =
        json!({"net.ipv4.conf.eth0.arp_filter": "1", "net.ipv4.conf.IFNAME.arp_ignore": "2"});
    // promisc makes tuning record a backup that its DEL consumes: the trace of the chain's DEL.
    let data_dir = bed.node.root.path().join("tuning-aux");
    std::fs::write(
        chain_dir.join("sysctltwiddle.conf"),
        json!({"cniVersion": "1.0.0", "name": "sysctltwiddle", "type": "tuning", "sysctl": sysctls,
               "promisc": true, "dataDir": data_dir})
        .to_string(),
    )
    .unwrap();
    bed.macvlan_nad("blue", "macvlan-x", "10.78.32.0/24");
    let config = bed.config(json!({"auxiliaryCNIChainName": "vendor-cni-chain"}));
    for (pod, networks) in [("sysctl-modified", None), ("with-net1", Some("macvlan-x"))] {
        let sb = bed.sandbox("blue", pod, networks);
        let ns = &sb.ns;
        let out = bed.add(&sb, &config);
        out.assert_ok();
        assert_eq!(sysctl(ns, "net.ipv4.conf.eth0.arp_filter"), "1", "{pod}");
        assert_eq!(sysctl(ns, "net.ipv4.conf.eth0.arp_ignore"), "2", "{pod}");
        assert!(promisc(ns, "eth0"), "{pod}");
        if networks.is_some() {
            assert_eq!(sysctl(ns, "net.ipv4.conf.net1.arp_ignore"), "0");
            assert!(!promisc(ns, "net1"), "{pod}");
        }
        let backup = tuning_backup(&data_dir, &sb.cid, "eth0");
        assert!(
            backup.is_file(),
            "tuning's ADD left no {}",
            backup.display()
        );
        // The runtime gets the cluster network's result; the chain has no status entry.
        assert!(
            out.json()["ips"][0]["address"]
                .as_str()
                .unwrap()
                .starts_with("10.77.")
        );
        let expected = if networks.is_some() {
            vec!["cluster", "blue/macvlan-x"]
        } else {
            vec!["cluster"]
        };
        assert_eq!(names(&bed.status_of("blue", pod)), expected);
        // (No CHECK here: tuning 1.1.1's CHECK does not substitute IFNAME in sysctl keys.)
        bed.del(&sb, &config).assert_ok();
        assert!(
            !backup.exists(),
            "tuning's DEL did not run: {}",
            backup.display()
        );
        bed.assert_clean(ns);
    }

    // An empty chain directory adds nothing, as in Multus.
    std::fs::remove_file(chain_dir.join("sysctltwiddle.conf")).unwrap();
    let sb = bed.sandbox("blue", "no-chain", None);
    bed.add(&sb, &config).assert_ok();
    assert_eq!(sysctl(&sb.ns, "net.ipv4.conf.eth0.arp_filter"), "0");
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[test]
fn the_auxiliary_chain_is_refused_when_the_cluster_network_has_no_directory() {
    let bed = Bed::new();
    bed.nad(
        "kube-system",
        "hx-cluster",
        &cluster_nad_config(&bed, "hx-cluster"),
    );
    let config = bed.config(
        json!({"clusterNetwork": "hx-cluster", "auxiliaryCNIChainName": "vendor-cni-chain"}),
    );
    let sb = bed.sandbox("blue", "refused", None);
    let msg = bed.add(&sb, &config).assert_error(7);
    assert!(
        msg.contains("auxiliaryCNIChainName")
            && msg.contains("clusterNetwork must be a file or directory path"),
        "{msg}"
    );
    bed.assert_clean(&sb.ns);
}
