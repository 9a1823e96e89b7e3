//! Network configs: conf vs conflist, version selection, and the stdin each delegate receives.

use plexus_cni::{CniVersion, ConfigError, NetworkConfig};
use rstest::rstest;
use serde_json::{Map, Value, json};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn fixture_value(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn conflist_is_detected_and_fields_read() {
    let c = NetworkConfig::from_slice(&fixture("conflist.json")).unwrap();
    assert!(c.is_list);
    assert_eq!(c.name, "mynet");
    assert_eq!(c.cni_version.as_deref(), Some("0.4.0"));
    assert_eq!(c.cni_versions, ["0.3.1", "1.0.0", "9.9.9"]);
    assert!(c.disable_check);
    assert!(!c.disable_gc);
    assert_eq!(c.plugin_types(), ["bridge", "portmap", "tuning"]);
    assert_eq!(c.plugins.len(), 3);
    assert_eq!(c.to_value(), fixture_value("conflist.json"));
}

#[test]
fn single_conf_is_its_own_plugin() {
    let c = NetworkConfig::from_slice(&fixture("conf.json")).unwrap();
    assert!(!c.is_list);
    assert_eq!(c.name, "macvlan-conf");
    assert_eq!(c.plugin_types(), ["macvlan"]);
    assert_eq!(
        Value::Object(c.plugins[0].clone()),
        fixture_value("conf.json")
    );
    assert_eq!(c.effective_version().unwrap(), CniVersion::V0_3_1);
}

#[rstest]
#[case::not_json(b"{".as_slice())]
#[case::trailing(b"{} x".as_slice())]
fn invalid_json(#[case] bytes: &[u8]) {
    assert!(matches!(
        NetworkConfig::from_slice(bytes),
        Err(ConfigError::Json(_))
    ));
}

#[rstest]
#[case::array(json!([]))]
#[case::string(json!("conf"))]
fn not_an_object(#[case] value: Value) {
    assert!(matches!(
        NetworkConfig::from_value(value),
        Err(ConfigError::NotAnObject)
    ));
}

#[rstest]
#[case::empty(json!({"name": "n", "plugins": []}))]
#[case::not_a_list(json!({"name": "n", "plugins": {"type": "bridge"}}))]
#[case::null(json!({"name": "n", "plugins": null}))]
#[case::non_object_item(json!({"name": "n", "plugins": [{"type": "bridge"}, "tuning"]}))]
fn bad_plugins(#[case] value: Value) {
    assert!(matches!(
        NetworkConfig::from_value(value),
        Err(ConfigError::BadPlugins)
    ));
}

#[rstest]
#[case::conf_without_type(json!({"name": "n", "cniVersion": "1.0.0"}), 0)]
#[case::conf_empty_type(json!({"name": "n", "type": ""}), 0)]
#[case::second_plugin(json!({"name": "n", "plugins": [{"type": "bridge"}, {"ipMasq": true}]}), 1)]
#[case::type_not_string(json!({"name": "n", "plugins": [{"type": 5}]}), 0)]
fn missing_type(#[case] value: Value, #[case] expected: usize) {
    match NetworkConfig::from_value(value) {
        Err(ConfigError::MissingType { index }) => assert_eq!(index, expected),
        other => panic!("expected MissingType, got {other:?}"),
    }
}

#[rstest]
#[case::name(json!({"name": 1, "type": "x"}))]
#[case::version(json!({"cniVersion": 1.0, "type": "x"}))]
#[case::versions(json!({"cniVersions": "1.0.0", "type": "x"}))]
#[case::versions_item(json!({"cniVersions": ["1.0.0", 1], "type": "x"}))]
#[case::disable_check(json!({"disableCheck": "yes", "type": "x"}))]
#[case::disable_gc(json!({"disableGC": 1, "type": "x"}))]
fn ill_typed_known_keys(#[case] value: Value) {
    assert!(matches!(
        NetworkConfig::from_value(value),
        Err(ConfigError::Json(_))
    ));
}

#[rstest]
#[case(json!(true), true)]
#[case(json!(false), false)]
#[case(json!("true"), true)]
#[case(json!("False"), false)]
#[case(json!(null), false)]
fn disable_flags_accept_bool_or_string(#[case] flag: Value, #[case] expected: bool) {
    let c = NetworkConfig::from_value(json!({"name": "n", "disableCheck": flag.clone(), "disableGC": flag, "plugins": [{"type": "x"}]})).unwrap();
    assert_eq!((c.disable_check, c.disable_gc), (expected, expected));
}

#[rstest]
#[case::absent(None, &[], Ok("0.1.0"))]
#[case::empty(Some(""), &[], Ok("0.1.0"))]
#[case::plain(Some("0.4.0"), &[], Ok("0.4.0"))]
#[case::list_raises(Some("0.4.0"), &["0.3.1", "1.0.0"], Ok("1.0.0"))]
#[case::list_lower(Some("1.0.0"), &["0.3.1"], Ok("1.0.0"))]
#[case::newer_dropped(Some("0.4.0"), &["1.0.0", "2.0.0", "1.1.1"], Ok("1.0.0"))]
#[case::unsupported_main_rescued(Some("9.0.0"), &["1.1.0"], Ok("1.1.0"))]
#[case::garbage_dropped(Some("1.0.0"), &["latest"], Ok("1.0.0"))]
#[case::absent_with_list(None, &["0.4.0", "1.1.0"], Ok("1.1.0"))]
#[case::nothing_supported(Some("0.5.0"), &["2.0.0"], Err("0.5.0"))]
#[case::garbage(Some("one"), &[], Err("one"))]
fn effective_version(
    #[case] version: Option<&str>,
    #[case] versions: &[&str],
    #[case] expected: Result<&str, &str>,
) {
    let mut doc = json!({"name": "n", "cniVersions": versions, "plugins": [{"type": "x"}]});
    if let Some(v) = version {
        doc["cniVersion"] = json!(v);
    }
    let c = NetworkConfig::from_value(doc).unwrap();
    match (c.effective_version(), expected) {
        (Ok(got), Ok(want)) => assert_eq!(got.to_string(), want),
        (Err(ConfigError::UnsupportedVersion(got)), Err(want)) => assert_eq!(got, want),
        (got, want) => panic!("got {got:?}, want {want:?}"),
    }
}

#[test]
fn plugin_stdin_injects_and_preserves_unknown_keys() {
    let c = NetworkConfig::from_slice(&fixture("conflist.json")).unwrap();
    let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/16"}]});
    let rc = object(
        json!({"mac": "c2:11:22:33:44:55", "ips": ["10.1.0.9/16"], "portMappings": [{"hostPort": 80}]}),
    );
    let stdin = c.plugin_stdin(0, CniVersion::V1_0_0, Some(&prev), Some(&rc));

    let mut expected = fixture_value("conflist.json")["plugins"][0].clone();
    let m = expected.as_object_mut().unwrap();
    m.insert("cniVersion".into(), json!("1.0.0"));
    m.insert("name".into(), json!("mynet"));
    m.insert("prevResult".into(), prev);
    m.insert("runtimeConfig".into(), json!({"mac": "c2:11:22:33:44:55"}));
    assert_eq!(stdin, expected);
    // Existing keys keep their place, injected ones follow in libcni's order.
    assert_eq!(
        keys(&stdin),
        [
            "type",
            "bridge",
            "isGateway",
            "ipMasq",
            "capabilities",
            "ipam",
            "dns",
            "args",
            "vendor.example/big",
            "cniVersion",
            "name",
            "prevResult",
            "runtimeConfig"
        ]
    );
    assert_eq!(stdin["vendor.example/big"], json!(u64::MAX));
    // Byte-level: the unknown keys serialize exactly as in the input.
    let text = stdin.to_string();
    assert!(
        text.contains(r#""vendor.example/big":18446744073709551615"#),
        "{text}"
    );
    assert!(
        text.contains(r#""args":{"cni":{"labels":[{"key":"a","value":"b"}]}}"#),
        "{text}"
    );
}

#[test]
fn plugin_stdin_merges_over_an_existing_runtime_config() {
    let c = NetworkConfig::from_slice(&fixture("conflist.json")).unwrap();
    let rc = object(
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], "mac": "c2:11:22:33:44:55"}),
    );
    let stdin = c.plugin_stdin(1, CniVersion::V0_4_0, None, Some(&rc));
    assert_eq!(
        stdin["runtimeConfig"],
        json!({"static": "kept", "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    );
    assert_eq!(keys(&stdin["runtimeConfig"]), ["static", "portMappings"]);
    assert!(stdin.get("prevResult").is_none());
}

#[test]
fn plugin_stdin_keeps_an_existing_runtime_config_when_nothing_matches() {
    let c = NetworkConfig::from_slice(&fixture("conflist.json")).unwrap();
    let stdin = c.plugin_stdin(
        1,
        CniVersion::V0_4_0,
        None,
        Some(&object(json!({"mac": "x"}))),
    );
    assert_eq!(
        stdin["runtimeConfig"],
        json!({"static": "kept", "portMappings": []})
    );
}

#[rstest]
#[case::no_runtime_config(None)]
#[case::nothing_declared(Some(json!({"mac": "x", "portMappings": []})))]
fn plugin_stdin_omits_empty_runtime_config(#[case] rc: Option<Value>) {
    let c = NetworkConfig::from_slice(&fixture("conflist.json")).unwrap();
    let rc = rc.map(object);
    let stdin = c.plugin_stdin(2, CniVersion::V1_0_0, None, rc.as_ref());
    assert_eq!(
        stdin,
        json!({"type": "tuning", "sysctl": {"net.core.somaxconn": "500"}, "cniVersion": "1.0.0", "name": "mynet"})
    );
}

#[test]
fn false_capabilities_are_not_granted() {
    let c = NetworkConfig::from_slice(&fixture("conflist.json")).unwrap();
    let stdin = c.plugin_stdin(
        0,
        CniVersion::V1_0_0,
        None,
        Some(&object(json!({"ips": ["10.0.0.1/24"]}))),
    );
    assert!(stdin.get("runtimeConfig").is_none());
}

#[test]
fn single_conf_stdin_overwrites_its_own_version_and_name_in_place() {
    let mut c = NetworkConfig::from_slice(&fixture("conf.json")).unwrap();
    c.name = "renamed".into();
    let rc = object(json!({"ips": ["10.10.0.7/24"], "mac": "c2:11:22:33:44:55"}));
    let stdin = c.plugin_stdin(0, CniVersion::V1_0_0, None, Some(&rc));
    assert_eq!(
        keys(&stdin),
        [
            "cniVersion",
            "name",
            "type",
            "master",
            "mode",
            "capabilities",
            "ipam",
            "runtimeConfig"
        ]
    );
    assert_eq!(stdin["cniVersion"], json!("1.0.0"));
    assert_eq!(stdin["name"], json!("renamed"));
    assert_eq!(stdin["runtimeConfig"], json!({"ips": ["10.10.0.7/24"]}));
    assert_eq!(stdin["ipam"], fixture_value("conf.json")["ipam"]);
}

#[test]
fn capabilities_union_only_true_ones() {
    let c = NetworkConfig::from_slice(&fixture("conflist.json")).unwrap();
    assert_eq!(
        c.capabilities().into_iter().collect::<Vec<_>>(),
        ["bandwidth", "mac", "portMappings"]
    );
    let odd =
        NetworkConfig::from_value(json!({"type": "x", "capabilities": {"mac": "true", "ips": 1}}))
            .unwrap();
    assert!(odd.capabilities().is_empty());
}

#[test]
fn set_name_and_version_if_missing_on_a_single_conf() {
    let mut c = NetworkConfig::from_value(json!({"type": "bridge", "bridge": "br0"})).unwrap();
    assert_eq!(c.effective_version().unwrap(), CniVersion::V0_1_0);
    c.set_name_if_missing("ns/net");
    c.set_version_if_missing("0.4.0");
    let expected =
        json!({"type": "bridge", "bridge": "br0", "name": "ns/net", "cniVersion": "0.4.0"});
    assert_eq!(c.to_value(), expected);
    assert_eq!(Value::Object(c.plugins[0].clone()), expected);
    assert_eq!(
        (c.name.as_str(), c.cni_version.as_deref()),
        ("ns/net", Some("0.4.0"))
    );
    assert_eq!(c.effective_version().unwrap(), CniVersion::V0_4_0);

    c.set_name_if_missing("other");
    c.set_version_if_missing("1.0.0");
    assert_eq!(c.to_value(), expected);
}

#[test]
fn set_name_if_missing_replaces_an_empty_name_in_place_on_a_conflist() {
    let mut c = NetworkConfig::from_value(
        json!({"name": "", "cniVersion": "1.0.0", "plugins": [{"type": "x"}]}),
    )
    .unwrap();
    c.set_name_if_missing("ns/net");
    assert_eq!(
        c.to_value(),
        json!({"name": "ns/net", "cniVersion": "1.0.0", "plugins": [{"type": "x"}]})
    );
    assert_eq!(keys(&c.to_value()), ["name", "cniVersion", "plugins"]);
    // Plugin objects of a list do not carry the name; it is injected per invocation.
    assert!(!c.plugins[0].contains_key("name"));
    assert_eq!(
        c.plugin_stdin(0, CniVersion::V1_0_0, None, None)["name"],
        json!("ns/net")
    );
}
