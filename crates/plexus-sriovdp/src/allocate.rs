//! What Allocate and GetPreferredAllocation answer (pure: no I/O).

use crate::config::PoolConfig;
use crate::pool::PoolDevice;
use crate::proto;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// The NPWG device-info spec version of the files written.
pub const DEVICE_INFO_VERSION: &str = "1.1.0";
const VFIO_CONTAINER: &str = "/dev/vfio/vfio";
const VHOST_NET: &str = "/dev/vhost-net";
const TUN: &str = "/dev/net/tun";

/// `PCIDEVICE_<PREFIX>_<NAME>` for `prefix/name`, as the reference spells it (upper case, `.`
/// and `/` as `_`): `intel.com/sriov_net_a` → `PCIDEVICE_INTEL_COM_SRIOV_NET_A`.
pub fn env_name(resource: &str) -> String {
    format!("PCIDEVICE_{}", resource.replace(['.', '/'], "_")).to_ascii_uppercase()
}

/// The device-info document (NPWG device-info spec 1.1.0, type `pci`) of a VF.
pub fn device_info(d: &PoolDevice) -> Value {
    let mut pci = json!({
        "pci-address": d.vf.pci_address,
        "pf-pci-address": d.vf.pf_pci_address,
    });
    if let Some(r) = d.vf.rdma.first() {
        pci["rdma-device"] = json!(r);
    }
    if d.vhost_net {
        pci["vhost-net"] = json!(VHOST_NET);
    }
    json!({"type": "pci", "version": DEVICE_INFO_VERSION, "pci": pci})
}

/// A device ID the kubelet asked for that the pool does not hold.
#[derive(Debug, thiserror::Error)]
#[error("device {id} is not in pool {resource}")]
pub struct UnknownDevice {
    /// The requested ID.
    pub id: String,
    /// The pool's resource.
    pub resource: String,
}

/// The response for one container asking for `ids` of pool `pool` (advertised as `resource`):
/// the `PCIDEVICE_*` env (comma-joined addresses, in the order asked) and its `_INFO` JSON, and
/// the device nodes of vfio VFs and of `needVhostNet` selectors.
pub fn container_response(
    resource: &str,
    pool: &PoolConfig,
    devices: &[PoolDevice],
    ids: &[String],
) -> Result<(proto::ContainerAllocateResponse, Vec<PoolDevice>), UnknownDevice> {
    let by_id: HashMap<&str, &PoolDevice> = devices
        .iter()
        .map(|d| (d.vf.pci_address.as_str(), d))
        .collect();
    let mut chosen = Vec::new();
    for id in ids {
        let d = by_id.get(id.as_str()).ok_or_else(|| UnknownDevice {
            id: id.clone(),
            resource: resource.to_owned(),
        })?;
        chosen.push((*d).clone());
    }
    let mut specs: Vec<proto::DeviceSpec> = Vec::new();
    let mut add_spec = |path: String| {
        if !specs.iter().any(|s| s.host_path == path) {
            specs.push(proto::DeviceSpec {
                container_path: path.clone(),
                host_path: path,
                permissions: "rw".into(),
            });
        }
    };
    let mut info = serde_json::Map::new();
    for d in &chosen {
        let mut providers = json!({"generic": {"deviceID": d.vf.pci_address}});
        if d.vf.is_vfio() {
            add_spec(VFIO_CONTAINER.into());
            let mut vfio = json!({"mount": VFIO_CONTAINER});
            if let Some(g) = &d.vf.iommu_group {
                let dev = format!("/dev/vfio/{g}");
                add_spec(dev.clone());
                vfio["dev-mount"] = json!(dev);
            }
            providers["vfio"] = vfio;
        }
        if d.vhost_net {
            add_spec(VHOST_NET.into());
            add_spec(TUN.into());
            providers["vhost"] = json!({"net-mount": VHOST_NET, "tun-mount": TUN});
        }
        if let Some(r) = d.vf.rdma.first() {
            providers["rdma"] = json!({"rdma-device": r});
        }
        let extra = pool.additional_info_for(&d.vf.pci_address);
        if !extra.is_empty() {
            providers["extra"] = json!(extra);
        }
        info.insert(d.vf.pci_address.clone(), providers);
    }
    let name = env_name(resource);
    let mut envs = HashMap::new();
    envs.insert(name.clone(), ids.join(","));
    envs.insert(format!("{name}_INFO"), Value::Object(info).to_string());
    Ok((
        proto::ContainerAllocateResponse {
            envs,
            devices: specs,
            ..Default::default()
        },
        chosen,
    ))
}

/// GetPreferredAllocation for one container. The kubelet offers only the devices aligned with its
/// topology hint; among them this prefers one NUMA node: that of the first `must_include` device
/// with one, else the node holding the most offered devices (lowest on a tie). Then, in order:
/// `must_include`, the other devices of that node, the rest; each group by PCI address.
pub fn preferred(
    available: &[String],
    must_include: &[String],
    size: usize,
    numa_of: impl Fn(&str) -> Option<i64>,
) -> Vec<String> {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for id in available {
        if let Some(n) = numa_of(id) {
            *counts.entry(n).or_default() += 1;
        }
    }
    let node = must_include.iter().find_map(|id| numa_of(id)).or_else(|| {
        // Most devices first, then the lowest node.
        counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(n, _)| *n)
    });
    let mut out: Vec<String> = Vec::new();
    for id in must_include {
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    let mut rest: Vec<&String> = available.iter().filter(|id| !out.contains(id)).collect();
    rest.sort_by_key(|id| (node.is_none() || numa_of(id) != node, (*id).clone()));
    out.extend(rest.into_iter().cloned());
    out.truncate(size.max(must_include.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResourceConfig;
    use crate::pool::assign;
    use crate::selector::tests::vf;

    fn pool(extra: Value) -> (PoolConfig, Vec<PoolDevice>) {
        let mut entry = json!({"resourceName": "sriov_net_a", "selectors": [
            {"drivers": ["vfio-pci"]}, {"pfNames": ["ens1f0#2"], "needVhostNet": true}, {}]});
        entry
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let c = ResourceConfig::from_value(&json!({"resourceList": [entry]}), "intel.com").unwrap();
        let mut vfio = vf(1);
        vfio.driver = Some("vfio-pci".into());
        vfio.netdev = None;
        let mut rdma = vf(3);
        rdma.rdma = vec!["mlx5_3".into()];
        let devices = assign(&c, &[vf(0), vfio, vf(2), rdma]).remove(0);
        (c.pools[0].clone(), devices)
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn env_names_follow_the_reference() {
        assert_eq!(
            env_name("intel.com/sriov_net_A"),
            "PCIDEVICE_INTEL_COM_SRIOV_NET_A"
        );
    }

    #[test]
    fn a_kernel_vf_gets_only_env() {
        let (p, devices) = pool(json!({}));
        let (r, chosen) = container_response(
            "intel.com/sriov_net_a",
            &p,
            &devices,
            &ids(&["0000:3b:02.0"]),
        )
        .unwrap();
        assert_eq!(chosen.len(), 1);
        assert_eq!(r.envs["PCIDEVICE_INTEL_COM_SRIOV_NET_A"], "0000:3b:02.0");
        let info: Value =
            serde_json::from_str(&r.envs["PCIDEVICE_INTEL_COM_SRIOV_NET_A_INFO"]).unwrap();
        assert_eq!(
            info,
            json!({"0000:3b:02.0": {"generic": {"deviceID": "0000:3b:02.0"}}})
        );
        assert!(r.devices.is_empty() && r.mounts.is_empty());
    }

    #[test]
    fn vfio_vfs_get_the_vfio_devices_and_vhost_selectors_vhost_net() {
        let (p, devices) = pool(json!({"additionalInfo": {"*": {"site": "x"}}}));
        let asked = ids(&["0000:3b:02.2", "0000:3b:02.1"]);
        let (r, _) = container_response("intel.com/sriov_net_a", &p, &devices, &asked).unwrap();
        assert_eq!(
            r.envs["PCIDEVICE_INTEL_COM_SRIOV_NET_A"],
            "0000:3b:02.2,0000:3b:02.1"
        );
        let paths: Vec<(&str, &str, &str)> = r
            .devices
            .iter()
            .map(|s| {
                (
                    s.host_path.as_str(),
                    s.container_path.as_str(),
                    s.permissions.as_str(),
                )
            })
            .collect();
        assert_eq!(
            paths,
            [
                ("/dev/vhost-net", "/dev/vhost-net", "rw"),
                ("/dev/net/tun", "/dev/net/tun", "rw"),
                ("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"),
                ("/dev/vfio/41", "/dev/vfio/41", "rw"),
            ]
        );
        let info: Value =
            serde_json::from_str(&r.envs["PCIDEVICE_INTEL_COM_SRIOV_NET_A_INFO"]).unwrap();
        assert_eq!(
            info["0000:3b:02.1"]["vfio"],
            json!({"mount": "/dev/vfio/vfio", "dev-mount": "/dev/vfio/41"})
        );
        assert_eq!(info["0000:3b:02.2"]["vhost"]["net-mount"], "/dev/vhost-net");
        assert_eq!(info["0000:3b:02.2"]["extra"], json!({"site": "x"}));
    }

    #[test]
    fn an_unknown_device_is_refused() {
        let (p, devices) = pool(json!({}));
        let e =
            container_response("intel.com/a", &p, &devices, &ids(&["0000:99:00.1"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "device 0000:99:00.1 is not in pool intel.com/a"
        );
    }

    #[test]
    fn device_info_documents() {
        let (_, devices) = pool(json!({}));
        assert_eq!(
            device_info(&devices[0]),
            json!({"type": "pci", "version": "1.1.0",
                   "pci": {"pci-address": "0000:3b:02.0", "pf-pci-address": "0000:3b:00.0"}})
        );
        assert_eq!(
            device_info(&devices[2])["pci"]["vhost-net"],
            "/dev/vhost-net"
        );
        assert_eq!(device_info(&devices[3])["pci"]["rdma-device"], "mlx5_3");
    }

    #[test]
    fn preferred_allocation_keeps_to_one_numa_node() {
        let numa = |id: &str| -> Option<i64> {
            match id {
                "a0" | "a1" => Some(0),
                "b0" | "b1" | "b2" => Some(1),
                _ => None,
            }
        };
        let avail = ids(&["b2", "a1", "x", "a0", "b1", "b0"]);
        // No must-include: the node with the most devices.
        assert_eq!(preferred(&avail, &[], 2, numa), ["b0", "b1"]);
        assert_eq!(preferred(&avail, &[], 4, numa), ["b0", "b1", "b2", "a0"]);
        // A must-include device pins its node.
        assert_eq!(preferred(&avail, &ids(&["a1"]), 2, numa), ["a1", "a0"]);
        assert_eq!(
            preferred(&avail, &ids(&["a1"]), 3, numa),
            ["a1", "a0", "b0"]
        );
        // No NUMA information at all: by address.
        assert_eq!(preferred(&ids(&["z", "y"]), &[], 1, numa), ["y"]);
        // Never fewer than must-include.
        assert_eq!(preferred(&avail, &ids(&["x", "b2"]), 1, numa), ["x", "b2"]);
    }
}
