//! Fake sysfs trees for tests: a builder that lays out, in a temporary directory, the same files
//! and links the kernel shows for PFs, their VFs (kernel-driver with netdevs, `vfio-pci` with an
//! IOMMU group, UIO), NUMA nodes, RDMA devices and plain (non-SR-IOV) NICs. Links are relative, so
//! the tree can be read through [`crate::Sysfs`] (or handed to a binary as `PLEXUS_SYSFS_ROOT`).
//!
//! ```
//! use plexus_sysfs::testing::{FakePf, FakeSysfs, FakeVf};
//! let fake = FakeSysfs::builder()
//!     .pf(FakePf::new("0000:3b:00.0", "ens1f0")
//!         .vf(FakeVf::kernel("iavf", "ens1f0v0"))
//!         .vf(FakeVf::vfio(71)))
//!     .build()
//!     .unwrap();
//! let vf = fake.sysfs().pci_device("0000:3b:02.1").unwrap();
//! assert_eq!(vf.iommu_group().unwrap(), Some(71));
//! ```

use crate::Sysfs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A VF of a [`FakePf`].
#[derive(Debug, Clone)]
pub struct FakeVf {
    address: Option<String>,
    driver: Option<String>,
    netdevs: Vec<String>,
    iommu_group: Option<u32>,
    uio: Vec<String>,
    rdma: Vec<String>,
}

impl FakeVf {
    /// A VF bound to the kernel driver `driver` with the netdev `netdev` (may name a real link,
    /// e.g. a veth end, so that netlink on it works).
    pub fn kernel(driver: &str, netdev: &str) -> Self {
        Self {
            address: None,
            driver: Some(driver.to_owned()),
            netdevs: vec![netdev.to_owned()],
            iommu_group: None,
            uio: Vec::new(),
            rdma: Vec::new(),
        }
    }

    /// A VF bound to `vfio-pci` (DPDK): no netdev, IOMMU group `group`.
    pub fn vfio(group: u32) -> Self {
        Self {
            driver: Some("vfio-pci".to_owned()),
            netdevs: Vec::new(),
            iommu_group: Some(group),
            ..Self::unbound()
        }
    }

    /// A VF bound to a UIO driver (`igb_uio`, `uio_pci_generic`) with the UIO device `uio`
    /// (e.g. `uio0`).
    pub fn uio(driver: &str, uio: &str) -> Self {
        Self {
            driver: Some(driver.to_owned()),
            uio: vec![uio.to_owned()],
            ..Self::unbound()
        }
    }

    /// A VF bound to no driver.
    pub fn unbound() -> Self {
        Self {
            address: None,
            driver: None,
            netdevs: Vec::new(),
            iommu_group: None,
            uio: Vec::new(),
            rdma: Vec::new(),
        }
    }

    /// Its PCI address (default: derived from the PF's and the VF index, see [`FakePf::vf`]).
    pub fn address(mut self, address: &str) -> Self {
        self.address = Some(address.to_owned());
        self
    }

    /// Also an RDMA device (`infiniband/<name>`).
    pub fn rdma(mut self, name: &str) -> Self {
        self.rdma.push(name.to_owned());
        self
    }

    /// Also an IOMMU group (kernel-driver VFs have one too on IOMMU-enabled hosts).
    pub fn iommu_group(mut self, group: u32) -> Self {
        self.iommu_group = Some(group);
        self
    }
}

/// A PCI NIC: an SR-IOV PF with VFs by default, or a plain NIC ([`FakePf::plain`]).
#[derive(Debug, Clone)]
pub struct FakePf {
    address: String,
    netdev: Option<String>,
    vendor: u16,
    device: u16,
    vf_device: u16,
    driver: String,
    numa_node: i32,
    total_vfs: Option<u32>,
    link_type: u16,
    operstate: String,
    vfs: Vec<FakeVf>,
    rdma: Vec<String>,
}

impl FakePf {
    /// An Intel E810-like PF (8086:1592, VFs 8086:1889, driver `ice`, NUMA node 0,
    /// `sriov_totalvfs` 64) at `address` with the netdev `netdev` and no VFs yet.
    pub fn new(address: &str, netdev: &str) -> Self {
        Self {
            address: address.to_owned(),
            netdev: Some(netdev.to_owned()),
            vendor: 0x8086,
            device: 0x1592,
            vf_device: 0x1889,
            driver: "ice".to_owned(),
            numa_node: 0,
            total_vfs: Some(64),
            link_type: 1,
            operstate: "up".to_owned(),
            vfs: Vec::new(),
            rdma: Vec::new(),
        }
    }

    /// A NIC without SR-IOV (no `sriov_totalvfs`).
    pub fn plain(mut self) -> Self {
        self.total_vfs = None;
        self
    }

    /// Vendor, device and VF device IDs.
    pub fn ids(mut self, vendor: u16, device: u16, vf_device: u16) -> Self {
        self.vendor = vendor;
        self.device = device;
        self.vf_device = vf_device;
        self
    }

    /// The PF's driver (also the VFs' vendor/driver family; VFs get their own).
    pub fn driver(mut self, driver: &str) -> Self {
        self.driver = driver.to_owned();
        self
    }

    /// The NUMA node of the PF and its VFs; -1 = none.
    pub fn numa_node(mut self, node: i32) -> Self {
        self.numa_node = node;
        self
    }

    /// `sriov_totalvfs`.
    pub fn total_vfs(mut self, n: u32) -> Self {
        self.total_vfs = Some(n);
        self
    }

    /// The link type of its netdevs (`class/net/<if>/type`: 1 Ethernet, 32 InfiniBand).
    pub fn link_type(mut self, t: u16) -> Self {
        self.link_type = t;
        self
    }

    /// The PF netdev's operstate.
    pub fn operstate(mut self, s: &str) -> Self {
        self.operstate = s.to_owned();
        self
    }

    /// An RDMA device of the PF.
    pub fn rdma(mut self, name: &str) -> Self {
        self.rdma.push(name.to_owned());
        self
    }

    /// Adds the next VF. Without an explicit address, VF `i` of PF `dddd:bb:dd.f` is
    /// `dddd:bb:(0x02 + 4f + i/8).(i%8)`, distinct for up to 32 VFs per function.
    pub fn vf(mut self, vf: FakeVf) -> Self {
        self.vfs.push(vf);
        self
    }

    fn vf_address(&self, index: usize, vf: &FakeVf) -> String {
        if let Some(a) = &vf.address {
            return a.clone();
        }
        let (prefix, devfn) = self.address.rsplit_once(':').expect("PF address");
        let func = devfn
            .split_once('.')
            .and_then(|(_, f)| u32::from_str_radix(f, 16).ok())
            .unwrap_or(0);
        let dev = 0x02 + 4 * func + (index as u32) / 8;
        format!("{prefix}:{dev:02x}.{}", index % 8)
    }
}

/// Builds a [`FakeSysfs`].
#[derive(Debug, Default)]
pub struct FakeSysfsBuilder {
    pfs: Vec<FakePf>,
}

impl FakeSysfsBuilder {
    /// Adds a NIC.
    pub fn pf(mut self, pf: FakePf) -> Self {
        self.pfs.push(pf);
        self
    }

    /// Writes the tree into a new temporary directory.
    pub fn build(self) -> io::Result<FakeSysfs> {
        let dir = tempfile::Builder::new().prefix("plexus-sysfs-").tempdir()?;
        let root = dir.path().to_path_buf();
        for sub in [
            "bus/pci/devices",
            "bus/pci/drivers",
            "class/net",
            "kernel/iommu_groups",
        ] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let fake = FakeSysfs { dir };
        for pf in &self.pfs {
            fake.write_pf(pf)?;
        }
        Ok(fake)
    }
}

/// A fake sysfs tree in a temporary directory (removed on drop).
#[derive(Debug)]
pub struct FakeSysfs {
    dir: tempfile::TempDir,
}

struct Dev<'a> {
    address: &'a str,
    vendor: u16,
    device: u16,
    driver: Option<&'a str>,
    numa_node: i32,
    iommu_group: Option<u32>,
    netdevs: &'a [String],
    link_type: u16,
    operstate: &'a str,
    rdma: &'a [String],
    uio: &'a [String],
}

impl FakeSysfs {
    /// A builder.
    pub fn builder() -> FakeSysfsBuilder {
        FakeSysfsBuilder::default()
    }

    /// The root (what `PLEXUS_SYSFS_ROOT` should be set to).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A [`Sysfs`] reading this tree.
    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(self.root())
    }

    /// The real directory of a device (where its attributes and links are).
    pub fn device_dir(&self, address: &str) -> PathBuf {
        let bus = address.rsplit_once(':').map(|(p, _)| p).unwrap_or(address);
        self.root()
            .join("devices")
            .join(format!("pci{bus}"))
            .join(address)
    }

    /// Adds `name` to the device's `net/` (as when a netdev comes back to the host).
    pub fn add_netdev(&self, address: &str, name: &str, link_type: u16) -> io::Result<()> {
        let dev = self.device_dir(address);
        let net = dev.join("net").join(name);
        std::fs::create_dir_all(&net)?;
        std::fs::write(net.join("type"), format!("{link_type}\n"))?;
        std::fs::write(net.join("operstate"), "down\n")?;
        // The kernel's spelling: up to the bridge, then the device (its basename is the address).
        symlink(Path::new("../../..").join(address), net.join("device"))?;
        let class = self.root().join("class/net").join(name);
        let _ = std::fs::remove_file(&class);
        let rel = Path::new("../../devices")
            .join(
                dev.strip_prefix(self.root().join("devices"))
                    .expect("under root"),
            )
            .join("net")
            .join(name);
        symlink(rel, class)
    }

    /// Removes `name` from the device's `net/` (as when the netdev moves into a pod's netns).
    pub fn remove_netdev(&self, address: &str, name: &str) -> io::Result<()> {
        std::fs::remove_dir_all(self.device_dir(address).join("net").join(name))?;
        std::fs::remove_file(self.root().join("class/net").join(name))
    }

    /// Rebinds a device to `driver` (`None`: unbinds it).
    pub fn set_driver(&self, address: &str, driver: Option<&str>) -> io::Result<()> {
        let link = self.device_dir(address).join("driver");
        let _ = std::fs::remove_file(&link);
        match driver {
            None => Ok(()),
            Some(d) => {
                std::fs::create_dir_all(self.root().join("bus/pci/drivers").join(d))?;
                symlink(Path::new("../../../bus/pci/drivers").join(d), link)
            }
        }
    }

    fn write_pf(&self, pf: &FakePf) -> io::Result<()> {
        self.write_device(&Dev {
            address: &pf.address,
            vendor: pf.vendor,
            device: pf.device,
            driver: Some(&pf.driver),
            numa_node: pf.numa_node,
            iommu_group: None,
            netdevs: pf.netdev.as_slice(),
            link_type: pf.link_type,
            operstate: &pf.operstate,
            rdma: &pf.rdma,
            uio: &[],
        })?;
        let pf_dir = self.device_dir(&pf.address);
        if let Some(total) = pf.total_vfs {
            std::fs::write(pf_dir.join("sriov_totalvfs"), format!("{total}\n"))?;
            std::fs::write(pf_dir.join("sriov_numvfs"), format!("{}\n", pf.vfs.len()))?;
        }
        for (i, vf) in pf.vfs.iter().enumerate() {
            let address = pf.vf_address(i, vf);
            self.write_device(&Dev {
                address: &address,
                vendor: pf.vendor,
                device: pf.vf_device,
                driver: vf.driver.as_deref(),
                numa_node: pf.numa_node,
                iommu_group: vf.iommu_group,
                netdevs: &vf.netdevs,
                link_type: pf.link_type,
                operstate: "down",
                rdma: &vf.rdma,
                uio: &vf.uio,
            })?;
            let vf_dir = self.device_dir(&address);
            self.link_device(&pf_dir, &vf_dir.join("physfn"))?;
            self.link_device(&vf_dir, &pf_dir.join(format!("virtfn{i}")))?;
        }
        Ok(())
    }

    /// A relative link at `link` (directly inside a device directory) to the device directory
    /// `to`, as the kernel's `physfn`/`virtfnN` links.
    fn link_device(&self, to: &Path, link: &Path) -> io::Result<()> {
        let rel = to
            .strip_prefix(self.root().join("devices"))
            .expect("device under root");
        symlink(Path::new("../..").join(rel), link)
    }

    fn write_device(&self, d: &Dev<'_>) -> io::Result<()> {
        let dir = self.device_dir(d.address);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("vendor"), format!("0x{:04x}\n", d.vendor))?;
        std::fs::write(dir.join("device"), format!("0x{:04x}\n", d.device))?;
        std::fs::write(dir.join("numa_node"), format!("{}\n", d.numa_node))?;
        let rel_dir =
            Path::new("../../..").join(dir.strip_prefix(self.root()).expect("under root"));
        symlink(
            &rel_dir,
            self.root().join("bus/pci/devices").join(d.address),
        )?;
        self.set_driver(d.address, d.driver)?;
        if let Some(group) = d.iommu_group {
            let g = self
                .root()
                .join("kernel/iommu_groups")
                .join(group.to_string());
            std::fs::create_dir_all(g.join("devices"))?;
            symlink(
                Path::new("../../../kernel/iommu_groups").join(group.to_string()),
                dir.join("iommu_group"),
            )?;
        }
        for name in d.netdevs {
            self.add_netdev(d.address, name, d.link_type)?;
            std::fs::write(
                dir.join("net").join(name).join("operstate"),
                format!("{}\n", d.operstate),
            )?;
        }
        for name in d.rdma {
            std::fs::create_dir_all(dir.join("infiniband").join(name))?;
        }
        for name in d.uio {
            std::fs::create_dir_all(dir.join("uio").join(name))?;
        }
        Ok(())
    }
}
