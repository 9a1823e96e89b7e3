//! What DEL needs, on disk: one record per attachment, written atomically (temp file + rename,
//! 0600 in a 0700 directory) **before** the first change and updated as ADD progresses, the
//! VF's allocation (which netns owns it) and a per-VF lock serialising plugins on the same VF.
//!
//! Unlike the reference plugin, the record keeps the DPDK flag, so DEL of a `vfio-pci` VF does
//! not look for a netdev that never moved.

use crate::types::{Mac, VfState};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The default state directory (the reference plugin's).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/sriov";
/// The environment variable that moves it (a test hook, docs/sriov.md).
pub const STATE_DIR_ENV: &str = "PLEXUS_SRIOV_STATE_DIR";

/// Which PF-side settings ADD changed (and DEL must restore).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// VLAN, QoS and protocol.
    pub vlan: bool,
    /// Admin MAC.
    pub mac: bool,
    /// TX rates.
    pub rate: bool,
    /// Spoof check.
    pub spoofchk: bool,
    /// Trust.
    pub trust: bool,
    /// Link state.
    pub link_state: bool,
}

/// One attachment's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Format version of this file.
    pub version: u32,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`: the VF's name in the pod.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    pub netns: String,
    /// The VF's PCI address.
    pub device_id: String,
    /// The PF's netdev.
    pub pf: String,
    /// The VF's index on the PF.
    pub vf_index: u32,
    /// DPDK mode: the VF has a user-space driver and no netdev; only PF-side settings apply.
    pub dpdk: bool,
    /// The VF netdev's name in the host before ADD (kernel mode).
    pub host_ifname: Option<String>,
    /// Its MAC before ADD.
    pub orig_mac: Option<Mac>,
    /// Its MTU before ADD.
    pub orig_mtu: Option<u32>,
    /// The VF's PF-side settings before ADD.
    pub orig_vf: VfState,
    /// PF-side settings that ADD has (begun to) set.
    pub applied: Applied,
    /// The netdev was (being) moved into the pod.
    pub moved: bool,
    /// IPAM ADD ran (so DEL must release).
    pub ipam: bool,
    /// The network configuration of the ADD (for IPAM DEL from GC, which has no stdin of its own).
    pub config: Value,
    /// `CNI_ARGS` of the ADD.
    pub args: String,
}

/// Record format version.
pub const RECORD_VERSION: u32 = 1;

/// Why the state could not be used. Messages include their cause, so causes are fields, not
/// [`std::error::Error::source`]: a printed source chain would say them twice.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("sriov state {}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// A record that is not ours or is damaged.
    #[error("sriov state {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A held per-VF lock (released on drop or process exit).
#[derive(Debug)]
pub struct VfLock(#[allow(dead_code)] Flock<File>);

impl Store {
    /// The store at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$PLEXUS_SRIOV_STATE_DIR`, else [`DEFAULT_STATE_DIR`].
    pub fn from_env() -> Self {
        match std::env::var_os(STATE_DIR_ENV) {
            Some(d) if !d.is_empty() => Self::new(d),
            _ => Self::new(DEFAULT_STATE_DIR),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
        move |cause| StateError::Io {
            path: path.to_path_buf(),
            cause,
        }
    }

    fn ensure_dir(dir: &Path) -> Result<(), StateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(Self::io(dir))
    }

    /// The record file of an attachment.
    pub fn record_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}-{ifname}.json"))
    }

    /// Writes a record atomically.
    pub fn save(&self, rec: &Record) -> Result<(), StateError> {
        Self::ensure_dir(&self.dir)?;
        let path = self.record_path(&rec.container_id, &rec.ifname);
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes).map_err(Self::io(&path))
    }

    /// The record of an attachment, `None` when there is none.
    pub fn load(&self, container_id: &str, ifname: &str) -> Result<Option<Record>, StateError> {
        self.load_path(&self.record_path(container_id, ifname))
    }

    fn load_path(&self, path: &Path) -> Result<Option<Record>, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(path)(e)),
        };
        let rec: Record = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if rec.version != RECORD_VERSION {
            return Err(StateError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("unknown format version {}", rec.version),
            });
        }
        Ok(Some(rec))
    }

    /// Every record (for GC), skipping the allocation directory and temp files.
    pub fn all(&self) -> Result<Vec<Record>, StateError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let path = entry.map_err(Self::io(&self.dir))?.path();
            if path.extension().is_some_and(|e| e == "json")
                && let Some(rec) = self.load_path(&path)?
            {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        Ok(out)
    }

    /// Removes an attachment's record (absent is fine).
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<(), StateError> {
        remove_opt(&self.record_path(container_id, ifname))
    }

    fn pci_dir(&self) -> PathBuf {
        self.dir.join("pci")
    }

    /// Takes the VF's lock, waiting for another plugin on the same VF.
    pub fn lock_vf(&self, pci: &str) -> Result<VfLock, StateError> {
        let dir = self.pci_dir().join("vf_lock");
        Self::ensure_dir(&dir)?;
        let path = dir.join(format!("{pci}.lock"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(Self::io(&path))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map(VfLock)
            .map_err(|(_, e)| Self::io(&path)(e.into()))
    }

    /// The netns that holds the VF, `None` when it is free.
    pub fn allocation(&self, pci: &str) -> Result<Option<String>, StateError> {
        let path = self.pci_dir().join(pci);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    /// Records that `netns` holds the VF.
    pub fn allocate(&self, pci: &str, netns: &str) -> Result<(), StateError> {
        Self::ensure_dir(&self.pci_dir())?;
        let path = self.pci_dir().join(pci);
        write_atomic(&path, netns.as_bytes()).map_err(Self::io(&path))
    }

    /// Frees the VF.
    pub fn release(&self, pci: &str) -> Result<(), StateError> {
        remove_opt(&self.pci_dir().join(pci))
    }
}

fn remove_opt(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Store::io(path)(e)),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
