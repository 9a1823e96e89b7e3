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

/// Most NAD GETs in flight at once for one pod: enough for every realistic pod in one round
/// trip, few enough that a pod cannot make its node open connections by the hundred.
pub const NAD_FETCH_CONCURRENCY: usize = 8;

/// How a network was named, which decides the isolation exceptions (docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedBy {
    /// An entry of `k8s.v1.cni.cncf.io/networks`: own namespace and `globalNamespaces` only.
    Annotation,
    /// `v1.multus-cni.io/default-network`; also `multusNamespace`, where its namespace defaults.
    DefaultNetworkAnnotation,
    /// `clusterNetwork` by name (a NAD in `multusNamespace`).
    ClusterNetwork,
    /// `defaultNetworks` by name (a NAD in `multusNamespace`).
    DefaultNetworks,
}

/// The one isolation check every named network goes through. With `namespaceIsolation` on, a pod
/// may use NADs of its own namespace and of `globalNamespaces`; a network named by anything but
/// the `networks` annotation may also live in `multusNamespace` (the operator's namespace, where
/// the names of `clusterNetwork`, `defaultNetworks` and `default-network` resolve).
pub fn check_isolation(
    cfg: &PlexusConfig,
    pod: Option<&PodRef>,
    pod_label: &str,
    namespace: &str,
    name: &str,
    by: NamedBy,
) -> Result<(), EngineError> {
    let Some(p) = pod else { return Ok(()) };
    let multus_ok = by != NamedBy::Annotation && namespace == cfg.multus_namespace;
    if cfg.isolation_allows(&p.namespace, namespace) || multus_ok {
        return Ok(());
    }
    let mut allowed = allowed_namespaces(cfg, &p.namespace);
    if by != NamedBy::Annotation {
        allowed.push_str(&format!(", {} (multusNamespace)", cfg.multus_namespace));
    }
    Err(EngineError::Isolation {
        pod: pod_label.to_owned(),
        network: format!("{namespace}/{name}"),
        allowed,
    })
}

/// Refuses a `networks` annotation with more entries than `maxNetworksPerPod` allows before it
/// is parsed: one linear byte scan, so a 45,000-entry annotation costs microseconds, not a parse.
/// Counts the short form's comma-separated entries, or the JSON form's top-level objects (strings
/// are skipped, so braces inside values do not count). [`resolve`] checks the exact count again.
pub fn check_annotation_size(
    cfg: &PlexusConfig,
    pod: &PodRef,
    text: &str,
) -> Result<(), EngineError> {
    let entries = count_entries(text);
    let system_pod = cfg.system_namespaces.iter().any(|s| s == &pod.namespace);
    let defaults = if system_pod {
        0
    } else {
        cfg.default_networks.len()
    };
    let count = 1 + defaults + entries;
    if count > cfg.max_networks_per_pod {
        return Err(EngineError::TooManyNetworks {
            pod: pod.to_string(),
            count,
            max: cfg.max_networks_per_pod,
        });
    }
    Ok(())
}

fn count_entries(text: &str) -> usize {
    let t = text.trim_start();
    if !t.starts_with('[') {
        return t.split(',').filter(|e| !e.trim().is_empty()).count();
    }
    let (mut depth, mut in_string, mut escaped, mut n) = (0usize, false, false, 0usize);
    for b in t.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                n += usize::from(b == b'{' && depth == 2);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    n
}

/// Builds the attachment list. `selections` are the parsed annotation entries (empty when the pod
/// has none); `cluster_override` is the pod's `v1.multus-cni.io/default-network` entry, which
/// replaces the cluster network (its NAD must exist: no confDir fallback, as in Multus); `kube` is
/// `None` when no API server is configured.
///
/// Before any NAD is fetched: the pod's network count is bounded by `maxNetworksPerPod`, and
/// every named network passes [`check_isolation`]. Before anything runs: every config passes the
/// delegate policy ([`crate::policy`]).
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
    let system_pod = pod.is_some_and(|p| cfg.system_namespaces.iter().any(|s| s == &p.namespace));
    let defaults = if system_pod {
        0
    } else {
        cfg.default_networks.len()
    };
    let count = 1 + defaults + selections.len();
    if count > cfg.max_networks_per_pod {
        return Err(EngineError::TooManyNetworks {
            pod: pod_label,
            count,
            max: cfg.max_networks_per_pod,
        });
    }
    let cluster = match cluster_override {
        Some(sel) => {
            check_isolation(
                cfg,
                pod,
                &pod_label,
                &sel.namespace,
                &sel.name,
                NamedBy::DefaultNetworkAnnotation,
            )?;
            Planned {
                source: Source::Nad {
                    namespace: sel.namespace.clone(),
                    name: sel.name.clone(),
                    fallback_to_file: false,
                },
                is_default: true,
                selection: Some(sel),
            }
        }
        None => Planned {
            source: plan_ref(cfg, &cfg.cluster_network, &pod_label)?,
            is_default: true,
            selection: None,
        },
    };
    if let Source::Nad {
        namespace, name, ..
    } = &cluster.source
        && cluster.selection.is_none()
    {
        check_isolation(
            cfg,
            pod,
            &pod_label,
            namespace,
            name,
            NamedBy::ClusterNetwork,
        )?;
    }
    let mut planned = vec![cluster];
    if !system_pod {
        for d in &cfg.default_networks {
            let source = plan_ref(cfg, d, &pod_label)?;
            if let Source::Nad {
                namespace, name, ..
            } = &source
            {
                check_isolation(
                    cfg,
                    pod,
                    &pod_label,
                    namespace,
                    name,
                    NamedBy::DefaultNetworks,
                )?;
            }
            planned.push(Planned {
                source,
                is_default: false,
                selection: None,
            });
        }
    }
    for sel in selections {
        check_isolation(
            cfg,
            pod,
            &pod_label,
            &sel.namespace,
            &sel.name,
            NamedBy::Annotation,
        )?;
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
    let own_name = crate::policy::own_binary_name();
    let mut out = Vec::with_capacity(planned.len());
    for (index, p) in planned.into_iter().enumerate() {
        let mut resource_name = None;
        let from_nad = matches!(p.source, Source::Nad { .. });
        let (config, network) = match p.source {
            Source::Ready(c, n) => (c, n),
            Source::Nad {
                namespace,
                name,
                fallback_to_file,
            } => {
                let network = format!("{namespace}/{name}");
                let nad = fetched.results.get(&(namespace.clone(), name.clone()));
                if nad.is_none()
                    && let Some((key, Err(e))) = fetched.stopped_by()
                {
                    // Not fetched because an earlier GET failed for good: report that one.
                    return Err(nad_error(pod_label, &format!("{}/{}", key.0, key.1), e));
                }
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
                    None => {
                        return Err(EngineError::NetworkNotFound {
                            pod: pod_label,
                            network: network.clone(),
                            detail: format!("network-attachment-definition {network} not found"),
                        });
                    }
                    Some(Err(e)) => return Err(nad_error(pod_label, &network, e)),
                }
            }
        };
        crate::policy::check(&cfg.delegate_policy, &config, from_nad, own_name.as_deref())
            .map_err(|violation| EngineError::Policy {
                pod: pod_label.clone(),
                network: network.clone(),
                violation,
            })?;
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

/// `(namespace, name)` of a NAD.
type NadKey = (String, String);

/// The answers of [`fetch_nads`].
#[derive(Default)]
struct Fetched {
    results: BTreeMap<NadKey, Result<NadInfo, ApiError>>,
    /// The NAD whose fatal answer stopped the fetch, if one did.
    stopped_at: Option<NadKey>,
}

impl Fetched {
    fn stopped_by(&self) -> Option<(&NadKey, &Result<NadInfo, ApiError>)> {
        let key = self.stopped_at.as_ref()?;
        self.results.get(key).map(|r| (key, r))
    }
}

/// The error of a failed NAD GET.
fn nad_error(pod: String, network: &str, e: &ApiError) -> EngineError {
    match e {
        ApiError::NotFound { .. } => EngineError::NetworkNotFound {
            pod,
            network: network.to_owned(),
            detail: format!("network-attachment-definition {network} not found"),
        },
        e => EngineError::Api {
            pod,
            what: format!("get network-attachment-definition {network}"),
            source: e.clone(),
        },
    }
}

/// GETs every distinct NAD the plan names, at most [`NAD_FETCH_CONCURRENCY`] at a time, in plan
/// order, and stops after the first batch holding a fatal answer (anything but a NotFound that a
/// confDir file may stand in for): the ADD fails on it anyway, so later GETs would only load the
/// API server. NADs left unfetched are absent from the map; the caller meets the fatal answer
/// first because it walks the plan in the same order.
fn fetch_nads(
    planned: &[Planned],
    kube: Option<&dyn KubeApi>,
    pod: &str,
) -> Result<Fetched, EngineError> {
    // (namespace, name) in first-seen order, and whether a NotFound for it is fatal.
    let mut refs: Vec<(String, String)> = Vec::new();
    let mut not_found_fatal: BTreeMap<(String, String), bool> = BTreeMap::new();
    let mut need_api = None;
    for p in planned {
        if let Source::Nad {
            namespace,
            name,
            fallback_to_file,
        } = &p.source
        {
            let key = (namespace.clone(), name.clone());
            match not_found_fatal.get_mut(&key) {
                Some(fatal) => *fatal |= !fallback_to_file,
                None => {
                    not_found_fatal.insert(key.clone(), !fallback_to_file);
                    refs.push(key);
                }
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
        return Ok(Fetched::default());
    };
    let mut fetched = Fetched::default();
    for batch in refs.chunks(NAD_FETCH_CONCURRENCY) {
        let results = kube.get_nads(batch);
        for (key, r) in batch.iter().cloned().zip(results) {
            let fatal = match &r {
                Ok(_) => false,
                Err(ApiError::NotFound { .. }) => not_found_fatal[&key],
                Err(_) => true,
            };
            if fatal && fetched.stopped_at.is_none() {
                fetched.stopped_at = Some(key.clone());
            }
            fetched.results.insert(key, r);
        }
        if fetched.stopped_at.is_some() {
            break;
        }
    }
    Ok(fetched)
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

#[cfg(test)]
mod tests {
    use super::count_entries;

    #[test]
    fn entries_are_counted_without_parsing() {
        assert_eq!(count_entries("a, b/c@net1,d"), 3);
        assert_eq!(count_entries(" a ,, "), 1);
        assert_eq!(count_entries(""), 0);
        let json = r#"[{"name": "a", "bandwidth": {"ingressRate": 1}, "cni-args": {"x": "}{"}},
                      {"name": "b\"{"}]"#;
        assert_eq!(count_entries(json), 2);
        assert_eq!(count_entries("[]"), 0);
        let many: Vec<String> = (0..10_000).map(|i| format!("n{i}")).collect();
        assert_eq!(count_entries(&many.join(",")), 10_000);
    }
}
