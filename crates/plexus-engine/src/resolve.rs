//! From configuration and pod annotations to the ordered list of attachments to run.
//!
//! Order (DESIGN.md §3): the cluster network (the runtime's `CNI_IFNAME`), then `defaultNetworks`
//! (unless the pod's namespace is a system namespace), then the annotation's entries. Every NAD the
//! pod needs is fetched in one concurrent batch.

use crate::api::{ApiError, KubeApi, NadInfo};
use crate::config::{ClusterNetwork, PlexusConfig};
use crate::error::EngineError;
use plexus_cni::{CniEnv, NetworkConfig};
use plexus_netattach::NetworkSelectionElement;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The pod an operation is for, from `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    /// `None` when the runtime is not Kubernetes (no `K8S_POD_NAME`).
    pub fn from_env(env: &CniEnv) -> Option<Self> {
        let name = env.args.get(plexus_cni::CniArgs::POD_NAME)?.to_owned();
        Some(Self {
            namespace: env
                .args
                .get(plexus_cni::CniArgs::POD_NAMESPACE)
                .unwrap_or("default")
                .to_owned(),
            name,
            uid: env
                .args
                .get(plexus_cni::CniArgs::POD_UID)
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One delegate to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// `ns/name` for a NAD, the config's `name` for a file or inline config.
    pub network: String,
    pub ifname: String,
    pub config: NetworkConfig,
    pub is_default: bool,
    /// Capability arguments for this attachment (filtered per plugin when invoked).
    pub runtime_config: Map<String, Value>,
    /// The selection element that asked for it (`None` for cluster/default networks).
    pub selection: Option<NetworkSelectionElement>,
    /// The NAD's `k8s.v1.cni.cncf.io/resourceName`: this delegate needs a device of it.
    pub resource_name: Option<String>,
    /// The device this attachment got (set by the plan phase, [`crate::device`]).
    pub device: Option<crate::device::AssignedDevice>,
    /// `CNI_ARGS` pairs for this attachment only, set over the runtime's (`IP=`/`MAC=` for an
    /// `ips`/`mac` request that no plugin declares as a capability; see `request`).
    pub cni_args: Vec<(String, String)>,
    /// The auxiliary chain (`auxiliaryCNIChainName`): runs last, on the cluster network's
    /// interface with the cluster network's result as prevResult, and has no network-status entry.
    pub auxiliary: bool,
}

/// Where a network's config has to come from, before the batched NAD fetch.
enum Source {
    Ready(NetworkConfig, String),
    /// A NAD; `fallback_to_file` for cluster/default networks named without a path (Multus looks in
    /// confDir when the NAD does not exist).
    Nad {
        namespace: String,
        name: String,
        fallback_to_file: bool,
    },
}

struct Planned {
    source: Source,
    is_default: bool,
    selection: Option<NetworkSelectionElement>,
}

/// Builds the attachment list. `selections` are the parsed annotation entries (empty when the pod
/// has none); `cluster_override` is the pod's `v1.multus-cni.io/default-network` entry, which
/// replaces the cluster network (its NAD must exist: no confDir fallback, as in Multus); `kube` is
/// `None` when no API server is configured.
pub fn resolve(
    cfg: &PlexusConfig,
    env: &CniEnv,
    pod: Option<&PodRef>,
    cluster_override: Option<NetworkSelectionElement>,
    selections: Vec<NetworkSelectionElement>,
    kube: Option<&dyn KubeApi>,
) -> Result<Vec<Attachment>, EngineError> {
    let pod_label = pod
        .map(|p| p.to_string())
        .unwrap_or_else(|| format!("container {}", env.container_id));
    let cluster = match cluster_override {
        Some(sel) => Planned {
            source: Source::Nad {
                namespace: sel.namespace.clone(),
                name: sel.name.clone(),
                fallback_to_file: false,
            },
            is_default: true,
            selection: Some(sel),
        },
        None => Planned {
            source: plan_ref(cfg, &cfg.cluster_network, &pod_label)?,
            is_default: true,
            selection: None,
        },
    };
    let mut planned = vec![cluster];
    let system_pod = pod.is_some_and(|p| cfg.system_namespaces.iter().any(|s| s == &p.namespace));
    if !system_pod {
        for d in &cfg.default_networks {
            planned.push(Planned {
                source: plan_ref(cfg, d, &pod_label)?,
                is_default: false,
                selection: None,
            });
        }
    }
    for sel in selections {
        if let Some(p) = pod
            && !cfg.isolation_allows(&p.namespace, &sel.namespace)
        {
            return Err(EngineError::Isolation {
                pod: pod_label.clone(),
                network: format!("{}/{}", sel.namespace, sel.name),
                allowed: allowed_namespaces(cfg, &p.namespace),
            });
        }
        planned.push(Planned {
            source: Source::Nad {
                namespace: sel.namespace.clone(),
                name: sel.name.clone(),
                fallback_to_file: false,
            },
            is_default: false,
            selection: Some(sel),
        });
    }

    let fetched = fetch_nads(&planned, kube, &pod_label)?;
    let mut out = Vec::with_capacity(planned.len());
    for (index, p) in planned.into_iter().enumerate() {
        let mut resource_name = None;
        let (config, network) = match p.source {
            Source::Ready(c, n) => (c, n),
            Source::Nad {
                namespace,
                name,
                fallback_to_file,
            } => {
                let network = format!("{namespace}/{name}");
                let nad = fetched.get(&(namespace.clone(), name.clone()));
                match nad {
                    // Named `<ns>/<name>` in network-status, the cluster network too (Multus
                    // writes `kube-system/<name>` for a NAD-backed cluster or default network).
                    Some(Ok(nad)) => {
                        resource_name = nad
                            .annotations
                            .get(crate::device::RESOURCE_NAME_ANNOTATION)
                            .map(|r| r.trim().to_owned())
                            .filter(|r| !r.is_empty());
                        (nad_config(cfg, nad, &pod_label)?, network)
                    }
                    // A config file found by name is named by its plain network name, as Multus
                    // names every delegate loaded from a file.
                    Some(Err(ApiError::NotFound { .. })) | None if fallback_to_file => {
                        let config = find_conf_by_name(&cfg.conf_dir, &name).map_err(|reason| EngineError::NetworkConfig {
                            pod: pod_label.clone(),
                            network: network.clone(),
                            reason,
                        })?.ok_or_else(|| EngineError::NetworkNotFound {
                            pod: pod_label.clone(),
                            network: network.clone(),
                            detail: format!(
                                "no network-attachment-definition {network} and no config named {name:?} in {}",
                                cfg.conf_dir.display()
                            ),
                        })?;
                        (config, name)
                    }
                    Some(Err(ApiError::NotFound { .. })) | None => {
                        return Err(EngineError::NetworkNotFound {
                            pod: pod_label,
                            network: network.clone(),
                            detail: format!("network-attachment-definition {network} not found"),
                        });
                    }
                    Some(Err(e)) => {
                        return Err(EngineError::Api {
                            pod: pod_label,
                            what: format!("get network-attachment-definition {network}"),
                            source: e.clone(),
                        });
                    }
                }
            }
        };
        let ifname = match (&p.selection, p.is_default) {
            (_, true) => env.ifname.clone(),
            (Some(sel), _) if sel.interface.is_some() => sel.interface.clone().unwrap_or_default(),
            _ => format!("net{index}"),
        };
        let runtime_config = if p.is_default {
            cfg.runtime_config.clone()
        } else {
            Map::new()
        };
        out.push(Attachment {
            network,
            ifname,
            config,
            is_default: p.is_default,
            runtime_config,
            selection: p.selection,
            resource_name,
            device: None,
            cni_args: Vec::new(),
            auxiliary: false,
        });
    }
    check_unique_ifnames(&out, &pod_label)?;
    // Shares the cluster network's interface on purpose, so it is added after the name check.
    if let Some(aux) = crate::chaining::auxiliary_attachment(cfg, &out[0], &pod_label)? {
        out.push(aux);
    }
    Ok(out)
}

fn allowed_namespaces(cfg: &PlexusConfig, pod_ns: &str) -> String {
    let mut v = vec![pod_ns.to_owned()];
    v.extend(cfg.global_namespaces.iter().cloned());
    v.join(", ")
}

fn plan_ref(cfg: &PlexusConfig, r: &ClusterNetwork, pod: &str) -> Result<Source, EngineError> {
    let bad = |network: String, reason: String| EngineError::NetworkConfig {
        pod: pod.to_owned(),
        network,
        reason,
    };
    match r {
        ClusterNetwork::Name(name) => Ok(Source::Nad {
            namespace: cfg.multus_namespace.clone(),
            name: name.clone(),
            fallback_to_file: true,
        }),
        ClusterNetwork::Path(p) => {
            let file = if p.is_dir() {
                first_conf_in_dir(p)
                    .map_err(|e| bad(p.display().to_string(), e))?
                    .ok_or_else(|| {
                        bad(
                            p.display().to_string(),
                            "directory holds no .conf, .conflist or .json file".into(),
                        )
                    })?
            } else {
                p.clone()
            };
            // A conflist named by path also runs its subdirectory's plugins (libcni's rule).
            let c = crate::chaining::load_with_subdirectory(&file)
                .map_err(|e| bad(file.display().to_string(), e))?;
            let name = if c.name.is_empty() {
                file.display().to_string()
            } else {
                c.name.clone()
            };
            Ok(Source::Ready(c, name))
        }
        ClusterNetwork::Inline(v) => {
            let c = NetworkConfig::from_value(v.clone())
                .map_err(|e| bad("delegates".into(), e.to_string()))?;
            let name = if c.name.is_empty() {
                "delegate".to_owned()
            } else {
                c.name.clone()
            };
            Ok(Source::Ready(c, name))
        }
    }
}

type Fetched = BTreeMap<(String, String), Result<NadInfo, ApiError>>;

fn fetch_nads(
    planned: &[Planned],
    kube: Option<&dyn KubeApi>,
    pod: &str,
) -> Result<Fetched, EngineError> {
    let mut refs: Vec<(String, String)> = Vec::new();
    let mut need_api = None;
    for p in planned {
        if let Source::Nad {
            namespace,
            name,
            fallback_to_file,
        } = &p.source
        {
            let key = (namespace.clone(), name.clone());
            if !refs.contains(&key) {
                refs.push(key);
            }
            if !fallback_to_file && need_api.is_none() {
                need_api = Some(format!("{namespace}/{name}"));
            }
        }
    }
    let Some(kube) = kube else {
        if let Some(network) = need_api {
            return Err(EngineError::NoApi {
                pod: pod.to_owned(),
                network,
            });
        }
        return Ok(Fetched::new());
    };
    if refs.is_empty() {
        return Ok(Fetched::new());
    }
    let results = kube.get_nads(&refs);
    Ok(refs.into_iter().zip(results).collect())
}

/// The config of a NAD: `spec.config`, or the file in confDir named after it when empty.
fn nad_config(cfg: &PlexusConfig, nad: &NadInfo, pod: &str) -> Result<NetworkConfig, EngineError> {
    let network = format!("{}/{}", nad.namespace, nad.name);
    let bad = |reason: String| EngineError::NetworkConfig {
        pod: pod.to_owned(),
        network: network.clone(),
        reason,
    };
    match nad.config.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => {
            let mut c = NetworkConfig::from_slice(text.as_bytes()).map_err(|e| bad(format!("spec.config: {e}")))?;
            c.set_name_if_missing(&nad.name);
            c.effective_version().map_err(|e| bad(format!("spec.config: {e}")))?;
            Ok(c)
        }
        _ => find_conf_by_name(&cfg.conf_dir, &nad.name).map_err(bad)?.ok_or_else(|| EngineError::NetworkNotFound {
            pod: pod.to_owned(),
            network: network.clone(),
            detail: format!(
                "network-attachment-definition {network} has no spec.config and {} holds no config named {:?}",
                cfg.conf_dir.display(),
                nad.name
            ),
        }),
    }
}

fn check_unique_ifnames(atts: &[Attachment], pod: &str) -> Result<(), EngineError> {
    for (i, a) in atts.iter().enumerate() {
        if let Some(first) = atts[..i].iter().find(|b| b.ifname == a.ifname) {
            return Err(EngineError::DuplicateInterface {
                pod: pod.to_owned(),
                ifname: a.ifname.clone(),
                first: first.network.clone(),
                second: a.network.clone(),
            });
        }
    }
    Ok(())
}

fn is_conf_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("conf" | "conflist" | "json")
    )
}

fn sorted_conf_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_conf_file(p))
        .collect();
    files.sort();
    Ok(files)
}

/// The lexically first config file of a directory (libcni's and Multus's rule).
pub fn first_conf_in_dir(dir: &Path) -> Result<Option<PathBuf>, String> {
    Ok(sorted_conf_files(dir)?.into_iter().next())
}

/// Reads a `.conf`/`.conflist`/`.json` file.
pub fn load_conf_file(path: &Path) -> Result<NetworkConfig, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let c = NetworkConfig::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    c.effective_version()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(c)
}

/// The config in `dir` whose `name` is `name`: conflists first, then single confs (NPWG §3.4.1).
/// Unparseable files are skipped (they may belong to something else), but named in the log.
pub fn find_conf_by_name(dir: &Path, name: &str) -> Result<Option<NetworkConfig>, String> {
    let files = sorted_conf_files(dir)?;
    let (lists, singles): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|p| p.extension().and_then(|e| e.to_str()) == Some("conflist"));
    for f in lists.iter().chain(singles.iter()) {
        match load_conf_file(f) {
            Ok(c) if c.name == name => return Ok(Some(c)),
            Ok(_) => {}
            Err(e) => tracing::warn!("skipping unreadable config: {e}"),
        }
    }
    Ok(None)
}

/// The config of a cluster/default network that can be found without the API server (STATUS and
/// GC must not block on it): a path, an inline config, or a name found in `confDir`. `Ok(None)`
/// for a name that only a NAD can resolve.
pub fn local_config(
    cfg: &PlexusConfig,
    r: &ClusterNetwork,
) -> Result<Option<(NetworkConfig, String)>, String> {
    match r {
        ClusterNetwork::Name(name) => {
            Ok(find_conf_by_name(&cfg.conf_dir, name)?.map(|c| (c, name.clone())))
        }
        other => match plan_ref(cfg, other, "STATUS/GC") {
            Ok(Source::Ready(c, name)) => Ok(Some((c, name))),
            Ok(Source::Nad { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        },
    }
}
