//! Pools: which discovered VFs each `resourceList` entry advertises, and how the kubelet sees
//! them. A VF goes to the first pool (in file order) one of whose selectors it matches, so two
//! pools never advertise the same VF (the reference would advertise it twice and let the kubelet
//! hand one VF to two pods).

use crate::config::{PoolConfig, ResourceConfig};
use crate::proto;
use crate::selector::{Vf, first_match};

/// The kubelet's health strings.
pub const HEALTHY: &str = "Healthy";
/// See [`HEALTHY`].
pub const UNHEALTHY: &str = "Unhealthy";

/// A VF in a pool, with what its matching selector asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDevice {
    /// The VF.
    pub vf: Vf,
    /// `needVhostNet` of the selector that took it.
    pub vhost_net: bool,
}

impl PoolDevice {
    /// The device as ListAndWatch reports it: ID = PCI address, Unhealthy when its PF is down,
    /// topology = its NUMA node (unless the pool excludes topology or the node is unknown).
    pub fn to_proto(&self, exclude_topology: bool) -> proto::Device {
        proto::Device {
            id: self.vf.pci_address.clone(),
            health: if self.vf.pf_link_up {
                HEALTHY
            } else {
                UNHEALTHY
            }
            .to_owned(),
            topology: match self.vf.numa_node {
                Some(n) if !exclude_topology => Some(proto::TopologyInfo {
                    nodes: vec![proto::NumaNode { id: n }],
                }),
                _ => None,
            },
        }
    }
}

/// Splits `vfs` into one device list per pool of `config` (same order as `config.pools`), each
/// sorted by PCI address.
pub fn assign(config: &ResourceConfig, vfs: &[Vf]) -> Vec<Vec<PoolDevice>> {
    let mut out: Vec<Vec<PoolDevice>> = vec![Vec::new(); config.pools.len()];
    for vf in vfs {
        let taken = config
            .pools
            .iter()
            .enumerate()
            .find_map(|(i, p)| first_match(&p.selectors, vf).map(|s| (i, s)));
        if let Some((i, sel)) = taken {
            out[i].push(PoolDevice {
                vf: vf.clone(),
                vhost_net: sel.need_vhost_net,
            });
        }
    }
    for list in &mut out {
        list.sort_by(|a, b| a.vf.pci_address.cmp(&b.vf.pci_address));
    }
    out
}

/// The ListAndWatch answer for a pool.
pub fn advertised(pool: &PoolConfig, devices: &[PoolDevice]) -> Vec<proto::Device> {
    devices
        .iter()
        .map(|d| d.to_proto(pool.exclude_topology))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::tests::vf;
    use serde_json::json;

    fn config(doc: serde_json::Value) -> ResourceConfig {
        ResourceConfig::from_value(&doc, "intel.com").unwrap()
    }

    #[test]
    fn a_vf_goes_to_the_first_pool_that_matches() {
        let c = config(json!({"resourceList": [
            {"resourceName": "low", "selectors": {"pfNames": ["ens1f0#0-1"]}},
            {"resourceName": "all", "selectors": [{"pfNames": ["none"]}, {"vendors": ["8086"], "needVhostNet": true}]}
        ]}));
        let vfs: Vec<Vf> = (0..4).rev().map(vf).collect();
        let pools = assign(&c, &vfs);
        let ids = |p: &[PoolDevice]| -> Vec<u32> { p.iter().map(|d| d.vf.index).collect() };
        assert_eq!(ids(&pools[0]), [0, 1], "sorted by address");
        assert_eq!(ids(&pools[1]), [2, 3]);
        assert!(pools[1].iter().all(|d| d.vhost_net));
        assert!(pools[0].iter().all(|d| !d.vhost_net));
    }

    #[test]
    fn health_follows_the_pf_link_and_topology_the_numa_node() {
        let c = config(json!({"resourceList": [
            {"resourceName": "a", "selectors": {}},
        ]}));
        let mut down = vf(1);
        down.pf_link_up = false;
        down.numa_node = None;
        let pools = assign(&c, &[vf(0), down]);
        let adv = advertised(&c.pools[0], &pools[0]);
        assert_eq!(adv[0].id, "0000:3b:02.0");
        assert_eq!(adv[0].health, HEALTHY);
        assert_eq!(adv[0].topology.as_ref().unwrap().nodes[0].id, 0);
        assert_eq!(adv[1].health, UNHEALTHY);
        assert!(adv[1].topology.is_none(), "no NUMA node, no topology");
        let mut excluded = c.pools[0].clone();
        excluded.exclude_topology = true;
        assert!(advertised(&excluded, &pools[0])[0].topology.is_none());
    }
}
