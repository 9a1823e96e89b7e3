//! A read-only model of the PCI / SR-IOV parts of sysfs, rooted at a configurable directory
//! (`/sys` on a node, a temporary tree in tests).
//!
//! It answers what the SR-IOV CNI plugin and the device plugin both need: a PCI device by address
//! ([`Sysfs::pci_device`]) with its vendor/device IDs, driver, NUMA node, IOMMU group, netdevs and
//! RDMA devices; the PF of a VF (`physfn`) and the VFs of a PF (`virtfnN`, with their index);
//! the SR-IOV capable devices of the machine ([`Sysfs::physical_functions`]); and a network
//! interface's link type and operstate ([`Sysfs::netdev`]).
//!
//! Only the kernel's layout is relied on (`bus/pci/devices/<bdf>` links, and inside a device the
//! `physfn`, `virtfnN`, `driver`, `iommu_group` links and the `net/`, `infiniband/`, `uio/`
//! directories), so a tree built by [`testing::FakeSysfs`] behaves exactly as a real one.

mod address;
mod device;
mod error;
mod netdev;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use address::PciAddress;
pub use device::{DriverKind, PciDevice, USERSPACE_DRIVERS};
pub use error::SysfsError;
pub use netdev::NetDev;

use std::path::{Path, PathBuf};

/// The environment variable that re-roots sysfs for tests (see docs/sriov.md, test hooks).
pub const ROOT_ENV: &str = "PLEXUS_SYSFS_ROOT";

/// sysfs under a root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::new("/sys")
    }
}

impl Sysfs {
    /// sysfs rooted at `root` (the directory that holds `bus/`, `class/`, `devices/`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$PLEXUS_SYSFS_ROOT` when set and not empty, else `/sys`.
    pub fn from_env() -> Self {
        match std::env::var_os(ROOT_ENV) {
            Some(root) if !root.is_empty() => Self::new(root),
            _ => Self::default(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pci_devices_dir(&self) -> PathBuf {
        self.root.join("bus/pci/devices")
    }

    /// The PCI device at `address` (any accepted spelling, see [`PciAddress::parse`]).
    pub fn pci_device(&self, address: &str) -> Result<PciDevice, SysfsError> {
        let address = PciAddress::parse(address)?;
        let dir = self.pci_devices_dir().join(address.as_str());
        if !dir.is_dir() {
            return Err(SysfsError::NoSuchDevice {
                address: address.to_string(),
                root: self.root.clone(),
            });
        }
        Ok(PciDevice::new(self.clone(), address, dir))
    }

    /// Every PCI device, sorted by address.
    pub fn pci_devices(&self) -> Result<Vec<PciDevice>, SysfsError> {
        let dir = self.pci_devices_dir();
        let mut out = Vec::new();
        for name in error::list_dir(&dir)? {
            // Entries that are not PCI addresses are not devices (nothing else lives there on a
            // real system, but a tree may be half-written while we read it).
            if let Ok(address) = PciAddress::parse(&name) {
                let path = dir.join(&name);
                out.push(PciDevice::new(self.clone(), address, path));
            }
        }
        out.sort_by(|a, b| a.address().cmp(b.address()));
        Ok(out)
    }

    /// Every SR-IOV capable device (one with `sriov_totalvfs`), i.e. the PFs, sorted by address.
    pub fn physical_functions(&self) -> Result<Vec<PciDevice>, SysfsError> {
        let mut out = Vec::new();
        for dev in self.pci_devices()? {
            if dev.is_sriov_capable() {
                out.push(dev);
            }
        }
        Ok(out)
    }

    /// The network interface `name` in this (the root's) network namespace: `class/net/<name>`.
    pub fn netdev(&self, name: &str) -> Result<NetDev, SysfsError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(SysfsError::NoSuchNetdev {
                name: name.to_owned(),
                root: self.root.clone(),
            });
        }
        let dir = self.root.join("class/net").join(name);
        if !dir.is_dir() {
            return Err(SysfsError::NoSuchNetdev {
                name: name.to_owned(),
                root: self.root.clone(),
            });
        }
        Ok(NetDev::new(self.clone(), name.to_owned(), dir))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{FakePf, FakeSysfs, FakeVf};
    use super::*;

    fn tree() -> FakeSysfs {
        FakeSysfs::builder()
            .pf(FakePf::new("0000:3b:00.0", "ens1f0")
                .numa_node(1)
                .total_vfs(8)
                .vf(FakeVf::kernel("iavf", "ens1f0v0"))
                .vf(FakeVf::vfio(71))
                .vf(FakeVf::uio("igb_uio", "uio3"))
                .vf(FakeVf::kernel("mlx5_core", "ens1f0v3").rdma("mlx5_7")))
            .pf(FakePf::new("0000:3b:00.1", "ens1f1").numa_node(-1))
            .pf(FakePf::new("0000:05:00.0", "eno1").plain().driver("igb"))
            .pf(FakePf::new("0000:5e:00.0", "ib0")
                .ids(0x15b3, 0x101b, 0x101c)
                .driver("mlx5_core")
                .link_type(32)
                .vf(FakeVf::kernel("mlx5_core", "ib0v0").address("0000:5f:00.2")))
            .build()
            .unwrap()
    }

    #[test]
    fn pf_and_its_vfs_with_indices() {
        let t = tree();
        let s = t.sysfs();
        let pf = s.pci_device("0000:3b:00.0").unwrap();
        assert!(pf.is_sriov_capable());
        assert!(!pf.is_vf());
        assert_eq!(pf.total_vfs().unwrap(), Some(8));
        assert_eq!(pf.num_vfs().unwrap(), Some(4));
        assert_eq!(pf.netdevs().unwrap(), vec!["ens1f0"]);
        assert_eq!(pf.vendor_id().unwrap(), 0x8086);
        assert_eq!(pf.device_id().unwrap(), 0x1592);
        assert_eq!(pf.numa_node().unwrap(), Some(1));
        let vfs: Vec<_> = pf
            .virtfns()
            .unwrap()
            .into_iter()
            .map(|(i, a)| (i, a.to_string()))
            .collect();
        assert_eq!(
            vfs,
            vec![
                (0, "0000:3b:02.0".to_owned()),
                (1, "0000:3b:02.1".to_owned()),
                (2, "0000:3b:02.2".to_owned()),
                (3, "0000:3b:02.3".to_owned()),
            ]
        );
        let vf = s.pci_device("3b:02.3").unwrap();
        assert!(vf.is_vf());
        let (vpf, idx) = vf.vf_of().unwrap();
        assert_eq!((vpf.address().as_str(), idx), ("0000:3b:00.0", 3));
        assert_eq!(vf.device_id().unwrap(), 0x1889);
        assert_eq!(vf.numa_node().unwrap(), Some(1));
        assert_eq!(vf.rdma_devices().unwrap(), vec!["mlx5_7"]);
        assert!(vf.is_rdma().unwrap());
        assert_eq!(
            pf.virtfn(1).unwrap().unwrap().address().as_str(),
            "0000:3b:02.1"
        );
        assert!(pf.virtfn(9).unwrap().is_none());
    }

    #[test]
    fn drivers_classified() {
        let t = tree();
        let s = t.sysfs();
        let kind = |a: &str| s.pci_device(a).unwrap().driver_kind().unwrap();
        assert_eq!(kind("0000:3b:02.0"), DriverKind::Kernel("iavf".into()));
        assert_eq!(kind("0000:3b:02.1"), DriverKind::Vfio);
        assert_eq!(kind("0000:3b:02.2"), DriverKind::Uio("igb_uio".into()));
        assert!(kind("0000:3b:02.1").is_userspace());
        assert!(!kind("0000:3b:02.0").is_userspace());
        let vfio = s.pci_device("0000:3b:02.1").unwrap();
        assert_eq!(vfio.iommu_group().unwrap(), Some(71));
        assert!(vfio.netdevs().unwrap().is_empty());
        assert_eq!(
            s.pci_device("0000:3b:02.2").unwrap().uio_devices().unwrap(),
            vec!["uio3"]
        );
        t.set_driver("0000:3b:02.0", None).unwrap();
        assert_eq!(kind("0000:3b:02.0"), DriverKind::Unbound);
        t.set_driver("0000:3b:02.0", Some("vfio-pci")).unwrap();
        assert_eq!(kind("0000:3b:02.0"), DriverKind::Vfio);
    }

    #[test]
    fn enumeration_numa_and_link_types() {
        let t = tree();
        let s = t.sysfs();
        let pfs: Vec<_> = s
            .physical_functions()
            .unwrap()
            .iter()
            .map(|d| d.address().to_string())
            .collect();
        assert_eq!(pfs, vec!["0000:3b:00.0", "0000:3b:00.1", "0000:5e:00.0"]);
        // 1 + 4 VFs, 1, the plain NIC, 1 + 1 VF.
        assert_eq!(s.pci_devices().unwrap().len(), 9);
        assert_eq!(
            s.pci_device("0000:3b:00.1").unwrap().numa_node().unwrap(),
            None
        );
        let plain = s.pci_device("0000:05:00.0").unwrap();
        assert!(!plain.is_sriov_capable());
        assert_eq!(plain.total_vfs().unwrap(), None);
        assert!(matches!(
            plain.vf_of(),
            Err(SysfsError::NotAVirtualFunction(_))
        ));
        let ib = s.netdev("ib0").unwrap();
        assert_eq!(ib.link_type().unwrap(), 32);
        assert_eq!(ib.link_type_name().unwrap(), "infiniband");
        assert_eq!(ib.operstate().unwrap().as_deref(), Some("up"));
        let vf = s.netdev("ib0v0").unwrap();
        assert_eq!(
            vf.pci_device().unwrap().unwrap().address().as_str(),
            "0000:5f:00.2"
        );
        let (pf, idx) = vf.pci_device().unwrap().unwrap().vf_of().unwrap();
        assert_eq!((pf.address().as_str(), idx), ("0000:5e:00.0", 0));
        assert_eq!(
            s.netdev("ens1f0").unwrap().link_type_name().unwrap(),
            "ether"
        );
    }

    #[test]
    fn netdev_moves_are_seen() {
        let t = tree();
        let s = t.sysfs();
        t.remove_netdev("0000:3b:02.0", "ens1f0v0").unwrap();
        assert!(
            s.pci_device("0000:3b:02.0")
                .unwrap()
                .netdevs()
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            s.netdev("ens1f0v0"),
            Err(SysfsError::NoSuchNetdev { .. })
        ));
        t.add_netdev("0000:3b:02.0", "ens1f0v0", 1).unwrap();
        assert_eq!(
            s.pci_device("0000:3b:02.0").unwrap().netdevs().unwrap(),
            vec!["ens1f0v0"]
        );
    }

    #[test]
    fn missing_and_bad_lookups_are_typed_errors() {
        let t = tree();
        let s = t.sysfs();
        assert!(matches!(
            s.pci_device("0000:99:00.0"),
            Err(SysfsError::NoSuchDevice { .. })
        ));
        assert!(matches!(
            s.pci_device("../../etc"),
            Err(SysfsError::InvalidAddress(_))
        ));
        assert!(matches!(
            s.netdev("../x"),
            Err(SysfsError::NoSuchNetdev { .. })
        ));
        std::fs::write(t.device_dir("0000:3b:00.0").join("sriov_numvfs"), "lots\n").unwrap();
        let err = s.pci_device("0000:3b:00.0").unwrap().num_vfs().unwrap_err();
        assert!(err.to_string().contains("\"lots\""), "{err}");
        // A root with no tree at all: no devices, not an error.
        let empty = Sysfs::new(t.root().join("nothing"));
        assert!(empty.physical_functions().unwrap().is_empty());
    }

    #[test]
    fn from_env_defaults_to_sys() {
        assert_eq!(Sysfs::default().root(), Path::new("/sys"));
    }
}
