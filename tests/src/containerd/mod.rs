//! A private containerd (Debian's containerd 1.6 + runc) for one test: its own root, state dir,
//! gRPC socket and config, a CNI `bin_dir` holding the freshly built `plexus` next to the Debian
//! plugins, a CNI `conf_dir` the caller fills, and a pause image built and imported at start.
//! Network namespaces are created under the state dir, cgroups under a per-instance parent.
//!
//! Dropping it (also while a failed test unwinds) kills containerd, every container and shim it
//! started, unmounts everything under its directory, removes its cgroups and deletes the
//! directory. It never touches the system containerd (`/run/containerd/containerd.sock`).

pub mod cleanup;
pub mod image;

use crate::cri::CriClient;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The snapshotter: overlayfs works on the ext4 the temp dirs live on.
pub const SNAPSHOTTER: &str = "overlayfs";

/// The containerd namespace the CRI plugin uses.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// How long containerd may take to come up (socket, CRI plugin, CNI config loaded).
const START_BUDGET: Duration = Duration::from_secs(60);

/// One private containerd instance (see the module docs).
#[derive(Debug)]
pub struct Containerd {
    dir: tempfile::TempDir,
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// containerd's `state` dir (netns mounts, task bundles).
    pub state: PathBuf,
    /// The CRI plugin's CNI `bin_dir`.
    pub cni_bin_dir: PathBuf,
    /// The CRI plugin's CNI `conf_dir`.
    pub cni_conf_dir: PathBuf,
    /// The name of the cgroup subtree under which the bed's pods get their cgroups (the
    /// kubelet's `kubepods`); removed on drop.
    pub cgroup_root: String,
    /// Where the kubelet-like driver points the pods' log directories.
    pub log_root: PathBuf,
    /// The pause image (the CRI plugin's `sandbox_image`).
    pub sandbox_image: String,
    config: PathBuf,
    log: PathBuf,
    runc_root: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Prepares the directories, the CNI bin dir and the config, without starting anything.
    /// The caller writes its CNI config into [`Containerd::cni_conf_dir`], then calls
    /// [`Containerd::start`].
    pub fn prepare() -> anyhow::Result<Containerd> {
        crate::netns::require_root();
        let id = crate::netns::unique_name("");
        let dir = tempfile::Builder::new().prefix("plexus-ctrd-").tempdir()?;
        let p = |s: &str| dir.path().join(s);
        let (root, state, cni_bin_dir, cni_conf_dir, log_root, runc_root) = (
            p("root"),
            p("state"),
            p("cni-bin"),
            p("cni-conf"),
            p("pod-logs"),
            p("runc"),
        );
        for d in [
            &root,
            &state,
            &cni_bin_dir,
            &cni_conf_dir,
            &log_root,
            &runc_root,
            &p("opt"),
        ] {
            std::fs::create_dir_all(d)?;
        }
        link_cni_plugins(&cni_bin_dir)?;
        let sandbox_image = "registry.plexus.test/e2e/pause:1".to_owned();
        let socket = p("containerd.sock");
        let config = p("config.toml");
        let c = Containerd {
            socket,
            state,
            cni_bin_dir,
            cni_conf_dir,
            cgroup_root: format!("plexus-e2e-{id}"),
            log_root,
            sandbox_image,
            log: p("containerd.log"),
            runc_root,
            config,
            child: None,
            dir,
        };
        std::fs::write(&c.config, c.config_toml(&root))?;
        Ok(c)
    }

    /// The instance's own directory (everything it writes is below it, except shim sockets).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn config_toml(&self, root: &Path) -> String {
        let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).expect("JSON string");
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        format!(
            r#"version = 2
root = {root}
state = {state}
# Plugins that need hardware or filesystems this bed does not have; tracing exports nowhere.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
address = {socket}

[debug]
address = ""

[metrics]
address = ""

[plugins."io.containerd.internal.v1.opt"]
path = {opt}

[{cri}]
sandbox_image = {image}
disable_apparmor = true
enable_selinux = false
# The CRI plugin's netns live under the state dir, so the bed can find and unmount them.
netns_mounts_under_state_dir = true
stream_server_address = "127.0.0.1"
stream_server_port = "0"
# Sandboxes get oom_score_adj -998, which needs CAP_SYS_RESOURCE; where root lacks it (this CI's
# machines, any containerised node) containerd clamps to its own score instead of failing runc.
restrict_oom_score_adj = true

[{cri}.containerd]
snapshotter = "{snapshotter}"
default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
SystemdCgroup = false
Root = {runc_root}

[{cri}.cni]
bin_dir = {bin_dir}
conf_dir = {conf_dir}
max_conf_num = 1
"#,
            root = q(root),
            state = q(&self.state),
            socket = q(&self.socket),
            opt = q(&self.dir.path().join("opt")),
            image = serde_json::to_string(&self.sandbox_image).expect("JSON string"),
            snapshotter = SNAPSHOTTER,
            runc_root = q(&self.runc_root),
            bin_dir = q(&self.cni_bin_dir),
            conf_dir = q(&self.cni_conf_dir),
        )
    }

    /// Starts containerd and waits until its CRI plugin is ready with a CNI config loaded, then
    /// imports the pause image if it is not there yet. Returns a CRI client.
    pub fn start(&mut self) -> anyhow::Result<CriClient> {
        assert!(self.child.is_none(), "containerd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&self.config)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn containerd (is Debian's containerd package installed? hack/lib.sh installs it)")?;
        self.child = Some(child);
        let cri = self.wait_ready()?;
        if !self.has_image()? {
            self.import_pause_image()?;
        }
        Ok(cri)
    }

    fn wait_ready(&mut self) -> anyhow::Result<CriClient> {
        let deadline = Instant::now() + START_BUDGET;
        let mut last = String::from("socket not there yet");
        let mut cri = None;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "containerd exited during start ({status}); log:\n{}",
                    self.log_tail()
                );
            }
            if self.socket.exists() {
                let client = match cri.take() {
                    Some(c) => c,
                    None => CriClient::connect(&self.socket)?,
                };
                match client.condition("NetworkReady") {
                    Ok(Ok(())) => return Ok(client),
                    Ok(Err(why)) => last = format!("network not ready: {why}"),
                    Err(e) => last = format!("CRI status: {e}"),
                }
                cri = Some(client);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "containerd not ready within {START_BUDGET:?} ({last}); log:\n{}",
            self.log_tail()
        )
    }

    fn ctr(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", CRI_NAMESPACE])
            .args(args)
            .output()
            .context("spawn ctr")?;
        if !out.status.success() {
            bail!(
                "`ctr {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn has_image(&self) -> anyhow::Result<bool> {
        let list = self.ctr(&["images", "list", "--quiet"])?;
        Ok(list.lines().any(|l| l.trim() == self.sandbox_image))
    }

    fn import_pause_image(&self) -> anyhow::Result<()> {
        let bin = image::static_pause_binary()?;
        let archive = self.dir.path().join("pause.oci.tar");
        image::write_pause_archive(&bin, &self.sandbox_image, &archive)?;
        let archive = archive.to_string_lossy().into_owned();
        self.ctr(&["images", "import", "--snapshotter", SNAPSHOTTER, &archive])?;
        if !self.has_image()? {
            bail!(
                "{} not listed after `ctr images import`",
                self.sandbox_image
            );
        }
        Ok(())
    }

    /// Stops containerd like a service manager does (SIGTERM, SIGKILL after 10 s). Its shims and
    /// pods keep running, as on a real node.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Stops and starts containerd again (the same root, state and config); returns a client of
    /// the new instance.
    pub fn restart(&mut self) -> anyhow::Result<CriClient> {
        self.stop();
        self.start()
    }

    /// The last lines of containerd's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The network namespace files the CRI plugin holds (`<state>/netns/*`).
    pub fn netns_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.state.join("netns"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        cleanup::delete_runc_containers(&self.runc_root);
        let sockets = cleanup::shim_sockets(&self.state);
        cleanup::kill_all(&cleanup::processes_with_arg(
            "-address",
            self.socket.as_os_str(),
        ));
        for s in sockets {
            let _ = std::fs::remove_file(s);
        }
        cleanup::unmount_all_under(self.dir.path());
        cleanup::remove_cgroups(&self.cgroup_root);
    }
}

/// Fills the CNI bin dir: `plexus` and `plexus-shim` (this workspace's build) and every Debian
/// plugin (containerd itself needs `loopback`), as symlinks.
fn link_cni_plugins(bin_dir: &Path) -> anyhow::Result<()> {
    std::os::unix::fs::symlink(crate::cni::plexus_bin(), bin_dir.join("plexus"))?;
    std::os::unix::fs::symlink(
        crate::cni::bin_path("plexus-shim"),
        bin_dir.join("plexus-shim"),
    )?;
    for e in std::fs::read_dir(crate::cni::CNI_BIN_DIR).with_context(|| {
        format!(
            "read {} (containernetworking-plugins)",
            crate::cni::CNI_BIN_DIR
        )
    })? {
        let e = e?;
        std::os::unix::fs::symlink(e.path(), bin_dir.join(e.file_name()))?;
    }
    Ok(())
}
