//! End-to-end tests of Multus drop-in compatibility (issue #15): configs, NADs and annotations
//! written for Multus run unchanged. The real `plexus` binary, real netns, Debian delegates and the
//! fake API server.

use plexus_e2e::bed::{Bed, STATUS_KEY, cid};
use plexus_e2e::cni::ipv4_of;
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
    bed.nad(
        "blue",
        "macvlan-s",
        &bed.node.macvlan_config("macvlan-s", "10.78.30.0/24"),
    );
    let config = bed.config(json!({"clusterNetwork": "hx-cluster", "defaultNetworks": ["always"]}));

    let uid = bed.pod("blue", "st", Some("macvlan-s"));
    let ns = NetNs::new("pxs").unwrap();
    let c = cid("st");
    bed.call("ADD", &c, Some(ns.path()), "blue", "st", &uid, &config)
        .assert_ok();
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
    bed.call("DEL", &c, Some(ns.path()), "blue", "st", &uid, &config)
        .assert_ok();
    bed.assert_clean(&ns);

    // The default-network override is named `<multusNamespace>/<name>` too.
    let uid = bed.pod_annotated(
        "blue",
        "ovr",
        json!({"v1.multus-cni.io/default-network": "calico-conf"}),
    );
    let c = cid("ovr");
    bed.call("ADD", &c, Some(ns.path()), "blue", "ovr", &uid, &config)
        .assert_ok();
    assert!(ipv4_of(&ns, "eth0")[0].starts_with("10.77."));
    let status = bed.status_of("blue", "ovr");
    assert_eq!(names(&status), vec!["kube-system/calico-conf", "always"]);
    bed.call("DEL", &c, Some(ns.path()), "blue", "ovr", &uid, &config)
        .assert_ok();
    bed.assert_clean(&ns);
}
