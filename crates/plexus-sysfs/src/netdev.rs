use crate::error::{link_basename, parse_err, read_opt};
use crate::{PciDevice, Sysfs, SysfsError};
use std::path::{Path, PathBuf};

/// One network interface: `class/net/<name>` under the sysfs root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDev {
    sysfs: Sysfs,
    name: String,
    dir: PathBuf,
}

impl NetDev {
    pub(crate) fn new(sysfs: Sysfs, name: String, dir: PathBuf) -> Self {
        Self { sysfs, name, dir }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The ARPHRD link type (`type`): 1 = Ethernet, 32 = InfiniBand.
    pub fn link_type(&self) -> Result<u16, SysfsError> {
        let path = self.dir.join("type");
        let s = read_opt(&path)?.ok_or_else(|| parse_err(&path, ""))?;
        s.parse().map_err(|_| parse_err(&path, &s))
    }

    /// The link type as the device plugin's selectors spell it (`ether`, `infiniband`, or the
    /// number for anything else).
    pub fn link_type_name(&self) -> Result<String, SysfsError> {
        Ok(match self.link_type()? {
            1 => "ether".to_owned(),
            32 => "infiniband".to_owned(),
            n => n.to_string(),
        })
    }

    /// `operstate` (`up`, `down`, `unknown`, …); `None` when the file is missing.
    pub fn operstate(&self) -> Result<Option<String>, SysfsError> {
        read_opt(&self.dir.join("operstate"))
    }

    /// The PCI device behind it (the `device` link), `None` for virtual interfaces.
    pub fn pci_device(&self) -> Result<Option<PciDevice>, SysfsError> {
        match link_basename(&self.dir.join("device"))? {
            None => Ok(None),
            Some(a) => self.sysfs.pci_device(&a).map(Some),
        }
    }
}
