//! Discovery of the node's VFs from sysfs (through the shared `plexus-sysfs` model): every
//! SR-IOV PF, each of its `virtfnN`, and what the selectors and the kubelet need to know about
//! them. The device plugin never creates VFs or binds drivers (as the reference).

use crate::selector::Vf;
use plexus_sysfs::{PciDevice, Sysfs, SysfsError};

/// What one discovery pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Every readable VF, sorted by PCI address.
    pub vfs: Vec<Vf>,
    /// PFs with no VF configured (`sriov_numvfs` 0): nothing to advertise from them.
    pub pfs_without_vfs: Vec<String>,
    /// Devices skipped because sysfs could not be read (one line each); a VF removed while it
    /// is being read ends up here, and the next pass no longer sees it.
    pub skipped: Vec<String>,
}

/// Operstates of a PF whose VFs cannot pass traffic.
const DOWN: &[&str] = &["down", "lowerlayerdown", "notpresent"];

/// Reads every PF and VF under `sysfs`.
pub fn discover(sysfs: &Sysfs) -> Result<Discovery, SysfsError> {
    let mut out = Discovery::default();
    for pf in sysfs.physical_functions()? {
        match pf_vfs(sysfs, &pf, &mut out.skipped) {
            Ok(vfs) if vfs.is_empty() => out.pfs_without_vfs.push(pf.address().to_string()),
            Ok(vfs) => out.vfs.extend(vfs),
            Err(e) => out.skipped.push(format!("PF {}: {e}", pf.address())),
        }
    }
    out.vfs.sort_by(|a, b| a.pci_address.cmp(&b.pci_address));
    Ok(out)
}

fn pf_vfs(sysfs: &Sysfs, pf: &PciDevice, skipped: &mut Vec<String>) -> Result<Vec<Vf>, SysfsError> {
    let pf_name = pf.netdevs()?.into_iter().next();
    let (pf_link_up, pf_link_type) = match &pf_name {
        Some(name) => {
            let dev = sysfs.netdev(name)?;
            let state = dev.operstate()?;
            let up = !state.as_deref().is_some_and(|s| DOWN.contains(&s));
            (up, dev.link_type_name().ok())
        }
        // A PF without a netdev (bound to a userspace driver): nothing tells us its link state.
        None => (true, None),
    };
    let mut vfs = Vec::new();
    for (index, address) in pf.virtfns()? {
        let read = || -> Result<Vf, SysfsError> {
            let dev = sysfs.pci_device(address.as_str())?;
            let netdev = dev.netdevs()?.into_iter().next();
            let link_type = match &netdev {
                Some(n) => Some(sysfs.netdev(n)?.link_type_name()?),
                None => pf_link_type.clone(),
            };
            Ok(Vf {
                pci_address: address.to_string(),
                vendor: format!("{:04x}", dev.vendor_id()?),
                device: format!("{:04x}", dev.device_id()?),
                driver: dev.driver()?,
                pf_pci_address: pf.address().to_string(),
                pf_name: pf_name.clone(),
                index,
                netdev,
                link_type,
                numa_node: dev.numa_node()?.map(i64::from),
                iommu_group: dev.iommu_group()?.map(|g| g.to_string()),
                rdma: dev.rdma_devices()?,
                pf_link_up,
            })
        };
        match read() {
            Ok(vf) => vfs.push(vf),
            Err(e) => skipped.push(format!("VF {address} of PF {}: {e}", pf.address())),
        }
    }
    Ok(vfs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_sysfs::testing::{FakePf, FakeSysfs, FakeVf};

    /// Two SR-IOV PFs (one on NUMA 1 with an RDMA VF), a PF with no VF, a plain NIC.
    fn tree() -> FakeSysfs {
        FakeSysfs::builder()
            .pf(FakePf::new("0000:3b:00.0", "ens1f0")
                .vf(FakeVf::kernel("iavf", "ens1f0v0"))
                .vf(FakeVf::kernel("iavf", "ens1f0v1"))
                .vf(FakeVf::vfio(71))
                .vf(FakeVf::kernel("iavf", "ens1f0v3")))
            .pf(FakePf::new("0000:86:00.0", "ens2f0")
                .ids(0x15b3, 0x101d, 0x101e)
                .driver("mlx5_core")
                .numa_node(1)
                .vf(FakeVf::kernel("mlx5_core", "ens2f0v0").rdma("mlx5_2"))
                .vf(FakeVf::unbound()))
            .pf(FakePf::new("0000:af:00.0", "ens3f0"))
            .pf(FakePf::new("0000:05:00.0", "eno1").plain())
            .build()
            .unwrap()
    }

    #[test]
    fn finds_every_vf_with_what_the_selectors_need() {
        let fake = tree();
        let d = discover(&fake.sysfs()).unwrap();
        let addrs: Vec<&str> = d.vfs.iter().map(|v| v.pci_address.as_str()).collect();
        assert_eq!(
            addrs,
            [
                "0000:3b:02.0",
                "0000:3b:02.1",
                "0000:3b:02.2",
                "0000:3b:02.3",
                "0000:86:02.0",
                "0000:86:02.1"
            ]
        );
        assert_eq!(d.pfs_without_vfs, ["0000:af:00.0"], "plain NIC is no PF");
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        let v0 = &d.vfs[0];
        assert_eq!(
            v0,
            &Vf {
                pci_address: "0000:3b:02.0".into(),
                vendor: "8086".into(),
                device: "1889".into(),
                driver: Some("iavf".into()),
                pf_pci_address: "0000:3b:00.0".into(),
                pf_name: Some("ens1f0".into()),
                index: 0,
                netdev: Some("ens1f0v0".into()),
                link_type: Some("ether".into()),
                numa_node: Some(0),
                iommu_group: None,
                rdma: vec![],
                pf_link_up: true,
            }
        );
        let vfio = &d.vfs[2];
        assert!(vfio.is_vfio());
        assert_eq!(vfio.index, 2);
        assert_eq!(vfio.netdev, None);
        assert_eq!(vfio.iommu_group.as_deref(), Some("71"));
        assert_eq!(
            vfio.link_type.as_deref(),
            Some("ether"),
            "the PF's link type"
        );
        let mlx = &d.vfs[4];
        assert_eq!((mlx.vendor.as_str(), mlx.device.as_str()), ("15b3", "101e"));
        assert_eq!(mlx.rdma, ["mlx5_2"]);
        assert_eq!(mlx.numa_node, Some(1));
        assert_eq!(mlx.pf_name.as_deref(), Some("ens2f0"));
        assert_eq!(d.vfs[5].driver, None, "unbound");
    }

    #[test]
    fn a_pf_that_is_down_makes_its_vfs_unhealthy_and_changes_are_seen() {
        let fake = FakeSysfs::builder()
            .pf(FakePf::new("0000:3b:00.0", "ens1f0")
                .operstate("down")
                .vf(FakeVf::kernel("iavf", "a0")))
            .pf(FakePf::new("0000:3b:00.1", "ens1f1")
                .numa_node(-1)
                .vf(FakeVf::kernel("iavf", "b0")))
            .build()
            .unwrap();
        let d = discover(&fake.sysfs()).unwrap();
        assert!(!d.vfs[0].pf_link_up);
        assert!(d.vfs[1].pf_link_up);
        assert_eq!(d.vfs[1].numa_node, None, "-1 is no NUMA node");
        // The VF's netdev leaves (moved into a pod): still the same VF, without a netdev.
        fake.remove_netdev(&d.vfs[1].pci_address, "b0").unwrap();
        let again = discover(&fake.sysfs()).unwrap();
        assert_eq!(again.vfs.len(), 2);
        assert_eq!(again.vfs[1].netdev, None);
    }

    #[test]
    fn a_vf_that_vanished_while_read_is_skipped_not_fatal() {
        let fake = tree();
        // The VF's device is gone but the PF's virtfn link still points at it.
        std::fs::remove_file(fake.root().join("bus/pci/devices/0000:3b:02.1")).unwrap();
        let d = discover(&fake.sysfs()).unwrap();
        assert_eq!(d.vfs.len(), 5);
        assert_eq!(d.skipped.len(), 1, "{:?}", d.skipped);
        assert!(d.skipped[0].contains("0000:3b:02.1"));
    }
}
