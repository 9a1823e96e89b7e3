//! Command line. Every host path is a flag (resolved under `--host-root`), so tests and unusual
//! node layouts need no code change.

use crate::cniconf::PluginMode;
use crate::daemon::Mode;
use crate::error::{Error, Result};
use crate::installer::Settings;
use crate::token::TokenSpec;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "plexus-install",
    version,
    about = "Installs Plexus on a Kubernetes node and keeps its config and credentials current."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Copy the binaries, wait for the primary network, write kubeconfig and config, exit (init container).
    Install {
        #[command(flatten)]
        host: HostArgs,
        #[command(flatten)]
        config: ConfigArgs,
        /// Give up waiting for the primary config / readiness indicator after this many seconds.
        #[arg(long)]
        wait_timeout_seconds: Option<u64>,
    },
    /// Like `install`, then keep config, token and CA current until SIGTERM (main container).
    Run {
        #[command(flatten)]
        host: HostArgs,
        #[command(flatten)]
        config: ConfigArgs,
        /// Seconds between safety-net re-checks (changes are normally seen at once through inotify).
        #[arg(long, default_value_t = 60)]
        recheck_interval_seconds: u64,
        /// File touched after every successful sync (what `plexus-install health` checks).
        #[arg(long)]
        health_file: Option<PathBuf>,
        /// Remove our config on SIGTERM (only for uninstalling: pods created while it is absent
        /// get only the primary network).
        #[arg(long)]
        cleanup_on_exit: bool,
        /// Do not install binaries (the init container did; the bin dir need not be mounted).
        #[arg(long)]
        skip_binaries: bool,
    },
    /// Remove our config first (the runtime goes back to the primary's), then the credentials,
    /// the binaries, and the plugin's cache dir when it holds no live entry.
    Uninstall {
        #[command(flatten)]
        host: HostArgs,
        /// The plugin's cache dir (host path) [default: `cniDir` of the installed config, else
        /// /var/lib/cni/plexus].
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// After uninstalling, stay up until SIGTERM (the `uninstall` DaemonSet's container).
        #[arg(long)]
        then_wait: bool,
        /// With --then-wait: file touched when uninstall has succeeded (for a readiness probe).
        #[arg(long)]
        done_file: Option<PathBuf>,
    },
    /// Exit 0 when the health file was touched recently (exec liveness/readiness probe).
    Health {
        #[arg(long)]
        health_file: PathBuf,
        #[arg(long, default_value_t = 180)]
        max_age_seconds: u64,
    },
    /// Print the NetworkAttachmentDefinition CRD (deploy/crds/network-attachment-definitions.yaml).
    Crd,
}

impl Cmd {
    /// The verb, for commands that announce themselves (with the build version) in their first
    /// log line; the probe and the CRD printer stay quiet.
    pub fn logged_verb(&self) -> Option<&'static str> {
        match self {
            Cmd::Install { .. } => Some("install"),
            Cmd::Run { .. } => Some("run"),
            Cmd::Uninstall { .. } => Some("uninstall"),
            Cmd::Health { .. } | Cmd::Crd => None,
        }
    }
}

/// Where things go on the host.
#[derive(Debug, Clone, Args)]
pub struct HostArgs {
    /// Where the host's root file system is visible; every host path is resolved under it.
    #[arg(long, env = "PLEXUS_HOST_ROOT", default_value = "/host")]
    pub host_root: PathBuf,
    /// The host's CNI bin dir (host path).
    #[arg(long, env = "PLEXUS_CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// The host's CNI config dir (host path).
    #[arg(long, env = "PLEXUS_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// Host dir for the kubeconfig, token and CA [default: <cni-conf-dir>/plexus.d].
    #[arg(long)]
    pub plexus_dir: Option<PathBuf>,
    /// File name of our conflist in the config dir (must sort before the primary's).
    #[arg(long, default_value = "00-plexus.conflist")]
    pub config_name: String,
    /// A binary to install into the CNI bin dir (repeatable; paths in this container).
    #[arg(long = "binary", default_value = "/opt/plexus/bin/plexus")]
    pub binaries: Vec<PathBuf>,
}

/// `--mode`: which Plexus plugin the runtime calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// `plexus`: one process per CNI call does all the work.
    Thin,
    /// `plexus-shim`: forwards each call to the node daemon `plexusd` over a unix socket.
    Thick,
}

/// What goes into the kubeconfig and the conflist.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Thin (`plexus`) or thick (`plexus-shim` forwarding to `plexusd`); switching rewrites the
    /// config in one rename.
    #[arg(long, env = "PLEXUS_MODE", value_enum, default_value_t = ModeArg::Thin)]
    pub mode: ModeArg,
    /// Thick mode: the host path of plexusd's socket (the shim config's `daemonSocket`).
    #[arg(long, default_value = crate::cniconf::DEFAULT_DAEMON_SOCKET)]
    pub daemon_socket: PathBuf,
    /// The projected service-account dir (token, ca.crt) in this container.
    #[arg(long, default_value = "/var/run/secrets/kubernetes.io/serviceaccount")]
    pub service_account_dir: PathBuf,
    /// This node's name (the DaemonSet sets it from `spec.nodeName`): the plugin's token is then
    /// requested through the TokenRequest API bound to this Node, so that it outlives this pod.
    /// Without it the plugin uses this pod's projected token.
    #[arg(long, env = "PLEXUS_NODE_NAME")]
    pub node_name: Option<String>,
    /// The service account the plugin's token is requested for.
    #[arg(long, env = "PLEXUS_SERVICE_ACCOUNT", default_value = "plexus")]
    pub service_account_name: String,
    /// Its namespace [default: the `namespace` file of the service-account dir].
    #[arg(long, env = "PLEXUS_NAMESPACE")]
    pub service_account_namespace: Option<String>,
    /// Lifetime to request for the plugin's token; it is refreshed when 80% has passed. It bounds
    /// how long the plugin keeps working on a node after the DaemonSet is gone.
    #[arg(long, default_value_t = 86400)]
    pub token_expiration_seconds: u64,
    /// API server URL for the kubeconfig; must be an IP address [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT].
    #[arg(long)]
    pub api_server: Option<String>,
    /// Accept a plain-HTTP `--api-server` (the token then travels in clear text; test clusters only).
    #[arg(long)]
    pub insecure_http: bool,
    /// Host path: wait for it before writing anything; also the plugin's `readinessindicatorfile`.
    #[arg(long)]
    pub readiness_indicator_file: Option<PathBuf>,
    /// JSON object of plugin options (any key plexus reads; e.g. a ConfigMap); flags win over it.
    #[arg(long, env = "PLEXUS_CONFIG_TEMPLATE")]
    pub config_template: Option<PathBuf>,
    /// Plugin `logLevel` (debug, info, warn, error, panic).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Plugin `logFile` (host path).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Plugin `logToStderr`.
    #[arg(long)]
    pub log_to_stderr: Option<bool>,
    /// Plugin `namespaceIsolation`.
    #[arg(long)]
    pub namespace_isolation: Option<bool>,
    /// Plugin `globalNamespaces` (comma-separated).
    #[arg(long)]
    pub global_namespaces: Option<String>,
    /// Plugin `multusNamespace` (where NADs named without a namespace live).
    #[arg(long)]
    pub multus_namespace: Option<String>,
    /// Plugin `systemNamespaces` (comma-separated).
    #[arg(long)]
    pub system_namespaces: Option<String>,
    /// Plugin `defaultNetworks` (comma-separated).
    #[arg(long)]
    pub default_networks: Option<String>,
    /// Plugin `cniDir` (its cache dir, host path).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Plugin `confDir` (on-disk delegate configs, host path).
    #[arg(long)]
    pub delegate_conf_dir: Option<PathBuf>,
    /// Plugin `apiTimeoutSeconds`.
    #[arg(long)]
    pub api_timeout_seconds: Option<u64>,
    /// The conflist's `cniVersion` [default: the primary's].
    #[arg(long)]
    pub cni_version: Option<String>,
    /// Any other plugin key: KEY=VALUE, VALUE parsed as JSON when it is JSON, else a string (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl Cli {
    /// Settings and loop mode for `install`/`run`; settings only for `uninstall`.
    pub fn settings(host: &HostArgs, config: Option<&ConfigArgs>) -> Result<Settings> {
        let plexus_dir = host
            .plexus_dir
            .clone()
            .unwrap_or_else(|| host.cni_conf_dir.join("plexus.d"));
        for (flag, p) in [
            ("--cni-bin-dir", &host.cni_bin_dir),
            ("--cni-conf-dir", &host.cni_conf_dir),
            ("--plexus-dir", &plexus_dir),
        ] {
            if !p.is_absolute() {
                return Err(Error::InvalidSetting {
                    flag,
                    reason: format!("{} must be an absolute host path", p.display()),
                });
            }
        }
        let mut s = Settings {
            host_root: host.host_root.clone(),
            cni_bin_dir: host.cni_bin_dir.clone(),
            cni_conf_dir: host.cni_conf_dir.clone(),
            plexus_dir,
            config_name: host.config_name.clone(),
            binaries: host.binaries.clone(),
            sa_dir: PathBuf::new(),
            api_server: String::new(),
            readiness_indicator_file: None,
            template: Map::new(),
            options: Map::new(),
            token: None,
            mode: PluginMode::Thin,
        };
        if let Some(c) = config {
            s.sa_dir = c.service_account_dir.clone();
            s.api_server =
                crate::credentials::api_server(c.api_server.as_deref(), |k| std::env::var(k).ok())?;
            crate::credentials::check_transport(&s.api_server, c.insecure_http)?;
            s.readiness_indicator_file = c.readiness_indicator_file.clone();
            if let Some(t) = &c.config_template {
                s.template = read_template(t)?;
            }
            s.options = c.options()?;
            s.token = c.token_spec()?;
            s.mode = c.plugin_mode()?;
        }
        Ok(s)
    }
}

impl ConfigArgs {
    /// The plugin mode, with the daemon's socket checked to be an absolute host path.
    pub fn plugin_mode(&self) -> Result<PluginMode> {
        match self.mode {
            ModeArg::Thin => Ok(PluginMode::Thin),
            ModeArg::Thick if !self.daemon_socket.is_absolute() => Err(Error::InvalidSetting {
                flag: "--daemon-socket",
                reason: format!(
                    "{} must be an absolute host path",
                    self.daemon_socket.display()
                ),
            }),
            ModeArg::Thick => Ok(PluginMode::Thick {
                daemon_socket: self.daemon_socket.clone(),
            }),
        }
    }

    /// What to request for the plugin's own token (`None` without `--node-name`).
    pub fn token_spec(&self) -> Result<Option<TokenSpec>> {
        let Some(node) = self.node_name.clone().filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let namespace = match &self.service_account_namespace {
            Some(ns) => ns.clone(),
            None => {
                let p = self.service_account_dir.join("namespace");
                let ns = std::fs::read_to_string(&p).map_err(|e| Error::InvalidSetting {
                    flag: "--service-account-namespace",
                    reason: format!("not given, and {} cannot be read: {e}", p.display()),
                })?;
                ns.trim().to_owned()
            }
        };
        if self.token_expiration_seconds < 600 {
            return Err(Error::InvalidSetting {
                flag: "--token-expiration-seconds",
                reason: format!(
                    "{} is less than the API server's minimum of 600",
                    self.token_expiration_seconds
                ),
            });
        }
        Ok(Some(TokenSpec {
            namespace,
            service_account: self.service_account_name.clone(),
            node,
            expiration: Duration::from_secs(self.token_expiration_seconds),
        }))
    }

    /// The plugin keys set by flags.
    pub fn options(&self) -> Result<Map<String, Value>> {
        let mut m = Map::new();
        let list = |s: &str| -> Value {
            json!(
                s.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .collect::<Vec<_>>()
            )
        };
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put("logLevel", self.log_level.as_ref().map(|v| json!(v)));
        put("logFile", self.log_file.as_ref().map(|v| json!(v)));
        put("logToStderr", self.log_to_stderr.map(|v| json!(v)));
        put(
            "namespaceIsolation",
            self.namespace_isolation.map(|v| json!(v)),
        );
        // plexus (like Multus) reads globalNamespaces as a comma-separated string.
        put(
            "globalNamespaces",
            self.global_namespaces.as_ref().map(|v| json!(v)),
        );
        put(
            "multusNamespace",
            self.multus_namespace.as_ref().map(|v| json!(v)),
        );
        put(
            "systemNamespaces",
            self.system_namespaces.as_deref().map(list),
        );
        put(
            "defaultNetworks",
            self.default_networks.as_deref().map(list),
        );
        put("cniDir", self.cache_dir.as_ref().map(|v| json!(v)));
        put("confDir", self.delegate_conf_dir.as_ref().map(|v| json!(v)));
        put(
            "apiTimeoutSeconds",
            self.api_timeout_seconds.map(|v| json!(v)),
        );
        put("cniVersion", self.cni_version.as_ref().map(|v| json!(v)));
        for kv in &self.set {
            let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                return Err(Error::InvalidSetting {
                    flag: "--set",
                    reason: format!("{kv:?} is not KEY=VALUE"),
                });
            };
            let v = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
            m.insert(k.to_owned(), v);
        }
        Ok(m)
    }
}

fn read_template(path: &PathBuf) -> Result<Map<String, Value>> {
    let text = std::fs::read(path).map_err(Error::io("read config template", path))?;
    match serde_json::from_slice(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::InvalidFile {
            what: "config template",
            path: path.clone(),
            reason: "must be a JSON object of plugin options".into(),
        }),
        Err(e) => Err(Error::InvalidFile {
            what: "config template",
            path: path.clone(),
            reason: e.to_string(),
        }),
    }
}

/// The loop mode of `run`.
pub fn forever(recheck_secs: u64, health_file: Option<PathBuf>, cleanup_on_exit: bool) -> Mode {
    Mode::Forever {
        recheck: Duration::from_secs(recheck_secs.max(1)),
        health_file,
        cleanup_on_exit,
    }
}
