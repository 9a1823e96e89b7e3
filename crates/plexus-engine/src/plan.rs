//! The plan phase: from the request and the pod's annotations to the ordered attachments, each
//! with the config, interface name, runtime config and `CNI_ARGS` its delegate will get.
//!
//! Pure but for the API reads behind [`KubeApi`] (one pod GET unless the runtime passed the
//! annotations, one concurrent batch of NAD GETs): nothing is locked, written or executed. ADD
//! runs it before [`crate::attach`]; DEL runs it to rebuild what to tear down when the cache entry
//! is lost; the thick-mode daemon runs it against its watch caches.

use crate::api::{ApiError, KubeApi};
use crate::cache::{CACHE_KIND, CacheEntry, CachedAttachment};
use crate::context::Engine;
use crate::error::EngineError;
use crate::resolve::{Attachment, PodRef, resolve};
use crate::routes;
use plexus_cni::CniArgs;
use plexus_netattach::NETWORKS_ANNOTATION;
use serde_json::Value;
use std::collections::BTreeMap;

/// The runtimeConfig key under which containerd and CRI-O pass the pod's annotations.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// The pod annotation that replaces the cluster network for one pod (Multus's key).
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";

pub use crate::static_pod::MIRROR_ANNOTATION;

/// A pod that is not in the API server yet (an informer lag in the API server's watch cache, or
/// a pod created an instant ago) is retried this often, this far apart, before the ADD fails with
/// "try again later". Bounded so that a deleted pod fails fast.
const POD_GET_TRIES: u32 = 3;
const POD_GET_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// What the plan is for: it decides how a missing pod is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// ADD: a pod not found yet is retried, then "try again later"; a UID mismatch is an error.
    Add,
    /// Rebuilding a lost cache entry at DEL: one GET; a pod that is gone (or was replaced by one
    /// with another UID) has no annotations to offer, so only the networks the configuration
    /// names are planned.
    Teardown,
    /// Only the networks the configuration names (cluster and default networks): the fallback
    /// of a teardown whose pod annotations no longer plan.
    ConfiguredOnly,
}

/// The ordered attachments of one pod, ready for [`crate::attach`] or [`crate::teardown`].
#[derive(Debug, Clone)]
pub struct Plan {
    /// The pod, when the runtime is Kubernetes (`K8S_POD_NAME` in `CNI_ARGS`).
    pub pod: Option<PodRef>,
    /// `ns/name` of the pod, or `container <id>`, for messages.
    pub label: String,
    /// The UID that guards the network-status patch: the runtime's, or a static pod's mirror's.
    pub status_uid: String,
    /// Cluster network first, then default networks, then the annotation's entries.
    pub attachments: Vec<Attachment>,
    /// `CNI_ARGS` for delegates: the runtime's, with `IgnoreUnknown`.
    pub delegate_args: String,
    /// Selection keys that were ignored (Multus's leniency), one message each, for the log and
    /// the pod's Warning event.
    pub ignored: Vec<String>,
}

impl Plan {
    /// The cache entry that records this plan before any delegate runs (no results yet).
    pub fn entry(&self, engine: &Engine<'_>) -> CacheEntry {
        let pod = self.pod.clone().unwrap_or_default();
        let env = engine.env;
        CacheEntry {
            kind: CACHE_KIND.into(),
            container_id: env.container_id.clone(),
            netns: env.netns.as_ref().map(|p| p.display().to_string()),
            ifname: env.ifname.clone(),
            cni_args: env.args.to_env_string(),
            pod_namespace: pod.namespace,
            pod_name: pod.name,
            pod_uid: pod.uid,
            attachments: self
                .attachments
                .iter()
                .map(|a| CachedAttachment {
                    network: a.network.clone(),
                    ifname: a.ifname.clone(),
                    config: a.config.to_value().to_string(),
                    runtime_config: a.runtime_config.clone(),
                    is_default: a.is_default,
                    cni_args: crate::request::delegate_args(&self.delegate_args, a),
                    result: None,
                    device: a.device.clone(),
                })
                .collect(),
        }
    }
}

/// Plans the attachments of the pod `engine.env` names.
pub fn plan(engine: &Engine<'_>, purpose: Purpose) -> Result<Plan, EngineError> {
    let pod = PodRef::from_env(engine.env);
    let label = pod
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_else(|| format!("container {}", engine.env.container_id));
    let (annotations, api_uid) = pod_annotations(engine, pod.as_ref(), purpose)?;
    let mut ignored = Vec::new();
    let selections = match (&pod, annotations.get(NETWORKS_ANNOTATION)) {
        (Some(p), Some(text)) => {
            // A huge annotation is refused before it is parsed (docs/security.md §4).
            crate::resolve::check_annotation_size(engine.config, p, text)?;
            let (elements, skipped) = crate::request::parse_annotation(
                engine.config,
                NETWORKS_ANNOTATION,
                text,
                &p.namespace,
            )
            .map_err(|source| EngineError::Annotation {
                pod: label.clone(),
                source,
            })?;
            ignored.extend(skipped);
            elements
        }
        _ => Vec::new(),
    };
    let cluster_override = match annotations.get(DEFAULT_NETWORK_ANNOTATION) {
        Some(text) if pod.is_some() => Some(default_network(engine, text, &label, &mut ignored)?),
        _ => None,
    };
    let attachments = resolve(
        engine.config,
        engine.env,
        pod.as_ref(),
        cluster_override,
        selections,
        engine.kube,
    )?
    .into_iter()
    .map(|a| crate::request::apply_selection(a, &label))
    .collect::<Result<Vec<_>, _>>()?;
    let mut attachments = attachments;
    let info = crate::device::DeviceInfoDirs::under(&engine.config.device_info_dir);
    let devices = crate::device::resolve_devices(
        engine.devices,
        pod.as_ref(),
        &label,
        &engine.env.container_id,
        Some(&info),
        &mut attachments,
    );
    match devices {
        Ok(()) => {}
        // Rebuilding a lost entry at DEL: the kubelet may have released the devices already,
        // and the DEL of a device plugin's delegate without its device beats no DEL at all.
        Err(e) if purpose != Purpose::Add => {
            tracing::warn!(pod = %label, "tearing down without device IDs: {e}");
        }
        Err(e) => return Err(e),
    }
    // Conflicting explicit gateways fail here, before anything runs.
    routes::plan(&attachments, None).map_err(|reason| EngineError::DefaultRoute {
        pod: label.clone(),
        reason,
    })?;
    let status_uid = api_uid
        .or_else(|| pod.as_ref().map(|p| p.uid.clone()))
        .unwrap_or_default();
    let mut args = engine.env.args.clone();
    // Plugins that parse `CNI_ARGS` strictly must accept the `K8S_POD_*` keys.
    args.set(CniArgs::IGNORE_UNKNOWN, "true");
    Ok(Plan {
        pod,
        label,
        status_uid,
        attachments,
        delegate_args: args.to_env_string(),
        ignored,
    })
}

/// `v1.multus-cni.io/default-network`: exactly one entry, namespace defaulting to
/// `multusNamespace` (Multus's rule, so that users cannot point it at a NAD of their own
/// namespace by accident).
fn default_network(
    engine: &Engine<'_>,
    text: &str,
    label: &str,
    ignored: &mut Vec<String>,
) -> Result<plexus_netattach::NetworkSelectionElement, EngineError> {
    let bad = |reason: String| EngineError::DefaultNetwork {
        pod: label.to_owned(),
        reason,
    };
    let (mut v, skipped) = crate::request::parse_annotation(
        engine.config,
        DEFAULT_NETWORK_ANNOTATION,
        text,
        &engine.config.multus_namespace,
    )
    .map_err(|e| bad(e.to_string()))?;
    ignored.extend(skipped);
    match v.len() {
        1 => Ok(v.remove(0)),
        n => Err(bad(format!(
            "{text:?} names {n} networks; exactly one is allowed"
        ))),
    }
}

/// The pod's annotations: from the runtime when it passed them, else one GET (for ADD, retried
/// a few times while the pod is not found). Also returns the API object's UID when it must guard
/// the status PATCH instead of the runtime's (a static pod's mirror).
fn pod_annotations(
    engine: &Engine<'_>,
    pod: Option<&PodRef>,
    purpose: Purpose,
) -> Result<(BTreeMap<String, String>, Option<String>), EngineError> {
    let Some(pod) = pod.filter(|_| purpose != Purpose::ConfiguredOnly) else {
        return Ok((BTreeMap::new(), None));
    };
    if let Some(Value::Object(m)) = engine.config.runtime_config.get(POD_ANNOTATIONS_CAPABILITY) {
        let annotations = m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
            .collect();
        // A static pod's status patch needs its mirror's UID, which only the API server knows.
        let mirror_uid = match purpose {
            Purpose::Add => crate::static_pod::mirror_uid(engine.kube, pod, &annotations)?,
            _ => None,
        };
        return Ok((annotations, mirror_uid));
    }
    let Some(kube) = engine.kube else {
        if let (Purpose::Teardown, Some(path)) = (purpose, &engine.config.kubeconfig) {
            // A kubeconfig is configured but gave no client: guessing "no annotations" would
            // leak every annotation network, so this is "try again later".
            return Err(EngineError::Api {
                pod: pod.to_string(),
                what: "get pod".into(),
                source: ApiError::Unreachable(format!(
                    "the kubeconfig {} gave no usable client",
                    path.display()
                )),
            });
        }
        tracing::warn!(pod = %pod, "no Kubernetes API configured: planning only the cluster and default networks");
        return Ok((BTreeMap::new(), None));
    };
    let Some(info) = get_pod(kube, pod, purpose)? else {
        return Ok((BTreeMap::new(), None));
    };
    if !pod.uid.is_empty() && !info.uid.is_empty() && info.uid != pod.uid {
        if crate::static_pod::is_mirror(&info.annotations) {
            tracing::info!(pod = %pod, runtime_uid = %pod.uid, api_uid = %info.uid, "static pod: using the mirror pod's UID");
            return Ok((info.annotations, Some(info.uid)));
        }
        if purpose == Purpose::Teardown {
            tracing::warn!(pod = %pod, runtime_uid = %pod.uid, api_uid = %info.uid, "the pod was replaced; its annotations do not describe this sandbox");
            return Ok((BTreeMap::new(), None));
        }
        return Err(EngineError::PodUidMismatch {
            pod: pod.to_string(),
            expected: pod.uid.clone(),
            actual: info.uid,
        });
    }
    Ok((info.annotations, None))
}

/// `Ok(None)`: the pod is gone (teardown only).
fn get_pod(
    kube: &dyn KubeApi,
    pod: &PodRef,
    purpose: Purpose,
) -> Result<Option<crate::api::PodInfo>, EngineError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match kube.get_pod(&pod.namespace, &pod.name) {
            Ok(info) => return Ok(Some(info)),
            Err(ApiError::NotFound { .. }) if purpose == Purpose::Teardown => {
                tracing::warn!(pod = %pod, "the pod is gone from the API server; planning only the cluster and default networks");
                return Ok(None);
            }
            Err(ApiError::NotFound { .. }) if tries < POD_GET_TRIES => {
                std::thread::sleep(POD_GET_PAUSE);
            }
            Err(ApiError::NotFound { .. }) => {
                return Err(EngineError::PodNotFound {
                    pod: pod.to_string(),
                    tries,
                });
            }
            Err(source) => {
                return Err(EngineError::Api {
                    pod: pod.to_string(),
                    what: "get pod".into(),
                    source,
                });
            }
        }
    }
}
