use super::*;
use rstest::rstest;
use serde_json::json;

fn conf(extra: Value) -> Value {
    let mut base = json!({"cniVersion": "1.0.0", "name": "sriov-a", "type": "sriov",
        "deviceID": "0000:3b:02.1"});
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn parse_v(v: &Value) -> Result<SriovConf, ConfigError> {
    parse(v.to_string().as_bytes(), None)
}

#[test]
fn every_field_parsed() {
    let c = parse_v(&conf(json!({
        "vlan": 100, "vlanQoS": 3, "vlanProto": "802.1AD", "mac": "0A:00:00:00:00:01",
        "spoofchk": "off", "trust": "on", "link_state": "enable",
        "min_tx_rate": 10, "max_tx_rate": 1000,
        "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"},
        "logLevel": "debug", "logFile": "/tmp/x.log", "pciBusID": "0000:3b:02.1",
        "capabilities": {"mac": true}, "dns": {"nameservers": ["1.1.1.1"]}
    })))
    .unwrap();
    assert_eq!(c.device_id.as_str(), "0000:3b:02.1");
    assert_eq!(
        (c.vlan, c.vlan_qos, c.vlan_proto),
        (Some(100), Some(3), Some(VlanProto::Dot1Ad))
    );
    assert_eq!(c.mac.unwrap().to_string(), "0a:00:00:00:00:01");
    assert_eq!((c.spoofchk, c.trust), (Some(false), Some(true)));
    assert_eq!(c.link_state, Some(VfLinkState::Enable));
    assert_eq!((c.min_tx_rate, c.max_tx_rate), (Some(10), Some(1000)));
    assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
    assert_eq!(
        (c.log_level.as_str(), c.log_file.as_deref()),
        ("debug", Some("/tmp/x.log"))
    );
    assert!(c.has_rate());
}

#[test]
fn minimal_config_sets_nothing_and_defaults_version() {
    let c = parse(
        br#"{"type":"sriov","deviceID":"3b:02.1","ipam":{"type":"static"}}"#,
        None,
    )
    .unwrap();
    assert_eq!(c.cni_version, "0.1.0");
    assert_eq!(c.device_id.as_str(), "0000:3b:02.1");
    assert_eq!(c.vlan, None);
    assert_eq!(c.vlan_qos, None);
    assert_eq!(c.mac, None);
    assert_eq!(c.spoofchk, None);
    assert_eq!(c.link_state, None);
    assert!(!c.has_rate());
    assert_eq!(c.log_level, "info");
}

#[test]
fn vlan_alone_defaults_qos_and_proto() {
    let c = parse_v(&conf(json!({"vlan": 0}))).unwrap();
    assert_eq!(
        (c.vlan, c.vlan_qos, c.vlan_proto),
        (Some(0), Some(0), Some(VlanProto::Dot1Q))
    );
}

#[test]
fn mac_precedence_runtime_config_then_cni_args_then_mac() {
    let v =
        conf(json!({"mac": "0a:00:00:00:00:01", "runtimeConfig": {"mac": "0A:00:00:00:00:03"}}));
    let c = parse(
        v.to_string().as_bytes(),
        Some("IgnoreUnknown=1;MAC=0a:00:00:00:00:02"),
    )
    .unwrap();
    assert_eq!(c.mac.unwrap().to_string(), "0a:00:00:00:00:03");
    let v = conf(json!({"mac": "0a:00:00:00:00:01"}));
    let c = parse(v.to_string().as_bytes(), Some("MAC=0A:00:00:00:00:02")).unwrap();
    assert_eq!(c.mac.unwrap().to_string(), "0a:00:00:00:00:02");
    let c = parse(v.to_string().as_bytes(), Some("K8S_POD_NAME=x")).unwrap();
    assert_eq!(c.mac.unwrap().to_string(), "0a:00:00:00:00:01");
}

#[rstest]
#[case(json!({"deviceID": null}), "deviceID")]
#[case(json!({"deviceID": ""}), "deviceID")]
#[case(json!({"deviceID": "../../etc"}), "deviceID")]
#[case(json!({"deviceID": 5}), "deviceID")]
#[case(json!({"vlan": 4095}), "vlan")]
#[case(json!({"vlan": -1}), "vlan")]
#[case(json!({"vlan": "100"}), "vlan")]
#[case(json!({"vlan": 1.5}), "vlan")]
#[case(json!({"vlanQoS": 1}), "vlanQoS")]
#[case(json!({"vlan": 0, "vlanQoS": 1}), "vlanQoS")]
#[case(json!({"vlan": 10, "vlanQoS": 8}), "vlanQoS")]
#[case(json!({"vlanProto": "802.1q"}), "vlanProto")]
#[case(json!({"vlan": 0, "vlanProto": "802.1ad"}), "vlanProto")]
#[case(json!({"vlan": 10, "vlanProto": "802.1x"}), "vlanProto")]
#[case(json!({"mac": "zz:00:00:00:00:01"}), "mac")]
#[case(json!({"mac": 1}), "mac")]
#[case(json!({"runtimeConfig": {"mac": "nope"}}), "runtimeConfig.mac")]
#[case(json!({"runtimeConfig": {"mac": 3}}), "runtimeConfig.mac")]
#[case(json!({"runtimeConfig": []}), "runtimeConfig")]
#[case(json!({"spoofchk": "maybe"}), "spoofchk")]
#[case(json!({"spoofchk": "ON"}), "spoofchk")]
#[case(json!({"spoofchk": true}), "spoofchk")]
#[case(json!({"trust": "yes"}), "trust")]
#[case(json!({"link_state": "up"}), "link_state")]
#[case(json!({"min_tx_rate": -5}), "min_tx_rate")]
#[case(json!({"max_tx_rate": "fast"}), "max_tx_rate")]
#[case(json!({"min_tx_rate": 100, "max_tx_rate": 10}), "min_tx_rate")]
#[case(json!({"ipam": {"subnet": "10.0.0.0/8"}}), "ipam.type")]
#[case(json!({"ipam": {"type": "../host-local"}}), "ipam.type")]
#[case(json!({"ipam": "host-local"}), "ipam")]
#[case(json!({"name": 7}), "name")]
fn invalid_values_are_code_7_naming_the_field(#[case] extra: Value, #[case] field: &str) {
    let err = parse_v(&conf(extra)).unwrap_err();
    assert_eq!(err.code(), 7, "{err}");
    match &err {
        ConfigError::Field { field: f, .. } => assert_eq!(f, field, "{err}"),
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().starts_with(&format!("invalid {field}:")),
        "{err}"
    );
}

#[test]
fn bad_cni_args_mac_names_it() {
    let err = parse(conf(json!({})).to_string().as_bytes(), Some("MAC=xx")).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Field { field, .. } if field == "CNI_ARGS MAC"),
        "{err}"
    );
}

#[rstest]
fn every_spec_version_accepted(
    #[values("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")] v: &str,
) {
    let c = parse_v(&conf(json!({"cniVersion": v, "ipam": {"type": "static"}}))).unwrap();
    assert_eq!(c.cni_version, v);
    assert_eq!(c.version.to_string(), v);
}

#[rstest]
#[case(json!({"cniVersion": "2.0.0"}))]
#[case(json!({"cniVersion": "1.0"}))]
#[case(json!({"cniVersion": 1}))]
fn unknown_versions_are_code_1(#[case] extra: Value) {
    assert_eq!(parse_v(&conf(extra)).unwrap_err().code(), 1);
}

#[test]
fn garbage_is_code_6() {
    assert_eq!(parse(b"{", None).unwrap_err().code(), 6);
    assert_eq!(parse(b"[]", None).unwrap_err().code(), 6);
}

#[test]
fn unknown_log_level_means_info() {
    let c = parse_v(&conf(json!({"logLevel": "loud"}))).unwrap();
    assert_eq!(c.log_level, "info");
}

#[rstest]
fn legacy_versions_without_ipam_are_refused_up_front(#[values("0.1.0", "0.2.0")] v: &str) {
    let err = parse_v(&conf(json!({"cniVersion": v}))).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Field { field, .. } if field == "ipam"),
        "{err}"
    );
    assert!(parse_v(&conf(json!({"cniVersion": "0.3.0"}))).is_ok());
}
