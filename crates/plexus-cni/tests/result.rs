//! Result parsing and libcni's version conversions (spec/cni-and-npwg.md §1.4).

use plexus_cni::result::convert;
use plexus_cni::{CniResult, CniVersion, Interface, IpConfig, ResultError, Route};
use proptest::prelude::*;
use rstest::rstest;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn v(s: &str) -> CniVersion {
    s.parse().unwrap()
}

fn with_version(mut value: Value, version: &str) -> Value {
    value["cniVersion"] = json!(version);
    value
}

/// A fixture already in the exact shape `version` writes, so parse → write must give it back.
fn native_fixture(version: &str) -> Value {
    match version {
        "0.1.0" | "0.2.0" => with_version(fixture("result-0.2.0.json"), version),
        "0.3.0" | "0.3.1" | "0.4.0" => with_version(fixture("result-0.4.0.json"), version),
        "1.0.0" => {
            let mut value = with_version(fixture("result-1.1.0.json"), version);
            value["routes"][0] = json!({"dst": "0.0.0.0/0", "gw": "10.1.0.1"});
            value
        }
        _ => fixture("result-1.1.0.json"),
    }
}

#[rstest]
fn native_round_trip(
    #[values("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")] version: &str,
) {
    let input = native_fixture(version);
    let parsed = CniResult::from_value(&input, CniVersion::V1_1_0).unwrap();
    assert_eq!(parsed.cni_version, Some(v(version)));
    assert_eq!(parsed.to_value(v(version)).unwrap(), input);
}

/// Every (from, to) pair: the output has `to`'s shape and converting it back to `from`'s family
/// loses nothing that `to` can represent.
#[rstest]
fn conversion_matrix_shapes(
    #[values("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")] from: &str,
    #[values("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")] to: &str,
) {
    let out = convert(&native_fixture(from), CniVersion::V0_1_0, v(to)).unwrap();
    let obj = out.as_object().unwrap();
    assert_eq!(out["cniVersion"], json!(to));
    assert_eq!(out["dns"]["nameservers"], json!(["10.1.0.1"]));
    let legacy = v(to) < CniVersion::V0_3_0;
    let source_has_interfaces = v(from) >= CniVersion::V0_3_0;
    assert_eq!(
        obj.contains_key("interfaces"),
        !legacy && source_has_interfaces,
        "{out}"
    );
    assert_eq!(obj.contains_key("ips"), !legacy, "{out}");
    assert_eq!(obj.contains_key("routes"), !legacy, "{out}");
    if legacy {
        assert_eq!(out["ip4"]["ip"], json!("10.1.0.5/16"));
        assert_eq!(out["ip6"]["ip"], json!("fd00::5/64"));
        return;
    }
    assert!(!obj.contains_key("ip4") && !obj.contains_key("ip6"));
    let with_family = v(to) < CniVersion::V1_0_0;
    for ip in out["ips"].as_array().unwrap() {
        assert_eq!(ip.get("version").is_some(), with_family, "{ip}");
    }
    // Converting back into the source's version is stable once the fields `to` lacks are gone.
    let back = convert(&out, CniVersion::V0_1_0, v(from)).unwrap();
    let again = convert(&back, CniVersion::V0_1_0, v(to)).unwrap();
    assert_eq!(again, out);
}

#[rstest]
#[case("0.1.0", "0.2.0")]
#[case("0.2.0", "0.1.0")]
fn legacy_versions_copy(#[case] from: &str, #[case] to: &str) {
    let input = native_fixture(from);
    assert_eq!(
        convert(&input, CniVersion::V0_1_0, v(to)).unwrap(),
        with_version(input, to)
    );
}

#[rstest]
fn legacy_to_rich_moves_ips_and_appends_routes(
    #[values("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")] to: &str,
) {
    let out = convert(&native_fixture("0.2.0"), CniVersion::V0_1_0, v(to)).unwrap();
    let family = |f: &str| {
        if v(to) < CniVersion::V1_0_0 {
            json!({"version": f})
        } else {
            json!({})
        }
    };
    let mut ip4 = family("4");
    ip4.as_object_mut().unwrap().extend(
        json!({"address": "10.1.0.5/16", "gateway": "10.1.0.1"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let mut ip6 = family("6");
    ip6.as_object_mut().unwrap().extend(
        json!({"address": "fd00::5/64", "gateway": "fd00::1"})
            .as_object()
            .unwrap()
            .clone(),
    );
    assert_eq!(
        out,
        json!({
            "cniVersion": to,
            "ips": [ip4, ip6],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
                {"dst": "192.168.0.0/24"},
                {"dst": "::/0", "gw": "fd00::1"}
            ],
            "dns": {"nameservers": ["10.1.0.1"], "domain": "example.com", "search": ["svc.example.com"]}
        })
    );
}

#[rstest]
fn rich_04x_copies_between_themselves(
    #[values("0.3.0", "0.3.1", "0.4.0")] from: &str,
    #[values("0.3.0", "0.3.1", "0.4.0")] to: &str,
) {
    let input = native_fixture(from);
    assert_eq!(
        convert(&input, CniVersion::V0_1_0, v(to)).unwrap(),
        with_version(input, to)
    );
}

#[rstest]
fn v04x_to_1x_drops_ip_version(
    #[values("0.3.0", "0.3.1", "0.4.0")] from: &str,
    #[values("1.0.0", "1.1.0")] to: &str,
) {
    let mut expected = with_version(native_fixture(from), to);
    for ip in expected["ips"].as_array_mut().unwrap() {
        ip.as_object_mut().unwrap().remove("version");
    }
    assert_eq!(
        convert(&native_fixture(from), CniVersion::V0_1_0, v(to)).unwrap(),
        expected
    );
}

#[rstest]
fn v1x_to_04x_derives_version_and_drops_new_fields(
    #[values("1.0.0", "1.1.0")] from: &str,
    #[values("0.3.0", "0.3.1", "0.4.0")] to: &str,
) {
    let out = convert(&native_fixture(from), CniVersion::V0_1_0, v(to)).unwrap();
    assert_eq!(
        out,
        json!({
            "cniVersion": to,
            "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:01", "sandbox": "/var/run/netns/x"}],
            "ips": [
                {"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 0},
                {"version": "6", "address": "fd00::5/64", "interface": 0}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "fd00:1::/64"}],
            "dns": {"nameservers": ["10.1.0.1"], "domain": "example.com", "search": ["svc.example.com"], "options": ["ndots:5"]}
        })
    );
}

#[test]
fn v110_to_v100_keeps_interface_fields_but_not_route_attributes() {
    let out = convert(
        &native_fixture("1.1.0"),
        CniVersion::V0_1_0,
        CniVersion::V1_0_0,
    )
    .unwrap();
    assert_eq!(out["interfaces"][0]["mtu"], json!(1500));
    assert_eq!(out["interfaces"][0]["socketPath"], json!("/run/vhost.sock"));
    assert_eq!(out["interfaces"][0]["pciID"], json!("0000:04:00.5"));
    assert_eq!(
        out["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.1.0.1"})
    );
}

#[rstest]
#[case("1.0.0", "1.1.0")]
#[case("1.1.0", "1.0.0")]
fn v1x_between_themselves_changes_only_the_version(#[case] from: &str, #[case] to: &str) {
    // Route attributes are absent from the 1.0.0 fixture, so only the version may differ.
    let input = native_fixture("1.0.0");
    let input = with_version(input, from);
    assert_eq!(
        convert(&input, CniVersion::V0_1_0, v(to)).unwrap(),
        with_version(input, to)
    );
}

#[test]
fn route_attributes_written_only_for_1_1_0() {
    let input = native_fixture("1.1.0");
    assert_eq!(
        convert(&input, CniVersion::V0_1_0, CniVersion::V1_1_0).unwrap()["routes"],
        input["routes"]
    );
    for to in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let out = convert(&input, CniVersion::V0_1_0, v(to)).unwrap();
        assert_eq!(
            out["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "10.1.0.1"}),
            "{to}"
        );
    }
}

fn multi_ip_result(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
        "ips": [
            {"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0},
            {"address": "10.0.1.2/24", "interface": 0},
            {"address": "fd00::2/64", "interface": 0},
            {"address": "fd01::2/64", "interface": 0}
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "fd02::/64", "gw": "fd00::1"}]
    })
}

#[rstest]
fn rich_to_legacy_keeps_first_of_each_family(
    #[values("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")] from: &str,
    #[values("0.1.0", "0.2.0")] to: &str,
) {
    let out = convert(&multi_ip_result(from), CniVersion::V0_1_0, v(to)).unwrap();
    assert_eq!(
        out,
        json!({
            "cniVersion": to,
            "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]},
            "ip6": {"ip": "fd00::2/64", "routes": [{"dst": "fd02::/64", "gw": "fd00::1"}]}
        })
    );
}

#[rstest]
fn rich_to_legacy_drops_routes_of_a_family_without_ip(
    #[values("0.3.0", "0.4.0", "1.0.0", "1.1.0")] from: &str,
    #[values("0.1.0", "0.2.0")] to: &str,
) {
    let input = json!({
        "cniVersion": from,
        "ips": [{"address": "fd00::2/64"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "::/0", "gw": "fd00::1"}]
    });
    let out = convert(&input, CniVersion::V0_1_0, v(to)).unwrap();
    assert_eq!(
        out,
        json!({"cniVersion": to, "ip6": {"ip": "fd00::2/64", "routes": [{"dst": "::/0", "gw": "fd00::1"}]}})
    );
}

#[rstest]
fn rich_to_legacy_without_ip_is_an_error(
    #[values("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")] from: &str,
    #[values("0.1.0", "0.2.0")] to: &str,
) {
    let input = json!({"cniVersion": from, "interfaces": [{"name": "eth0"}], "routes": [{"dst": "0.0.0.0/0"}]});
    assert_eq!(
        convert(&input, CniVersion::V0_1_0, v(to)),
        Err(ResultError::NoIpForLegacy(to.to_owned()))
    );
}

#[rstest]
fn empty_parts_are_omitted(#[values("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")] to: &str) {
    let input = json!({"cniVersion": "1.1.0", "interfaces": [], "ips": [], "routes": [], "dns": {"nameservers": [], "domain": "", "search": [], "options": []}});
    assert_eq!(
        convert(&input, CniVersion::V0_1_0, v(to)).unwrap(),
        json!({"cniVersion": to})
    );
}

#[test]
fn ip_family_follows_the_address_not_the_declared_version() {
    let input = json!({"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "10.0.0.2/24"}, {"address": "::ffff:10.0.0.3/120"}]});
    let out = convert(&input, CniVersion::V0_1_0, CniVersion::V0_3_1).unwrap();
    assert_eq!(
        out["ips"],
        json!([{"version": "4", "address": "10.0.0.2/24"}, {"version": "4", "address": "::ffff:10.0.0.3/120"}])
    );
}

#[test]
fn ipam_result_has_no_interfaces_or_indexes() {
    let input =
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]});
    let parsed = CniResult::from_value(&input, CniVersion::V1_0_0).unwrap();
    assert_eq!(
        parsed.ips,
        vec![IpConfig {
            address: "10.0.0.2/24".into(),
            gateway: Some("10.0.0.1".into()),
            interface: None
        }]
    );
    assert_eq!(parsed.to_value(CniVersion::V1_0_0).unwrap(), input);
}

#[test]
fn missing_version_uses_the_default() {
    let input = json!({"ip4": {"ip": "10.0.0.2/24"}});
    let parsed = CniResult::from_value(&input, CniVersion::V0_2_0).unwrap();
    assert_eq!(parsed.cni_version, Some(CniVersion::V0_2_0));
    assert_eq!(parsed.ips[0].address, "10.0.0.2/24");
    let rich = json!({"ips": [{"address": "10.0.0.2/24"}]});
    assert_eq!(
        CniResult::from_value(&rich, CniVersion::V1_0_0)
            .unwrap()
            .cni_version,
        Some(CniVersion::V1_0_0)
    );
}

#[test]
fn unknown_keys_and_nulls_are_tolerated() {
    let input = json!({
        "cniVersion": "1.0.0", "vendor": {"x": 1},
        "interfaces": [{"name": "eth0", "mac": null, "extra": true}],
        "ips": null, "routes": [{"dst": "0.0.0.0/0", "gw": null}],
        "dns": {"nameservers": null, "domain": ""}
    });
    let parsed = CniResult::from_value(&input, CniVersion::V1_0_0).unwrap();
    assert_eq!(
        parsed.interfaces,
        vec![Interface {
            name: "eth0".into(),
            ..Interface::default()
        }]
    );
    assert_eq!(
        parsed.routes,
        vec![Route {
            dst: "0.0.0.0/0".into(),
            ..Route::default()
        }]
    );
    assert!(parsed.dns.is_empty());
    assert_eq!(
        parsed.to_value(CniVersion::V1_0_0).unwrap(),
        json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "routes": [{"dst": "0.0.0.0/0"}]})
    );
}

#[rstest]
#[case(json!({"cniVersion": "0.5.0"}), ResultError::UnsupportedVersion("0.5.0".into()))]
#[case(json!({"cniVersion": "one"}), ResultError::UnsupportedVersion("one".into()))]
fn unsupported_versions_are_rejected(#[case] input: Value, #[case] expected: ResultError) {
    assert_eq!(
        CniResult::from_value(&input, CniVersion::V1_0_0),
        Err(expected)
    );
}

#[rstest]
#[case::not_an_object(json!([1]))]
#[case::version_not_a_string(json!({"cniVersion": 1}))]
#[case::legacy_ip_without_ip(json!({"cniVersion": "0.2.0", "ip4": {"gateway": "10.0.0.1"}}))]
#[case::ips_not_a_list(json!({"cniVersion": "1.0.0", "ips": {"address": "10.0.0.2/24"}}))]
#[case::ip_without_address(json!({"cniVersion": "0.4.0", "ips": [{"version": "4"}]}))]
fn malformed_results_are_decode_errors(#[case] input: Value) {
    assert!(matches!(
        CniResult::from_value(&input, CniVersion::V1_0_0),
        Err(ResultError::Decode { .. })
    ));
}

#[test]
fn from_slice_parses_bytes_and_reports_bad_json() {
    let bytes = serde_json::to_vec(&native_fixture("0.4.0")).unwrap();
    let parsed = CniResult::from_slice(&bytes, CniVersion::V1_0_0).unwrap();
    assert_eq!(parsed.interfaces.len(), 2);
    assert!(matches!(
        CniResult::from_slice(b"{", CniVersion::V1_0_0),
        Err(ResultError::Decode { .. })
    ));
}

#[test]
fn to_value_rejects_unsupported_target() {
    let result = CniResult::from_value(&native_fixture("1.1.0"), CniVersion::V1_1_0).unwrap();
    assert_eq!(
        result.to_value(CniVersion::new(0, 5, 0)),
        Err(ResultError::UnsupportedVersion("0.5.0".into()))
    );
}

#[rstest]
#[case(json!([]), None)]
#[case(json!([{"name": "cni0"}, {"name": "veth", "sandbox": ""}, {"name": "eth0", "sandbox": "/run/netns/a"}]), Some(2))]
#[case(json!([{"name": "eth0", "sandbox": "/run/netns/a"}, {"name": "net1", "sandbox": "/run/netns/a"}]), Some(0))]
fn first_sandbox_interface(#[case] interfaces: Value, #[case] expected: Option<usize>) {
    let input = json!({"cniVersion": "1.0.0", "interfaces": interfaces});
    assert_eq!(
        CniResult::from_value(&input, CniVersion::V1_0_0)
            .unwrap()
            .first_sandbox_interface(),
        expected
    );
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f:./]{0,24}",
        any::<String>(),
        (any::<[u8; 4]>(), 0u8..40)
            .prop_map(|(a, p)| format!("{}/{p}", std::net::Ipv4Addr::from(a))),
        (any::<[u16; 8]>(), 0u8..130)
            .prop_map(|(a, p)| format!("{}/{p}", std::net::Ipv6Addr::from(a))),
    ]
}

fn arb_result() -> impl Strategy<Value = CniResult> {
    let iface = (
        arb_text(),
        proptest::option::of(arb_text()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(arb_text()),
    )
        .prop_map(|(name, mac, mtu, sandbox)| Interface {
            name,
            mac,
            mtu,
            sandbox,
            ..Interface::default()
        });
    let ip = (
        arb_text(),
        proptest::option::of(arb_text()),
        proptest::option::of(-2i64..4),
    )
        .prop_map(|(address, gateway, interface)| IpConfig {
            address,
            gateway,
            interface,
        });
    let route = (
        arb_text(),
        proptest::option::of(arb_text()),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(dst, gw, mtu)| Route {
            dst,
            gw,
            mtu,
            ..Route::default()
        });
    (
        proptest::collection::vec(iface, 0..3),
        proptest::collection::vec(ip, 0..4),
        proptest::collection::vec(route, 0..4),
        proptest::collection::vec(arb_text(), 0..2),
    )
        .prop_map(|(interfaces, ips, routes, nameservers)| CniResult {
            cni_version: None,
            interfaces,
            ips,
            routes,
            dns: plexus_cni::Dns {
                nameservers,
                ..Default::default()
            },
        })
}

proptest! {
    #[test]
    fn to_value_never_panics_and_reparses(result in arb_result(), major in 0u16..3, minor in 0u16..5, patch in 0u16..3) {
        let version = CniVersion::new(major, minor, patch);
        match result.to_value(version) {
            Ok(out) => {
                prop_assert!(version.is_supported());
                prop_assert_eq!(&out["cniVersion"], &json!(version.to_string()));
                let reparsed = CniResult::from_value(&out, CniVersion::V0_1_0).unwrap();
                prop_assert_eq!(reparsed.to_value(version).unwrap(), out);
            }
            Err(ResultError::UnsupportedVersion(_)) => prop_assert!(!version.is_supported()),
            Err(ResultError::NoIpForLegacy(_)) => prop_assert!(version < CniVersion::V0_3_0 && result.ips.is_empty()),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn rich_versions_keep_every_ip(result in arb_result(), idx in 2usize..7) {
        let version: CniVersion = plexus_cni::SUPPORTED_VERSIONS[idx].parse().unwrap();
        let out = result.to_value(version).unwrap();
        let reparsed = CniResult::from_value(&out, CniVersion::V0_1_0).unwrap();
        prop_assert_eq!(reparsed.ips, result.ips);
        prop_assert_eq!(reparsed.interfaces.len(), result.interfaces.len());
        prop_assert_eq!(reparsed.routes.len(), result.routes.len());
    }
}
