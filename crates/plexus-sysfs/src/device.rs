use crate::error::{link_basename, list_dir, parse_err, read_opt};
use crate::{PciAddress, Sysfs, SysfsError};
use std::path::{Path, PathBuf};

/// Drivers that hand the device to user space (DPDK): such a VF has no netdev.
pub const USERSPACE_DRIVERS: &[&str] = &["vfio-pci", "uio_pci_generic", "igb_uio"];

/// Which kind of driver a device is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverKind {
    /// No driver bound (no `driver` link).
    Unbound,
    /// A kernel network (or other) driver, e.g. `iavf`, `mlx5_core`.
    Kernel(String),
    /// `vfio-pci`: user space reaches it through `/dev/vfio/<iommu group>`.
    Vfio,
    /// A UIO driver (`uio_pci_generic`, `igb_uio`): user space reaches it through `/dev/uioN`.
    Uio(String),
}

impl DriverKind {
    /// Whether the device belongs to user space (DPDK mode).
    pub fn is_userspace(&self) -> bool {
        matches!(self, DriverKind::Vfio | DriverKind::Uio(_))
    }
}

/// One PCI device: `bus/pci/devices/<address>` under the sysfs root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    sysfs: Sysfs,
    address: PciAddress,
    dir: PathBuf,
}

impl PciDevice {
    pub(crate) fn new(sysfs: Sysfs, address: PciAddress, dir: PathBuf) -> Self {
        Self {
            sysfs,
            address,
            dir,
        }
    }

    /// Its PCI address.
    pub fn address(&self) -> &PciAddress {
        &self.address
    }

    /// Its directory (`<root>/bus/pci/devices/<address>`).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn hex_u16(&self, file: &str) -> Result<u16, SysfsError> {
        let path = self.dir.join(file);
        let s = read_opt(&path)?.ok_or_else(|| SysfsError::Io {
            path: path.clone(),
            cause: std::io::ErrorKind::NotFound.into(),
        })?;
        let digits = s.strip_prefix("0x").unwrap_or(&s);
        u16::from_str_radix(digits, 16).map_err(|_| parse_err(&path, &s))
    }

    fn opt_u32(&self, file: &str) -> Result<Option<u32>, SysfsError> {
        let path = self.dir.join(file);
        match read_opt(&path)? {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| parse_err(&path, &s)),
        }
    }

    /// The vendor ID (`vendor`, e.g. 0x8086).
    pub fn vendor_id(&self) -> Result<u16, SysfsError> {
        self.hex_u16("vendor")
    }

    /// The device ID (`device`, e.g. 0x154c for an Intel X710 VF).
    pub fn device_id(&self) -> Result<u16, SysfsError> {
        self.hex_u16("device")
    }

    /// The bound driver's name (basename of the `driver` link), `None` when unbound.
    pub fn driver(&self) -> Result<Option<String>, SysfsError> {
        link_basename(&self.dir.join("driver"))
    }

    /// The bound driver, classified.
    pub fn driver_kind(&self) -> Result<DriverKind, SysfsError> {
        Ok(match self.driver()? {
            None => DriverKind::Unbound,
            Some(d) if d == "vfio-pci" => DriverKind::Vfio,
            Some(d) if USERSPACE_DRIVERS.contains(&d.as_str()) => DriverKind::Uio(d),
            Some(d) => DriverKind::Kernel(d),
        })
    }

    /// The NUMA node (`numa_node`); `None` when the file is missing or says -1 (no NUMA).
    pub fn numa_node(&self) -> Result<Option<u32>, SysfsError> {
        let path = self.dir.join("numa_node");
        match read_opt(&path)? {
            None => Ok(None),
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n < 0 => Ok(None),
                Ok(n) => u32::try_from(n).map(Some).map_err(|_| parse_err(&path, &s)),
                Err(_) => Err(parse_err(&path, &s)),
            },
        }
    }

    /// The IOMMU group (basename of `iommu_group`), i.e. the N of `/dev/vfio/N`.
    pub fn iommu_group(&self) -> Result<Option<u32>, SysfsError> {
        let path = self.dir.join("iommu_group");
        match link_basename(&path)? {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| parse_err(&path, &s)),
        }
    }

    /// Its network interfaces in the host's network namespace (entries of `net/`), sorted.
    /// Empty for a device bound to a user-space driver, and for a VF whose netdev was moved into
    /// a pod (sysfs shows only the reader's namespace).
    pub fn netdevs(&self) -> Result<Vec<String>, SysfsError> {
        list_dir(&self.dir.join("net"))
    }

    /// Its RDMA devices (entries of `infiniband/`, e.g. `mlx5_3`), sorted.
    pub fn rdma_devices(&self) -> Result<Vec<String>, SysfsError> {
        list_dir(&self.dir.join("infiniband"))
    }

    /// Whether it has an RDMA device.
    pub fn is_rdma(&self) -> Result<bool, SysfsError> {
        Ok(!self.rdma_devices()?.is_empty())
    }

    /// Its UIO devices (entries of `uio/`, e.g. `uio0` for `/dev/uio0`), sorted.
    pub fn uio_devices(&self) -> Result<Vec<String>, SysfsError> {
        list_dir(&self.dir.join("uio"))
    }

    /// Whether it is SR-IOV capable (has `sriov_totalvfs`): a PF.
    pub fn is_sriov_capable(&self) -> bool {
        self.dir.join("sriov_totalvfs").is_file()
    }

    /// How many VFs it can have (`sriov_totalvfs`); `None` when it is not SR-IOV capable.
    pub fn total_vfs(&self) -> Result<Option<u32>, SysfsError> {
        self.opt_u32("sriov_totalvfs")
    }

    /// How many VFs are enabled (`sriov_numvfs`); `None` when it is not SR-IOV capable.
    pub fn num_vfs(&self) -> Result<Option<u32>, SysfsError> {
        self.opt_u32("sriov_numvfs")
    }

    /// Its PF (the `physfn` link) when it is a VF.
    pub fn physfn(&self) -> Result<Option<PciDevice>, SysfsError> {
        match link_basename(&self.dir.join("physfn"))? {
            None => Ok(None),
            Some(pf) => self.sysfs.pci_device(&pf).map(Some),
        }
    }

    /// Whether it is a VF (has a `physfn` link).
    pub fn is_vf(&self) -> bool {
        self.dir.join("physfn").symlink_metadata().is_ok()
    }

    /// Its VFs as `(index, address)` from the `virtfnN` links, sorted by index.
    pub fn virtfns(&self) -> Result<Vec<(u32, PciAddress)>, SysfsError> {
        let mut out = Vec::new();
        for name in list_dir(&self.dir)? {
            let Some(index) = name.strip_prefix("virtfn") else {
                continue;
            };
            let Ok(index) = index.parse::<u32>() else {
                continue;
            };
            let link = self.dir.join(&name);
            if let Some(target) = link_basename(&link)? {
                let address = PciAddress::parse(&target).map_err(|_| parse_err(&link, &target))?;
                out.push((index, address));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The VF at `index` of this PF (`virtfn<index>`).
    pub fn virtfn(&self, index: u32) -> Result<Option<PciDevice>, SysfsError> {
        match link_basename(&self.dir.join(format!("virtfn{index}")))? {
            None => Ok(None),
            Some(vf) => self.sysfs.pci_device(&vf).map(Some),
        }
    }

    /// For a VF: its PF and its index among the PF's VFs.
    pub fn vf_of(&self) -> Result<(PciDevice, u32), SysfsError> {
        let pf = self
            .physfn()?
            .ok_or_else(|| SysfsError::NotAVirtualFunction(self.address.to_string()))?;
        let index = pf
            .virtfns()?
            .into_iter()
            .find(|(_, a)| *a == self.address)
            .map(|(i, _)| i)
            .ok_or_else(|| SysfsError::VfNotListed {
                vf: self.address.to_string(),
                pf: pf.address.to_string(),
            })?;
        Ok((pf, index))
    }
}
