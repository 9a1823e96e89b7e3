//! The Plexus plugin configuration: the stdin of the runtime's call, with Multus's keys.
//!
//! Parsed by hand from the JSON object rather than with a serde derive because an operator who
//! mistypes a value must be told which key and which value are wrong; serde's messages name
//! neither reliably. Every top-level key is checked against `config_keys::KEYS` first: a misspelt
//! known key is an error, keys that do nothing here and unknown keys become warnings.

use crate::policy::DelegatePolicy;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::PathBuf;

/// Where the cluster (primary) network comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterNetwork {
    /// `clusterNetwork` without a `/`: a NAD in `multusNamespace`, else a config in `confDir`
    /// whose `name` matches.
    Name(String),
    /// `clusterNetwork` with a `/`: a directory (lexically first `.conf`/`.conflist`/`.json`) or a
    /// config file.
    Path(PathBuf),
    /// `delegates[0]` (inline config).
    Inline(Value),
}

/// A network that every pod gets after the cluster network (`defaultNetworks`, `delegates[1..]`).
pub type DefaultNetwork = ClusterNetwork;

/// Log verbosity. Multus's levels, most detailed first, are `debug`, `verbose`, `error` and
/// `panic`; Plexus adds `info`, `warn` (`warning`) and `trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Multus's `panic`: Plexus never panics on purpose, so nothing is logged.
    Off,
    Error,
    Warn,
    /// Also Multus's `verbose`, which sits between `error` and `debug`.
    Info,
    /// Plexus's own modules in detail; libraries (HTTP, TLS) stay at `warn`.
    Debug,
    /// Everything, libraries' internals included. Plexus-only.
    Trace,
}

impl LogLevel {
    /// Parses a `logLevel` value (case-insensitive; empty means the default, `warn`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "verbose" | "info" => Self::Info,
            "warn" | "warning" | "" => Self::Warn,
            "error" => Self::Error,
            "panic" | "off" | "none" => Self::Off,
            _ => return None,
        })
    }

    /// The canonical name, which [`LogLevel::parse`] reads back.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Off => "panic",
            Self::Error => "error",
            Self::Warn => "warning",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// Multus's `logOptions`: size-based rotation of `logFile` (lumberjack's semantics). Applies only
/// when `logFile` is set; the defaults are Multus's, which rotates with them even without the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// `maxSize`: megabytes the file may reach before it is rotated (0 means the default, 100).
    pub max_size_mb: u64,
    /// `maxAge`: days a rotated file is kept (0: no age limit).
    pub max_age_days: u64,
    /// `maxBackups`: rotated files kept (0: no count limit).
    pub max_backups: u64,
    /// `compress`: gzip rotated files.
    pub compress: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            max_size_mb: 100,
            max_age_days: 5,
            max_backups: 5,
            compress: true,
        }
    }
}

/// Everything Plexus reads from its own configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PlexusConfig {
    pub name: String,
    pub cni_version: String,
    pub cluster_network: ClusterNetwork,
    pub default_networks: Vec<DefaultNetwork>,
    pub system_namespaces: Vec<String>,
    pub multus_namespace: String,
    pub conf_dir: PathBuf,
    pub cni_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    pub readiness_indicator_file: Option<PathBuf>,
    pub namespace_isolation: bool,
    pub global_namespaces: Vec<String>,
    pub log_level: LogLevel,
    pub log_file: Option<PathBuf>,
    pub log_to_stderr: bool,
    pub log_options: LogOptions,
    /// Seconds allowed for each API request before the ADD fails with "try again later".
    pub api_timeout_secs: u64,
    /// `allowedDelegateTypes` / `deniedDelegateTypes`: which plugin types a NAD may run.
    pub delegate_policy: DelegatePolicy,
    /// `maxNetworksPerPod`: most networks one pod may ask for (annotation entries plus
    /// `defaultNetworks`), refused before any NAD is fetched.
    pub max_networks_per_pod: usize,
    /// `callTimeoutSeconds`: the budget of one whole CNI call, delegates and API requests
    /// included (see [`crate::budget`]).
    pub call_timeout_secs: u64,
    /// What the runtime sent in `runtimeConfig` (filtered by our declared capabilities).
    pub runtime_config: Map<String, Value>,
    /// `events`: post a Kubernetes Event per ADD (Normal on success, Warning on failure).
    pub events: bool,
    /// `strictSelection`: reject unknown keys in selection elements (NPWG's reading) instead of
    /// ignoring them with a warning (Multus's behaviour, the default).
    pub strict_selection: bool,
    /// `auxiliaryCNIChainName`: the directory, next to the `clusterNetwork` file, whose plugin
    /// configs run as an extra chain for every pod (see `chaining`).
    pub auxiliary_chain_name: Option<String>,
    /// GC only: `cni.dev/valid-attachments` (or the legacy `cni.dev/attachments`) the runtime
    /// sent; `None` when it sent neither key, which is not the same as an empty list.
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// `podResourcesSocket`: the kubelet's PodResources API socket (device IDs for NADs with a
    /// `resourceName`).
    pub pod_resources_socket: PathBuf,
    /// `deviceCheckpointFile`: the kubelet's device-manager checkpoint, read when the socket is
    /// missing or nobody listens on it.
    pub device_checkpoint_file: PathBuf,
    /// `kubeletTimeoutSeconds`: the deadline of one device lookup, retries included.
    pub kubelet_timeout_secs: u64,
    /// `deviceInfoDir`: root of the NPWG device-info files (`dp/` from the device plugin,
    /// `cni/` written by plexus per attachment).
    pub device_info_dir: PathBuf,
    /// Keys that were accepted but have no effect, or are unknown: to be logged at warn.
    pub key_notes: Vec<crate::config_keys::KeyNote>,
}

/// One `{containerID, ifname}` element of `cni.dev/valid-attachments` (CNI 1.1.0 GC).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(rename = "ifname")]
    pub ifname: String,
}

/// The GC key of CNI 1.1.0, and the name it had before the spec fixed it (libcni sends both).
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
pub const LEGACY_ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// A configuration value that cannot be used; the message names the key and the value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid plexus configuration: key {key:?} has value {value}: {reason}")]
pub struct ConfigError {
    pub key: String,
    /// The offending value as JSON text.
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: &str, value: &Value, reason: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

pub const DEFAULT_CONF_DIR: &str = "/etc/cni/multus/net.d";
pub const DEFAULT_CNI_DIR: &str = "/var/lib/cni/plexus";
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
pub const DEFAULT_DEVICE_CHECKPOINT_FILE: &str =
    "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo";

/// `apiTimeoutSeconds`: at least a second, at most ten minutes (a CNI call held longer than that
/// is one the runtime has given up on; a huge value would overflow the deadline arithmetic).
pub const API_TIMEOUT_RANGE: RangeInclusive<u64> = 1..=600;
/// `kubeletTimeoutSeconds` default: room for the client's retries of a busy kubelet.
pub const DEFAULT_KUBELET_TIMEOUT_SECS: u64 = 10;
/// `kubeletTimeoutSeconds` range: like `apiTimeoutSeconds`, nothing waits longer than ten
/// minutes, and a huge value would overflow the lookup's deadline.
pub const KUBELET_TIMEOUT_RANGE: RangeInclusive<u64> = 1..=600;
/// `maxNetworksPerPod` default: far more interfaces than any real pod has, far fewer NAD GETs
/// than would load an API server.
pub const DEFAULT_MAX_NETWORKS_PER_POD: u64 = 32;
/// `maxNetworksPerPod` range: 1024 is beyond what the kernel's interface naming makes useful.
pub const MAX_NETWORKS_RANGE: RangeInclusive<u64> = 1..=1024;

impl PlexusConfig {
    /// Where delegates are looked up: `binDir` first, then the runtime's `CNI_PATH` (without
    /// `binDir` a second time).
    pub fn delegate_search_path(&self, cni_path: &[PathBuf]) -> Vec<PathBuf> {
        std::iter::once(self.bin_dir.clone())
            .chain(cni_path.iter().filter(|p| **p != self.bin_dir).cloned())
            .collect()
    }

    /// The config's `callTimeoutSeconds`, or the default when it is absent or invalid: for the
    /// shim and plexusd, which need the call's budget before (or without) parsing the rest; the
    /// engine reports an invalid value when it parses the whole config.
    pub fn call_timeout_of(m: &Map<String, Value>) -> std::time::Duration {
        std::time::Duration::from_secs(
            call_timeout(m).unwrap_or(crate::budget::DEFAULT_CALL_TIMEOUT.as_secs()),
        )
    }

    /// Parses the runtime's stdin object.
    pub fn from_map(m: &Map<String, Value>) -> Result<Self, ConfigError> {
        let key_notes = crate::config_keys::check(m)?;
        let cluster_network = match (m.get("clusterNetwork"), m.get("delegates")) {
            (Some(v), _) => network_ref("clusterNetwork", v)?,
            (None, Some(Value::Array(d))) if !d.is_empty() => inline_delegate("delegates", &d[0])?,
            (None, Some(v)) => {
                return Err(ConfigError::new(
                    "delegates",
                    v,
                    "must be a non-empty list of CNI configs",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "clusterNetwork",
                    &Value::Null,
                    "one of \"clusterNetwork\" or \"delegates\" is required",
                ));
            }
        };
        let mut default_networks = Vec::new();
        // `delegates` is ignored when `clusterNetwork` is set (Multus's rule).
        if !m.contains_key("clusterNetwork")
            && let Some(Value::Array(d)) = m.get("delegates")
        {
            for v in &d[1..] {
                default_networks.push(inline_delegate("delegates", v)?);
            }
        }
        for s in string_list(m, "defaultNetworks")?.unwrap_or_default() {
            default_networks.push(network_ref("defaultNetworks", &Value::String(s))?);
        }
        let global_namespaces = match m.get("globalNamespaces") {
            None => vec!["default".to_owned()],
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(v @ Value::Array(_)) => string_list_value("globalNamespaces", v)?,
            Some(v) => {
                return Err(ConfigError::new(
                    "globalNamespaces",
                    v,
                    "must be a comma-separated string",
                ));
            }
        };
        Ok(Self {
            name: string(m, "name")?.unwrap_or_else(|| "plexus-cni-network".to_owned()),
            cni_version: string(m, "cniVersion")?.unwrap_or_else(|| "0.1.0".to_owned()),
            cluster_network,
            default_networks,
            system_namespaces: string_list(m, "systemNamespaces")?
                .unwrap_or_else(|| vec!["kube-system".to_owned()]),
            multus_namespace: string(m, "multusNamespace")?
                .unwrap_or_else(|| "kube-system".to_owned()),
            conf_dir: path(m, "confDir")?.unwrap_or_else(|| DEFAULT_CONF_DIR.into()),
            cni_dir: path(m, "cniDir")?.unwrap_or_else(|| DEFAULT_CNI_DIR.into()),
            bin_dir: path(m, "binDir")?.unwrap_or_else(|| DEFAULT_BIN_DIR.into()),
            kubeconfig: path(m, "kubeconfig")?,
            readiness_indicator_file: path(m, "readinessindicatorfile")?,
            namespace_isolation: boolean(m, "namespaceIsolation")?.unwrap_or(false),
            global_namespaces,
            log_level: log_level(m)?,
            log_file: path(m, "logFile")?,
            log_to_stderr: boolean(m, "logToStderr")?.unwrap_or(true),
            log_options: log_options(m)?,
            api_timeout_secs: bounded_int(m, "apiTimeoutSeconds", 10, API_TIMEOUT_RANGE)?,
            delegate_policy: DelegatePolicy {
                allowed: type_list(m, "allowedDelegateTypes")?,
                denied: type_list(m, "deniedDelegateTypes")?.unwrap_or_default(),
            },
            max_networks_per_pod: bounded_int(
                m,
                "maxNetworksPerPod",
                DEFAULT_MAX_NETWORKS_PER_POD,
                MAX_NETWORKS_RANGE,
            )? as usize,
            call_timeout_secs: call_timeout(m)?,
            runtime_config: match m.get("runtimeConfig") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(o)) => o.clone(),
                Some(v) => return Err(ConfigError::new("runtimeConfig", v, "must be an object")),
            },
            events: boolean(m, "events")?.unwrap_or(true),
            strict_selection: boolean(m, "strictSelection")?.unwrap_or(false),
            auxiliary_chain_name: auxiliary_chain_name(m)?,
            valid_attachments: valid_attachments(m)?,
            pod_resources_socket: path(m, "podResourcesSocket")?
                .unwrap_or_else(|| DEFAULT_POD_RESOURCES_SOCKET.into()),
            device_checkpoint_file: path(m, "deviceCheckpointFile")?
                .unwrap_or_else(|| DEFAULT_DEVICE_CHECKPOINT_FILE.into()),
            kubelet_timeout_secs: bounded_int(
                m,
                "kubeletTimeoutSeconds",
                DEFAULT_KUBELET_TIMEOUT_SECS,
                KUBELET_TIMEOUT_RANGE,
            )?,
            device_info_dir: path(m, "deviceInfoDir")?
                .unwrap_or_else(|| DEFAULT_DEVICE_INFO_DIR.into()),
            key_notes,
        })
    }

    /// True when `namespace` may reference NADs in `target` under namespace isolation.
    pub fn isolation_allows(&self, pod_namespace: &str, target: &str) -> bool {
        !self.namespace_isolation
            || pod_namespace == target
            || self.global_namespaces.iter().any(|g| g == target)
    }
}

/// An integer key with a default, refused (naming key and value) outside `range`. Floats,
/// negative numbers and strings are refused too: `9.2e18` must not become a saturated deadline.
pub fn bounded_int(
    m: &Map<String, Value>,
    key: &str,
    default: u64,
    range: RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let Some(v) = m.get(key).filter(|v| !v.is_null()) else {
        return Ok(default);
    };
    let reason = || {
        format!(
            "must be an integer from {} to {}",
            range.start(),
            range.end()
        )
    };
    match v.as_u64() {
        Some(n) if range.contains(&n) => Ok(n),
        _ => Err(ConfigError::new(key, v, reason())),
    }
}

/// A list of plugin types (plain binary names); `None` when absent.
fn type_list(m: &Map<String, Value>, key: &str) -> Result<Option<BTreeSet<String>>, ConfigError> {
    let Some(list) = string_list(m, key)? else {
        return Ok(None);
    };
    for t in &list {
        if t.is_empty() || t.contains('/') || t == "." || t == ".." {
            return Err(ConfigError::new(
                key,
                &m[key],
                format!("{t:?} is not a plugin type (a binary name without '/')"),
            ));
        }
    }
    Ok(Some(list.into_iter().collect()))
}

/// The range `callTimeoutSeconds` must be in. Above ten minutes no runtime is still waiting (the
/// kubelet gives a CRI call two), so a larger value is a mistake such as milliseconds for seconds.
pub const CALL_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=600;

fn call_timeout(m: &Map<String, Value>) -> Result<u64, ConfigError> {
    let Some(v) = m.get("callTimeoutSeconds").filter(|v| !v.is_null()) else {
        return Ok(crate::budget::DEFAULT_CALL_TIMEOUT.as_secs());
    };
    v.as_u64()
        .filter(|n| CALL_TIMEOUT_RANGE.contains(n))
        .ok_or_else(|| {
            ConfigError::new(
                "callTimeoutSeconds",
                v,
                format!(
                    "must be a whole number of seconds from {} to {}",
                    CALL_TIMEOUT_RANGE.start(),
                    CALL_TIMEOUT_RANGE.end()
                ),
            )
        })
}

/// An absent key (or `null`) is `None`: "every attachment is stale" must be said with `[]`.
fn valid_attachments(m: &Map<String, Value>) -> Result<Option<Vec<ValidAttachment>>, ConfigError> {
    let present = |key| m.get(key).filter(|v| !v.is_null()).map(|v| (key, v));
    let Some((key, v)) = present(VALID_ATTACHMENTS_KEY).or_else(|| present(LEGACY_ATTACHMENTS_KEY))
    else {
        return Ok(None);
    };
    serde_json::from_value(v.clone()).map(Some).map_err(|e| {
        ConfigError::new(
            key,
            v,
            format!("must be a list of {{\"containerID\", \"ifname\"}} objects: {e}"),
        )
    })
}

fn auxiliary_chain_name(m: &Map<String, Value>) -> Result<Option<String>, ConfigError> {
    const KEY: &str = "auxiliaryCNIChainName";
    let Some(name) = string(m, KEY)?.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    crate::chaining::check_chain_name(&name)
        .map_err(|reason| ConfigError::new(KEY, &Value::String(name.clone()), reason))?;
    Ok(Some(name))
}

fn network_ref(key: &str, v: &Value) -> Result<ClusterNetwork, ConfigError> {
    match v {
        Value::String(s) if s.trim().is_empty() => {
            Err(ConfigError::new(key, v, "must not be empty"))
        }
        Value::String(s) if s.contains('/') => Ok(ClusterNetwork::Path(PathBuf::from(s))),
        Value::String(s) => Ok(ClusterNetwork::Name(s.clone())),
        _ => Err(ConfigError::new(
            key,
            v,
            "must be a string (a network name or a path)",
        )),
    }
}

fn inline_delegate(key: &str, v: &Value) -> Result<ClusterNetwork, ConfigError> {
    match v {
        Value::Object(_) => Ok(ClusterNetwork::Inline(v.clone())),
        _ => Err(ConfigError::new(
            key,
            v,
            "each delegate must be a CNI config object",
        )),
    }
}

fn string(m: &Map<String, Value>, key: &str) -> Result<Option<String>, ConfigError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ConfigError::new(key, v, "must be a string")),
    }
}

fn path(m: &Map<String, Value>, key: &str) -> Result<Option<PathBuf>, ConfigError> {
    Ok(string(m, key)?.filter(|s| !s.is_empty()).map(PathBuf::from))
}

fn boolean(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ConfigError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        // Multus configs in the wild write booleans as strings.
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(v) => Err(ConfigError::new(key, v, "must be true or false")),
    }
}

fn string_list(m: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => string_list_value(key, v).map(Some),
    }
}

fn string_list_value(key: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
    let Value::Array(items) = v else {
        return Err(ConfigError::new(key, v, "must be a list of strings"));
    };
    items
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_owned)
                .ok_or_else(|| ConfigError::new(key, v, "must be a list of strings"))
        })
        .collect()
}

fn log_level(m: &Map<String, Value>) -> Result<LogLevel, ConfigError> {
    let Some(s) = string(m, "logLevel")? else {
        return Ok(LogLevel::Warn);
    };
    LogLevel::parse(&s).ok_or_else(|| {
        ConfigError::new(
            "logLevel",
            &Value::String(s),
            "must be one of trace, debug, verbose, info, warning, error, panic",
        )
    })
}

fn log_options(m: &Map<String, Value>) -> Result<LogOptions, ConfigError> {
    log_options_from(m.get("logOptions"))
}

/// Parses the value of `logOptions` (absent or `null`: the defaults).
pub fn log_options_from(value: Option<&Value>) -> Result<LogOptions, ConfigError> {
    let mut o = LogOptions::default();
    let opts = match value {
        None | Some(Value::Null) => return Ok(o),
        Some(Value::Object(opts)) => opts,
        Some(v) => {
            return Err(ConfigError::new(
                "logOptions",
                v,
                "must be an object with maxSize, maxAge, maxBackups, compress",
            ));
        }
    };
    for (k, v) in opts {
        let key = format!("logOptions.{k}");
        let count = || {
            v.as_u64()
                .ok_or_else(|| ConfigError::new(&key, v, "must be a non-negative integer"))
        };
        match k.as_str() {
            "maxSize" => o.max_size_mb = count().map(|n| if n == 0 { 100 } else { n })?,
            "maxAge" => o.max_age_days = count()?,
            "maxBackups" => o.max_backups = count()?,
            "compress" => {
                o.compress = v
                    .as_bool()
                    .ok_or_else(|| ConfigError::new(&key, v, "must be true or false"))?
            }
            _ => {
                return Err(ConfigError::new(
                    &key,
                    v,
                    "unknown logOptions key (known: maxSize, maxAge, maxBackups, compress)",
                ));
            }
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<PlexusConfig, ConfigError> {
        PlexusConfig::from_map(v.as_object().unwrap())
    }

    #[test]
    fn cluster_network_forms() {
        let c = parse(json!({"clusterNetwork": "kindnet"})).unwrap();
        assert_eq!(c.cluster_network, ClusterNetwork::Name("kindnet".into()));
        let c = parse(json!({"clusterNetwork": "/etc/cni/net.d/10-x.conflist"})).unwrap();
        assert_eq!(
            c.cluster_network,
            ClusterNetwork::Path("/etc/cni/net.d/10-x.conflist".into())
        );
        let c = parse(json!({"delegates": [{"type": "bridge"}, {"type": "ptp"}]})).unwrap();
        assert!(matches!(c.cluster_network, ClusterNetwork::Inline(_)));
        assert_eq!(c.default_networks.len(), 1);
    }

    #[test]
    fn delegates_are_looked_up_in_bin_dir_first_and_it_is_not_searched_twice() {
        let c = parse(json!({"clusterNetwork": "a", "binDir": "/opt/plexus/bin"})).unwrap();
        let path = [
            PathBuf::from("/opt/cni/bin"),
            PathBuf::from("/opt/plexus/bin"),
            PathBuf::from("/usr/lib/cni"),
        ];
        assert_eq!(
            c.delegate_search_path(&path),
            ["/opt/plexus/bin", "/opt/cni/bin", "/usr/lib/cni"].map(PathBuf::from)
        );
    }

    #[test]
    fn cluster_network_wins_over_delegates() {
        let c = parse(
            json!({"clusterNetwork": "a", "delegates": [{"type": "bridge"}, {"type": "ptp"}]}),
        )
        .unwrap();
        assert_eq!(c.cluster_network, ClusterNetwork::Name("a".into()));
        assert!(c.default_networks.is_empty());
    }

    #[test]
    fn defaults_match_multus() {
        let c = parse(json!({"clusterNetwork": "a"})).unwrap();
        assert_eq!(c.system_namespaces, vec!["kube-system"]);
        assert_eq!(c.multus_namespace, "kube-system");
        assert_eq!(c.global_namespaces, vec!["default"]);
        assert_eq!(c.bin_dir, PathBuf::from("/opt/cni/bin"));
        assert_eq!(c.conf_dir, PathBuf::from(DEFAULT_CONF_DIR));
        assert!(!c.namespace_isolation);
        assert!(c.log_to_stderr);
        assert_eq!(
            c.pod_resources_socket,
            PathBuf::from("/var/lib/kubelet/pod-resources/kubelet.sock")
        );
        assert_eq!(
            c.device_checkpoint_file,
            PathBuf::from("/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint")
        );
        assert_eq!(c.kubelet_timeout_secs, 10);
        assert_eq!(
            c.device_info_dir,
            PathBuf::from("/var/run/k8s.cni.cncf.io/devinfo")
        );
        let c = parse(
            json!({"clusterNetwork": "a", "podResourcesSocket": "/k/s.sock",
            "deviceCheckpointFile": "/k/cp", "kubeletTimeoutSeconds": 3, "deviceInfoDir": "/d"}),
        )
        .unwrap();
        assert_eq!(c.pod_resources_socket, PathBuf::from("/k/s.sock"));
        assert_eq!(c.device_checkpoint_file, PathBuf::from("/k/cp"));
        assert_eq!(c.kubelet_timeout_secs, 3);
        assert_eq!(c.device_info_dir, PathBuf::from("/d"));
        let e = parse(json!({"clusterNetwork": "a", "kubeletTimeoutSeconds": 0})).unwrap_err();
        assert_eq!(e.key, "kubeletTimeoutSeconds");
        assert!(
            !c.strict_selection,
            "unknown selection keys are ignored, as Multus does"
        );
    }

    #[test]
    fn auxiliary_chain_name_is_a_plain_directory_name() {
        let c = parse(json!({"clusterNetwork": "/a/b.conflist"})).unwrap();
        assert_eq!(c.auxiliary_chain_name, None);
        let c = parse(
            json!({"clusterNetwork": "/a/b.conflist", "auxiliaryCNIChainName": "vendor-cni-chain"}),
        )
        .unwrap();
        assert_eq!(c.auxiliary_chain_name.as_deref(), Some("vendor-cni-chain"));
        let c =
            parse(json!({"clusterNetwork": "/a/b.conflist", "auxiliaryCNIChainName": ""})).unwrap();
        assert_eq!(c.auxiliary_chain_name, None);
        let e = parse(json!({"clusterNetwork": "a", "auxiliaryCNIChainName": "../x"})).unwrap_err();
        assert_eq!(e.key, "auxiliaryCNIChainName");
        let e = parse(json!({"clusterNetwork": "a", "auxiliaryCNIChainName": 3})).unwrap_err();
        assert_eq!(e.key, "auxiliaryCNIChainName");
    }

    #[test]
    fn strict_selection_switch() {
        let c = parse(json!({"clusterNetwork": "a", "strictSelection": true})).unwrap();
        assert!(c.strict_selection);
        let e = parse(json!({"clusterNetwork": "a", "strictSelection": 1})).unwrap_err();
        assert_eq!(e.key, "strictSelection");
    }

    #[test]
    fn errors_name_key_and_value() {
        let e = parse(json!({"clusterNetwork": "a", "namespaceIsolation": "yes"})).unwrap_err();
        assert_eq!(e.key, "namespaceIsolation");
        assert!(e.to_string().contains("\"yes\""), "{e}");
        let e = parse(json!({"clusterNetwork": 5})).unwrap_err();
        assert_eq!(e.key, "clusterNetwork");
        let e = parse(json!({})).unwrap_err();
        assert!(e.to_string().contains("clusterNetwork"));
        let e = parse(json!({"clusterNetwork": "a", "logLevel": "loud"})).unwrap_err();
        assert!(e.to_string().contains("loud"));
        let e = parse(json!({"clusterNetwork": "a", "defaultNetworks": "x"})).unwrap_err();
        assert_eq!(e.key, "defaultNetworks");
    }

    #[test]
    fn events_and_gc_attachments() {
        let c = parse(json!({"clusterNetwork": "a"})).unwrap();
        assert!(c.events);
        assert_eq!(c.valid_attachments, None, "no key is not an empty list");
        let c = parse(json!({"clusterNetwork": "a", "cni.dev/valid-attachments": null})).unwrap();
        assert_eq!(c.valid_attachments, None);
        let c = parse(json!({"clusterNetwork": "a", "events": false, "cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]})).unwrap();
        assert!(!c.events);
        assert_eq!(
            c.valid_attachments,
            Some(vec![ValidAttachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }])
        );
        // The current key wins over the legacy one.
        let c = parse(json!({"clusterNetwork": "a", "cni.dev/valid-attachments": [], "cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]})).unwrap();
        assert_eq!(c.valid_attachments, Some(vec![]));
        let e = parse(json!({"clusterNetwork": "a", "cni.dev/valid-attachments": [{"id": 1}]}))
            .unwrap_err();
        assert_eq!(e.key, "cni.dev/valid-attachments");
    }

    #[test]
    fn log_levels_follow_multus_order() {
        let level = |l: &str| {
            parse(json!({"clusterNetwork": "a", "logLevel": l}))
                .unwrap()
                .log_level
        };
        assert_eq!(level("debug"), LogLevel::Debug);
        assert_eq!(
            level("verbose"),
            LogLevel::Info,
            "verbose is less detailed than debug"
        );
        assert!(level("debug") > level("verbose") && level("verbose") > level("error"));
        assert!(level("error") > level("panic"));
        assert_eq!(level("panic"), LogLevel::Off);
        assert_eq!(level("warning"), LogLevel::Warn);
        assert_eq!(level("trace"), LogLevel::Trace);
        assert_eq!(
            parse(json!({"clusterNetwork": "a"})).unwrap().log_level,
            LogLevel::Warn
        );
        for l in [
            LogLevel::Off,
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ] {
            assert_eq!(LogLevel::parse(l.as_str()), Some(l));
        }
    }

    #[test]
    fn log_options_defaults_and_values() {
        let c = parse(json!({"clusterNetwork": "a"})).unwrap();
        assert_eq!(
            c.log_options,
            LogOptions {
                max_size_mb: 100,
                max_age_days: 5,
                max_backups: 5,
                compress: true
            }
        );
        let c = parse(json!({"clusterNetwork": "a", "logOptions": {"maxSize": 1, "maxAge": 0, "maxBackups": 2, "compress": false}})).unwrap();
        assert_eq!(
            c.log_options,
            LogOptions {
                max_size_mb: 1,
                max_age_days: 0,
                max_backups: 2,
                compress: false
            }
        );
        let e =
            parse(json!({"clusterNetwork": "a", "logOptions": {"maxSize": "1MB"}})).unwrap_err();
        assert_eq!(e.key, "logOptions.maxSize");
        let e = parse(json!({"clusterNetwork": "a", "logOptions": {"maxsize": 1}})).unwrap_err();
        assert_eq!(e.key, "logOptions.maxsize");
    }

    #[test]
    fn misspelt_keys_fail_and_ignored_keys_are_noted() {
        let e = parse(json!({"clusterNetwork": "a", "kubeConfig": "/k"})).unwrap_err();
        assert_eq!(e.key, "kubeConfig");
        assert!(e.to_string().contains("did you mean \"kubeconfig\""), "{e}");
        let c = parse(json!({"clusterNetwork": "a", "retryDeleteOnError": true})).unwrap();
        assert_eq!(c.key_notes.len(), 1);
        assert_eq!(c.key_notes[0].key, "retryDeleteOnError");
    }

    #[test]
    fn call_timeout_default_and_range() {
        let c = parse(json!({"clusterNetwork": "a"})).unwrap();
        assert_eq!(c.call_timeout_secs, 100);
        let c = parse(json!({"clusterNetwork": "a", "callTimeoutSeconds": 30})).unwrap();
        assert_eq!(c.call_timeout_secs, 30);
        for bad in [json!(0), json!(601), json!(-5), json!(2.5), json!("30")] {
            let e = parse(json!({"clusterNetwork": "a", "callTimeoutSeconds": bad})).unwrap_err();
            assert_eq!(e.key, "callTimeoutSeconds", "{bad}");
            assert!(e.to_string().contains("1 to 600"), "{e}");
        }
    }

    #[test]
    fn global_namespaces_and_isolation() {
        let c = parse(json!({"clusterNetwork": "a", "namespaceIsolation": true, "globalNamespaces": "shared, infra"}))
            .unwrap();
        assert_eq!(c.global_namespaces, vec!["shared", "infra"]);
        assert!(c.isolation_allows("blue", "blue"));
        assert!(c.isolation_allows("blue", "infra"));
        assert!(!c.isolation_allows("blue", "red"));
        assert!(
            !c.isolation_allows("blue", "default"),
            "setting globalNamespaces replaces default"
        );
    }

    #[test]
    fn numbers_are_range_checked_naming_key_and_value() {
        let c = parse(json!({"clusterNetwork": "a"})).unwrap();
        assert_eq!(c.api_timeout_secs, 10);
        assert_eq!(c.max_networks_per_pod, 32);
        for (key, v, shown) in [
            ("apiTimeoutSeconds", json!(9.2e18), "9.2e+18"),
            (
                "apiTimeoutSeconds",
                json!(1_000_000_000_000u64),
                "1000000000000",
            ),
            ("apiTimeoutSeconds", json!(601), "601"),
            ("apiTimeoutSeconds", json!(1.5), "1.5"),
            ("apiTimeoutSeconds", json!("10"), "\"10\""),
            ("maxNetworksPerPod", json!(0), "0"),
            ("maxNetworksPerPod", json!(-3), "-3"),
            ("maxNetworksPerPod", json!(1025), "1025"),
            ("kubeletTimeoutSeconds", json!(0), "0"),
            ("kubeletTimeoutSeconds", json!(601), "601"),
            (
                "kubeletTimeoutSeconds",
                json!(18_446_744_073_709_551_615u64),
                "18446744073709551615",
            ),
            ("kubeletTimeoutSeconds", json!(9.2e18), "9.2e+18"),
            ("kubeletTimeoutSeconds", json!(-1), "-1"),
            (
                "callTimeoutSeconds",
                json!(1_000_000_000_000u64),
                "1000000000000",
            ),
        ] {
            let e = parse(json!({"clusterNetwork": "a", key: v})).unwrap_err();
            assert_eq!(e.key, key);
            assert_eq!(e.value, shown);
            assert!(
                e.reason.contains("integer from") || e.reason.contains("number of seconds from"),
                "{e}"
            );
        }
        let c = parse(json!({"clusterNetwork": "a", "apiTimeoutSeconds": 600,
            "maxNetworksPerPod": 1, "kubeletTimeoutSeconds": 600}))
        .unwrap();
        assert_eq!(
            (
                c.api_timeout_secs,
                c.max_networks_per_pod,
                c.kubelet_timeout_secs
            ),
            (600, 1, 600)
        );
    }

    #[test]
    fn delegate_type_lists() {
        let c = parse(json!({"clusterNetwork": "a"})).unwrap();
        assert_eq!(c.delegate_policy, DelegatePolicy::default());
        let c = parse(json!({"clusterNetwork": "a", "allowedDelegateTypes": ["macvlan"], "deniedDelegateTypes": ["host-device"]}))
            .unwrap();
        assert_eq!(
            c.delegate_policy.allowed,
            Some(["macvlan".to_owned()].into())
        );
        assert!(c.delegate_policy.denied.contains("host-device"));
        for bad in [
            json!("host-device"),
            json!(["../x"]),
            json!([""]),
            json!([3]),
        ] {
            let e = parse(json!({"clusterNetwork": "a", "deniedDelegateTypes": bad})).unwrap_err();
            assert_eq!(e.key, "deniedDelegateTypes");
        }
    }

    proptest::proptest! {
        /// Any JSON number (or other value) in a numeric key is either accepted within its
        /// range or refused naming the key; never a panic, never a value outside the range.
        #[test]
        fn numeric_keys_never_escape_their_range(
            n in proptest::prelude::any::<i64>(),
            f in proptest::prelude::any::<f64>(),
            key in proptest::sample::select(vec![
                "apiTimeoutSeconds",
                "maxNetworksPerPod",
                "kubeletTimeoutSeconds",
                "callTimeoutSeconds",
            ]),
        ) {
            for v in [json!(n), json!(f), json!(n.to_string())] {
                match parse(json!({"clusterNetwork": "a", key: v})) {
                    Ok(c) => {
                        proptest::prop_assert!(API_TIMEOUT_RANGE.contains(&c.api_timeout_secs));
                        proptest::prop_assert!(MAX_NETWORKS_RANGE.contains(&(c.max_networks_per_pod as u64)));
                        proptest::prop_assert!(KUBELET_TIMEOUT_RANGE.contains(&c.kubelet_timeout_secs));
                        proptest::prop_assert!(CALL_TIMEOUT_RANGE.contains(&c.call_timeout_secs));
                    }
                    Err(e) => proptest::prop_assert_eq!(e.key.as_str(), key),
                }
            }
        }
    }
}
