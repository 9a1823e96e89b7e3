//! Tests for the selection annotation parser.

use super::*;
use proptest::prelude::*;
use rstest::rstest;
use serde_json::json;

fn parse(annotation: &str) -> Result<Vec<NetworkSelectionElement>, SelectionError> {
    parse_networks(annotation, "pod-ns")
}

fn parse_err(annotation: &str) -> String {
    parse(annotation)
        .expect_err("annotation should be rejected")
        .to_string()
}

/// The problem of the only failing element, for rule-by-rule tests.
fn problem(annotation: &str) -> ElementError {
    match parse(annotation) {
        Err(SelectionError::Element { problem, .. }) => problem,
        other => panic!("expected an element error, got {other:?}"),
    }
}

/// Wraps one JSON element with name `net` around `fields`.
fn one(fields: Value) -> String {
    let mut object = json!({"name": "net"});
    object
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    json!([object]).to_string()
}

// ----- general ---------------------------------------------------------------------------------

#[rstest]
#[case("")]
#[case("   ")]
#[case("\n\t")]
#[case("[]")]
#[case(" [ ] ")]
fn empty_annotations_select_nothing(#[case] annotation: &str) {
    assert_eq!(parse(annotation).unwrap(), vec![]);
}

// ----- short form ------------------------------------------------------------------------------

#[test]
fn short_form_resolves_namespaces_and_interfaces() {
    let parsed = parse("net-a, other/net-b@eth9 ,net-c@net1").unwrap();
    let expected = vec![
        NetworkSelectionElement::new("pod-ns", "net-a"),
        NetworkSelectionElement {
            interface: Some("eth9".into()),
            ..NetworkSelectionElement::new("other", "net-b")
        },
        NetworkSelectionElement {
            interface: Some("net1".into()),
            ..NetworkSelectionElement::new("pod-ns", "net-c")
        },
    ];
    assert_eq!(parsed, expected);
}

#[test]
fn short_form_allows_the_same_network_twice() {
    let parsed = parse("net-a,net-a").unwrap();
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0], parsed[1]);
}

#[test]
fn short_form_error_messages() {
    assert_eq!(
        parse_err("good,Foo_1"),
        r#"network selection element 2: invalid network name "Foo_1": must be a DNS-1123 label"#
    );
    assert_eq!(
        parse_err("Blue/net"),
        r#"network selection element 1 ("net"): invalid namespace "Blue": must be a DNS-1123 label"#
    );
    assert_eq!(
        parse_err("blue/net@this-name-is-too-long"),
        r#"network selection element 1 ("blue/net"): invalid interface name "this-name-is-too-long": must be at most 15 bytes"#
    );
    assert_eq!(
        parse_err("a/b/c"),
        r#"network selection element 1: "a/b/c" is not of the form [namespace/]name[@interface]: more than one '/'"#
    );
    assert_eq!(
        parse_err("a,,b"),
        "network selection element 2: empty element (stray ',' in the annotation?)"
    );
}

#[rstest]
#[case::trailing_comma("net-a,", ElementError::Empty)]
#[case::two_ats("net@a@b", ElementError::ShortForm { value: "net@a@b".into(), reason: "more than one '@'" })]
#[case::empty_ifname("net@", ElementError::InvalidInterface { value: "".into(), reason: "must not be empty" })]
#[case::dot_ifname("net@..", ElementError::InvalidInterface { value: "..".into(), reason: "must not be \".\" or \"..\"" })]
#[case::colon_ifname("net@eth0:1", ElementError::InvalidInterface { value: "eth0:1".into(), reason: "must not contain '/', ':' or whitespace" })]
#[case::space_ifname("net@a b", ElementError::InvalidInterface { value: "a b".into(), reason: "must not contain '/', ':' or whitespace" })]
#[case::empty_namespace("/net", ElementError::InvalidNamespace { value: "".into() })]
#[case::empty_name("ns/", ElementError::InvalidName { value: "".into() })]
#[case::dotted_name("my.net", ElementError::InvalidName { value: "my.net".into() })]
#[case::leading_dash("-net", ElementError::InvalidName { value: "-net".into() })]
#[case::trailing_dash("net-", ElementError::InvalidName { value: "net-".into() })]
#[case::too_long(&"a".repeat(64), ElementError::InvalidName { value: "a".repeat(64) })]
fn short_form_rejects(#[case] annotation: &str, #[case] expected: ElementError) {
    assert_eq!(problem(annotation), expected);
}

#[test]
fn dns1123_label_limits() {
    assert!(is_dns1123_label(&"a".repeat(63)));
    assert!(is_dns1123_label("0"));
    assert!(is_dns1123_label("a-0-b"));
    assert!(!is_dns1123_label(""));
    assert!(!is_dns1123_label("a_b"));
    assert!(!is_dns1123_label("é"));
}

#[test]
fn ifname_of_exactly_15_bytes_is_fine() {
    let parsed = parse("net@abcdefghijklmno").unwrap();
    assert_eq!(parsed[0].interface.as_deref(), Some("abcdefghijklmno"));
}

// ----- JSON form: structure ----------------------------------------------------------------------

#[test]
fn json_form_full_element() {
    let annotation = json!([{
        "name": "sriov-a",
        "namespace": "blue",
        "interface": "net7",
        "ips": ["10.1.1.5/24", "2001:db8::5"],
        "mac": "02:00:00:aa:bb:cc",
        "infiniband-guid": "c2:11:22:33:44:55:66:77",
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "udp", "hostIP": "192.0.2.1"},
                          {"hostPort": 9090, "containerPort": 90}],
        "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000, "egressRate": 3000},
        "cni-args": {"foo": "bar", "n": 1},
        "default-route": ["10.1.1.1"],
        "deviceID": "0000:03:00.1",
        "org.example.flavour": {"x": true}
    }]);
    let parsed = parse(&annotation.to_string()).unwrap();
    let expected = NetworkSelectionElement {
        name: "sriov-a".into(),
        namespace: "blue".into(),
        interface: Some("net7".into()),
        ips: vec!["10.1.1.5/24".into(), "2001:db8::5".into()],
        mac: Some("02:00:00:aa:bb:cc".into()),
        infiniband_guid: Some("c2:11:22:33:44:55:66:77".into()),
        port_mappings: vec![
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "UDP".into(),
                host_ip: Some("192.0.2.1".into()),
            },
            PortMapping {
                host_port: 9090,
                container_port: 90,
                protocol: "TCP".into(),
                host_ip: None,
            },
        ],
        bandwidth: Some(Bandwidth {
            ingress_rate: Some(1000),
            ingress_burst: Some(2000),
            egress_rate: Some(3000),
            egress_burst: None,
        }),
        cni_args: Some(json!({"foo": "bar", "n": 1}).as_object().unwrap().clone()),
        default_route: Some(vec!["10.1.1.1".into()]),
        device_id: Some("0000:03:00.1".into()),
        ipam_claim_reference: None,
        extensions: json!({"org.example.flavour": {"x": true}})
            .as_object()
            .unwrap()
            .clone(),
    };
    assert_eq!(parsed, vec![expected]);
}

#[test]
fn json_form_defaults_namespace_and_keeps_order() {
    let parsed =
        parse(r#"[{"name":"a"},{"name":"b","namespace":"other"},{"name":"c","namespace":""}]"#)
            .unwrap();
    let names: Vec<String> = parsed
        .iter()
        .map(NetworkSelectionElement::qualified_name)
        .collect();
    assert_eq!(names, ["pod-ns/a", "other/b", "pod-ns/c"]);
}

#[test]
fn json_form_serializes_back_with_spec_keys() {
    let annotation = one(json!({
        "interface": "net1", "portMappings": [{"hostPort": 1, "containerPort": 2}],
        "bandwidth": {"egressRate": 5}, "default-route": [], "ipam-claim-reference": "claim-1",
        "com.example.k": 1
    }));
    let parsed = parse(&annotation).unwrap();
    let value = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        value,
        json!([{
            "name": "net", "namespace": "pod-ns", "interface": "net1",
            "portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "TCP"}],
            "bandwidth": {"egressRate": 5}, "default-route": [], "ipam-claim-reference": "claim-1",
            "com.example.k": 1
        }])
    );
    let back: Vec<NetworkSelectionElement> = serde_json::from_value(value).unwrap();
    assert_eq!(back, parsed);
}

#[test]
fn json_form_error_messages() {
    assert_eq!(
        parse_err(r#"[{"name":"ok"},{"name":"sriov-a","namespace":"blue","mac":"zz:11"}]"#),
        r#"network selection element 2 ("blue/sriov-a"): mac "zz:11" is not a 6-byte MAC address"#
    );
    assert_eq!(
        parse_err(r#"[{"name":"Foo_1"}]"#),
        r#"network selection element 1: invalid network name "Foo_1": must be a DNS-1123 label"#
    );
    assert_eq!(
        parse_err(&one(json!({"ips": ["10.0.0.1/33"]}))),
        r#"network selection element 1 ("pod-ns/net"): ips entry "10.0.0.1/33" has an invalid prefix length: must be 0-32"#
    );
    assert_eq!(
        parse_err(&one(
            json!({"ips": ["10.0.0.1"], "ipam-claim-reference": "c1"})
        )),
        r#"network selection element 1 ("pod-ns/net"): ipam-claim-reference "c1" cannot be combined with "ips""#
    );
    assert_eq!(
        parse_err(&one(json!({"foo": 1}))),
        r#"network selection element 1 ("pod-ns/net"): unknown key "foo": keys without a '.' are reserved by the NPWG spec; extensions must use reverse-DNS keys"#
    );
    assert_eq!(
        parse_err(&one(
            json!({"portMappings": [{"hostPort": 80, "containerPort": 70000}]})
        )),
        r#"network selection element 1 ("pod-ns/net"): portMappings entry 1: containerPort 70000 is not a port number 1-65535"#
    );
}

#[rstest]
#[case::object(r#"{"name":"net"}"#, "an object")]
#[case::string(r#""net""#, "a string")]
#[case::number(r#"[1]"#, "")]
fn json_form_must_be_a_list_of_objects(#[case] annotation: &str, #[case] found: &'static str) {
    if found.is_empty() {
        assert_eq!(
            problem(annotation),
            ElementError::NotAnObject { found: "a number" }
        );
        return;
    }
    assert_eq!(parse(annotation), Err(SelectionError::NotAList(found)));
    assert!(parse_err(annotation).contains("must be a list of selection elements"));
}

#[test]
fn invalid_json_is_reported() {
    let err = parse("[{\"name\": }]").unwrap_err();
    assert!(matches!(err, SelectionError::InvalidJson(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("network selection annotation is not valid JSON: ")
    );
}

#[rstest]
#[case::not_object(r#"["net"]"#, ElementError::NotAnObject { found: "a string" })]
#[case::missing_name(r#"[{"namespace":"x"}]"#, ElementError::MissingName)]
#[case::null_name(r#"[{"name":null}]"#, ElementError::MissingName)]
#[case::empty_name(r#"[{"name":""}]"#, ElementError::InvalidName { value: "".into() })]
#[case::name_type(r#"[{"name":5}]"#, ElementError::WrongType { key: "name".into(), expected: "a string", found: "5".into() })]
#[case::bad_namespace(r#"[{"name":"n","namespace":"Bad"}]"#, ElementError::InvalidNamespace { value: "Bad".into() })]
fn json_identity_rules(#[case] annotation: &str, #[case] expected: ElementError) {
    assert_eq!(problem(annotation), expected);
}

#[test]
fn json_namespace_error_names_the_network() {
    let err = parse(r#"[{"name":"n","namespace":"Bad"}]"#).unwrap_err();
    assert!(
        matches!(err, SelectionError::Element { index: 1, name: Some(ref n), .. } if n == "n"),
        "{err:?}"
    );
}

// ----- JSON form: field rules --------------------------------------------------------------------

#[rstest]
#[case::interface(json!({"interface": "eth/1"}), ElementError::InvalidInterface { value: "eth/1".into(), reason: "must not contain '/', ':' or whitespace" })]
#[case::interface_request(json!({"interfaceRequest": "a-very-long-ifname"}), ElementError::InvalidInterface { value: "a-very-long-ifname".into(), reason: "must be at most 15 bytes" })]
#[case::interface_conflict(json!({"interface": "a", "interfaceRequest": "b"}), ElementError::InterfaceConflict { interface: "a".into(), interface_request: "b".into() })]
#[case::interface_type(json!({"interface": 1}), ElementError::WrongType { key: "interface".into(), expected: "a string", found: "1".into() })]
#[case::ips_type(json!({"ips": "10.0.0.1"}), ElementError::WrongType { key: "ips".into(), expected: "a list of strings", found: "\"10.0.0.1\"".into() })]
#[case::ips_item_type(json!({"ips": [1]}), ElementError::WrongType { key: "ips".into(), expected: "a list of strings", found: "1".into() })]
#[case::ip_garbage(json!({"ips": ["10.0.0.256"]}), ElementError::InvalidIp { value: "10.0.0.256".into() })]
#[case::ip_empty_prefix(json!({"ips": ["10.0.0.1/"]}), ElementError::InvalidPrefix { value: "10.0.0.1/".into(), max: 32 })]
#[case::ip_plus_prefix(json!({"ips": ["10.0.0.1/+8"]}), ElementError::InvalidPrefix { value: "10.0.0.1/+8".into(), max: 32 })]
#[case::ip6_prefix(json!({"ips": ["2001:db8::1/129"]}), ElementError::InvalidPrefix { value: "2001:db8::1/129".into(), max: 128 })]
#[case::ip_zone(json!({"ips": ["fe80::1%eth0"]}), ElementError::InvalidIp { value: "fe80::1%eth0".into() })]
#[case::mac_short(json!({"mac": "02:00:00:00:00"}), ElementError::InvalidMac { value: "02:00:00:00:00".into() })]
#[case::mac_mixed(json!({"mac": "02:00-00:00:00:01"}), ElementError::InvalidMac { value: "02:00-00:00:00:01".into() })]
#[case::mac_eight(json!({"mac": "02:00:00:00:00:01:02:03"}), ElementError::InvalidMac { value: "02:00:00:00:00:01:02:03".into() })]
#[case::guid_six(json!({"infiniband-guid": "02:00:00:00:00:01"}), ElementError::InvalidGuid { value: "02:00:00:00:00:01".into() })]
#[case::ports_type(json!({"portMappings": {"hostPort": 1}}), ElementError::WrongType { key: "portMappings".into(), expected: "a list", found: "{\"hostPort\":1}".into() })]
#[case::port_entry_type(json!({"portMappings": [5]}), ElementError::WrongType { key: "portMappings entry 1".into(), expected: "an object", found: "5".into() })]
#[case::port_missing(json!({"portMappings": [{"containerPort": 80}]}), ElementError::PortMissing { entry: 1, field: "hostPort" })]
#[case::port_zero(json!({"portMappings": [{"hostPort": 0, "containerPort": 80}]}), ElementError::InvalidPort { entry: 1, field: "hostPort", value: "0".into() })]
#[case::port_negative(json!({"portMappings": [{"hostPort": -1, "containerPort": 80}]}), ElementError::InvalidPort { entry: 1, field: "hostPort", value: "-1".into() })]
#[case::port_string(json!({"portMappings": [{"hostPort": "80", "containerPort": 80}]}), ElementError::InvalidPort { entry: 1, field: "hostPort", value: "\"80\"".into() })]
#[case::port_high(json!({"portMappings": [{"hostPort": 1, "containerPort": 65536}]}), ElementError::InvalidPort { entry: 1, field: "containerPort", value: "65536".into() })]
#[case::protocol(json!({"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "icmp"}]}), ElementError::InvalidProtocol { entry: 1, value: "icmp".into() })]
#[case::host_ip(json!({"portMappings": [{"hostPort": 1, "containerPort": 2, "hostIP": "10.0.0.0/8"}]}), ElementError::InvalidHostIp { entry: 1, value: "10.0.0.0/8".into() })]
#[case::port_unknown(json!({"portMappings": [{"hostPort": 1, "containerPort": 2, "hostport": 3}]}), ElementError::UnknownNestedKey { context: "portMappings entry 1".into(), key: "hostport".into() })]
#[case::bw_type(json!({"bandwidth": [1]}), ElementError::WrongType { key: "bandwidth".into(), expected: "an object", found: "[1]".into() })]
#[case::bw_zero(json!({"bandwidth": {"ingressRate": 0}}), ElementError::InvalidBandwidth { field: "ingressRate", value: "0".into() })]
#[case::bw_negative(json!({"bandwidth": {"egressRate": -5}}), ElementError::InvalidBandwidth { field: "egressRate", value: "-5".into() })]
#[case::bw_float(json!({"bandwidth": {"egressRate": 1.5}}), ElementError::InvalidBandwidth { field: "egressRate", value: "1.5".into() })]
#[case::bw_ingress_burst(json!({"bandwidth": {"ingressBurst": 10, "egressRate": 1}}), ElementError::BurstWithoutRate { burst: "ingressBurst", rate: "ingressRate" })]
#[case::bw_egress_burst(json!({"bandwidth": {"egressBurst": 10}}), ElementError::BurstWithoutRate { burst: "egressBurst", rate: "egressRate" })]
#[case::bw_unknown(json!({"bandwidth": {"rate": 1}}), ElementError::UnknownNestedKey { context: "bandwidth".into(), key: "rate".into() })]
#[case::cni_args(json!({"cni-args": "a=b"}), ElementError::WrongType { key: "cni-args".into(), expected: "an object", found: "\"a=b\"".into() })]
#[case::default_route(json!({"default-route": ["10.0.0.1/24"]}), ElementError::InvalidDefaultRoute { value: "10.0.0.1/24".into() })]
#[case::device_id(json!({"deviceID": 3}), ElementError::WrongType { key: "deviceID".into(), expected: "a string", found: "3".into() })]
#[case::claim_with_ips(json!({"ipam-claim-reference": "c", "ips": ["10.0.0.1/24"]}), ElementError::IpamClaimWithIps { claim: "c".into() })]
#[case::reserved(json!({"ipRequest": ["10.0.0.1"]}), ElementError::ReservedKey { key: "ipRequest".into() })]
fn json_field_rules(#[case] fields: Value, #[case] expected: ElementError) {
    assert_eq!(problem(&one(fields)), expected);
}

#[test]
fn interface_request_is_an_alias() {
    let parsed = parse(&one(json!({"interfaceRequest": "net5"}))).unwrap();
    assert_eq!(parsed[0].interface.as_deref(), Some("net5"));
    let parsed = parse(&one(
        json!({"interface": "net5", "interfaceRequest": "net5"}),
    ))
    .unwrap();
    assert_eq!(parsed[0].interface.as_deref(), Some("net5"));
}

#[test]
fn null_and_empty_optional_values_are_absent() {
    let parsed = parse(&one(json!({
        "interface": "", "mac": null, "ips": null, "deviceID": "", "ipam-claim-reference": "", "bandwidth": null
    })))
    .unwrap();
    assert_eq!(parsed, vec![NetworkSelectionElement::new("pod-ns", "net")]);
}

#[test]
fn accepted_field_variants() {
    let parsed = parse(&one(json!({
        "mac": "02-AA-bb-00-00-01",
        "infiniband-guid": "00:11:22:33:44:55:66:77",
        "portMappings": [{"hostPort": 65535, "containerPort": 1, "protocol": "Sctp", "hostIP": "::"}],
        "bandwidth": {"egressRate": 1, "egressBurst": 1},
        "default-route": ["fd00::1", "10.0.0.1"],
        "ipam-claim-reference": "claim"
    })));
    let element = &parsed.unwrap()[0];
    assert_eq!(element.ipam_claim_reference.as_deref(), Some("claim"));
    assert_eq!(
        element.default_route.as_deref(),
        Some(&["fd00::1".to_string(), "10.0.0.1".to_string()][..])
    );
    assert_eq!(element.port_mappings[0].protocol, "SCTP");
    assert_eq!(element.mac.as_deref(), Some("02-AA-bb-00-00-01"));

    let parsed = parse(&one(
        json!({"ips": ["10.0.0.1", "10.0.0.1/0", "::1/128", "2001:db8::/32"]}),
    ))
    .unwrap();
    assert_eq!(parsed[0].ips.len(), 4);
}

#[test]
fn error_index_is_one_based_and_names_the_network() {
    let err = parse(r#"[{"name":"a"},{"name":"b"},{"name":"c","ips":["x"]}]"#).unwrap_err();
    assert_eq!(
        err,
        SelectionError::Element {
            index: 3,
            name: Some("pod-ns/c".into()),
            problem: ElementError::InvalidIp { value: "x".into() },
        }
    );
}

#[test]
fn long_values_are_shortened_in_messages() {
    let long = "x".repeat(500);
    let message = parse_err(&one(json!({"cni-args": long})));
    assert!(message.len() < 200, "{message}");
    assert!(message.ends_with('…'), "{message}");
}

// ----- to_short_form ---------------------------------------------------------------------------

#[test]
fn to_short_form_formats_plain_elements() {
    let elements = parse("a,ns/b@net1").unwrap();
    assert_eq!(
        to_short_form(&elements).as_deref(),
        Some("pod-ns/a,ns/b@net1")
    );
    assert_eq!(to_short_form(&[]).as_deref(), Some(""));
}

#[rstest]
#[case(json!({"mac": "02:00:00:00:00:01"}))]
#[case(json!({"ips": ["10.0.0.1"]}))]
#[case(json!({"default-route": []}))]
#[case(json!({"cni-args": {}}))]
#[case(json!({"org.example.x": 1}))]
#[case(json!({"interface": "a,b"}))]
#[case(json!({"interface": "a@b"}))]
fn to_short_form_refuses_what_it_cannot_express(#[case] fields: Value) {
    let elements = parse(&one(fields)).unwrap();
    assert_eq!(to_short_form(&elements), None);
}

// ----- properties ------------------------------------------------------------------------------

fn label() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9]", "[a-z0-9][-a-z0-9]{0,61}[a-z0-9]"]
}

fn ifname() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,15}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn plain_element() -> impl Strategy<Value = NetworkSelectionElement> {
    (label(), label(), proptest::option::of(ifname())).prop_map(|(namespace, name, interface)| {
        NetworkSelectionElement {
            interface,
            ..NetworkSelectionElement::new(namespace, name)
        }
    })
}

/// Regression (fuzz/fuzz_targets/networks_annotation.rs): an interface name with a JSON marker
/// has no comma form, since printing it would make the text parse as JSON.
#[test]
fn an_interface_with_a_json_marker_has_no_short_form() {
    let parsed = parse_networks(
        r#"[{"name":"a","namespace":"blu","interface":"net4[["}]"#,
        "x",
    )
    .unwrap();
    assert_eq!(parsed[0].interface.as_deref(), Some("net4[["));
    assert_eq!(to_short_form(&parsed), None);
    for marker in ["{", "\"", "["] {
        let e = NetworkSelectionElement {
            interface: Some(format!("n{marker}")),
            ..NetworkSelectionElement::new("ns", "a")
        };
        assert_eq!(to_short_form(&[e]), None, "{marker}");
    }
}

proptest! {
    #[test]
    fn parse_never_panics(annotation in ".*") {
        let _ = parse_networks(&annotation, "pod-ns");
    }

    #[test]
    fn parse_never_panics_on_jsonish_input(annotation in r#"[\[\]{}",:a-z0-9./@ -]{0,40}"#) {
        let _ = parse_networks(&annotation, "pod-ns");
    }

    #[test]
    fn short_form_round_trips(elements in proptest::collection::vec(plain_element(), 1..6), pod_ns in label()) {
        let text = to_short_form(&elements).expect("plain elements have a short form");
        let parsed = parse_networks(&text, &pod_ns).unwrap();
        prop_assert_eq!(&parsed, &elements);
        prop_assert_eq!(to_short_form(&parsed), Some(text));
    }

    #[test]
    fn json_form_round_trips_through_serde(elements in proptest::collection::vec(plain_element(), 0..4)) {
        let text = serde_json::to_string(&elements).unwrap();
        prop_assert_eq!(parse_networks(&text, "unused").unwrap(), elements);
    }
}

/// The annotation of Multus's `examples/macvlan-pod.yml`, with the pre-NPWG `gateway` key.
const MULTUS_MACVLAN_POD: &str = r#"[
            { "name": "macvlan-conf",
              "ips": [ "10.1.1.101/24" ],
              "mac": "c2:b0:57:49:47:f1",
              "gateway": [ "10.1.1.1" ]
            }]"#;

#[test]
fn unknown_keys_are_ignored_and_reported_when_lenient() {
    let s = parse_selection(MULTUS_MACVLAN_POD, "pod-ns", UnknownKeys::Ignore).unwrap();
    assert_eq!(s.elements.len(), 1);
    assert_eq!(s.elements[0].ips, ["10.1.1.101/24"]);
    assert_eq!(s.elements[0].mac.as_deref(), Some("c2:b0:57:49:47:f1"));
    assert!(
        s.elements[0].extensions.is_empty(),
        "ignored keys are dropped"
    );
    assert_eq!(
        s.ignored,
        vec![IgnoredKey {
            index: 1,
            network: "pod-ns/macvlan-conf".into(),
            key: "gateway".into()
        }]
    );
    assert_eq!(
        s.ignored[0].to_string(),
        r#"network selection element 1 ("pod-ns/macvlan-conf"): unknown key "gateway" ignored"#
    );
    // Several elements: each ignored key keeps its element.
    let s = parse_selection(
        r#"[{"name": "a", "foo": 1}, {"name": "b", "namespace": "x", "bar": {}, "baz": null}]"#,
        "pod-ns",
        UnknownKeys::Ignore,
    )
    .unwrap();
    let keys: Vec<(usize, &str, &str)> = s
        .ignored
        .iter()
        .map(|i| (i.index, i.network.as_str(), i.key.as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![(1, "pod-ns/a", "foo"), (2, "x/b", "bar"), (2, "x/b", "baz")]
    );
}

#[test]
fn strict_mode_rejects_unknown_keys() {
    let e = parse_selection(MULTUS_MACVLAN_POD, "pod-ns", UnknownKeys::Reject).unwrap_err();
    assert!(
        matches!(&e, SelectionError::Element { problem: ElementError::ReservedKey { key }, .. } if key == "gateway"),
        "{e}"
    );
    // parse_networks is the strict form.
    assert!(parse_networks(MULTUS_MACVLAN_POD, "pod-ns").is_err());
}

#[test]
fn lenient_mode_still_rejects_wrong_types_and_case_variants() {
    for unknown in [UnknownKeys::Ignore, UnknownKeys::Reject] {
        let e = parse_selection(r#"[{"name": "a", "mac": 5}]"#, "ns", unknown).unwrap_err();
        assert!(
            e.to_string().contains(r#""mac" must be a string, found 5"#),
            "{e}"
        );
        // Go's decoder would read "Interface" as "interface": ignoring it would name the
        // interface differently from Multus.
        let e = parse_selection(r#"[{"name": "a", "Interface": "x"}]"#, "ns", unknown).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"network selection element 1 ("ns/a"): key "Interface" differs from the known key "interface" only in case: write it as "interface""#
        );
    }
}
