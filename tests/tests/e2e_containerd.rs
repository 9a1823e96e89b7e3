//! End-to-end tests under a real container runtime: Debian's containerd 1.6 + runc, started by the
//! test bed with its own root, state and socket, driven over CRI the way the kubelet drives it. Its
//! CRI plugin execs the freshly built `plexus` from a `00-plexus.conflist`, with real delegates,
//! the fake API server, and a pause image built at test time. Assertions are on what the kernel
//! shows in the sandbox's netns, on the network-status annotation, on the API requests made, and on
//! cleanup after the runtime's own StopPodSandbox and RemovePodSandbox (each sends a DEL). Every
//! test runs in both modes: thin (`plexus`) and thick (`plexus-shim` forwarding to `plexusd`).

use plexus_e2e::bed::{Mode, STATUS_KEY};
use plexus_e2e::cni::{ipv4_of, link_names, mac_of};
use plexus_e2e::cri_bed::{CriBed, CriBedOptions, Sandbox};
use rstest::rstest;
use serde_json::json;

/// Two NADs in the pod's namespace: a macvlan on the node's veth and a bridge on its second bridge.
fn two_nads(bed: &CriBed) {
    let node = &bed.bed.node;
    bed.bed.nad(
        "blue",
        "macvlan-a",
        &node.macvlan_config("macvlan-a", "10.78.1.0/24"),
    );
    bed.bed.nad(
        "blue",
        "bridge-b",
        &node.bridge_config("bridge-b", "10.79.2.0/24"),
    );
}

/// Asserts that the sandbox has eth0 (cluster), net1 (macvlan-a) and net2 (bridge-b) with
/// addresses from their subnets, and that the pod's network-status says exactly that.
fn assert_three_networks(bed: &CriBed, sandbox: &Sandbox) {
    let ns = &sandbox.netns;
    assert_eq!(link_names(ns), vec!["eth0", "lo", "net1", "net2"]);
    let eth0 = ipv4_of(ns, "eth0");
    let net1 = ipv4_of(ns, "net1");
    let net2 = ipv4_of(ns, "net2");
    assert!(eth0.len() == 1 && eth0[0].starts_with("10.77."), "{eth0:?}");
    assert!(
        net1.len() == 1 && net1[0].starts_with("10.78.1."),
        "{net1:?}"
    );
    assert!(
        net2.len() == 1 && net2[0].starts_with("10.79.2."),
        "{net2:?}"
    );
    // The runtime reports the cluster network's address: plexus returned its result.
    assert_eq!(
        format!("{}/16", sandbox.ip),
        eth0[0],
        "the IP containerd reports"
    );

    let status = bed.bed.status_of(&sandbox.pod.namespace, &sandbox.pod.name);
    let bare = |cidr: &str| cidr.split('/').next().unwrap().to_owned();
    let expect = [
        ("cluster", "eth0", &eth0, true),
        ("blue/macvlan-a", "net1", &net1, false),
        ("blue/bridge-b", "net2", &net2, false),
    ];
    assert_eq!(status.len(), expect.len(), "{status:#?}");
    for (entry, (name, ifname, ips, default)) in status.iter().zip(expect) {
        assert_eq!(entry["name"], name, "{entry}");
        assert_eq!(entry["interface"], ifname, "{entry}");
        assert_eq!(entry["ips"], json!([bare(&ips[0])]), "{entry}");
        assert_eq!(
            entry["mac"].as_str(),
            mac_of(ns, ifname).as_deref(),
            "{entry}"
        );
        assert_eq!(
            entry["default"].as_bool().unwrap_or(false),
            default,
            "{entry}"
        );
    }
}

#[rstest]
fn pod_lifecycle_through_containerd_leaves_nothing(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = CriBed::new(CriBedOptions::in_mode(mode));
    two_nads(&bed);
    let pod = bed.pod(
        "blue",
        "web",
        json!({"k8s.v1.cni.cncf.io/networks": "macvlan-a,bridge-b"}),
    );

    let sandbox = bed.run(&pod);
    assert_three_networks(&bed, &sandbox);
    // Without the pod-annotations capability plexus reads the pod once from the API (thick
    // mode: from its cache).
    assert_eq!(
        bed.bed.api.count("GET", "/namespaces/blue/pods/web"),
        bed.bed.reads(1)
    );
    assert_eq!(
        bed.bed
            .api
            .count("PATCH", "/namespaces/blue/pods/web/status"),
        1
    );
    assert_eq!(
        bed.cni_dir_files()
            .iter()
            .filter(|f| f.ends_with(".json"))
            .count(),
        1,
        "one cache entry while the pod runs: {:?}",
        bed.cni_dir_files()
    );

    bed.stop(&sandbox);
    bed.remove(&sandbox);
    bed.assert_nothing_left(&[&sandbox]);
}

#[rstest]
fn failing_nad_is_rolled_back_and_nothing_is_left(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = CriBed::new(CriBedOptions::in_mode(mode));
    two_nads(&bed);
    // The third attachment fails: its macvlan master does not exist (macvlan: "Link not found").
    let mut broken = bed.bed.node.macvlan_config("broken-c", "10.80.3.0/24");
    broken["master"] = json!("pxnomaster0");
    bed.bed.nad("blue", "broken-c", &broken);
    let pod = bed.pod(
        "blue",
        "doomed",
        json!({"k8s.v1.cni.cncf.io/networks": "macvlan-a,bridge-b,broken-c"}),
    );

    let err = bed.try_run(&pod).expect_err("RunPodSandbox must fail");
    let msg = err.message();
    assert!(
        msg.contains("blue/broken-c") && msg.contains("macvlan") && msg.contains("Link not found"),
        "the runtime's error names the network and the cause: {msg}"
    );
    assert!(
        msg.contains("blue/doomed"),
        "the runtime's error names the pod: {msg}"
    );
    // No network-status for a pod that did not start.
    let annotations =
        bed.bed.api.get_pod("blue", "doomed").unwrap()["metadata"]["annotations"].clone();
    assert!(annotations.get(STATUS_KEY).is_none(), "{annotations}");
    // containerd has already run its DEL after the failed ADD and dropped the sandbox.
    bed.assert_nothing_left(&[]);

    // The kubelet retries; after the NAD is fixed the same pod starts.
    bed.bed
        .api
        .delete_nad("blue", "broken-c")
        .expect("NAD exists");
    bed.bed.nad(
        "blue",
        "broken-c",
        &bed.bed.node.macvlan_config("broken-c", "10.80.3.0/24"),
    );
    let sandbox = bed.run(&pod);
    assert_eq!(
        link_names(&sandbox.netns),
        vec!["eth0", "lo", "net1", "net2", "net3"]
    );
    bed.stop(&sandbox);
    bed.remove(&sandbox);
    bed.assert_nothing_left(&[&sandbox]);
}

#[rstest]
fn containerd_restart_between_run_and_stop(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let mut bed = CriBed::new(CriBedOptions::in_mode(mode));
    two_nads(&bed);
    let pod = bed.pod(
        "blue",
        "survivor",
        json!({"k8s.v1.cni.cncf.io/networks": "macvlan-a,bridge-b"}),
    );
    let sandbox = bed.run(&pod);
    assert_three_networks(&bed, &sandbox);

    bed.restart_containerd();
    // The restarted runtime recovered the sandbox, still running, with its network.
    let (status, _) = bed
        .cri()
        .pod_sandbox_status(&sandbox.id)
        .expect("status after restart");
    assert_eq!(status.network.map(|n| n.ip).unwrap_or_default(), sandbox.ip);
    assert_eq!(
        link_names(&sandbox.netns),
        vec!["eth0", "lo", "net1", "net2"]
    );

    bed.stop(&sandbox);
    bed.remove(&sandbox);
    bed.assert_nothing_left(&[&sandbox]);
}

#[rstest]
fn pod_annotations_capability_spares_the_pod_get(#[values(Mode::Thin, Mode::Thick)] mode: Mode) {
    let bed = CriBed::new(CriBedOptions {
        mode,
        pod_annotations_capability: true,
    });
    two_nads(&bed);
    let pod = bed.pod(
        "blue",
        "quiet",
        json!({"k8s.v1.cni.cncf.io/networks": "macvlan-a,bridge-b"}),
    );
    bed.bed.api.clear_requests();

    let sandbox = bed.run(&pod);
    assert_three_networks(&bed, &sandbox);
    let requests = bed.bed.cni_requests();
    let pod_gets: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/pods/"))
        .collect();
    assert!(
        pod_gets.is_empty(),
        "the annotations came from the runtime, yet the pod was read: {pod_gets:?}"
    );
    // The budget of DESIGN.md §3 with the capability: N NAD GETs + 1 PATCH (thick: the PATCH).
    assert_eq!(
        bed.bed.api.count("GET", "/network-attachment-definitions/"),
        bed.bed.reads(2),
        "{requests:?}"
    );
    assert_eq!(
        bed.bed.api.count("PATCH", "/pods/quiet/status"),
        1,
        "{requests:?}"
    );
    assert_eq!(requests.len(), bed.bed.reads(2) + 1, "{requests:?}");

    bed.stop(&sandbox);
    bed.remove(&sandbox);
    bed.assert_nothing_left(&[&sandbox]);
}
