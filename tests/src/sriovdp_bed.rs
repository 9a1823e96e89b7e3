//! The device-plugin side of the SR-IOV test bed: a fake sysfs tree, the real `plexus-sriovdp`
//! daemon reading it with a resource config, and the fake kubelet serving device-plugin
//! registration and PodResources (fed by what it allocates through the plugin).

use crate::bed::{Bed, Sandbox};
use crate::cni::{Outcome, bin_path};
use crate::fakekubelet::FakeKubelet;
use anyhow::Context;
use plexus_sysfs::testing::FakeSysfs;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where the kubelet's and the device-info files of one node live.
#[derive(Debug, Clone)]
pub struct DpPaths {
    /// The kubelet's device-plugin directory (`kubelet.sock`, the plugins' sockets).
    pub plugin_dir: PathBuf,
    /// The kubelet's PodResources socket.
    pub pod_resources_socket: PathBuf,
    /// The device-info root (`dp/`, `cni/`).
    pub device_info_dir: PathBuf,
}

impl DpPaths {
    /// The kubelet layout under `root`.
    pub fn under(root: &Path) -> Self {
        Self {
            plugin_dir: root.join("kubelet/device-plugins"),
            pod_resources_socket: root.join("kubelet/pod-resources/kubelet.sock"),
            device_info_dir: root.join("devinfo"),
        }
    }
}

/// Timers of the daemon under test.
#[derive(Debug, Clone, Copy)]
pub struct DpTimers {
    /// `--rediscover-seconds`.
    pub rediscover_seconds: u64,
    /// `--device-info-grace-seconds`.
    pub grace_seconds: u64,
}

impl Default for DpTimers {
    /// Re-discovery effectively only on SIGHUP; device-info kept an hour.
    fn default() -> Self {
        Self {
            rediscover_seconds: 3600,
            grace_seconds: 3600,
        }
    }
}

/// A node running `plexus-sriovdp` against a fake sysfs tree and the fake kubelet. Everything is
/// stopped (daemon killed, sockets removed) on drop.
#[derive(Debug)]
pub struct DevicePluginNode {
    /// Holds the config file and the daemon's log (and the kubelet paths unless given).
    pub dir: tempfile::TempDir,
    /// The root of the (fake) sysfs tree the daemon reads.
    pub sysfs_root: PathBuf,
    /// The tree, when this node owns it.
    _sysfs: Option<FakeSysfs>,
    /// The fake kubelet (PodResources + device-plugin registration).
    pub kubelet: FakeKubelet,
    /// The node's paths.
    pub paths: DpPaths,
    daemon: Option<Child>,
}

impl DevicePluginNode {
    /// Starts the fake kubelet and the daemon with `config` (the resource config) under a
    /// temporary directory of its own.
    pub fn start(sysfs: FakeSysfs, config: &Value, timers: DpTimers) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let paths = DpPaths::under(dir.path());
        let mut node = Self::start_at(dir, paths, sysfs.root(), config, timers)?;
        node._sysfs = Some(sysfs);
        Ok(node)
    }

    /// [`DevicePluginNode::start`] with the kubelet and device-info paths of `paths` (those of
    /// a [`crate::bed::Bed`], so that `plexus` finds what the kubelet and the plugin wrote) and
    /// the sysfs tree at `sysfs_root` (one the `sriov` plugin reads too).
    pub fn start_at(
        dir: tempfile::TempDir,
        paths: DpPaths,
        sysfs_root: &Path,
        config: &Value,
        timers: DpTimers,
    ) -> anyhow::Result<Self> {
        let mut kubelet = FakeKubelet::start(&paths.pod_resources_socket)?;
        kubelet.serve_device_plugins(&paths.plugin_dir)?;
        let config_file = dir.path().join("config.json");
        std::fs::write(&config_file, config.to_string())?;
        let mut node = Self {
            dir,
            sysfs_root: sysfs_root.to_owned(),
            _sysfs: None,
            kubelet,
            paths,
            daemon: None,
        };
        node.daemon = Some(node.spawn_daemon(timers)?);
        Ok(node)
    }

    fn spawn_daemon(&self, timers: DpTimers) -> anyhow::Result<Child> {
        let log = std::fs::File::create(self.log_path())?;
        Command::new(bin_path("plexus-sriovdp"))
            .env_clear()
            .env("RUST_LOG", "info")
            .arg("--config")
            .arg(self.dir.path().join("config.json"))
            .arg("--sysfs-root")
            .arg(&self.sysfs_root)
            .arg("--device-plugin-dir")
            .arg(&self.paths.plugin_dir)
            .arg("--pod-resources-socket")
            .arg(&self.paths.pod_resources_socket)
            .arg("--device-info-dir")
            .arg(&self.paths.device_info_dir)
            .arg("--rediscover-seconds")
            .arg(timers.rediscover_seconds.to_string())
            .arg("--device-info-grace-seconds")
            .arg(timers.grace_seconds.to_string())
            .arg("--watch-millis")
            .arg("100")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn plexus-sriovdp")
    }

    /// The daemon's stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sriovdp.log")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Sends the daemon SIGHUP (re-discovery now).
    pub fn sighup(&self) {
        let pid = self.daemon.as_ref().expect("daemon running").id();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("SIGHUP");
    }

    /// Whether the daemon is still running (false: it exited, e.g. on a bad config).
    pub fn daemon_running(&mut self) -> bool {
        matches!(self.daemon.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Waits up to `limit` for the daemon to exit by itself; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.daemon.as_mut()?;
        let end = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if std::time::Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to 20 s) until the kubelet sees `resource` advertised and `cond` holds for its
    /// devices `(id, health, NUMA nodes)`; panics with the daemon's log otherwise.
    pub fn wait_advertised(
        &self,
        resource: &str,
        mut cond: impl FnMut(&[(String, String, Vec<i64>)]) -> bool,
    ) -> Vec<(String, String, Vec<i64>)> {
        let ok = crate::bed::wait_for(Duration::from_secs(20), || {
            self.kubelet.advertised(resource).is_some_and(|d| cond(&d))
        });
        let now = self.kubelet.advertised(resource);
        assert!(
            ok,
            "{resource} never advertised as expected; last: {now:?}\ndaemon log:\n{}",
            self.log()
        );
        now.unwrap_or_default()
    }

    /// The device-plugin's device-info file of `device` of `resource`.
    pub fn device_info_file(&self, resource: &str, device: &str) -> PathBuf {
        plexus_engine::device::DeviceInfoDirs::under(&self.paths.device_info_dir)
            .dp_file(resource, device)
    }

    /// Removes the PF's `virtfn<index>` link (the VF disappears, as when `sriov_numvfs` is
    /// lowered); returns the link's target for [`DevicePluginNode::restore_vf`].
    pub fn hide_vf(&self, pf: &str, index: u32) -> PathBuf {
        let link = self.device_dir(pf).join(format!("virtfn{index}"));
        let target = std::fs::read_link(&link).expect("virtfn link");
        std::fs::remove_file(&link).expect("remove virtfn link");
        target
    }

    /// Puts back a link removed by [`DevicePluginNode::hide_vf`] (the VF appears).
    pub fn restore_vf(&self, pf: &str, index: u32, target: &Path) {
        let link = self.device_dir(pf).join(format!("virtfn{index}"));
        std::os::unix::fs::symlink(target, link).expect("restore virtfn link");
    }

    /// The real directory of PCI device `address` in the tree.
    fn device_dir(&self, address: &str) -> PathBuf {
        std::fs::canonicalize(self.sysfs_root.join("bus/pci/devices").join(address))
            .expect("device in the tree")
    }

    /// Sets the operstate of interface `name` in the tree (a PF link going down or up).
    pub fn set_operstate(&self, name: &str, state: &str) {
        std::fs::write(
            self.sysfs_root
                .join("class/net")
                .join(name)
                .join("operstate"),
            format!("{state}\n"),
        )
        .expect("write operstate");
    }
}

impl Drop for DevicePluginNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Bed {
    /// `command` on the sandbox as [`Bed::verb_on`] sends it, with extra environment for plexus,
    /// which its delegates inherit (the `sriov` plugin's test hooks,
    /// [`crate::sriov::SriovNode::hooks`]).
    pub fn verb_on_with(
        &self,
        command: &str,
        sb: &Sandbox,
        config: &Value,
        env: &[(String, String)],
    ) -> Outcome {
        self.call_env(
            command,
            &sb.cid,
            Some(sb.ns.path()),
            &sb.namespace,
            &sb.pod,
            &sb.uid,
            config,
            env,
        )
    }
}
