//! A fake SR-IOV node for the `sriov` plugin: these machines have no VFs, so each "VF" netdev is
//! one end of a real veth pair, listed in a fake sysfs tree (`plexus_sysfs::testing`) under a
//! PF whose VF table is the plugin's simulated PF (`PLEXUS_SRIOV_SIMULATED_PF`). Everything the
//! plugin does to the netdev (move into the pod, rename, MAC, MTU, addresses) is real netlink on
//! the veth end; only PF-side calls go to the recording stand-in. Removed on drop.

use crate::cni::{Call, Outcome, bin_path, spawn_plugin_env};
use crate::netns::{HostLink, unique_name};
use plexus_sriov::pf::SimulatedPf;
use plexus_sriov::types::VfState;
use plexus_sysfs::testing::{FakePf, FakeSysfs, FakeVf};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PF's PCI address in the fake tree; VF `i` is `0000:3b:02.<i>`.
pub const PF_PCI: &str = "0000:3b:00.0";

/// A fake SR-IOV node.
#[derive(Debug)]
pub struct SriovNode {
    /// The fake sysfs tree.
    pub sysfs: FakeSysfs,
    /// The PF's netdev name (not a real link: every PF call is simulated).
    pub pf: String,
    /// The VFs' PCI addresses, by index.
    pub vfs: Vec<String>,
    /// The VFs' netdevs (veth ends), by index.
    pub vf_netdevs: Vec<String>,
    /// The simulated PF.
    pub sim: SimulatedPf,
    /// The plugin's state directory.
    pub state_dir: PathBuf,
    /// host-local's `dataDir`.
    pub ipam_dir: PathBuf,
    /// The VF table every VF starts with.
    pub initial: VfState,
    root: tempfile::TempDir,
    _veths: Vec<HostLink>,
}

impl SriovNode {
    /// A PF with `kernel_vfs` kernel-driver VFs (veth ends) and then `vfio_vfs` `vfio-pci` VFs.
    pub fn new(kernel_vfs: usize, vfio_vfs: usize) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let mut veths = Vec::new();
        let mut vf_netdevs = Vec::new();
        let pf_name = unique_name("pf");
        let mut pf = FakePf::new(PF_PCI, &pf_name);
        for _ in 0..kernel_vfs {
            let (a, b) = (unique_name("vf"), unique_name("vp"));
            veths.push(HostLink::veth_pair(&a, &b).expect("veth pair"));
            // A VF netdev is down until a pod uses it.
            ip(&["link", "set", &a, "down"]);
            pf = pf.vf(FakeVf::kernel("iavf", &a));
            vf_netdevs.push(a);
        }
        for i in 0..vfio_vfs {
            pf = pf.vf(FakeVf::vfio(100 + i as u32));
        }
        let sysfs = FakeSysfs::builder().pf(pf).build().expect("fake sysfs");
        let vfs = (0..kernel_vfs + vfio_vfs)
            .map(|i| format!("0000:3b:02.{i}"))
            .collect();
        let sim = SimulatedPf::new(root.path().join("pf"));
        let initial = VfState {
            spoofchk: true,
            ..VfState::default()
        };
        sim.seed(&pf_name, kernel_vfs + vfio_vfs, initial)
            .expect("seed PF");
        let state_dir = root.path().join("state");
        let ipam_dir = root.path().join("ipam");
        std::fs::create_dir_all(&ipam_dir).expect("ipam dir");
        Self {
            sysfs,
            pf: pf_name,
            vfs,
            vf_netdevs,
            sim,
            state_dir,
            ipam_dir,
            initial,
            root,
            _veths: veths,
        }
    }

    /// The test hooks that point the `sriov` binary at this node.
    pub fn hooks(&self) -> Vec<(String, String)> {
        vec![
            (
                "PLEXUS_SYSFS_ROOT".into(),
                self.sysfs.root().display().to_string(),
            ),
            (
                "PLEXUS_SRIOV_SIMULATED_PF".into(),
                self.root.path().join("pf").display().to_string(),
            ),
            (
                "PLEXUS_SRIOV_STATE_DIR".into(),
                self.state_dir.display().to_string(),
            ),
        ]
    }

    /// A `sriov` network config for VF `vf` (its `deviceID`), host-local IPAM on `subnet`, and
    /// `extra` merged in.
    pub fn conf(&self, version: &str, vf: usize, subnet: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "sriov-net",
            "type": "sriov",
            "deviceID": self.vfs[vf],
            "ipam": {"type": "host-local", "dataDir": self.ipam_dir, "subnet": subnet}
        });
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    }

    /// Execs the `sriov` binary once, as a runtime (or a meta plugin) does.
    pub fn exec(
        &self,
        command: &str,
        cid: &str,
        netns: Option<&Path>,
        ifname: &str,
        config: &Value,
    ) -> Outcome {
        let call = Call {
            command,
            container_id: cid,
            netns,
            ifname,
            args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=blue;K8S_POD_NAME={cid}"),
            config,
        };
        let child = spawn_plugin_env(
            &bin_path("sriov"),
            &call,
            crate::cni::CNI_BIN_DIR,
            &self.hooks(),
        )
        .expect("spawn sriov");
        Outcome::from(child.wait_with_output().expect("wait sriov"))
    }

    /// The PF-side calls recorded so far.
    pub fn pf_calls(&self) -> Vec<String> {
        self.sim.calls(&self.pf)
    }

    /// The VF table now.
    pub fn vf_table(&self) -> Vec<VfState> {
        self.sim.state(&self.pf).expect("PF state").vfs
    }

    /// What the host shows of a link: `(ifname, address, mtu, operstate)`; `None` when the host
    /// has no such link.
    pub fn host_link(&self, name: &str) -> Option<(String, String, u64, String)> {
        let out = Command::new("ip")
            .args(["-j", "link", "show", "dev", name])
            .output()
            .expect("ip");
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j");
        let l = &v[0];
        Some((
            l["ifname"].as_str()?.to_owned(),
            l["address"].as_str()?.to_owned(),
            l["mtu"].as_u64()?,
            l["operstate"].as_str().unwrap_or_default().to_owned(),
        ))
    }

    /// host-local's lease files (one per allocated address).
    pub fn leases(&self) -> Vec<String> {
        let mut out = Vec::new();
        for net in std::fs::read_dir(&self.ipam_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.parse::<std::net::IpAddr>().is_ok() {
                    out.push(name);
                }
            }
        }
        out.sort();
        out
    }

    /// The plugin's records (state files other than locks).
    pub fn records(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().is_file() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        for e in std::fs::read_dir(self.state_dir.join("pci"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().is_file() {
                out.push(format!("pci/{}", e.file_name().to_string_lossy()));
            }
        }
        out.sort();
        out
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?} failed");
}
