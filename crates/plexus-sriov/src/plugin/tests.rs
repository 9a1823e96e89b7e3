//! The verbs against a fake sysfs tree, the simulated PF (its call log asserted), recording link
//! and IPAM fakes: every field, kernel and DPDK VFs, every spec version, rollback, idempotent DEL.

use super::*;
use crate::pf::SimulatedPf;
use crate::testing::{FakeIpam, FakeLinks};
use crate::types::{VfLinkState, VfState, VlanProto};
use plexus_sysfs::testing::{FakePf, FakeSysfs, FakeVf};
use rstest::rstest;
use serde_json::json;

const PF: &str = "ens1f0";
const KERNEL_VF: &str = "0000:3b:02.1";
const DPDK_VF: &str = "0000:3b:02.2";
const POD: &str = "/run/netns/pod-a";

fn mac(s: &str) -> Mac {
    Mac::parse(s).unwrap()
}

fn orig_vf() -> VfState {
    VfState {
        mac: mac("00:00:00:00:00:00"),
        spoofchk: true,
        ..VfState::default()
    }
}

struct Rig {
    sysfs: FakeSysfs,
    pf: SimulatedPf,
    links: FakeLinks,
    ipam: FakeIpam,
    _sim: tempfile::TempDir,
    store: tempfile::TempDir,
}

impl Rig {
    fn new() -> Self {
        Self::with_ipam(FakeIpam::returning(json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "10.56.0.7/24", "gateway": "10.56.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.99.0.0/16", "gw": "10.56.0.254"}],
            "dns": {"nameservers": ["10.56.0.53"]}
        })))
    }

    fn with_ipam(ipam: FakeIpam) -> Self {
        let sysfs = FakeSysfs::builder()
            .pf(FakePf::new("0000:3b:00.0", PF)
                .vf(FakeVf::kernel("iavf", "ens1f0v0"))
                .vf(FakeVf::kernel("iavf", "ens1f0v1"))
                .vf(FakeVf::vfio(42))
                .vf(FakeVf::unbound()))
            .build()
            .unwrap();
        let sim = tempfile::tempdir().unwrap();
        let pf = SimulatedPf::new(sim.path());
        pf.seed(PF, 4, orig_vf()).unwrap();
        let links = FakeLinks::new();
        links.add_link(&Ns::Host, "ens1f0v0", mac("aa:00:00:00:00:00"), 1500);
        links.add_link(&Ns::Host, "ens1f0v1", mac("aa:00:00:00:00:01"), 9000);
        links.add_ns(POD);
        Self {
            sysfs,
            pf,
            links,
            ipam,
            _sim: sim,
            store: tempfile::tempdir().unwrap(),
        }
    }

    fn plugin(&self) -> Plugin<'_> {
        Plugin {
            sysfs: self.sysfs.sysfs(),
            pf: &self.pf,
            links: &self.links,
            ipam: &self.ipam,
            store: Store::new(self.store.path()),
            mac_poll: (3, Duration::from_millis(1)),
        }
    }

    fn store(&self) -> Store {
        Store::new(self.store.path())
    }

    fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in walk(self.store.path()) {
            if !e.contains("vf_lock") {
                out.push(e);
            }
        }
        out
    }
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn env(command: &str, cid: &str, ifname: &str) -> CniEnv {
    let vars = [
        ("CNI_COMMAND", command.to_owned()),
        ("CNI_CONTAINERID", cid.to_owned()),
        ("CNI_NETNS", POD.to_owned()),
        ("CNI_IFNAME", ifname.to_owned()),
        (
            "CNI_ARGS",
            "K8S_POD_NAMESPACE=blue;K8S_POD_NAME=web".to_owned(),
        ),
        ("CNI_PATH", "/opt/cni/bin".to_owned()),
    ];
    CniEnv::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap()
}

fn stdin(extra: Value) -> Vec<u8> {
    let mut v = json!({"cniVersion": "1.0.0", "name": "sriov-a", "type": "sriov",
        "deviceID": KERNEL_VF, "ipam": {"type": "host-local", "subnet": "10.56.0.0/24"}});
    for (k, x) in extra.as_object().unwrap() {
        if x.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = x.clone();
        }
    }
    v.to_string().into_bytes()
}

fn conf(s: &[u8]) -> SriovConf {
    crate::config::parse(s, None).unwrap()
}

fn all_fields() -> Vec<u8> {
    stdin(
        json!({"vlan": 100, "vlanQoS": 3, "vlanProto": "802.1ad", "mac": "0a:00:00:00:00:09",
        "spoofchk": "off", "trust": "on", "link_state": "enable",
        "min_tx_rate": 100, "max_tx_rate": 1000}),
    )
}

#[test]
fn add_applies_every_field_through_the_pf_in_order_and_del_restores_all() {
    let rig = Rig::new();
    let p = rig.plugin();
    let s = all_fields();
    let c = conf(&s);
    let out = p.add(&env("ADD", "c1", "net1"), &c, &s).unwrap();

    assert_eq!(
        rig.pf.calls(PF),
        vec![
            "get ens1f0 vf 1",
            "set ens1f0 vf 1 vlan 100 qos 3 proto 802.1ad",
            "set ens1f0 vf 1 mac 0a:00:00:00:00:09",
            "get ens1f0 vf 1",
            "set ens1f0 vf 1 rate min 100 max 1000",
            "set ens1f0 vf 1 spoofchk off",
            "set ens1f0 vf 1 trust on",
            "set ens1f0 vf 1 link_state enable",
        ]
    );
    let st = rig.pf.state(PF).unwrap().vfs[1];
    assert_eq!(
        st,
        VfState {
            mac: mac("0a:00:00:00:00:09"),
            vlan: 100,
            qos: 3,
            vlan_proto: VlanProto::Dot1Ad,
            spoofchk: false,
            trust: true,
            link_state: VfLinkState::Enable,
            min_tx_rate: 100,
            max_tx_rate: 1000,
        }
    );
    // Netdev: down, moved into the pod as net1 in one step, MAC, up; addresses and routes.
    assert_eq!(
        rig.links.calls(),
        vec![
            "down host ens1f0v1 ",
            "move host ens1f0v1 -> /run/netns/pod-a net1",
            "sysctl /run/netns/pod-a net/ipv4/conf/net1/arp_notify=1",
            "sysctl /run/netns/pod-a net/ipv6/conf/net1/ndisc_notify=1",
            "mac /run/netns/pod-a net1 0a:00:00:00:00:09",
            "up /run/netns/pod-a net1 ",
            "addr /run/netns/pod-a net1 10.56.0.7/24",
            "route /run/netns/pod-a net1 0.0.0.0/0 via 10.56.0.1",
            "route /run/netns/pod-a net1 10.99.0.0/16 via 10.56.0.254",
        ]
    );
    let pod = Ns::Path(POD.into());
    let l = rig.links.get(&pod, "net1").unwrap();
    assert!(l.up);
    assert!(rig.links.get(&Ns::Host, "ens1f0v1").is_none());
    assert_eq!(
        out,
        json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "net1", "mac": "0a:00:00:00:00:09", "mtu": 9000,
                "sandbox": POD, "pciID": KERNEL_VF}],
            "ips": [{"address": "10.56.0.7/24", "gateway": "10.56.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.99.0.0/16", "gw": "10.56.0.254"}],
            "dns": {"nameservers": ["10.56.0.53"]}})
    );
    assert_eq!(rig.ipam.commands(), vec!["ADD"]);
    let (plugin, ienv, istdin) = &rig.ipam.calls()[0];
    assert_eq!(
        (plugin.as_str(), ienv.ifname.as_str(), ienv.netns.as_str()),
        ("host-local", "net1", POD)
    );
    assert_eq!(istdin["deviceID"], KERNEL_VF);
    let rec = rig.store().load("c1", "net1").unwrap().unwrap();
    assert_eq!(rec.host_ifname.as_deref(), Some("ens1f0v1"));
    assert_eq!(
        (rec.orig_mac, rec.orig_mtu),
        (Some(mac("aa:00:00:00:00:01")), Some(9000))
    );
    assert!(!rec.dpdk);
    assert_eq!(
        rig.store().allocation(KERNEL_VF).unwrap().as_deref(),
        Some(POD)
    );

    // DEL: IPAM, then the PF in the documented order, then the netdev.
    let before = rig.pf.calls(PF).len();
    p.del(&env("DEL", "c1", "net1"), &c, &s).unwrap();
    assert_eq!(
        rig.pf.calls(PF)[before..],
        [
            "set ens1f0 vf 1 vlan 0 qos 0 proto 802.1q",
            "set ens1f0 vf 1 spoofchk on",
            "set ens1f0 vf 1 mac 00:00:00:00:00:00",
            "set ens1f0 vf 1 trust off",
            "set ens1f0 vf 1 rate min 0 max 0",
            "set ens1f0 vf 1 link_state auto",
        ]
    );
    assert_eq!(rig.pf.state(PF).unwrap().vfs[1], orig_vf());
    assert_eq!(rig.ipam.commands(), vec!["ADD", "DEL"]);
    let back = rig.links.get(&Ns::Host, "ens1f0v1").unwrap();
    assert_eq!(
        (back.mac, back.mtu, back.up),
        (Some(mac("aa:00:00:00:00:01")), 9000, false)
    );
    assert!(rig.links.names(&pod).is_empty());
    assert!(rig.files().is_empty(), "{:?}", rig.files());

    // DEL again: nothing of ours left; IPAM DEL is idempotent and runs again; the PF is untouched.
    let calls = rig.pf.calls(PF).len();
    p.del(&env("DEL", "c1", "net1"), &c, &s).unwrap();
    assert_eq!(rig.pf.calls(PF).len(), calls);
    assert_eq!(rig.ipam.commands(), vec!["ADD", "DEL", "DEL"]);
}

#[test]
fn add_without_optional_fields_changes_nothing_on_the_pf() {
    let rig = Rig::new();
    let s = stdin(json!({}));
    rig.plugin()
        .add(&env("ADD", "c1", "net1"), &conf(&s), &s)
        .unwrap();
    assert_eq!(rig.pf.calls(PF), vec!["get ens1f0 vf 1"]);
    rig.plugin()
        .del(&env("DEL", "c1", "net1"), &conf(&s), &s)
        .unwrap();
    assert_eq!(rig.pf.calls(PF), vec!["get ens1f0 vf 1"]);
    assert_eq!(
        rig.links.get(&Ns::Host, "ens1f0v1").unwrap().mac,
        Some(mac("aa:00:00:00:00:01"))
    );
}

#[test]
fn dpdk_vf_gets_pf_settings_only_and_del_knows_it_is_dpdk() {
    let rig = Rig::new();
    let p = rig.plugin();
    let s =
        stdin(json!({"deviceID": DPDK_VF, "vlan": 7, "mac": "0a:00:00:00:00:02", "trust": "on"}));
    let c = conf(&s);
    let out = p.add(&env("ADD", "c2", "net1"), &c, &s).unwrap();
    assert_eq!(
        rig.pf.calls(PF),
        vec![
            "get ens1f0 vf 2",
            "set ens1f0 vf 2 vlan 7 qos 0 proto 802.1q",
            "set ens1f0 vf 2 mac 0a:00:00:00:00:02",
            "get ens1f0 vf 2",
            "set ens1f0 vf 2 trust on",
            "get ens1f0 vf 2",
        ]
    );
    assert!(rig.links.calls().is_empty(), "{:?}", rig.links.calls());
    // Reported, not configured.
    assert_eq!(
        out["interfaces"],
        json!([{"name": "net1", "mac": "0a:00:00:00:00:02",
        "sandbox": POD, "pciID": DPDK_VF}])
    );
    assert_eq!(out["ips"][0]["address"], "10.56.0.7/24");
    assert!(rig.store().load("c2", "net1").unwrap().unwrap().dpdk);

    // DEL: the reference forgets DPDK mode and looks for a netdev in the pod; this one restores
    // the PF and succeeds at once.
    p.del(&env("DEL", "c2", "net1"), &c, &s).unwrap();
    assert!(rig.links.calls().is_empty());
    assert_eq!(rig.pf.state(PF).unwrap().vfs[2], orig_vf());
    assert!(rig.files().is_empty());
}

#[rstest]
#[case("0.1.0", json!({"cniVersion": "0.1.0", "ip4": {"ip": "10.56.0.7/24", "gateway": "10.56.0.1",
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.99.0.0/16", "gw": "10.56.0.254"}]},
    "dns": {"nameservers": ["10.56.0.53"]}}))]
#[case("0.2.0", json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.56.0.7/24", "gateway": "10.56.0.1",
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.99.0.0/16", "gw": "10.56.0.254"}]},
    "dns": {"nameservers": ["10.56.0.53"]}}))]
#[case("0.3.0", json!(null))]
#[case("0.3.1", json!(null))]
#[case("0.4.0", json!(null))]
#[case("1.0.0", json!(null))]
#[case("1.1.0", json!(null))]
fn every_spec_version_gets_its_result_shape(#[case] v: &str, #[case] legacy: Value) {
    let rig = Rig::new();
    let s = stdin(json!({"cniVersion": v}));
    let out = rig
        .plugin()
        .add(&env("ADD", "c1", "net1"), &conf(&s), &s)
        .unwrap();
    assert_eq!(out["cniVersion"], v);
    if !legacy.is_null() {
        assert_eq!(out, legacy);
        return;
    }
    let iface = &out["interfaces"][0];
    assert_eq!(
        (iface["name"].as_str(), iface["sandbox"].as_str()),
        (Some("net1"), Some(POD))
    );
    let pre_1 = v.starts_with("0.");
    // pciID and mtu are 1.x interface fields.
    assert_eq!(iface.get("pciID").is_some(), !pre_1, "{out}");
    assert_eq!(iface.get("mtu").is_some(), !pre_1, "{out}");
    let ip = &out["ips"][0];
    assert_eq!(ip["interface"], 0);
    assert_eq!(ip.get("version").map(|v| v == "4"), pre_1.then_some(true));
}

#[test]
fn a_device_that_is_not_a_vf_is_code_7_and_touches_nothing() {
    let rig = Rig::new();
    for (dev, why) in [
        ("0000:3b:00.0", "not an SR-IOV virtual function"),
        ("0000:99:00.0", "not found"),
    ] {
        let s = stdin(json!({"deviceID": dev, "vlan": 5}));
        let err = rig
            .plugin()
            .add(&env("ADD", "c1", "net1"), &conf(&s), &s)
            .unwrap_err();
        assert_eq!(err.code, 7, "{err:?}");
        assert!(
            err.msg.contains("invalid deviceID") && err.msg.contains(why),
            "{}",
            err.msg
        );
        assert!(
            err.msg.starts_with("pod blue/web: network sriov-a: VF"),
            "{}",
            err.msg
        );
    }
    // A VF with neither a netdev nor a user-space driver (a kernel VF already in a pod).
    let s = stdin(json!({"deviceID": "0000:3b:02.3"}));
    let err = rig
        .plugin()
        .add(&env("ADD", "c1", "net1"), &conf(&s), &s)
        .unwrap_err();
    assert!(
        err.msg.contains("no network interface in the host"),
        "{}",
        err.msg
    );
    assert!(rig.pf.calls(PF).is_empty());
    assert!(rig.links.calls().is_empty());
    assert!(rig.ipam.calls().is_empty());
    assert!(rig.files().is_empty());
}

#[test]
fn a_pf_refusal_mid_add_rolls_back_what_was_set_and_leaves_nothing() {
    let rig = Rig::new();
    rig.pf.fail(PF, "trust").unwrap();
    let s = all_fields();
    let err = rig
        .plugin()
        .add(&env("ADD", "c1", "net1"), &conf(&s), &s)
        .unwrap_err();
    assert_eq!(err.code, 5);
    assert!(err.msg.contains("set trust on"), "{}", err.msg);
    // Trust fails both ways; everything else is back.
    assert!(err.msg.contains("rollback incomplete"), "{}", err.msg);
    let st = rig.pf.state(PF).unwrap().vfs[1];
    assert_eq!(st, orig_vf());
    assert!(rig.links.calls().is_empty());
    assert!(rig.ipam.calls().is_empty());
    // The record stays for the runtime's DEL, which finishes once the PF accepts trust again.
    assert!(rig.store().load("c1", "net1").unwrap().is_some());
    std::fs::remove_file(rig._sim.path().join(format!("{PF}.fail"))).unwrap();
    rig.plugin()
        .del(&env("DEL", "c1", "net1"), &conf(&s), &s)
        .unwrap();
    assert!(rig.files().is_empty(), "{:?}", rig.files());
}

#[test]
fn an_ipam_failure_moves_the_vf_back_and_restores_the_pf() {
    let mut ipam = FakeIpam::returning(json!({}));
    ipam.fail = Some("ADD".into());
    let rig = Rig::with_ipam(ipam);
    let s = stdin(json!({"vlan": 9, "mac": "0a:00:00:00:00:09"}));
    let err = rig
        .plugin()
        .add(&env("ADD", "c1", "net1"), &conf(&s), &s)
        .unwrap_err();
    assert!(
        err.msg
            .contains("IPAM plugin host-local ADD failed: no addresses left"),
        "{}",
        err.msg
    );
    assert!(!err.msg.contains("rollback incomplete"), "{}", err.msg);
    // A failed ADD cleans up after itself (CNI spec): no IPAM DEL.
    assert_eq!(rig.ipam.commands(), vec!["ADD"]);
    let back = rig.links.get(&Ns::Host, "ens1f0v1").unwrap();
    assert_eq!((back.mac, back.mtu), (Some(mac("aa:00:00:00:00:01")), 9000));
    assert!(rig.links.names(&Ns::Path(POD.into())).is_empty());
    assert_eq!(rig.pf.state(PF).unwrap().vfs[1], orig_vf());
    assert!(rig.files().is_empty(), "{:?}", rig.files());
}

#[test]
fn an_ipam_result_without_ips_is_an_error_and_rolled_back() {
    let rig = Rig::with_ipam(FakeIpam::returning(json!({"cniVersion": "1.0.0"})));
    let s = stdin(json!({}));
    let err = rig
        .plugin()
        .add(&env("ADD", "c1", "net1"), &conf(&s), &s)
        .unwrap_err();
    assert!(
        err.msg.contains("IPAM plugin returned missing IP config"),
        "{}",
        err.msg
    );
    assert!(rig.links.get(&Ns::Host, "ens1f0v1").is_some());
    assert!(rig.files().is_empty());
}

#[test]
fn del_after_the_netns_is_gone_renames_the_returned_vf_back() {
    let rig = Rig::new();
    let s = stdin(json!({"mac": "0a:00:00:00:00:09"}));
    rig.plugin()
        .add(&env("ADD", "c1", "net1"), &conf(&s), &s)
        .unwrap();
    // The pod's netns is destroyed: the kernel returns a physical netdev to the host under the
    // name it had in the pod.
    let net1 = rig.links.get(&Ns::Path(POD.into()), "net1").unwrap();
    rig.links.remove_ns(POD);
    rig.links
        .add_link(&Ns::Host, "net1", net1.mac.unwrap(), net1.mtu);
    rig.sysfs.remove_netdev(KERNEL_VF, "ens1f0v1").unwrap();
    rig.sysfs.add_netdev(KERNEL_VF, "net1", 1).unwrap();
    rig.plugin()
        .del(&env("DEL", "c1", "net1"), &conf(&s), &s)
        .unwrap();
    let back = rig.links.get(&Ns::Host, "ens1f0v1").unwrap();
    assert_eq!(back.mac, Some(mac("aa:00:00:00:00:01")));
    assert!(rig.links.get(&Ns::Host, "net1").is_none());
    assert_eq!(rig.pf.state(PF).unwrap().vfs[1], orig_vf());
    assert!(rig.files().is_empty());
}

#[test]
fn del_after_the_netns_and_a_stand_in_link_are_gone_restores_the_pf_and_succeeds() {
    let rig = Rig::new();
    let s = stdin(json!({"vlan": 3}));
    rig.plugin()
        .add(&env("ADD", "c1", "net1"), &conf(&s), &s)
        .unwrap();
    rig.links.remove_ns(POD);
    rig.plugin()
        .del(&env("DEL", "c1", "net1"), &conf(&s), &s)
        .unwrap();
    assert_eq!(rig.pf.state(PF).unwrap().vfs[1], orig_vf());
    assert!(rig.files().is_empty());
}

#[test]
fn del_without_a_record_only_releases_ipam() {
    let rig = Rig::new();
    let s = stdin(json!({"vlan": 3}));
    rig.plugin()
        .del(&env("DEL", "never", "net1"), &conf(&s), &s)
        .unwrap();
    assert_eq!(rig.ipam.commands(), vec!["DEL"]);
    assert!(rig.pf.calls(PF).is_empty());
    assert!(rig.links.calls().is_empty());
}

#[test]
fn a_failing_del_keeps_the_record_so_the_retry_finishes() {
    let rig = Rig::new();
    let s = stdin(json!({"vlan": 3}));
    rig.plugin()
        .add(&env("ADD", "c1", "net1"), &conf(&s), &s)
        .unwrap();
    rig.links.fail("move_to");
    let err = rig
        .plugin()
        .del(&env("DEL", "c1", "net1"), &conf(&s), &s)
        .unwrap_err();
    assert!(
        err.msg.contains("DEL incomplete") && err.msg.contains("moving net1 back"),
        "{}",
        err.msg
    );
    // The PF was restored anyway.
    assert_eq!(rig.pf.state(PF).unwrap().vfs[1], orig_vf());
    assert!(rig.store().load("c1", "net1").unwrap().is_some());
}

#[test]
fn check_passes_after_add_and_names_each_difference() {
    let rig = Rig::new();
    let s = stdin(
        json!({"vlan": 100, "vlanQoS": 2, "mac": "0a:00:00:00:00:09", "spoofchk": "off",
        "trust": "on", "link_state": "disable", "max_tx_rate": 500}),
    );
    let c = conf(&s);
    let out = rig.plugin().add(&env("ADD", "c1", "net1"), &c, &s).unwrap();
    let mut with_prev: Value = serde_json::from_slice(&s).unwrap();
    with_prev["prevResult"] = out;
    let cc = conf(with_prev.to_string().as_bytes());
    rig.plugin()
        .check(&env("CHECK", "c1", "net1"), &cc)
        .unwrap();

    // Someone changes the VLAN and trust on the PF, and the MAC in the pod.
    rig.pf
        .set(
            PF,
            1,
            VfSetting::Vlan {
                vlan: 200,
                qos: 2,
                proto: VlanProto::Dot1Q,
            },
        )
        .unwrap();
    rig.pf.set(PF, 1, VfSetting::Trust(false)).unwrap();
    rig.links
        .set_mac(&Ns::Path(POD.into()), "net1", mac("0a:00:00:00:00:10"))
        .unwrap();
    let err = rig
        .plugin()
        .check(&env("CHECK", "c1", "net1"), &cc)
        .unwrap_err();
    assert_eq!(err.code, CHECK_MISMATCH);
    for part in [
        "vlan: configured 100, PF ens1f0 VF 1 has 200",
        "trust: configured on, PF ens1f0 VF 1 has off",
        "interface net1 has MAC 0a:00:00:00:00:10, configured 0a:00:00:00:00:09",
        "prevResult says 0a:00:00:00:00:09",
    ] {
        assert!(err.msg.contains(part), "{part:?} not in {}", err.msg);
    }
    assert!(!err.msg.contains("spoofchk"), "{}", err.msg);

    // The VF gone from the pod.
    rig.links.remove_ns(POD);
    let err = rig
        .plugin()
        .check(&env("CHECK", "c1", "net1"), &cc)
        .unwrap_err();
    assert!(
        err.msg.contains("interface net1 is not in netns"),
        "{}",
        err.msg
    );
}

#[test]
fn check_of_an_unknown_attachment_is_code_3() {
    let rig = Rig::new();
    let s = stdin(json!({}));
    let err = rig
        .plugin()
        .check(&env("CHECK", "nope", "net1"), &conf(&s))
        .unwrap_err();
    assert_eq!(err.code, 3);
}

#[test]
fn a_vf_held_by_a_live_pod_is_refused_and_a_stale_allocation_is_reclaimed() {
    let rig = Rig::new();
    let s = stdin(json!({"vlan": 1}));
    // A live owner: a real file standing for a netns that exists.
    let owner = tempfile::NamedTempFile::new().unwrap();
    rig.store()
        .allocate(KERNEL_VF, &owner.path().to_string_lossy())
        .unwrap();
    let err = rig
        .plugin()
        .add(&env("ADD", "c9", "net1"), &conf(&s), &s)
        .unwrap_err();
    assert_eq!(err.code, 11, "{err:?}");
    assert!(err.msg.contains("already allocated"), "{}", err.msg);
    assert!(rig.pf.calls(PF).is_empty());
    // Its owner gone: reclaimed.
    let gone = owner.path().to_string_lossy().into_owned();
    drop(owner);
    rig.store().allocate(KERNEL_VF, &gone).unwrap();
    rig.plugin()
        .add(&env("ADD", "c9", "net1"), &conf(&s), &s)
        .unwrap();
    assert_eq!(
        rig.store().allocation(KERNEL_VF).unwrap().as_deref(),
        Some(POD)
    );
}

#[test]
fn a_record_left_by_a_crashed_add_is_undone_before_the_next_add() {
    let rig = Rig::new();
    let s = stdin(json!({"vlan": 5}));
    rig.plugin()
        .add(&env("ADD", "c1", "net1"), &conf(&s), &s)
        .unwrap();
    // Simulate the crash: the allocation never got written.
    rig.store().release(KERNEL_VF).unwrap();
    rig.plugin()
        .add(&env("ADD", "c1", "net1"), &conf(&s), &s)
        .unwrap();
    let calls = rig.ipam.commands();
    assert_eq!(calls, vec!["ADD", "DEL", "ADD"]);
    assert!(rig.links.get(&Ns::Path(POD.into()), "net1").is_some());
    // The original state recorded the second time is the true original, not the half-done one.
    let rec = rig.store().load("c1", "net1").unwrap().unwrap();
    assert_eq!(rec.orig_vf, orig_vf());
    assert_eq!(rec.host_ifname.as_deref(), Some("ens1f0v1"));
}

#[test]
fn gc_tears_down_only_attachments_missing_from_the_valid_list() {
    let rig = Rig::new();
    let a = stdin(json!({"vlan": 10}));
    let b = stdin(json!({"deviceID": "0000:3b:02.0", "vlan": 20}));
    rig.plugin()
        .add(&env("ADD", "keep", "net1"), &conf(&a), &a)
        .unwrap();
    rig.plugin()
        .add(&env("ADD", "stale", "net2"), &conf(&b), &b)
        .unwrap();
    let gc = json!({"cniVersion": "1.1.0", "name": "sriov-a", "type": "sriov",
        "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "net1"}]});
    rig.plugin()
        .gc(&env("GC", "", ""), gc.to_string().as_bytes())
        .unwrap();
    assert!(rig.store().load("keep", "net1").unwrap().is_some());
    assert!(rig.store().load("stale", "net2").unwrap().is_none());
    assert_eq!(rig.pf.state(PF).unwrap().vfs[0], orig_vf());
    assert_eq!(rig.pf.state(PF).unwrap().vfs[1].vlan, 10);
    assert!(rig.links.get(&Ns::Host, "ens1f0v0").is_some());
    // GC's IPAM DEL is for the stale attachment, with the config it was added with.
    let (_, ienv, istdin) = rig.ipam.calls().last().unwrap().clone();
    assert_eq!(
        (
            ienv.command.as_str(),
            ienv.container_id.as_str(),
            ienv.ifname.as_str()
        ),
        ("DEL", "stale", "net2")
    );
    assert_eq!(istdin["vlan"], 20);
}

#[test]
fn status_needs_a_sysfs_with_pci_devices() {
    let rig = Rig::new();
    rig.plugin().status().unwrap();
    let mut p = rig.plugin();
    p.sysfs = plexus_sysfs::Sysfs::new(rig.sysfs.root().join("missing"));
    assert_eq!(p.status().unwrap_err().code, 50);
}

#[rstest]
fn dpdk_vf_every_spec_version(
    #[values("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")] v: &str,
) {
    let rig = Rig::new();
    let s = stdin(json!({"cniVersion": v, "deviceID": DPDK_VF, "vlan": 4}));
    let c = conf(&s);
    let out = rig.plugin().add(&env("ADD", "c", "net1"), &c, &s).unwrap();
    assert_eq!(out["cniVersion"], v);
    if v.starts_with("0.1") || v.starts_with("0.2") {
        assert_eq!(out["ip4"]["ip"], "10.56.0.7/24", "{out}");
    } else {
        assert_eq!(out["interfaces"][0]["sandbox"], POD, "{out}");
        assert_eq!(out["ips"][0]["address"], "10.56.0.7/24", "{out}");
    }
    assert!(rig.links.calls().is_empty());
    assert_eq!(rig.pf.state(PF).unwrap().vfs[2].vlan, 4);
    if c.version.supports_check() {
        rig.plugin().check(&env("CHECK", "c", "net1"), &c).unwrap();
    }
    rig.plugin().del(&env("DEL", "c", "net1"), &c, &s).unwrap();
    assert_eq!(rig.pf.state(PF).unwrap().vfs[2], orig_vf());
    assert!(rig.links.calls().is_empty());
    assert!(rig.files().is_empty());
}
