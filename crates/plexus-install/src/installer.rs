//! The installer's actions on the host: install binaries, bring config and credentials up to
//! date, remove everything. Each is idempotent, so the init container, the long-running container
//! and a restarted pod can all call them without coordinating.

use crate::atomic;
use crate::cniconf::{self, ConfigInputs, PluginMode, PrimaryState};
use crate::credentials::{self, CredentialPaths, ServiceAccount};
use crate::error::{Error, Result};
use crate::token::{Source, TokenIssuer, TokenKeeper, TokenSpec};
use serde_json::{Map, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tracing::{error, info, warn};

/// Everything the installer needs to know; host paths are as seen *on the host* (they end up in
/// the generated files) and are accessed under `host_root`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the host's `/` is visible to the installer (`/host` in the DaemonSet, a temp dir in
    /// tests, `/` when run directly on a node).
    pub host_root: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    /// Host dir for kubeconfig, token and CA.
    pub plexus_dir: PathBuf,
    /// Our conflist's file name in `cni_conf_dir`.
    pub config_name: String,
    /// Binaries to install (paths inside the installer's image).
    pub binaries: Vec<PathBuf>,
    /// The installer's projected service-account dir (token, ca.crt).
    pub sa_dir: PathBuf,
    /// API server URL written into the kubeconfig.
    pub api_server: String,
    /// Host path; nothing is written until it exists.
    pub readiness_indicator_file: Option<PathBuf>,
    /// Plugin options from the user's template file.
    pub template: Map<String, Value>,
    /// Plugin options from flags (win over the template).
    pub options: Map<String, Value>,
    /// What to request for the plugin's own Node-bound token; `None`: use the pod's token.
    pub token: Option<TokenSpec>,
    /// Thin (`plexus`) or thick (`plexus-shim` + `plexusd`): which plugin our config names.
    pub mode: PluginMode,
}

impl Settings {
    /// Where the installer reaches host path `p`.
    pub fn on_host(&self, p: &Path) -> PathBuf {
        self.host_root.join(p.strip_prefix("/").unwrap_or(p))
    }

    /// Host path of our conflist.
    pub fn config_path(&self) -> PathBuf {
        self.cni_conf_dir.join(&self.config_name)
    }

    pub fn credential_paths(&self) -> CredentialPaths {
        CredentialPaths {
            dir: self.plexus_dir.clone(),
            on_disk: self.on_host(&self.plexus_dir),
        }
    }

    /// File names the binaries get in the bin dir.
    pub fn binary_names(&self) -> Vec<String> {
        self.binaries
            .iter()
            .filter_map(|b| b.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect()
    }
}

/// Copies every binary into the host's CNI bin dir atomically (a binary with identical content is
/// left alone). Each CNI plugin of ours (`plexus*`) is run with `CNI_COMMAND=VERSION` from its
/// final directory before the rename that makes it live, so a binary the host cannot run (wrong
/// libc, wrong architecture, truncated) fails the install here, loudly, and never replaces a
/// working one.
pub fn install_binaries(s: &Settings) -> Result<()> {
    if s.binaries.is_empty() {
        return Ok(());
    }
    // The config names the mode's plugin: installing binaries without it would leave every pod
    // on this node failing with "plugin not found" once the config is written.
    let wanted = s.mode.plugin_type();
    if !s.binary_names().iter().any(|n| n == wanted) {
        return Err(Error::InvalidSetting {
            flag: "--binary",
            reason: format!(
                "the {} mode's config names the plugin {wanted}, but no --binary is named {wanted} \
                 (got {:?})",
                mode_name(&s.mode),
                s.binary_names()
            ),
        });
    }
    let bin_dir = s.on_host(&s.cni_bin_dir);
    if !bin_dir.is_dir() {
        return Err(Error::Io {
            action: "find the CNI bin dir",
            path: bin_dir,
            cause: std::io::ErrorKind::NotFound.into(),
        });
    }
    atomic::remove_leftovers(&bin_dir)?;
    for src in &s.binaries {
        let name = src.file_name().ok_or_else(|| Error::InvalidSetting {
            flag: "--binary",
            reason: format!("{} has no file name", src.display()),
        })?;
        let dest = bin_dir.join(name);
        let host_dest = s.cni_bin_dir.join(name);
        let data = std::fs::read(src).map_err(Error::io("read binary", src))?;
        let is_plugin = is_our_plugin(&name.to_string_lossy());
        if atomic::same_content(&dest, &data) {
            info!("binary {} is up to date", host_dest.display());
            if is_plugin {
                let version = check_version(&dest)?;
                info!("{} answers VERSION: {version}", host_dest.display());
            }
            continue;
        }
        // The new copy must start on this host before it replaces the old one: a broken binary
        // fails the install and leaves the working one in place.
        atomic::write_checked(&dest, &mut &data[..], 0o755, |tmp| {
            if is_plugin {
                let version = check_version(tmp).map_err(|e| match e {
                    Error::BinaryBroken { detail, .. } => Error::BinaryBroken {
                        path: host_dest.clone(),
                        detail,
                    },
                    other => other,
                })?;
                info!("new {} answers VERSION: {version}", host_dest.display());
            }
            Ok(())
        })?;
        info!(
            "installed {} as {} ({} bytes)",
            src.display(),
            host_dest.display(),
            data.len()
        );
    }
    Ok(())
}

/// Our CNI plugins (checked with `VERSION` before they go live): `plexus*` and the SR-IOV
/// plugin `sriov` (crates/plexus-sriov).
pub fn is_our_plugin(name: &str) -> bool {
    name.starts_with("plexus") || name == "sriov"
}

/// Runs `bin` as the runtime would for `VERSION` and returns its answer.
pub fn check_version(bin: &Path) -> Result<String> {
    let broken = |detail: String| Error::BinaryBroken {
        path: bin.to_path_buf(),
        detail,
    };
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| broken(format!("cannot start it: {e}")))?;
    // A plugin that hangs on VERSION would hang every pod; give it a generous bound.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(broken("no answer to VERSION within 10 s".into()));
            }
            Err(e) => return Err(broken(format!("cannot wait for it: {e}"))),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if !status.success() {
        return Err(broken(format!(
            "VERSION exited with {status}; stdout {out:?}; stderr {err:?}"
        )));
    }
    match serde_json::from_str::<Value>(&out) {
        Ok(v) if v.get("supportedVersions").is_some() => Ok(out.trim().to_owned()),
        _ => Err(broken(format!(
            "VERSION printed no CNI version answer: {out:?}"
        ))),
    }
}

/// Result of one [`sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Nothing written: waiting for the reason given.
    Waiting(String),
    /// Config and credentials are current; `changed` is whether anything was written.
    Current { changed: bool },
    /// The config dir is in a state where our config would not be used as intended (another
    /// config sorts before ours, or the primary is itself a meta plugin): nothing written, the
    /// reason names the file that wins and what to do. Not healthy until resolved.
    Refused(String),
}

/// The plugin's token keeper as the daemon holds it.
pub type Keeper = TokenKeeper<Box<dyn TokenIssuer>>;

/// Brings credentials and our conflist up to date with the primary and the service account.
/// Writes nothing until the readiness indicator (when configured) and a valid primary exist. The
/// token written for the plugin is `keeper`'s Node-bound one when there is one, else the pod's.
pub fn sync(s: &Settings, keeper: Option<&mut Keeper>) -> Result<SyncOutcome> {
    if let Some(r) = &s.readiness_indicator_file
        && !s.on_host(r).exists()
    {
        return Ok(SyncOutcome::Waiting(format!(
            "readiness indicator file {} does not exist yet",
            r.display()
        )));
    }
    let conf_dir = s.on_host(&s.cni_conf_dir);
    let scan = cniconf::scan(&conf_dir, &s.config_name)
        .map_err(Error::io("read CNI config dir", &conf_dir))?;
    if let Some(first) = scan.ahead_of_ours.first() {
        return Ok(SyncOutcome::Refused(shadowed_reason(s, &conf_dir, first)));
    }
    let (file_name, primary) = match scan.primary {
        PrimaryState::Absent => {
            return Ok(SyncOutcome::Waiting(format!(
                "no primary CNI config (*.conf, *.conflist, *.json) in {} yet",
                s.cni_conf_dir.display()
            )));
        }
        PrimaryState::Invalid { file_name, reason } => {
            return Ok(SyncOutcome::Waiting(format!(
                "primary CNI config {} is not usable yet: {reason}",
                s.cni_conf_dir.join(file_name).display()
            )));
        }
        PrimaryState::Found { file_name, config } => (file_name, config),
    };
    if let Some(meta) = cniconf::meta_plugin_type(&primary) {
        return Ok(SyncOutcome::Refused(format!(
            "the primary CNI config {} is itself a meta plugin (type {meta}): {} would win, but \
             every pod's cluster network would go through {meta}; remove {} so that the real \
             primary network's config is found (docs/install.md, \"Migrating from Multus\")",
            s.cni_conf_dir.join(&file_name).display(),
            s.config_name,
            file_name
        )));
    }
    let mut sa = ServiceAccount::read(&s.sa_dir)?;
    if let Some(k) = keeper {
        let (token, source) = k.token(SystemTime::now(), &sa.token);
        if let Source::Own { .. } = source {
            sa.token = token;
        }
    }
    let paths = s.credential_paths();
    let ch = credentials::sync(&sa, &s.api_server, &paths)?;
    if ch.token {
        info!(
            "wrote token file {}",
            paths.dir.join(credentials::TOKEN_FILE).display()
        );
    }
    if ch.ca {
        info!(
            "wrote CA file {}",
            paths.dir.join(credentials::CA_FILE).display()
        );
    }
    if ch.kubeconfig {
        info!(
            "wrote kubeconfig {} (server {})",
            paths.kubeconfig().display(),
            s.api_server
        );
    }
    let primary_path = s.cni_conf_dir.join(&file_name);
    let kubeconfig = paths.kubeconfig();
    let conf = cniconf::render(&ConfigInputs {
        primary_path: &primary_path,
        primary: &primary,
        kubeconfig: &kubeconfig,
        bin_dir: &s.cni_bin_dir,
        readiness_indicator_file: s.readiness_indicator_file.as_deref(),
        template: &s.template,
        options: &s.options,
        mode: &s.mode,
    });
    let bytes = cniconf::to_bytes(&conf);
    let dest = s.on_host(&s.config_path());
    let mut changed = ch != credentials::Changes::default();
    if !atomic::same_content(&dest, &bytes) {
        atomic::remove_leftovers(&conf_dir)?;
        // One rename: a runtime loading the config sees the old mode's file or the new one,
        // never a mix, so switching modes needs no pause in pod creation.
        atomic::write(&dest, &bytes, 0o644)?;
        info!(
            "wrote {} ({} mode, plugin {}{}; primary {}, cniVersion {})",
            s.config_path().display(),
            mode_name(&s.mode),
            s.mode.plugin_type(),
            match &s.mode {
                PluginMode::Thin => String::new(),
                PluginMode::Thick { daemon_socket } =>
                    format!(" forwarding to plexusd at {}", daemon_socket.display()),
            },
            primary_path.display(),
            conf["cniVersion"]
        );
        changed = true;
    }
    Ok(SyncOutcome::Current { changed })
}

/// The mode's name as the `--mode` flag spells it.
pub fn mode_name(m: &PluginMode) -> &'static str {
    match m {
        PluginMode::Thin => "thin",
        PluginMode::Thick { .. } => "thick",
    }
}

/// Why a config file sorting before ours is refused, naming the file the runtime uses instead.
fn shadowed_reason(s: &Settings, conf_dir: &Path, first: &str) -> String {
    let kind = std::fs::read(conf_dir.join(first))
        .ok()
        .and_then(|t| serde_json::from_slice::<Map<String, Value>>(&t).ok())
        .map(|c| match cniconf::meta_plugin_type(&c) {
            Some(meta) => format!(" (a {meta} config)"),
            None => String::new(),
        })
        .unwrap_or_default();
    format!(
        "{} sorts before {}: the container runtime uses the lexically first config file, so {}{kind} \
         wins and Plexus would never be called; remove or rename it (docs/install.md, \
         \"Migrating from Multus\")",
        s.cni_conf_dir.join(first).display(),
        s.config_name,
        first
    )
}

/// Removes our conflist (for `--cleanup-on-exit`).
pub fn remove_config(s: &Settings) -> Result<()> {
    if atomic::remove(&s.on_host(&s.config_path()))? {
        info!("removed {}", s.config_path().display());
    }
    Ok(())
}

/// The plugin's default cache dir (`cniDir`), when neither the flag nor our config names one.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni/plexus";

/// Undoes the install, in the order that keeps the node working: first our conflist (so the
/// runtime goes back to the primary network's config, which was never modified, at once), then
/// the credentials and the installed binaries, then the plugin's cache dir, but only when it
/// holds no live entry.
///
/// Live entries are attachments of pods created through Plexus that still exist. The runtime
/// does not call Plexus for them any more (it now uses the primary's config), so their secondary
/// interfaces go away with their network namespaces, but IPAM leases of those delegates are only
/// released by a Plexus DEL; the entries are kept so that reinstalling Plexus can still tear them
/// down, and the log says how many there are. Drain the node first to have none.
///
/// `cache_dir` (host path) overrides the `cniDir` of our installed config.
pub fn uninstall(s: &Settings, cache_dir: Option<&Path>) -> Result<()> {
    let conf_path = s.on_host(&s.config_path());
    let configured_cache = std::fs::read(&conf_path)
        .ok()
        .and_then(|t| serde_json::from_slice::<Value>(&t).ok())
        .and_then(|v| v["plugins"][0]["cniDir"].as_str().map(PathBuf::from));
    let cache_dir = cache_dir
        .map(Path::to_path_buf)
        .or(configured_cache)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR));

    remove_config(s)?;
    let conf_dir = s.on_host(&s.cni_conf_dir);
    atomic::remove_leftovers(&conf_dir)?;
    match cniconf::scan(&conf_dir, &s.config_name) {
        Ok(scan) => match scan.primary {
            PrimaryState::Found { file_name, .. } | PrimaryState::Invalid { file_name, .. } => {
                info!(
                    "the container runtime now uses {}",
                    s.cni_conf_dir.join(file_name).display()
                )
            }
            PrimaryState::Absent => warn!(
                "no CNI config left in {}: the node has no pod network until one is installed",
                s.cni_conf_dir.display()
            ),
        },
        Err(e) => warn!("cannot read {}: {e}", s.cni_conf_dir.display()),
    }
    for p in credentials::remove(&s.credential_paths())? {
        info!("removed {}", p.display());
    }
    let bin_dir = s.on_host(&s.cni_bin_dir);
    // Both modes' plugins, whichever this node ran last: a switch leaves the other one in place
    // (a runtime may still run it with a config it loaded before the switch).
    let mut names = s.binary_names();
    for own in cniconf::OWN_PLUGIN_TYPES {
        if !names.iter().any(|n| n == own) {
            names.push(own.to_owned());
        }
    }
    for name in names {
        if atomic::remove(&bin_dir.join(&name))? {
            info!("removed {}", s.cni_bin_dir.join(&name).display());
        }
    }
    atomic::remove_leftovers(&bin_dir)?;
    remove_cache_dir(s, &cache_dir)
}

/// Removes the cache dir when it has no live entry (`<container>.json`); see [`uninstall`].
fn remove_cache_dir(s: &Settings, host_path: &Path) -> Result<()> {
    let dir = s.on_host(host_path);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read cache dir", &dir)(e)),
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let live = names.iter().filter(|n| n.ends_with(".json")).count();
    if live > 0 {
        warn!(
            "kept the cache dir {}: {live} attachment(s) of pods created through Plexus are still \
             there; their IPAM leases are released only by a Plexus DEL (drain the node before \
             uninstalling, or reinstall Plexus to tear them down)",
            host_path.display()
        );
        return Ok(());
    }
    // Only what the plugin creates there (lock files, temporary files); anything else stays.
    for n in names
        .iter()
        .filter(|n| n.ends_with(".lock") || n.ends_with(".tmp"))
    {
        atomic::remove(&dir.join(n))?;
    }
    match std::fs::remove_dir(&dir) {
        Ok(()) => info!("removed {}", host_path.display()),
        Err(e) => warn!("kept {}: {e}", host_path.display()),
    }
    Ok(())
}

/// Logs what is being waited for, once per distinct reason.
#[derive(Debug, Default)]
pub struct WaitLog {
    last: Option<String>,
}

impl WaitLog {
    pub fn waiting(&mut self, reason: &str) {
        if self.last.as_deref() != Some(reason) {
            warn!("waiting: {reason}");
            self.last = Some(reason.to_owned());
        }
    }
    /// Like [`WaitLog::waiting`], at error level: the operator must act.
    pub fn refused(&mut self, reason: &str) {
        if self.last.as_deref() != Some(reason) {
            error!("refusing to install: {reason}");
            self.last = Some(reason.to_owned());
        }
    }
    pub fn clear(&mut self) {
        self.last = None;
    }
}
