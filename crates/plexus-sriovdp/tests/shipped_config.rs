//! The resource configs shipped in deploy/ parse and mean what their comments say.

use plexus_sriovdp::config::{DEFAULT_PREFIX, ResourceConfig};
use std::path::Path;

fn config_json(rel: &str) -> ResourceConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let text = doc["data"]["config.json"]
        .as_str()
        .expect("data.config.json");
    let json: serde_json::Value = serde_json::from_str(text).unwrap();
    ResourceConfig::from_value(&json, DEFAULT_PREFIX).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn the_deployed_config_advertises_what_the_sriov_example_asks_for() {
    let c = config_json("deploy/sriovdp/configmap.yaml");
    let names: Vec<String> = c
        .pools
        .iter()
        .map(|p| p.resource_name(DEFAULT_PREFIX))
        .collect();
    assert_eq!(
        names,
        [
            "intel.com/intel_sriov_netdevice",
            "intel.com/intel_sriov_dpdk"
        ]
    );
    let nad = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples/sriov/nad.yaml"),
    )
    .unwrap();
    assert!(nad.contains("intel.com/intel_sriov_netdevice"));
    assert_eq!(c.pools[1].selectors[0].drivers, ["vfio-pci"]);
}

#[test]
fn the_reference_device_plugin_example_config_is_read_unchanged() {
    let c = config_json("deploy/examples/sriov/device-plugin-configmap.yaml");
    assert_eq!(
        c.pools[0].resource_name(DEFAULT_PREFIX),
        "intel.com/intel_sriov_netdevice"
    );
}
