//! Devices for attachments whose NAD names a resource (`k8s.v1.cni.cncf.io/resourceName`): which
//! device the kubelet (or a DRA driver) allocated to the pod for each such attachment, and how the
//! delegate learns it.
//!
//! The lookup is behind [`DeviceLookup`] (the kubelet PodResources client lives in the
//! `plexus-kubelet` crate, DRA reads in `plexus-kube`); everything here is pure:
//!
//! - **Order.** Attachments are served in plan order (cluster network, default networks, then the
//!   annotation's entries in order); each resource's devices are sorted (PCI addresses sort
//!   lexically in bus order) and deduplicated. An attachment takes the first device of its
//!   resource that no earlier attachment took. So two NADs on one resource get two different
//!   devices, and the same pod with the same allocation always gets the same mapping, whatever
//!   order the kubelet answered in.
//! - **Too few devices** is an error naming the pod, the resource and both counts, raised by the
//!   plan phase, before any delegate runs.
//! - **Injection** (as the reference implementation does it): `deviceID` and `pciBusID` at the top
//!   level of the delegate config, in every plugin of a conflist; `deviceID` and
//!   `CNIDeviceInfoFile` as capability arguments, which reach `runtimeConfig` only of plugins that
//!   declare them. A selection element's own `deviceID` (a capability argument) is used only when
//!   the NAD has no resource.

use crate::error::EngineError;
use crate::resolve::{Attachment, PodRef};
use plexus_cni::NetworkConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The NAD annotation naming the extended resource (device-plugin resource or DRA
/// `k8s.cni.cncf.io/resourceName` attribute) whose device the delegate needs.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// Capability argument carrying the device (PCI address) to plugins that declare it.
pub const DEVICE_ID_CAPABILITY: &str = "deviceID";

/// Capability argument carrying the path of the CNI device-info file (NPWG device-info spec).
pub const DEVICE_INFO_CAPABILITY: &str = "CNIDeviceInfoFile";

/// Devices allocated to one pod: resource name → device IDs (PCI addresses for SR-IOV VFs).
pub type DeviceMap = BTreeMap<String, Vec<String>>;

/// Why the devices of a pod could not be learnt.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// The source is there but cannot answer now (the kubelet kept answering `Unavailable` or
    /// `ResourceExhausted` until the deadline): the runtime should retry (CNI code 11).
    #[error("{0}")]
    Busy(String),
    /// No source could answer (no kubelet socket and no checkpoint, an unparseable checkpoint,
    /// an API error reading ResourceClaims).
    #[error("{0}")]
    Unavailable(String),
}

/// Where the devices the kubelet (or DRA) allocated to a pod come from.
pub trait DeviceLookup: Send + Sync {
    /// The devices allocated to `pod`, by resource name. `wanted` lists the resources the pod's
    /// networks need (sorted, unique): an implementation may use it to skip a source it does not
    /// need, and must return at least what it knows of these.
    fn devices(&self, pod: &PodRef, wanted: &[String]) -> Result<DeviceMap, DeviceError>;
}

/// Two sources in order: `primary` (the kubelet's device plugins) answers; `fallback` (DRA) is
/// asked only for the wanted resources the primary's answer lacks, so pods whose resources come
/// from device plugins pay nothing for DRA. When the primary failed and the fallback does not
/// supply every wanted resource either, the primary's error is returned: it is the one that
/// explains a device-plugin resource. Except when the fallback could not answer *for now*
/// ([`DeviceError::Busy`]: the API server unreachable): then nobody knows yet whether the pod's
/// devices are DRA claims, and the call is to be retried (code 11), not failed for good on the
/// kubelet's account; the error names both causes.
#[derive(Clone, Copy)]
pub struct Fallback<'a> {
    pub primary: &'a dyn DeviceLookup,
    pub fallback: Option<&'a dyn DeviceLookup>,
}

impl std::fmt::Debug for Fallback<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("fallback", &self.fallback.is_some())
            .finish_non_exhaustive()
    }
}

impl DeviceLookup for Fallback<'_> {
    fn devices(&self, pod: &PodRef, wanted: &[String]) -> Result<DeviceMap, DeviceError> {
        let first = self.primary.devices(pod, wanted);
        let mut map = first.clone().unwrap_or_default();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|r| map.get(*r).is_none_or(Vec::is_empty))
            .cloned()
            .collect();
        let Some(fallback) = self.fallback.filter(|_| !missing.is_empty()) else {
            return first;
        };
        let more = match (fallback.devices(pod, &missing), &first) {
            (Ok(m), _) => m,
            (Err(e @ DeviceError::Busy(_)), Err(kubelet))
                if !matches!(kubelet, DeviceError::Busy(_)) =>
            {
                return Err(DeviceError::Busy(format!(
                    "{e} (and the kubelet could not answer: {kubelet})"
                )));
            }
            (Err(e), Err(_)) => {
                tracing::debug!(pod = %pod, "fallback device source failed too: {e}");
                return first;
            }
            (Err(e), Ok(_)) => return Err(e),
        };
        for (resource, ids) in more {
            map.entry(resource).or_default().extend(ids);
        }
        let still_missing = missing.iter().any(|r| map.get(r).is_none_or(Vec::is_empty));
        match first {
            Err(e) if still_missing => Err(e),
            _ => Ok(map),
        }
    }
}

/// The device one attachment got; recorded in the cache entry so that DEL and CHECK hand the
/// delegate the same device without asking the kubelet (which may have released it already).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedDevice {
    pub resource_name: String,
    #[serde(rename = "deviceID")]
    pub device_id: String,
    /// The CNI device-info file of this attachment (`CNIDeviceInfoFile`); removed on DEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_info_file: Option<PathBuf>,
}

/// The device-info directories of the NPWG device-info spec: the device plugin writes
/// `dp/<resource>-<device>-device.json`, the meta plugin copies it to `cni/<file>` per attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfoDirs {
    pub dp: PathBuf,
    pub cni: PathBuf,
}

impl DeviceInfoDirs {
    /// `<root>/dp` and `<root>/cni`.
    pub fn under(root: &Path) -> Self {
        Self {
            dp: root.join("dp"),
            cni: root.join("cni"),
        }
    }

    /// The device plugin's file for `device` of `resource` (every `/` becomes `-`).
    pub fn dp_file(&self, resource: &str, device: &str) -> PathBuf {
        self.dp.join(format!(
            "{}-{}-device.json",
            resource.replace('/', "-"),
            device.replace('/', "-")
        ))
    }

    /// The CNI file of one attachment: `<network>-<containerID>_<ifname>` with `/` → `-`.
    pub fn cni_file(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.cni
            .join(format!("{network}-{container_id}_{ifname}").replace('/', "-"))
    }
}

/// The sorted, unique resources the attachments need.
pub fn wanted_resources(atts: &[Attachment]) -> Vec<String> {
    let mut v: Vec<String> = atts
        .iter()
        .filter_map(|a| a.resource_name.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Gives every attachment with a resource its device (see the module docs for the order) and
/// injects it into the attachment's config and capability arguments. `info` enables the
/// device-info file per attachment.
pub fn assign(
    atts: &mut [Attachment],
    devices: &DeviceMap,
    pod: &str,
    container_id: &str,
    info: Option<&DeviceInfoDirs>,
) -> Result<(), EngineError> {
    let mut pools: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (resource, ids) in devices {
        let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        pools.insert(resource.as_str(), ids);
    }
    // Counted first, so that the error names every network that asks for the resource.
    let mut needed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in atts.iter() {
        if let Some(r) = &a.resource_name {
            needed
                .entry(r.as_str())
                .or_default()
                .push(a.network.as_str());
        }
    }
    for (resource, networks) in &needed {
        let available = pools.get(resource).map_or(0, Vec::len);
        if networks.len() > available {
            return Err(EngineError::TooFewDevices {
                pod: pod.to_owned(),
                resource: (*resource).to_owned(),
                needed: networks.len(),
                available,
                networks: networks.join(", "),
            });
        }
    }
    let mut next: BTreeMap<String, usize> = BTreeMap::new();
    for a in atts.iter_mut() {
        let Some(resource) = a.resource_name.clone() else {
            continue;
        };
        let index = next.entry(resource.clone()).or_default();
        let id = pools[resource.as_str()][*index].to_owned();
        *index += 1;
        a.config = inject_device_id(&a.config, &id);
        a.runtime_config
            .insert(DEVICE_ID_CAPABILITY.into(), Value::String(id.clone()));
        let device_info_file = info.map(|d| d.cni_file(&a.network, container_id, &a.ifname));
        if let Some(f) = &device_info_file {
            a.runtime_config.insert(
                DEVICE_INFO_CAPABILITY.into(),
                Value::String(f.display().to_string()),
            );
        }
        a.device = Some(AssignedDevice {
            resource_name: resource,
            device_id: id,
            device_info_file,
        });
    }
    Ok(())
}

/// A copy of `config` with `deviceID` and `pciBusID` set at the top level of every plugin (and of
/// the document of a single conf).
pub fn inject_device_id(config: &NetworkConfig, id: &str) -> NetworkConfig {
    let mut doc = config.raw.clone();
    let set = |plugin: &mut Map<String, Value>| {
        plugin.insert("deviceID".into(), Value::String(id.to_owned()));
        plugin.insert("pciBusID".into(), Value::String(id.to_owned()));
    };
    if config.is_list {
        if let Some(Value::Array(plugins)) = doc.get_mut("plugins") {
            for p in plugins.iter_mut().filter_map(Value::as_object_mut) {
                set(p);
            }
        }
    } else {
        set(&mut doc);
    }
    NetworkConfig::from_value(Value::Object(doc)).unwrap_or_else(|_| config.clone())
}

/// Copies the device plugin's device-info file of `device` to its CNI path before the delegate
/// runs. A device plugin that writes no file is normal (the spec makes it optional), so a
/// missing source is not an error: the delegate may still write the CNI file itself.
pub fn copy_device_info(dirs: &DeviceInfoDirs, device: &AssignedDevice) -> std::io::Result<bool> {
    let Some(dest) = &device.device_info_file else {
        return Ok(false);
    };
    let src = dirs.dp_file(&device.resource_name, &device.device_id);
    let bytes = match std::fs::read(&src) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(dest, bytes)?;
    Ok(true)
}

/// The device-info document of an attachment, for its network-status entry; `None` when there is
/// no file or it is not JSON (logged: a broken file must not fail the pod).
pub fn read_device_info(device: &AssignedDevice) -> Option<Value> {
    let path = device.device_info_file.as_ref()?;
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.is_object() => Some(v),
        _ => {
            tracing::warn!(
                "device-info file {} is not a JSON object; left out of network-status",
                path.display()
            );
            None
        }
    }
}

/// Removes an attachment's CNI device-info file (DEL, rollback); a missing file is fine.
pub fn remove_device_info(device: &AssignedDevice) -> std::io::Result<()> {
    match device.device_info_file.as_ref().map(std::fs::remove_file) {
        Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Asks `lookup` for the pod's devices when some attachment needs one, and assigns them.
pub(crate) fn resolve_devices(
    lookup: Option<&dyn DeviceLookup>,
    pod: Option<&PodRef>,
    label: &str,
    container_id: &str,
    info: Option<&DeviceInfoDirs>,
    atts: &mut [Attachment],
) -> Result<(), EngineError> {
    let wanted = wanted_resources(atts);
    let Some(first) = wanted.first() else {
        return Ok(());
    };
    let network = || {
        atts.iter()
            .find(|a| a.resource_name.as_deref() == Some(first))
            .map(|a| a.network.clone())
            .unwrap_or_default()
    };
    let (Some(lookup), Some(pod)) = (lookup, pod) else {
        return Err(EngineError::Devices {
            pod: label.to_owned(),
            network: network(),
            resource: first.clone(),
            source: DeviceError::Unavailable(
                "the network needs a device but no device source (kubelet) is configured for this call".into(),
            ),
        });
    };
    let devices = lookup
        .devices(pod, &wanted)
        .map_err(|source| EngineError::Devices {
            pod: label.to_owned(),
            network: network(),
            resource: wanted.join(", "),
            source,
        })?;
    tracing::debug!(pod = %label, devices = ?devices, "devices allocated to the pod");
    assign(atts, &devices, label, container_id, info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn att(network: &str, ifname: &str, resource: Option<&str>, config: Value) -> Attachment {
        Attachment {
            network: network.into(),
            ifname: ifname.into(),
            config: NetworkConfig::from_value(config).unwrap(),
            is_default: ifname == "eth0",
            runtime_config: Map::new(),
            selection: None,
            resource_name: resource.map(str::to_owned),
            device: None,
            cni_args: Vec::new(),
            auxiliary: false,
        }
    }

    fn sriov() -> Value {
        json!({"cniVersion": "1.0.0", "name": "s", "type": "sriov", "vlan": 100})
    }

    fn devices(pairs: &[(&str, &[&str])]) -> DeviceMap {
        pairs
            .iter()
            .map(|(r, ids)| (r.to_string(), ids.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn two_networks_on_one_resource_get_sorted_distinct_devices() {
        let mut atts = vec![
            att(
                "cluster",
                "eth0",
                None,
                json!({"cniVersion": "1.0.0", "type": "ptp"}),
            ),
            att("blue/a", "net1", Some("intel.com/vf"), sriov()),
            att("blue/b", "net2", Some("intel.com/vf"), sriov()),
            att("blue/c", "net3", Some("intel.com/other"), sriov()),
        ];
        // The kubelet's order is not ours: the mapping follows the sorted IDs.
        let d = devices(&[
            ("intel.com/vf", &["0000:03:02.1", "0000:03:02.0"]),
            ("intel.com/other", &["0000:05:00.4"]),
        ]);
        assign(&mut atts, &d, "blue/p", "cid", None).unwrap();
        let ids: Vec<Option<String>> = atts
            .iter()
            .map(|a| a.device.as_ref().map(|d| d.device_id.clone()))
            .collect();
        assert_eq!(
            ids,
            vec![
                None,
                Some("0000:03:02.0".into()),
                Some("0000:03:02.1".into()),
                Some("0000:05:00.4".into())
            ]
        );
        assert!(atts[0].config.raw.get("deviceID").is_none());
        assert_eq!(atts[1].config.raw["deviceID"], "0000:03:02.0");
        assert_eq!(atts[1].config.raw["pciBusID"], "0000:03:02.0");
        assert_eq!(atts[1].config.raw["vlan"], 100, "the NAD's keys stay");
        assert_eq!(atts[2].runtime_config["deviceID"], "0000:03:02.1");
        // Same allocation in another order: same mapping.
        let mut again = atts.clone();
        for a in &mut again {
            a.device = None;
        }
        let d2 = devices(&[
            ("intel.com/other", &["0000:05:00.4"]),
            (
                "intel.com/vf",
                &["0000:03:02.0", "0000:03:02.1", "0000:03:02.0"],
            ),
        ]);
        assign(&mut again, &d2, "blue/p", "cid", None).unwrap();
        assert_eq!(again[2].device.as_ref().unwrap().device_id, "0000:03:02.1");
    }

    #[test]
    fn more_networks_than_devices_names_pod_resource_and_counts() {
        let mut atts = vec![
            att("blue/a", "net1", Some("intel.com/vf"), sriov()),
            att("blue/b", "net2", Some("intel.com/vf"), sriov()),
        ];
        let before = atts.clone();
        let d = devices(&[("intel.com/vf", &["0000:03:02.0"])]);
        let e = assign(&mut atts, &d, "blue/p", "cid", None).unwrap_err();
        let msg = e.to_string();
        for part in [
            "blue/p",
            "intel.com/vf",
            "2 networks",
            "1 device",
            "blue/a, blue/b",
        ] {
            assert!(msg.contains(part), "{part:?} missing from {msg}");
        }
        assert_eq!(e.code(), plexus_cni::codes::DEVICES);
        assert_eq!(atts, before, "nothing assigned on error");
        // No device at all for the resource.
        let e = assign(&mut atts, &DeviceMap::new(), "blue/p", "cid", None).unwrap_err();
        assert!(e.to_string().contains("allocated 0 device"), "{e}");
    }

    #[test]
    fn conflist_gets_the_device_in_every_plugin() {
        let list = json!({"cniVersion": "1.0.0", "name": "s", "plugins": [
            {"type": "sriov", "capabilities": {"deviceID": true}},
            {"type": "tuning"}
        ]});
        let mut atts = vec![att("blue/a", "net1", Some("r/x"), list)];
        let dirs = DeviceInfoDirs::under(Path::new("/run/devinfo"));
        assign(
            &mut atts,
            &devices(&[("r/x", &["0000:01:00.2"])]),
            "blue/p",
            "cid",
            Some(&dirs),
        )
        .unwrap();
        let a = &atts[0];
        for i in 0..2 {
            let stdin = a.config.plugin_stdin(
                i,
                plexus_cni::CniVersion::V1_0_0,
                None,
                Some(&a.runtime_config),
            );
            assert_eq!(stdin["deviceID"], "0000:01:00.2");
            assert_eq!(stdin["pciBusID"], "0000:01:00.2");
            // runtimeConfig only where the capability is declared.
            assert_eq!(
                stdin.pointer("/runtimeConfig/deviceID").is_some(),
                i == 0,
                "{stdin}"
            );
        }
        assert_eq!(
            a.runtime_config["CNIDeviceInfoFile"],
            "/run/devinfo/cni/blue-a-cid_net1"
        );
    }

    #[test]
    fn the_fallback_is_asked_only_for_what_the_primary_lacks() {
        use crate::testing::FakeDevices;
        let pod = PodRef {
            namespace: "blue".into(),
            name: "p".into(),
            uid: "u".into(),
        };
        let (kubelet, dra) = (FakeDevices::default(), FakeDevices::default());
        kubelet.allocate("blue/p", "dp/vf", &["0000:01:00.1"]);
        dra.allocate("blue/p", "dra/nic", &["0000:02:00.1"]);
        let both = Fallback {
            primary: &kubelet,
            fallback: Some(&dra),
        };
        let wanted = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Everything from the device plugins: DRA is not asked.
        let m = both.devices(&pod, &wanted(&["dp/vf"])).unwrap();
        assert_eq!(m["dp/vf"], ["0000:01:00.1"]);
        assert!(dra.log().is_empty());
        // A DRA resource: asked for that one only.
        let m = both.devices(&pod, &wanted(&["dp/vf", "dra/nic"])).unwrap();
        assert_eq!(m["dra/nic"], ["0000:02:00.1"]);
        assert_eq!(dra.log(), ["blue/p wanted=dra/nic"]);
        // No kubelet at all: DRA alone serves a DRA-only pod...
        *kubelet.fail.lock().unwrap() = Some(DeviceError::Unavailable("no kubelet".into()));
        let m = both.devices(&pod, &wanted(&["dra/nic"])).unwrap();
        assert_eq!(m["dra/nic"], ["0000:02:00.1"]);
        // ...but a device-plugin resource then gets the kubelet's error.
        let e = both
            .devices(&pod, &wanted(&["dp/vf", "dra/nic"]))
            .unwrap_err();
        assert_eq!(e, DeviceError::Unavailable("no kubelet".into()));
        // DRA failing for good (a 403) leaves the kubelet's error too...
        *dra.fail.lock().unwrap() = Some(DeviceError::Unavailable("forbidden".into()));
        let e = both.devices(&pod, &wanted(&["dra/nic"])).unwrap_err();
        assert_eq!(e, DeviceError::Unavailable("no kubelet".into()));
        // ...but an API server that cannot be reached now is "try again later", naming both.
        *dra.fail.lock().unwrap() = Some(DeviceError::Busy("API unreachable".into()));
        for w in [&["dra/nic"][..], &["dp/vf", "dra/nic"]] {
            let e = both.devices(&pod, &wanted(w)).unwrap_err();
            let DeviceError::Busy(msg) = &e else {
                panic!("{w:?}: {e:?}");
            };
            assert!(
                msg.contains("API unreachable") && msg.contains("no kubelet"),
                "{msg}"
            );
        }
        // A busy kubelet stays the kubelet's busy error.
        *kubelet.fail.lock().unwrap() = Some(DeviceError::Busy("kubelet busy".into()));
        let e = both.devices(&pod, &wanted(&["dra/nic"])).unwrap_err();
        assert_eq!(e, DeviceError::Busy("kubelet busy".into()));
    }

    #[test]
    fn device_info_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = DeviceInfoDirs::under(dir.path());
        std::fs::create_dir_all(&dirs.dp).unwrap();
        let doc =
            json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:02.3"}});
        let dp = dirs.dp_file("intel.com/sriov_net_A", "0000:03:02.3");
        assert_eq!(
            dp.file_name().unwrap(),
            "intel.com-sriov_net_A-0000:03:02.3-device.json"
        );
        std::fs::write(&dp, doc.to_string()).unwrap();
        let device = AssignedDevice {
            resource_name: "intel.com/sriov_net_A".into(),
            device_id: "0000:03:02.3".into(),
            device_info_file: Some(dirs.cni_file("blue/a", "cid", "net1")),
        };
        assert!(copy_device_info(&dirs, &device).unwrap());
        assert_eq!(read_device_info(&device), Some(doc));
        remove_device_info(&device).unwrap();
        assert!(!device.device_info_file.as_ref().unwrap().exists());
        remove_device_info(&device).unwrap();
        assert_eq!(read_device_info(&device), None);
        // No device-plugin file: nothing copied, no error.
        let other = AssignedDevice {
            device_id: "0000:03:02.4".into(),
            ..device
        };
        assert!(!copy_device_info(&dirs, &other).unwrap());
    }
}
