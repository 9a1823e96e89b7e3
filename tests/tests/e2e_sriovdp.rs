//! End-to-end tests of `plexus-sriovdp` (issue #12): the real daemon against a fake sysfs tree,
//! with the fake kubelet as its registration server and ListAndWatch/Allocate client; and the
//! whole SR-IOV path (device plugin → kubelet → plexus → sriov) on real veth ends.

use plexus_e2e::bed::{Bed, wait_for};
use plexus_e2e::cni::bin_path;
use plexus_e2e::netns::NetNs;
use plexus_e2e::sriov::SriovNode;
use plexus_e2e::sriovdp_bed::{DevicePluginNode, DpPaths, DpTimers};
use plexus_sysfs::testing::{FakePf, FakeSysfs, FakeVf};
use serde_json::{Value, json};
use std::time::Duration;

const NET: &str = "intel.com/sriov_net";
const DPDK: &str = "example.com/sriov_dpdk";

/// PF `ens1f0` (NUMA 0): VFs 0-1 iavf, VF 2 vfio-pci (IOMMU group 71), VF 3 iavf; PF `ens2f0`
/// (NUMA 1): two mlx5 VFs, the first with an RDMA device; PF `ens3f0` with no VF.
fn tree(tag: &str) -> FakeSysfs {
    FakeSysfs::builder()
        .pf(FakePf::new("0000:3b:00.0", &format!("{tag}a"))
            .vf(FakeVf::kernel("iavf", &format!("{tag}a0")))
            .vf(FakeVf::kernel("iavf", &format!("{tag}a1")))
            .vf(FakeVf::vfio(71))
            .vf(FakeVf::kernel("iavf", &format!("{tag}a3"))))
        .pf(FakePf::new("0000:86:00.0", &format!("{tag}b"))
            .ids(0x15b3, 0x101d, 0x101e)
            .driver("mlx5_core")
            .numa_node(1)
            .vf(FakeVf::kernel("mlx5_core", &format!("{tag}b0")).rdma("mlx5_2"))
            .vf(FakeVf::kernel("mlx5_core", &format!("{tag}b1"))))
        .pf(FakePf::new("0000:af:00.0", &format!("{tag}c")))
        .build()
        .unwrap()
}

/// `intel.com/sriov_net`: the kernel VFs 0,1,3 of PF a and every mlx5 VF; `example.com/
/// sriov_dpdk`: vfio VFs.
fn config(tag: &str) -> Value {
    json!({"resourceList": [
        {"resourceName": "sriov_dpdk", "resourcePrefix": "example.com",
         "selectors": {"drivers": ["vfio-pci"]}},
        {"resourceName": "sriov_net",
         "selectors": [{"pfNames": [format!("{tag}a#0-1,3")]}, {"vendors": ["15b3"]}]}
    ]})
}

fn ids(devices: &[(String, String, Vec<i64>)]) -> Vec<&str> {
    devices.iter().map(|(id, _, _)| id.as_str()).collect()
}

#[test]
fn registers_each_pool_with_the_kubelet_and_advertises_its_vfs() {
    let node = DevicePluginNode::start(tree("rg"), &config("rg"), DpTimers::default()).unwrap();
    let net = node.wait_advertised(NET, |d| d.len() == 5);
    assert_eq!(
        net,
        vec![
            ("0000:3b:02.0".into(), "Healthy".into(), vec![0]),
            ("0000:3b:02.1".into(), "Healthy".into(), vec![0]),
            ("0000:3b:02.3".into(), "Healthy".into(), vec![0]),
            ("0000:86:02.0".into(), "Healthy".into(), vec![1]),
            ("0000:86:02.1".into(), "Healthy".into(), vec![1]),
        ]
    );
    let dpdk = node.wait_advertised(DPDK, |d| d.len() == 1);
    assert_eq!(ids(&dpdk), ["0000:3b:02.2"]);
    let mut regs = node.kubelet.registrations();
    regs.sort_by(|a, b| a.resource.cmp(&b.resource));
    let seen: Vec<(&str, &str, &str)> = regs
        .iter()
        .map(|r| (r.resource.as_str(), r.endpoint.as_str(), r.version.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (DPDK, "example.com_sriov_dpdk.sock", "v1beta1"),
            (NET, "intel.com_sriov_net.sock", "v1beta1"),
        ]
    );
    let options = regs[0].options.unwrap();
    assert!(options.get_preferred_allocation_available && !options.pre_start_required);
    // The log starts with the build, so a line can be tied to the image that wrote it.
    let log = node.log();
    let first = log.lines().next().unwrap_or_default();
    let build = plexus_cni::build::long_version();
    assert!(
        first.contains(&format!("plexus-sriovdp {build} starting")),
        "{log}"
    );
}

#[test]
fn health_changes_and_vfs_coming_and_going_are_pushed() {
    let mut node = DevicePluginNode::start(tree("hl"), &config("hl"), DpTimers::default()).unwrap();
    node.wait_advertised(NET, |d| d.len() == 5);
    let updates = node.kubelet.list_and_watch_updates(NET);
    // PF a's link goes down: on the next discovery (SIGHUP here), its VFs turn Unhealthy.
    node.set_operstate("hla", "down");
    node.sighup();
    let net = node.wait_advertised(NET, |d| d[0].1 == "Unhealthy");
    let health: Vec<&str> = net.iter().map(|(_, h, _)| h.as_str()).collect();
    assert_eq!(
        health,
        ["Unhealthy", "Unhealthy", "Unhealthy", "Healthy", "Healthy"]
    );
    assert!(
        node.kubelet.list_and_watch_updates(NET) > updates,
        "pushed on the open stream"
    );
    node.set_operstate("hla", "up");
    // VF 3 disappears, and the link comes back, in one discovery.
    let target = node.hide_vf("0000:3b:00.0", 3);
    node.sighup();
    let net = node.wait_advertised(NET, |d| d.len() == 4);
    assert_eq!(
        ids(&net),
        [
            "0000:3b:02.0",
            "0000:3b:02.1",
            "0000:86:02.0",
            "0000:86:02.1"
        ]
    );
    assert!(net.iter().all(|(_, h, _)| h == "Healthy"), "{net:?}");
    // It comes back.
    node.restore_vf("0000:3b:00.0", 3, &target);
    node.sighup();
    node.wait_advertised(NET, |d| d.len() == 5);
    // The other pool was not disturbed.
    assert_eq!(
        ids(&node.kubelet.advertised(DPDK).unwrap()),
        ["0000:3b:02.2"]
    );
    assert!(node.daemon_running());
}

#[test]
fn vfs_are_rediscovered_on_the_timer_too() {
    let node = DevicePluginNode::start(
        tree("tm"),
        &config("tm"),
        DpTimers {
            rediscover_seconds: 1,
            ..DpTimers::default()
        },
    )
    .unwrap();
    node.wait_advertised(NET, |d| d.len() == 5);
    node.hide_vf("0000:86:00.0", 1);
    // No signal: the 1 s timer finds it.
    node.wait_advertised(NET, |d| d.len() == 4);
}

#[test]
fn a_kubelet_restart_is_followed_by_a_new_registration() {
    let mut node = DevicePluginNode::start(tree("rs"), &config("rs"), DpTimers::default()).unwrap();
    node.wait_advertised(NET, |d| d.len() == 5);
    node.wait_advertised(DPDK, |d| d.len() == 1);
    assert_eq!(node.kubelet.registrations().len(), 2);
    let plugin_socket = node.paths.plugin_dir.join("intel.com_sriov_net.sock");
    assert!(plugin_socket.exists());
    node.kubelet.restart_device_plugins().unwrap();
    // The restart removed the plugin's socket and forgot the plugins: both come back.
    let ok = wait_for(Duration::from_secs(20), || {
        node.kubelet.registrations().len() == 4
    });
    assert!(ok, "{:?}\n{}", node.kubelet.registrations(), node.log());
    node.wait_advertised(NET, |d| d.len() == 5);
    node.wait_advertised(DPDK, |d| d.len() == 1);
    assert!(plugin_socket.exists(), "socket served again");
    assert!(
        node.log().contains("the kubelet restarted"),
        "{}",
        node.log()
    );
    // And Allocate works on the new endpoint.
    node.kubelet
        .allocate_from_plugin("blue", "after", "app", NET, 1)
        .unwrap();
}

#[test]
fn a_new_kubelet_socket_alone_also_leads_to_a_new_registration() {
    let mut node = DevicePluginNode::start(tree("rb"), &config("rb"), DpTimers::default()).unwrap();
    node.wait_advertised(NET, |d| d.len() == 5);
    assert_eq!(node.kubelet.registrations().len(), 2);
    // The plugin's sockets stay; only kubelet.sock is new.
    node.kubelet.rebind_registration().unwrap();
    let ok = wait_for(Duration::from_secs(20), || {
        node.kubelet.registrations().len() == 4
    });
    assert!(ok, "{:?}\n{}", node.kubelet.registrations(), node.log());
    node.wait_advertised(NET, |d| d.len() == 5);
    assert!(node.daemon_running());
}

#[test]
fn allocate_answers_env_device_nodes_and_device_info_until_the_pod_is_gone() {
    let node = DevicePluginNode::start(
        tree("al"),
        &config("al"),
        DpTimers {
            rediscover_seconds: 1,
            grace_seconds: 0,
        },
    )
    .unwrap();
    node.wait_advertised(NET, |d| d.len() == 5);
    node.wait_advertised(DPDK, |d| d.len() == 1);

    // Two kernel VFs: the preferred allocation keeps them on one NUMA node (PF a's node 0 holds
    // the most free VFs).
    let a = node
        .kubelet
        .allocate_from_plugin("blue", "web", "app", NET, 2)
        .unwrap();
    assert_eq!(a.ids, ["0000:3b:02.0", "0000:3b:02.1"]);
    assert_eq!(
        a.response.envs["PCIDEVICE_INTEL_COM_SRIOV_NET"],
        "0000:3b:02.0,0000:3b:02.1"
    );
    let info: Value =
        serde_json::from_str(&a.response.envs["PCIDEVICE_INTEL_COM_SRIOV_NET_INFO"]).unwrap();
    assert_eq!(info["0000:3b:02.1"]["generic"]["deviceID"], "0000:3b:02.1");
    assert!(
        a.response.devices.is_empty(),
        "kernel VFs need no device node"
    );
    for id in &a.ids {
        let doc: Value =
            serde_json::from_slice(&std::fs::read(node.device_info_file(NET, id)).unwrap())
                .unwrap();
        assert_eq!(
            doc,
            json!({"type": "pci", "version": "1.1.0",
                   "pci": {"pci-address": id, "pf-pci-address": "0000:3b:00.0"}})
        );
    }
    // The next two go to the remaining VFs, NUMA 1 first (it now has more free VFs).
    let b = node
        .kubelet
        .allocate_from_plugin("blue", "rdma", "app", NET, 2)
        .unwrap();
    assert_eq!(b.ids, ["0000:86:02.0", "0000:86:02.1"]);
    let rdma: Value =
        serde_json::from_slice(&std::fs::read(node.device_info_file(NET, "0000:86:02.0")).unwrap())
            .unwrap();
    assert_eq!(rdma["pci"]["rdma-device"], "mlx5_2");

    // A vfio VF: /dev/vfio/vfio and its group's node.
    let d = node
        .kubelet
        .allocate_from_plugin("blue", "dpdk", "app", DPDK, 1)
        .unwrap();
    let specs: Vec<(&str, &str)> = d
        .response
        .devices
        .iter()
        .map(|s| (s.host_path.as_str(), s.permissions.as_str()))
        .collect();
    assert_eq!(specs, [("/dev/vfio/vfio", "rw"), ("/dev/vfio/71", "rw")]);
    assert_eq!(
        d.response.envs["PCIDEVICE_EXAMPLE_COM_SRIOV_DPDK"],
        "0000:3b:02.2"
    );

    // The pod web goes away: its files are removed (the kubelet no longer lists the devices);
    // the other pods' stay.
    node.kubelet.release_pod("blue", "web");
    let gone = wait_for(Duration::from_secs(20), || {
        !node.device_info_file(NET, "0000:3b:02.0").exists()
            && !node.device_info_file(NET, "0000:3b:02.1").exists()
    });
    assert!(gone, "{}", node.log());
    for (r, id) in [
        (NET, "0000:86:02.0"),
        (NET, "0000:86:02.1"),
        (DPDK, "0000:3b:02.2"),
    ] {
        assert!(node.device_info_file(r, id).exists(), "{r} {id}");
    }
    // Another plugin's file in the same directory is never touched.
    let foreign = node
        .paths
        .device_info_dir
        .join("dp/nvidia.com-gpu-0000:01:00.0-device.json");
    std::fs::write(&foreign, "{}").unwrap();
    node.kubelet.release_pod("blue", "rdma");
    node.kubelet.release_pod("blue", "dpdk");
    let gone = wait_for(Duration::from_secs(20), || {
        !node.device_info_file(DPDK, "0000:3b:02.2").exists()
            && !node.device_info_file(NET, "0000:86:02.0").exists()
    });
    assert!(gone, "{}", node.log());
    assert!(foreign.exists());
}

#[test]
fn a_config_entry_it_cannot_honour_stops_the_daemon_naming_entry_and_key() {
    let bad = json!({"resourceList": [
        {"resourceName": "ok", "selectors": {"vendors": ["8086"]}},
        {"resourceName": "ddp", "selectors": [{"vendors": ["8086"], "ddpProfiles": ["GTPv1-C"]}]}
    ]});
    let mut node = DevicePluginNode::start(tree("bd"), &bad, DpTimers::default()).unwrap();
    assert_eq!(node.wait_exit(Duration::from_secs(20)), Some(1));
    let log = node.log();
    assert!(
        log.contains("resourceList[1] (ddp)") && log.contains("selectors[0].ddpProfiles"),
        "{log}"
    );
    assert!(
        node.kubelet.registrations().is_empty(),
        "nothing advertised"
    );
}

/// `ip -j link show dev <ifname>` in the pod.
fn pod_link(pod: &NetNs, ifname: &str) -> Value {
    pod.ip_json(&["link", "show", "dev", ifname]).unwrap()[0].clone()
}

fn pod_addrs(pod: &NetNs, ifname: &str) -> Vec<String> {
    pod.ip_json(&["-4", "addr", "show", "dev", ifname]).unwrap()[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// The whole SR-IOV path on veth "VFs": plexus-sriovdp discovers the VFs of the fake node and
/// registers them with the fake kubelet; the kubelet allocates two of them to a pod through the
/// plugin (device-info written); plexus learns them through PodResources and hands one to each of
/// the pod's two `sriov` networks; the real `sriov` plugin sets the PF side (simulated PF, vlan
/// 100), moves and renames the veth ends for real; network-status carries the device plugin's
/// device-info; DEL restores everything, and once the pod is gone the device-info goes too.
#[test]
fn the_whole_path_from_device_plugin_to_pod_and_back() {
    const RES: &str = "intel.com/intel_sriov_netdevice";
    let node = SriovNode::new(2, 0);
    let bed = Bed::new();
    bed.install_plugin_link("sriov", &bin_path("sriov"));
    // The device plugin reads the node's tree, and its kubelet and device-info paths are the ones
    // plexus is configured with.
    let paths = DpPaths {
        plugin_dir: bed.checkpoint_file().parent().unwrap().to_owned(),
        pod_resources_socket: bed.kubelet_socket(),
        device_info_dir: bed.device_info_dir(),
    };
    let dp = DevicePluginNode::start_at(
        tempfile::tempdir().unwrap(),
        paths,
        node.sysfs.root(),
        &json!({"resourceList": [{"resourceName": "intel_sriov_netdevice",
            "selectors": {"drivers": ["iavf"], "pfNames": [node.pf]}}]}),
        DpTimers {
            rediscover_seconds: 1,
            grace_seconds: 0,
        },
    )
    .unwrap();
    let advertised = dp.wait_advertised(RES, |d| d.len() == 2);
    assert_eq!(
        ids(&advertised),
        node.vfs.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(advertised.iter().all(|(_, h, _)| h == "Healthy"));

    // Two NADs on the resource (as deploy/examples/sriov/nad.yaml), the pod asks for both.
    for (nad, subnet) in [("sriov-a", "10.73.0.0/24"), ("sriov-b", "10.74.0.0/24")] {
        let mut conf = node.conf(
            "1.0.0",
            0,
            subnet,
            json!({"name": nad, "vlan": 100,
                   "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true}}),
        );
        conf.as_object_mut().unwrap().remove("deviceID");
        bed.resource_nad("blue", nad, RES, &conf);
    }
    let sb = bed.sandbox("blue", "web", Some("sriov-a, sriov-b"));
    // The kubelet admits the pod: two VFs through the plugin.
    let alloc = dp
        .kubelet
        .allocate_from_plugin("blue", "web", "app", RES, 2)
        .unwrap();
    let mut got = alloc.ids.clone();
    got.sort();
    assert_eq!(got, node.vfs);
    let info = |vf: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dp.device_info_file(RES, vf)).unwrap()).unwrap()
    };
    let before: Vec<_> = node
        .vf_netdevs
        .iter()
        .map(|n| node.host_link(n).unwrap())
        .collect();

    let config = bed.device_config(json!({}));
    bed.verb_on_with("ADD", &sb, &config, &node.hooks())
        .assert_ok();
    // Each network got its own VF (sorted: net1 the first), moved and renamed for real.
    for (i, (ifname, subnet)) in [("net1", "10.73.0.2/24"), ("net2", "10.74.0.2/24")]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            node.host_link(&node.vf_netdevs[i]),
            None,
            "VF {i} left the host"
        );
        let link = pod_link(&sb.ns, ifname);
        assert_eq!(link["address"], before[i].1, "{ifname} is VF {i}'s netdev");
        assert_eq!(link["operstate"], "UP");
        assert_eq!(pod_addrs(&sb.ns, ifname), [subnet]);
    }
    let pf = &node.pf;
    assert_eq!(
        node.pf_calls(),
        [
            format!("get {pf} vf 0"),
            format!("set {pf} vf 0 vlan 100 qos 0 proto 802.1q"),
            format!("get {pf} vf 1"),
            format!("set {pf} vf 1 vlan 100 qos 0 proto 802.1q"),
        ]
    );
    assert!(node.vf_table().iter().all(|v| v.vlan == 100));
    // network-status carries the device plugin's device-info of each network's VF.
    let status = bed.status_of("blue", "web");
    for (nad, ifname, vf) in [("blue/sriov-a", "net1", 0), ("blue/sriov-b", "net2", 1)] {
        let e = status.iter().find(|e| e["name"] == nad).unwrap();
        assert_eq!(e["interface"], ifname);
        assert_eq!(e["mac"], before[vf].1);
        assert_eq!(e["device-info"], info(&node.vfs[vf]), "{status:?}");
        assert_eq!(e["device-info"]["pci"]["pci-address"], node.vfs[vf]);
    }

    // DEL restores everything: the VFs are back under their names with their MAC, MTU and state,
    // the PF settings restored, no state, no lease, no cache entry, no device-info copy.
    bed.verb_on_with("DEL", &sb, &config, &node.hooks())
        .assert_ok();
    for (i, n) in node.vf_netdevs.iter().enumerate() {
        assert_eq!(node.host_link(n).as_ref(), Some(&before[i]));
    }
    assert!(node.vf_table().iter().all(|v| *v == node.initial));
    assert_eq!(node.records(), Vec::<String>::new());
    assert_eq!(node.leases(), Vec::<String>::new());
    bed.assert_clean(&sb.ns);
    let copies: Vec<_> = std::fs::read_dir(bed.device_info_dir().join("cni"))
        .into_iter()
        .flatten()
        .collect();
    assert!(copies.is_empty(), "{copies:?}");
    // The pod is deleted: the kubelet frees its VFs and the plugin removes their device-info.
    assert!(dp.device_info_file(RES, &node.vfs[0]).exists());
    dp.kubelet.release_pod("blue", "web");
    let gone = wait_for(Duration::from_secs(20), || {
        node.vfs
            .iter()
            .all(|vf| !dp.device_info_file(RES, vf).exists())
    });
    assert!(gone, "{}", dp.log());
    // And both VFs can be allocated again.
    let again = dp
        .kubelet
        .allocate_from_plugin("blue", "next", "app", RES, 2)
        .unwrap();
    assert_eq!(again.ids.len(), 2);
}
