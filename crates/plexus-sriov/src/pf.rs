//! The PF side of a VF: reading its entry of the PF's VF table and changing one setting at a
//! time. [`NetlinkPf`] is the kernel; [`SimulatedPf`] is the stand-in for machines without VFs
//! (these CI machines): it keeps each VF's PF-side state in a JSON file and logs every call, so
//! reads after writes are faithful and a test can assert exactly what ADD set and DEL restored.

use crate::netlink::NlSocket;
use crate::types::{VfSetting, VfState};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The environment variable that makes the `sriov` binary use a [`SimulatedPf`] in the named
/// directory instead of netlink (a test hook, docs/sriov.md).
pub const SIMULATED_PF_ENV: &str = "PLEXUS_SRIOV_SIMULATED_PF";

/// A PF-side failure. Messages include their cause, so causes are fields, not
/// [`std::error::Error::source`]: a printed source chain would say them twice.
#[derive(Debug, thiserror::Error)]
pub enum PfError {
    /// The PF has no VF with this index.
    #[error("PF {pf} has no VF {vf}")]
    NoSuchVf {
        /// PF netdev.
        pf: String,
        /// VF index.
        vf: u32,
    },
    /// The kernel (or the simulated PF) refused or failed.
    #[error("PF {pf} VF {vf}: {op}: {cause}")]
    Io {
        /// PF netdev.
        pf: String,
        /// VF index.
        vf: u32,
        /// What was attempted.
        op: String,
        /// Why it failed.
        cause: io::Error,
    },
}

/// PF-side operations on a VF.
pub trait PfOps {
    /// The VF's current PF-side settings.
    fn vf(&self, pf: &str, vf: u32) -> Result<VfState, PfError>;
    /// Changes one setting.
    fn set(&self, pf: &str, vf: u32, setting: VfSetting) -> Result<(), PfError>;
}

/// The kernel, over rtnetlink in the plugin's (host) namespace.
#[derive(Debug, Default)]
pub struct NetlinkPf;

impl PfOps for NetlinkPf {
    fn vf(&self, pf: &str, vf: u32) -> Result<VfState, PfError> {
        let io = |cause| PfError::Io {
            pf: pf.to_owned(),
            vf,
            op: "read VF table".into(),
            cause,
        };
        let link = NlSocket::open()
            .and_then(|mut s| s.link(pf, true))
            .map_err(io)?
            .ok_or_else(|| io(io::Error::new(io::ErrorKind::NotFound, "no such link")))?;
        link.vfs
            .into_iter()
            .find(|(i, _)| *i == vf)
            .map(|(_, s)| s)
            .ok_or_else(|| PfError::NoSuchVf {
                pf: pf.to_owned(),
                vf,
            })
    }

    fn set(&self, pf: &str, vf: u32, setting: VfSetting) -> Result<(), PfError> {
        NlSocket::open()
            .and_then(|mut s| s.set_vf(pf, vf, setting))
            .map_err(|cause| PfError::Io {
                pf: pf.to_owned(),
                vf,
                op: format!("set {setting}"),
                cause,
            })
    }
}

/// What a simulated PF keeps: one entry per VF, by index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimulatedPfState {
    /// The VF table.
    pub vfs: Vec<VfState>,
}

/// A simulated PF per file: `<dir>/<pf>.json` holds the VF table, `<dir>/<pf>.calls` gets one
/// line per call (`get <pf> vf <n>`, `set <pf> vf <n> <setting>`), and a line `<op>` in
/// `<dir>/<pf>.fail` (an op as the log spells it after the VF index, e.g. `trust` or `mac`) makes
/// that set fail with EIO, as a driver refusing it would. Concurrent plugins serialise on a lock
/// of the state file.
#[derive(Debug, Clone)]
pub struct SimulatedPf {
    dir: PathBuf,
}

impl SimulatedPf {
    /// A simulated PF backend over `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Creates (or replaces) the PF `pf` with `vfs` VFs, each in `initial` state, and clears its
    /// call log.
    pub fn seed(&self, pf: &str, vfs: usize, initial: VfState) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let state = SimulatedPfState {
            vfs: vec![initial; vfs],
        };
        std::fs::write(self.state_path(pf), serde_json::to_vec_pretty(&state)?)?;
        std::fs::write(self.calls_path(pf), "")
    }

    /// The VF table as stored.
    pub fn state(&self, pf: &str) -> io::Result<SimulatedPfState> {
        let bytes = std::fs::read(self.state_path(pf))?;
        serde_json::from_slice(&bytes).map_err(io::Error::other)
    }

    /// The call log, one call per line.
    pub fn calls(&self, pf: &str) -> Vec<String> {
        std::fs::read_to_string(self.calls_path(pf))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Makes every later `set` of `op` (e.g. `trust`) fail.
    pub fn fail(&self, pf: &str, op: &str) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{pf}.fail")))?;
        writeln!(f, "{op}")
    }

    fn state_path(&self, pf: &str) -> PathBuf {
        self.dir.join(format!("{pf}.json"))
    }

    fn calls_path(&self, pf: &str) -> PathBuf {
        self.dir.join(format!("{pf}.calls"))
    }

    fn locked(&self, pf: &str) -> io::Result<Flock<File>> {
        // A lock file of its own: the state file is replaced by rename on every write.
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(format!("{pf}.lock")))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
    }

    fn log(&self, pf: &str, line: &str) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.calls_path(pf))?;
        writeln!(f, "{line}")
    }

    fn fails(&self, pf: &str, setting: &VfSetting) -> bool {
        let op = setting.to_string();
        let op = op.split(' ').next().unwrap_or_default().to_owned();
        std::fs::read_to_string(self.dir.join(format!("{pf}.fail")))
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim() == op)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

impl PfOps for SimulatedPf {
    fn vf(&self, pf: &str, vf: u32) -> Result<VfState, PfError> {
        let io = |cause| PfError::Io {
            pf: pf.to_owned(),
            vf,
            op: "read VF table".into(),
            cause,
        };
        let _lock = self.locked(pf).map_err(io)?;
        self.log(pf, &format!("get {pf} vf {vf}")).map_err(io)?;
        let state = self.state(pf).map_err(io)?;
        state
            .vfs
            .get(vf as usize)
            .copied()
            .ok_or_else(|| PfError::NoSuchVf {
                pf: pf.to_owned(),
                vf,
            })
    }

    fn set(&self, pf: &str, vf: u32, setting: VfSetting) -> Result<(), PfError> {
        let io = |cause| PfError::Io {
            pf: pf.to_owned(),
            vf,
            op: format!("set {setting}"),
            cause,
        };
        let lock = self.locked(pf).map_err(io)?;
        self.log(pf, &format!("set {pf} vf {vf} {setting}"))
            .map_err(io)?;
        let mut state = self.state(pf).map_err(io)?;
        let Some(entry) = state.vfs.get_mut(vf as usize) else {
            return Err(PfError::NoSuchVf {
                pf: pf.to_owned(),
                vf,
            });
        };
        if self.fails(pf, &setting) {
            return Err(io(io::Error::from_raw_os_error(nix::libc::EIO)));
        }
        *entry = entry.with(setting);
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| io(io::Error::other(e)))?;
        write_atomic(&self.state_path(pf), &bytes).map_err(io)?;
        drop(lock);
        Ok(())
    }
}
