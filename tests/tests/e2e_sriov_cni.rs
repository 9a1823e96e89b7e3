//! The `sriov` plugin binary on this kernel (issue #11). There are no VFs here, so each VF's
//! netdev is a real veth end listed in a fake sysfs tree, and the PF's VF table is the plugin's
//! simulated PF (every call logged); everything else — the move into the pod's netns, the
//! rename, MAC, MTU, addresses and routes, host-local IPAM — is real. The last test runs it as
//! the delegate of the real `plexus`, with the device ID from the fake kubelet.

use plexus_e2e::bed::{Bed, cid};
use plexus_e2e::cni::{bin_path, link_names};
use plexus_e2e::fakekubelet::FakeKubelet;
use plexus_e2e::netns::NetNs;
use plexus_e2e::sriov::SriovNode;
use serde_json::{Value, json};
use std::process::Command;

fn ip(args: &[&str]) {
    assert!(
        Command::new("ip").args(args).status().unwrap().success(),
        "ip {args:?}"
    );
}

/// Addresses (`a/p`) of `ifname` in the pod.
fn pod_addrs(pod: &NetNs, ifname: &str) -> Vec<String> {
    pod.addrs()
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ifname"] == ifname)
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn pod_link(pod: &NetNs, ifname: &str) -> Value {
    pod.links()
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifname"] == ifname)
        .cloned()
        .unwrap_or_else(|| panic!("{ifname} not in the pod: {}", pod.links()))
}

#[test]
fn add_then_del_leaves_the_host_exactly_as_before_with_the_pf_calls_recorded() {
    let node = SriovNode::new(2, 0);
    let vf = node.vf_netdevs[1].clone();
    // A non-default MTU and a known MAC, so that a restore that forgets either shows.
    ip(&[
        "link",
        "set",
        &vf,
        "mtu",
        "1400",
        "address",
        "02:11:22:33:44:55",
    ]);
    let before = node.host_link(&vf).unwrap();
    let pod = NetNs::new("srv").unwrap();
    let config = node.conf(
        "1.0.0",
        1,
        "10.66.0.0/24",
        json!({"vlan": 100, "vlanQoS": 2, "mac": "0a:58:0a:42:00:09", "spoofchk": "off",
            "trust": "on", "link_state": "enable", "min_tx_rate": 10, "max_tx_rate": 1000}),
    );

    let add = node.exec("ADD", "c1", Some(pod.path()), "net1", &config);
    add.assert_ok();
    let result = add.json();
    eprintln!("ADD result: {result}");
    let add_calls = node.pf_calls();
    eprintln!("PF calls during ADD:\n  {}", add_calls.join("\n  "));
    let pf = &node.pf;
    assert_eq!(
        add_calls,
        vec![
            format!("get {pf} vf 1"),
            format!("set {pf} vf 1 vlan 100 qos 2 proto 802.1q"),
            format!("set {pf} vf 1 mac 0a:58:0a:42:00:09"),
            format!("get {pf} vf 1"),
            format!("set {pf} vf 1 rate min 10 max 1000"),
            format!("set {pf} vf 1 spoofchk off"),
            format!("set {pf} vf 1 trust on"),
            format!("set {pf} vf 1 link_state enable"),
        ]
    );
    // The kernel's view: the VF netdev left the host and is net1 in the pod, with the MAC, up,
    // with host-local's address; the MTU it had.
    assert_eq!(node.host_link(&vf), None);
    let l = pod_link(&pod, "net1");
    assert_eq!(l["address"], "0a:58:0a:42:00:09");
    assert_eq!(l["mtu"], 1400);
    assert!(l["flags"].as_array().unwrap().contains(&json!("UP")), "{l}");
    assert_eq!(pod_addrs(&pod, "net1"), vec!["10.66.0.2/24"]);
    assert_eq!(node.leases(), vec!["10.66.0.2"]);
    assert_eq!(
        result["interfaces"],
        json!([{"name": "net1", "mac": "0a:58:0a:42:00:09", "mtu": 1400,
            "sandbox": pod.path(), "pciID": node.vfs[1]}])
    );
    assert_eq!(result["ips"][0]["address"], "10.66.0.2/24");
    assert_eq!(result["ips"][0]["interface"], 0);

    // CHECK with the result as prevResult passes; after someone flips trust on the PF it fails
    // naming the field.
    let mut checked = config.clone();
    checked["prevResult"] = result.clone();
    node.exec("CHECK", "c1", Some(pod.path()), "net1", &checked)
        .assert_ok();
    use plexus_sriov::pf::PfOps;
    node.sim
        .set(pf, 1, plexus_sriov::types::VfSetting::Trust(false))
        .unwrap();
    let msg = node
        .exec("CHECK", "c1", Some(pod.path()), "net1", &checked)
        .assert_error(110);
    assert!(msg.contains("trust: configured on"), "{msg}");
    node.sim
        .set(pf, 1, plexus_sriov::types::VfSetting::Trust(true))
        .unwrap();

    let mark = node.pf_calls().len();
    node.exec("DEL", "c1", Some(pod.path()), "net1", &config)
        .assert_ok();
    let del_calls = node.pf_calls()[mark..].to_vec();
    eprintln!("PF calls during DEL:\n  {}", del_calls.join("\n  "));
    assert_eq!(
        del_calls,
        vec![
            format!("set {pf} vf 1 vlan 0 qos 0 proto 802.1q"),
            format!("set {pf} vf 1 spoofchk on"),
            format!("set {pf} vf 1 mac 00:00:00:00:00:00"),
            format!("set {pf} vf 1 trust off"),
            format!("set {pf} vf 1 rate min 0 max 0"),
            format!("set {pf} vf 1 link_state auto"),
        ]
    );
    // Exactly as before: name, MAC, MTU, state, namespace; the pod has only lo; no lease, no
    // record; the PF's VF table as it was.
    assert_eq!(node.host_link(&vf), Some(before.clone()));
    assert_eq!(link_names(&pod), vec!["lo"]);
    assert_eq!(node.leases(), Vec::<String>::new());
    assert_eq!(node.records(), Vec::<String>::new());
    assert!(node.vf_table().iter().all(|v| *v == node.initial));

    // A second DEL, and a DEL without netns: success, nothing touched.
    let mark = node.pf_calls().len();
    node.exec("DEL", "c1", Some(pod.path()), "net1", &config)
        .assert_ok();
    node.exec("DEL", "c1", None, "net1", &config).assert_ok();
    assert_eq!(node.pf_calls().len(), mark);
    assert_eq!(node.host_link(&vf), Some(before));
}

#[test]
fn every_spec_version_round_trips() {
    let node = SriovNode::new(1, 0);
    let vf = node.vf_netdevs[0].clone();
    let before = node.host_link(&vf).unwrap();
    for v in [
        "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
    ] {
        let pod = NetNs::new("srv").unwrap();
        let mut config = node.conf(v, 0, "10.67.0.0/24", json!({"vlan": 7}));
        // The Debian IPAM plugins (1.1.1) speak up to 1.0.0: 1.1.0 runs without IPAM.
        let with_ipam = v != "1.1.0";
        if !with_ipam {
            config.as_object_mut().unwrap().remove("ipam");
        }
        let out = node.exec("ADD", "c", Some(pod.path()), "net1", &config);
        out.assert_ok();
        let r = out.json();
        assert_eq!(r["cniVersion"], v, "{r}");
        if v.starts_with("0.1") || v.starts_with("0.2") {
            let addr = r["ip4"]["ip"].as_str().unwrap();
            assert!(addr.starts_with("10.67.0."), "{r}");
            assert_eq!(pod_addrs(&pod, "net1"), vec![addr.to_owned()], "{v}");
        } else {
            assert_eq!(r["interfaces"][0]["name"], "net1", "{r}");
            assert_eq!(
                r["interfaces"][0].get("pciID").is_some(),
                v.starts_with("1."),
                "{r}"
            );
            if with_ipam {
                let addr = r["ips"][0]["address"].as_str().unwrap();
                assert!(addr.starts_with("10.67.0."), "{r}");
                assert_eq!(pod_addrs(&pod, "net1"), vec![addr.to_owned()], "{v}");
            } else {
                assert!(r.get("ips").is_none(), "{r}");
                assert!(pod_addrs(&pod, "net1").is_empty());
            }
        }
        if v == "1.1.0" || v == "1.0.0" || v == "0.4.0" {
            node.exec("CHECK", "c", Some(pod.path()), "net1", &config)
                .assert_ok();
        }
        node.exec("DEL", "c", Some(pod.path()), "net1", &config)
            .assert_ok();
        assert_eq!(node.host_link(&vf), Some(before.clone()), "{v}");
        assert_eq!(node.leases(), Vec::<String>::new(), "{v}");
    }
    assert!(node.vf_table().iter().all(|v| *v == node.initial));
    // VERSION lists them all.
    let out = node.exec("VERSION", "", None, "", &json!({"cniVersion": "1.1.0"}));
    assert_eq!(
        out.json()["supportedVersions"],
        json!([
            "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"
        ])
    );
    // STATUS (1.1.0) is ready with a sysfs tree.
    node.exec(
        "STATUS",
        "",
        None,
        "",
        &node.conf("1.1.0", 0, "10.67.0.0/24", json!({})),
    )
    .assert_ok();
}

#[test]
fn invalid_values_are_code_7_naming_the_field_and_touch_nothing() {
    let node = SriovNode::new(1, 0);
    let vf = node.vf_netdevs[0].clone();
    let before = node.host_link(&vf).unwrap();
    let pod = NetNs::new("srv").unwrap();
    for (extra, field) in [
        (json!({"spoofchk": "maybe"}), "spoofchk"),
        (json!({"vlan": 4095}), "vlan"),
        (json!({"vlanQoS": 3}), "vlanQoS"),
        (json!({"trust": "yes"}), "trust"),
        (json!({"link_state": "up"}), "link_state"),
        (json!({"deviceID": "0000:3b:00.0"}), "deviceID"),
    ] {
        let config = node.conf("1.0.0", 0, "10.68.0.0/24", extra);
        let msg = node
            .exec("ADD", "c", Some(pod.path()), "net1", &config)
            .assert_error(7);
        assert!(msg.contains(&format!("invalid {field}")), "{msg}");
        assert!(
            msg.contains("pod blue/c") && msg.contains("network sriov-net"),
            "{msg}"
        );
    }
    assert_eq!(node.pf_calls(), Vec::<String>::new());
    assert_eq!(node.host_link(&vf), Some(before));
    assert_eq!(link_names(&pod), vec!["lo"]);
    assert_eq!(node.leases(), Vec::<String>::new());
    assert_eq!(node.records(), Vec::<String>::new());
}

#[test]
fn a_failing_ipam_rolls_everything_back() {
    let node = SriovNode::new(1, 0);
    let vf = node.vf_netdevs[0].clone();
    let before = node.host_link(&vf).unwrap();
    let pod = NetNs::new("srv").unwrap();
    // host-local refuses this range only after the VF was configured and moved.
    let mut config = node.conf(
        "1.0.0",
        0,
        "10.69.0.0/24",
        json!({"vlan": 12, "mac": "0a:58:00:00:00:01"}),
    );
    config["ipam"]["rangeStart"] = json!("10.70.0.5");
    let msg = node
        .exec("ADD", "c", Some(pod.path()), "net1", &config)
        .assert_error(5);
    assert!(msg.contains("IPAM plugin host-local ADD failed"), "{msg}");
    assert!(!msg.contains("rollback incomplete"), "{msg}");
    assert_eq!(node.host_link(&vf), Some(before));
    assert_eq!(link_names(&pod), vec!["lo"]);
    assert!(node.vf_table().iter().all(|v| *v == node.initial));
    assert_eq!(node.records(), Vec::<String>::new());
    assert_eq!(node.leases(), Vec::<String>::new());
}

#[test]
fn dpdk_vf_gets_only_pf_settings_and_del_after_netns_loss_still_restores() {
    let node = SriovNode::new(1, 1);
    let pod = NetNs::new("srv").unwrap();
    // host-local 1.1.1 speaks up to 1.0.0.
    let config = node.conf(
        "1.0.0",
        1,
        "10.71.0.0/24",
        json!({"vlan": 30, "mac": "0a:58:00:00:00:30"}),
    );
    let out = node.exec("ADD", "c", Some(pod.path()), "net1", &config);
    out.assert_ok();
    let r = out.json();
    // Reported, not configured: no interface in the pod.
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert_eq!(r["interfaces"][0]["pciID"], node.vfs[1]);
    assert_eq!(r["interfaces"][0]["mac"], "0a:58:00:00:00:30");
    assert_eq!(r["ips"][0]["address"], "10.71.0.2/24");
    assert_eq!(link_names(&pod), vec!["lo"]);
    assert_eq!(node.vf_table()[1].vlan, 30);
    node.exec("CHECK", "c", Some(pod.path()), "net1", &config)
        .assert_ok();
    // The pod's netns disappears before the DEL (the reference plugin's DEL of a vfio VF fails
    // here: it has forgotten DPDK mode and looks for a netdev).
    let path = pod.path().to_path_buf();
    drop(pod);
    node.exec("DEL", "c", Some(&path), "net1", &config)
        .assert_ok();
    assert!(node.vf_table().iter().all(|v| *v == node.initial));
    assert_eq!(node.records(), Vec::<String>::new());
    assert_eq!(node.leases(), Vec::<String>::new());
}

#[test]
fn del_after_the_pods_netns_is_gone_succeeds_and_restores_the_pf() {
    let node = SriovNode::new(1, 0);
    let pod = NetNs::new("srv").unwrap();
    let config = node.conf(
        "1.0.0",
        0,
        "10.72.0.0/24",
        json!({"vlan": 44, "trust": "on"}),
    );
    node.exec("ADD", "c", Some(pod.path()), "net1", &config)
        .assert_ok();
    let path = pod.path().to_path_buf();
    // The stand-in veth dies with the netns (a real VF would return to the host).
    drop(pod);
    node.exec("DEL", "c", Some(&path), "net1", &config)
        .assert_ok();
    assert!(node.vf_table().iter().all(|v| *v == node.initial));
    assert_eq!(node.records(), Vec::<String>::new());
    assert_eq!(node.leases(), Vec::<String>::new());
}

#[test]
fn plexus_hands_sriov_the_kubelets_vf_and_del_restores_it_with_the_kubelet_gone() {
    const RES: &str = "intel.com/sriov_netdevice";
    let node = SriovNode::new(2, 0);
    let bed = Bed::new();
    bed.install_plugin_link("sriov", &bin_path("sriov"));
    let kubelet = FakeKubelet::start(&bed.kubelet_socket()).unwrap();
    kubelet.allocate("blue", "web", "app", RES, &[&node.vfs[1]]);
    let mut nad = node.conf(
        "1.0.0",
        1,
        "10.73.0.0/24",
        json!({"vlan": 100,
        "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true}}),
    );
    nad.as_object_mut().unwrap().remove("deviceID");
    bed.resource_nad("blue", "sriov-a", RES, &nad);
    let uid = bed.pod("blue", "web", Some("sriov-a"));
    let vf = node.vf_netdevs[1].clone();
    let before = node.host_link(&vf).unwrap();
    let pod = NetNs::new("pxs").unwrap();
    let c = cid("sriov");
    let config = bed.device_config(json!({}));
    bed.call_env(
        "ADD",
        &c,
        Some(pod.path()),
        "blue",
        "web",
        &uid,
        &config,
        &node.hooks(),
    )
    .assert_ok();
    assert_eq!(node.host_link(&vf), None);
    assert_eq!(pod_addrs(&pod, "net1"), vec!["10.73.0.2/24"]);
    let status = bed.status_of("blue", "web");
    let entry = status.iter().find(|e| e["name"] == "blue/sriov-a").unwrap();
    assert_eq!(entry["interface"], "net1");
    assert_eq!(entry["ips"], json!(["10.73.0.2"]));
    assert_eq!(entry["mac"], pod_link(&pod, "net1")["address"]);
    let pf = &node.pf;
    assert_eq!(
        node.pf_calls(),
        vec![
            format!("get {pf} vf 1"),
            format!("set {pf} vf 1 vlan 100 qos 0 proto 802.1q")
        ]
    );
    // DEL works from plexus's cache alone: the kubelet has released the pod's devices.
    drop(kubelet);
    bed.call_env(
        "DEL",
        &c,
        Some(pod.path()),
        "blue",
        "web",
        &uid,
        &config,
        &node.hooks(),
    )
    .assert_ok();
    assert_eq!(node.host_link(&vf), Some(before));
    assert!(node.vf_table().iter().all(|v| *v == node.initial));
    assert_eq!(node.records(), Vec::<String>::new());
    assert_eq!(node.leases(), Vec::<String>::new());
    bed.assert_clean(&pod);
}

#[test]
fn the_netlink_pf_backend_reads_and_writes_a_real_links_vf_table() {
    use plexus_e2e::netns::{HostLink, unique_name};
    use plexus_sriov::pf::{NetlinkPf, PfError, PfOps};
    use plexus_sriov::types::VfSetting;
    let (a, b) = (unique_name("nl"), unique_name("nl"));
    let _veth = HostLink::veth_pair(&a, &b).unwrap();
    // RTM_GETLINK with the VF filter works on any link; a veth's VF table is empty.
    assert!(
        matches!(NetlinkPf.vf(&a, 0), Err(PfError::NoSuchVf { vf: 0, .. })),
        "{:?}",
        NetlinkPf.vf(&a, 0)
    );
    let missing = NetlinkPf.vf(&unique_name("no"), 0).unwrap_err();
    assert!(missing.to_string().contains("no such link"), "{missing}");
    // A VF setting on a link without VFs reaches the kernel, which refuses it (no driver op).
    let err = NetlinkPf.set(&a, 0, VfSetting::Trust(true)).unwrap_err();
    assert!(
        matches!(&err, PfError::Io { cause, .. } if cause.raw_os_error() == Some(nix::libc::EOPNOTSUPP)),
        "{err:?}"
    );
}

#[test]
fn netns_work_runs_on_a_thread_of_its_own_and_never_moves_the_caller() {
    use std::os::unix::fs::MetadataExt;
    let pod = NetNs::new("srv").unwrap();
    let here = || std::fs::read_link("/proc/thread-self/ns/net");
    let before = here().unwrap();
    let inside = plexus_sriov::netns::run_in(pod.path(), here).unwrap();
    let pod_ino = std::fs::metadata(pod.path()).unwrap().ino();
    assert_eq!(inside.to_string_lossy(), format!("net:[{pod_ino}]"));
    assert_eq!(
        here().unwrap(),
        before,
        "the calling thread was left in the pod's netns"
    );
    // A netns that does not exist: an error, not a panic, and still no move.
    let gone = plexus_sriov::netns::run_in(std::path::Path::new("/run/netns/no-such-ns"), here);
    assert!(gone.is_err());
    assert_eq!(here().unwrap(), before);
}
