//! Tests for network-status building and serialization.

use super::*;
use plexus_cni::IpConfig;
use serde_json::json;

fn iface(name: &str, mac: Option<&str>, mtu: Option<u32>, sandbox: Option<&str>) -> Interface {
    Interface {
        name: name.into(),
        mac: mac.map(Into::into),
        mtu,
        sandbox: sandbox.map(Into::into),
        ..Interface::default()
    }
}

fn ip(address: &str, interface: Option<i64>) -> IpConfig {
    IpConfig {
        address: address.into(),
        gateway: None,
        interface,
    }
}

const NETNS: &str = "/var/run/netns/cni-1234";

/// A 1.0.0-style bridge result: host veth first, then two sandbox interfaces.
fn multi_interface_result() -> CniResult {
    CniResult {
        interfaces: vec![
            iface("veth1a2b", Some("aa:aa:aa:aa:aa:01"), None, None),
            iface("net1", Some("02:00:00:00:00:01"), Some(9000), Some(NETNS)),
            iface("net1-b", Some("02:00:00:00:00:02"), None, Some(NETNS)),
        ],
        ips: vec![
            ip("10.1.0.5/16", Some(1)),
            ip("2001:DB8::5/64", Some(1)),
            ip("10.2.0.5/24", Some(2)),
            ip("192.0.2.9/24", Some(0)),
            ip("198.51.100.1/24", None),
        ],
        dns: Dns {
            nameservers: vec!["10.1.0.1".into()],
            search: vec!["svc.local".into()],
            ..Dns::default()
        },
        ..CniResult::default()
    }
}

#[test]
fn one_entry_per_sandbox_interface() {
    let statuses = statuses_from_result(
        "blue/br-net",
        "net1",
        &multi_interface_result(),
        false,
        &[],
        None,
    );
    let dns = Dns {
        nameservers: vec!["10.1.0.1".into()],
        search: vec!["svc.local".into()],
        ..Dns::default()
    };
    assert_eq!(
        statuses,
        vec![
            NetworkStatus {
                name: "blue/br-net".into(),
                interface: Some("net1".into()),
                ips: vec!["10.1.0.5".into(), "2001:db8::5".into()],
                mac: Some("02:00:00:00:00:01".into()),
                mtu: Some(9000),
                dns: dns.clone(),
                ..NetworkStatus::default()
            },
            NetworkStatus {
                name: "blue/br-net".into(),
                interface: Some("net1-b".into()),
                ips: vec!["10.2.0.5".into()],
                mac: Some("02:00:00:00:00:02".into()),
                dns,
                ..NetworkStatus::default()
            },
        ]
    );
}

#[test]
fn multi_interface_annotation_text() {
    let gateways = vec!["10.1.0.1".to_string()];
    let device_info =
        json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.1"}});
    let statuses = statuses_from_result(
        "blue/br-net",
        "net1",
        &multi_interface_result(),
        true,
        &gateways,
        Some(&device_info),
    );
    let expected = r#"[{
    "name": "blue/br-net",
    "interface": "net1",
    "ips": [
        "10.1.0.5",
        "2001:db8::5"
    ],
    "mac": "02:00:00:00:00:01",
    "mtu": 9000,
    "default": true,
    "dns": {
        "nameservers": [
            "10.1.0.1"
        ],
        "search": [
            "svc.local"
        ]
    },
    "device-info": {
        "type": "pci",
        "version": "1.1.0",
        "pci": {
            "pci-address": "0000:03:00.1"
        }
    },
    "gateway": [
        "10.1.0.1"
    ]
},{
    "name": "blue/br-net",
    "interface": "net1-b",
    "ips": [
        "10.2.0.5"
    ],
    "mac": "02:00:00:00:00:02",
    "default": true,
    "dns": {
        "nameservers": [
            "10.1.0.1"
        ],
        "search": [
            "svc.local"
        ]
    },
    "device-info": {
        "type": "pci",
        "version": "1.1.0",
        "pci": {
            "pci-address": "0000:03:00.1"
        }
    },
    "gateway": [
        "10.1.0.1"
    ]
}]"#;
    let text = status_annotation_value(&statuses);
    assert_eq!(text, expected);
    let back: Vec<NetworkStatus> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, statuses);
}

/// A 0.3.1 macvlan result: one sandbox interface, no mtu, ips carry interface indexes.
#[test]
fn result_0_3_1_shape() {
    let result = CniResult {
        interfaces: vec![iface("net1", Some("0a:58:0a:80:00:07"), None, Some(NETNS))],
        ips: vec![IpConfig {
            address: "10.128.0.7/23".into(),
            gateway: Some("10.128.0.1".into()),
            interface: Some(0),
        }],
        ..CniResult::default()
    };
    let statuses = statuses_from_result("default/macvlan", "net1", &result, false, &[], None);
    assert_eq!(
        status_annotation_value(&statuses),
        r#"[{
    "name": "default/macvlan",
    "interface": "net1",
    "ips": [
        "10.128.0.7"
    ],
    "mac": "0a:58:0a:80:00:07",
    "dns": {}
}]"#
    );
}

#[test]
fn no_sandbox_interface_uses_ifname_and_unbound_ips() {
    let result = CniResult {
        interfaces: vec![iface("host0", None, None, Some(""))],
        ips: vec![
            ip("10.0.0.2/24", None),
            ip("10.0.0.3/24", Some(-1)),
            ip("10.0.0.4/24", Some(0)),
        ],
        ..CniResult::default()
    };
    let statuses = statuses_from_result(
        "ns/ipam-only",
        "net3",
        &result,
        false,
        &["10.0.0.1".into()],
        None,
    );
    assert_eq!(
        statuses,
        vec![NetworkStatus {
            name: "ns/ipam-only".into(),
            interface: Some("net3".into()),
            ips: vec!["10.0.0.2".into(), "10.0.0.3".into()],
            gateway: vec!["10.0.0.1".into()],
            ..NetworkStatus::default()
        }]
    );
}

#[test]
fn empty_result_gives_minimal_entry() {
    let statuses = statuses_from_result(
        "cluster-net",
        "eth0",
        &CniResult::default(),
        true,
        &[],
        None,
    );
    assert_eq!(
        serde_json::to_value(&statuses).unwrap(),
        json!([{"name": "cluster-net", "interface": "eth0", "default": true, "dns": {}}])
    );
}

#[test]
fn empty_optional_fields_are_omitted_but_dns_is_always_written() {
    let status = NetworkStatus {
        name: "a/b".into(),
        ..NetworkStatus::default()
    };
    // Multus (the NAD client) writes `"dns": {}` on every entry: Go never omits a struct field.
    assert_eq!(
        serde_json::to_string(&status).unwrap(),
        r#"{"name":"a/b","dns":{}}"#
    );
    let back: NetworkStatus = serde_json::from_str(r#"{"name":"a/b","dns":null}"#).unwrap();
    assert_eq!(back.dns, Dns::default());
}

#[test]
fn reads_what_multus_writes() {
    let text = r#"[{
    "name": "cbr0",
    "interface": "eth0",
    "ips": ["10.244.1.5"],
    "mac": "6e:0b:2d:cc:44:1a",
    "default": true,
    "dns": {}
},{
    "name": "default/sriov",
    "interface": "net1",
    "ips": ["192.168.1.10"],
    "mac": "3e:27:a8:46:c3:7f",
    "mtu": 1500,
    "dns": {"nameservers": ["1.1.1.1"], "options": ["ndots:2"]},
    "device-info": {"type": "pci", "version": "1.0.0", "pci": {"pci-address": "0000:18:02.5"}},
    "gateway": ["192.168.1.1"]
}]"#;
    let statuses: Vec<NetworkStatus> = serde_json::from_str(text).unwrap();
    assert_eq!(statuses.len(), 2);
    assert!(statuses[0].default);
    assert_eq!(statuses[0].dns, Dns::default());
    assert!(!statuses[1].default);
    assert_eq!(statuses[1].mtu, Some(1500));
    assert_eq!(statuses[1].dns.options, ["ndots:2"]);
    assert_eq!(statuses[1].gateway, ["192.168.1.1"]);
    assert_eq!(
        statuses[1].device_info.as_ref().unwrap()["pci"]["pci-address"],
        "0000:18:02.5"
    );
}

#[test]
fn reads_the_spec_default_route_key() {
    let status: NetworkStatus =
        serde_json::from_str(r#"{"name":"a/b","default-route":["10.0.0.1"],"org.example.x":1}"#)
            .unwrap();
    assert_eq!(status.gateway, ["10.0.0.1"]);
}

#[test]
fn bare_ips_match_go_formatting() {
    assert_eq!(bare_ip("10.1.2.3/8"), "10.1.2.3");
    assert_eq!(bare_ip("2001:DB8:0:0::1/64"), "2001:db8::1");
    assert_eq!(bare_ip("::ffff:10.0.0.1/120"), "10.0.0.1");
    assert_eq!(bare_ip("fe80::1"), "fe80::1");
    assert_eq!(bare_ip("not-an-ip/24"), "not-an-ip");
}

#[test]
fn empty_status_list() {
    assert_eq!(status_annotation_value(&[]), "[]");
}
