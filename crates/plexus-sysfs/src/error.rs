use std::io;
use std::path::{Path, PathBuf};

/// Why sysfs could not answer. Messages include their cause, so causes are fields, not
/// [`std::error::Error::source`]: a printed source chain would say them twice.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// The string is not a PCI address (`dddd:bb:dd.f`, or `bb:dd.f` for domain 0).
    #[error("invalid PCI address {0:?}: expected domain:bus:device.function such as 0000:03:02.1")]
    InvalidAddress(String),
    /// No `bus/pci/devices/<address>` under the root.
    #[error("PCI device {address} not found under {}", root.display())]
    NoSuchDevice {
        /// The address looked up.
        address: String,
        /// The sysfs root.
        root: PathBuf,
    },
    /// No `class/net/<name>` under the root.
    #[error("network interface {name} not found under {}/class/net", root.display())]
    NoSuchNetdev {
        /// The interface looked up.
        name: String,
        /// The sysfs root.
        root: PathBuf,
    },
    /// The device is not a VF (no `physfn` link), where a VF was required.
    #[error("PCI device {0} is not an SR-IOV virtual function (no physfn link)")]
    NotAVirtualFunction(String),
    /// A VF whose PF does not list it among its `virtfnN` links.
    #[error("PCI device {vf} is not listed among the virtfn links of its PF {pf}")]
    VfNotListed {
        /// The VF.
        vf: String,
        /// Its PF.
        pf: String,
    },
    /// Reading a file, link or directory failed.
    #[error("reading {}: {cause}", path.display())]
    Io {
        /// What was read.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
    },
    /// A file's content is not what the kernel writes there.
    #[error("{}: unexpected content {content:?}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held (trimmed).
        content: String,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SysfsError + '_ {
    move |cause| SysfsError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// The file's content, trimmed; `None` when it does not exist.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, SysfsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The last component of the symlink's target; `None` when the link does not exist.
pub(crate) fn link_basename(path: &Path) -> Result<Option<String>, SysfsError> {
    match std::fs::read_link(path) {
        Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The directory's entry names, sorted; an empty list when it does not exist.
pub(crate) fn list_dir(path: &Path) -> Result<Vec<String>, SysfsError> {
    let rd = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err(path))?;
        out.push(entry.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    Ok(out)
}

pub(crate) fn parse_err(path: &Path, content: &str) -> SysfsError {
    SysfsError::Parse {
        path: path.to_path_buf(),
        content: content.to_owned(),
    }
}
