//! ADD, DEL and CHECK of a pod: the contracts of DESIGN.md §3.

use crate::api::KubeApi;
use crate::cache::{CACHE_KIND, Cache, CacheEntry, CachedAttachment};
use crate::config::PlexusConfig;
use crate::delegate::{Chain, ChainError, Invocation};
use crate::error::EngineError;
use crate::exec::DelegateExec;
use crate::resolve::{Attachment, PodRef, resolve};
use plexus_cni::{CniArgs, CniEnv, CniError, CniResult, CniVersion, NetworkConfig};
use plexus_netattach::{NETWORKS_ANNOTATION, statuses_from_result};
use serde_json::Value;
use std::collections::BTreeMap;

/// The runtimeConfig key under which containerd and CRI-O pass the pod's annotations.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// One CNI call.
pub struct Engine<'a> {
    pub config: &'a PlexusConfig,
    pub env: &'a CniEnv,
    pub exec: &'a dyn DelegateExec,
    /// `None` when no API server is configured.
    pub kube: Option<&'a dyn KubeApi>,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl Engine<'_> {
    fn cache(&self) -> Cache {
        Cache::new(&self.config.cni_dir)
    }

    fn request_version(&self) -> Result<CniVersion, EngineError> {
        let v: CniVersion = self.config.cni_version.parse().map_err(|_| {
            EngineError::Request(CniError::new(
                plexus_cni::codes::INCOMPATIBLE_VERSION,
                format!(
                    "unsupported cniVersion {:?} in the plexus configuration",
                    self.config.cni_version
                ),
            ))
        })?;
        if !v.is_supported() {
            return Err(EngineError::Request(CniError::new(
                plexus_cni::codes::INCOMPATIBLE_VERSION,
                format!("unsupported cniVersion {v} in the plexus configuration"),
            )));
        }
        Ok(v)
    }

    /// `CNI_ARGS` for delegates: the runtime's, with `IgnoreUnknown` so that plugins which parse
    /// `CNI_ARGS` strictly accept the `K8S_POD_*` keys.
    fn delegate_args(&self) -> String {
        let mut args = self.env.args.clone();
        args.set(CniArgs::IGNORE_UNKNOWN, "true");
        args.to_env_string()
    }

    fn invocation<'s>(&'s self, args: &'s str) -> Invocation<'s> {
        Invocation {
            exec: self.exec,
            container_id: &self.env.container_id,
            netns: self.env.netns.as_deref(),
            args,
        }
    }

    fn pod_label(&self, pod: Option<&PodRef>) -> String {
        pod.map(|p| p.to_string())
            .unwrap_or_else(|| format!("container {}", self.env.container_id))
    }

    /// ADD: returns the cluster network's result in the request's version.
    pub fn add(&self) -> Result<Value, EngineError> {
        let version = self.request_version()?;
        if let Some(f) = &self.config.readiness_indicator_file
            && !f.exists()
        {
            return Err(EngineError::NotReady(f.display().to_string()));
        }
        let pod = PodRef::from_env(self.env);
        let label = self.pod_label(pod.as_ref());
        let annotations = self.pod_annotations(pod.as_ref())?;
        let selections =
            match (pod.as_ref(), annotations.get(NETWORKS_ANNOTATION)) {
                (Some(p), Some(text)) => plexus_netattach::parse_networks(text, &p.namespace)
                    .map_err(|source| EngineError::Annotation {
                        pod: label.clone(),
                        source,
                    })?,
                _ => Vec::new(),
            };
        let attachments = resolve(self.config, self.env, pod.as_ref(), selections, self.kube)?;
        let attachments = attachments
            .into_iter()
            .map(|a| crate::request::apply_selection(a, &label))
            .collect::<Result<Vec<_>, _>>()?;

        let cache = self.cache();
        let _lock = cache
            .lock(&self.env.container_id)
            .map_err(|source| self.cache_err("lock", source))?;
        // A retried ADD (the runtime crashed, or our last ADD was killed) must not find interfaces
        // left behind by the previous attempt; undo it first.
        if cache.read(&self.env.container_id).ok().flatten().is_some() {
            tracing::warn!(container = %self.env.container_id, "cache entry exists at ADD; tearing the previous attempt down first");
            self.del_locked(&cache)?;
        }
        let args = self.delegate_args();
        let mut entry = self.new_entry(pod.as_ref(), &attachments, &args);
        cache
            .write(&entry)
            .map_err(|source| self.cache_err("write", source))?;

        let inv = self.invocation(&args);
        let mut results: Vec<Value> = Vec::with_capacity(attachments.len());
        for (i, att) in attachments.iter().enumerate() {
            let chain = chain_of(att)?;
            match chain.add(&inv) {
                Ok(result) => {
                    entry.attachments[i].result = Some(result.clone());
                    results.push(result);
                    cache
                        .update(&entry)
                        .map_err(|source| self.cache_err("write", source))
                        .or_else(|e| self.fail_add(&cache, &entry, e))?;
                }
                Err((err, partial)) => {
                    // DEL the failed attachment first (it may have half-configured), then the rest.
                    entry.attachments[i].result = partial;
                    let rollback = self.rollback(&cache, &entry, i + 1);
                    let (pod, network, ifname) =
                        (label.clone(), att.network.clone(), att.ifname.clone());
                    return Err(match err {
                        ChainError::Exec(source) => EngineError::Delegate {
                            pod,
                            network,
                            ifname,
                            source,
                            rollback,
                        },
                        ChainError::BadResult { reason, .. } => EngineError::BadResult {
                            pod,
                            network,
                            ifname,
                            reason,
                            rollback,
                        },
                    });
                }
            }
        }

        if let (Some(p), Some(kube)) = (pod.as_ref(), self.kube) {
            let status = self.network_status(&attachments, &results)?;
            tracing::debug!(pod = %label, "writing network-status");
            if let Err(source) = kube.patch_network_status(&p.namespace, &p.name, &p.uid, &status) {
                let rollback = self.rollback(&cache, &entry, attachments.len());
                return Err(EngineError::Status {
                    pod: label,
                    source,
                    rollback,
                });
            }
        }

        tracing::debug!(pod = %label, "ADD done");
        let cluster = &attachments[0];
        let cluster_version = cluster_version(cluster)?;
        CniResult::from_value(&results[0], cluster_version)
            .and_then(|r| r.to_value(version))
            .map_err(|e| {
                let rollback = self.rollback(&cache, &entry, attachments.len());
                EngineError::BadResult {
                    pod: label,
                    network: cluster.network.clone(),
                    ifname: cluster.ifname.clone(),
                    reason: format!(
                        "cannot return the cluster network's result as CNI {version}: {e}"
                    ),
                    rollback,
                }
            })
    }

    fn fail_add<T>(
        &self,
        cache: &Cache,
        entry: &CacheEntry,
        e: EngineError,
    ) -> Result<T, EngineError> {
        let _ = self.rollback(cache, entry, entry.attachments.len());
        Err(e)
    }

    fn cache_err(&self, op: &str, source: crate::cache::CacheError) -> EngineError {
        EngineError::Cache {
            context: format!("container {}: cache {op}", self.env.container_id),
            source,
        }
    }

    /// The pod's annotations: from the runtime when it passed them, else one GET.
    fn pod_annotations(
        &self,
        pod: Option<&PodRef>,
    ) -> Result<BTreeMap<String, String>, EngineError> {
        let Some(pod) = pod else {
            return Ok(BTreeMap::new());
        };
        if let Some(Value::Object(m)) = self.config.runtime_config.get(POD_ANNOTATIONS_CAPABILITY) {
            return Ok(m
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect());
        }
        let Some(kube) = self.kube else {
            tracing::warn!(pod = %pod, "no Kubernetes API configured: attaching only the cluster and default networks");
            return Ok(BTreeMap::new());
        };
        let info = kube
            .get_pod(&pod.namespace, &pod.name)
            .map_err(|source| EngineError::Api {
                pod: pod.to_string(),
                what: "get pod".into(),
                source,
            })?;
        if !pod.uid.is_empty() && !info.uid.is_empty() && info.uid != pod.uid {
            return Err(EngineError::PodUidMismatch {
                pod: pod.to_string(),
                expected: pod.uid.clone(),
                actual: info.uid,
            });
        }
        Ok(info.annotations)
    }

    fn new_entry(&self, pod: Option<&PodRef>, atts: &[Attachment], args: &str) -> CacheEntry {
        let pod = pod.cloned().unwrap_or_default();
        CacheEntry {
            kind: CACHE_KIND.into(),
            container_id: self.env.container_id.clone(),
            netns: self.env.netns.as_ref().map(|p| p.display().to_string()),
            ifname: self.env.ifname.clone(),
            cni_args: self.env.args.to_env_string(),
            pod_namespace: pod.namespace,
            pod_name: pod.name,
            pod_uid: pod.uid,
            attachments: atts
                .iter()
                .map(|a| CachedAttachment {
                    network: a.network.clone(),
                    ifname: a.ifname.clone(),
                    config: a.config.to_value().to_string(),
                    runtime_config: a.runtime_config.clone(),
                    is_default: a.is_default,
                    cni_args: args.to_owned(),
                    result: None,
                })
                .collect(),
        }
    }

    /// DELs attachments `[0, upto)` in reverse. Removes the cache entry when every DEL succeeded;
    /// otherwise keeps it so that the runtime's DEL can finish the job. Returns a note for the
    /// error message ("" when the rollback was clean).
    fn rollback(&self, cache: &Cache, entry: &CacheEntry, upto: usize) -> String {
        let mut partial = entry.clone();
        partial.attachments.truncate(upto);
        let failures = self.del_attachments(&partial);
        if failures.is_empty() {
            match cache.remove(&entry.container_id) {
                Ok(()) => String::new(),
                Err(e) => format!("; rollback done but the cache entry could not be removed: {e}"),
            }
        } else {
            // Keep exactly what still needs a DEL.
            let _ = cache.write(&partial);
            format!(
                "; rollback incomplete, DEL will retry: {}",
                failures.join("; ")
            )
        }
    }

    fn del_attachments(&self, entry: &CacheEntry) -> Vec<String> {
        let mut failures = Vec::new();
        for att in entry.attachments.iter().rev() {
            let inv = self.invocation(&att.cni_args);
            let config = match NetworkConfig::from_slice(att.config.as_bytes()) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!(
                        "{} ({}): cached config unreadable: {e}",
                        att.network, att.ifname
                    ));
                    continue;
                }
            };
            let version = config.effective_version().unwrap_or(CniVersion::V0_1_0);
            let chain = Chain {
                config: &config,
                version,
                ifname: &att.ifname,
                runtime_config: &att.runtime_config,
            };
            for e in chain.del(&inv, att.result.as_ref()) {
                let failure = format!("{} ({}): {e}", att.network, att.ifname);
                if att.result.is_none() {
                    // No plugin of this attachment ever returned a result: its ADD failed (or never
                    // ran), and a plugin whose ADD fails must clean up after itself. A config whose
                    // DEL can never succeed (e.g. a macvlan master that does not exist) would
                    // otherwise block the pod's teardown forever.
                    tracing::warn!(
                        "ignoring DEL failure of an attachment that was never added: {failure}"
                    );
                } else {
                    failures.push(failure);
                }
            }
        }
        failures
    }

    /// DEL from the cache alone: no API request. Repeated DEL and a missing entry succeed.
    pub fn del(&self) -> Result<(), EngineError> {
        let cache = self.cache();
        let _lock = cache
            .lock(&self.env.container_id)
            .map_err(|source| self.cache_err("lock", source))?;
        self.del_locked(&cache)
    }

    fn del_locked(&self, cache: &Cache) -> Result<(), EngineError> {
        let Some(entry) = cache
            .read(&self.env.container_id)
            .map_err(|source| self.cache_err("read", source))?
        else {
            tracing::info!(container = %self.env.container_id, "DEL: no cache entry, nothing to do");
            return Ok(());
        };
        let failures = self.del_attachments(&entry);
        if !failures.is_empty() {
            return Err(EngineError::Del {
                container: self.env.container_id.clone(),
                failures,
            });
        }
        cache
            .remove(&self.env.container_id)
            .map_err(|source| self.cache_err("remove", source))
    }

    /// CHECK every cached attachment with its cached result.
    pub fn check(&self) -> Result<(), EngineError> {
        let cache = self.cache();
        let _lock = cache
            .lock(&self.env.container_id)
            .map_err(|source| self.cache_err("lock", source))?;
        let container = self.env.container_id.clone();
        let entry = cache
            .read(&container)
            .map_err(|source| self.cache_err("read", source))?
            .ok_or_else(|| EngineError::Check {
                container: container.clone(),
                reason: "no ADD is recorded for this container".into(),
            })?;
        for att in &entry.attachments {
            let config = NetworkConfig::from_slice(att.config.as_bytes()).map_err(|e| {
                EngineError::Check {
                    container: container.clone(),
                    reason: format!(
                        "{} ({}): cached config unreadable: {e}",
                        att.network, att.ifname
                    ),
                }
            })?;
            let version = config.effective_version().unwrap_or(CniVersion::V0_1_0);
            let Some(result) = &att.result else {
                return Err(EngineError::Check {
                    container: container.clone(),
                    reason: format!("{} ({}): ADD never completed", att.network, att.ifname),
                });
            };
            let chain = Chain {
                config: &config,
                version,
                ifname: &att.ifname,
                runtime_config: &att.runtime_config,
            };
            chain
                .check(&self.invocation(&att.cni_args), result)
                .map_err(|e| EngineError::Check {
                    container: container.clone(),
                    reason: format!("{} ({}): {e}", att.network, att.ifname),
                })?;
        }
        Ok(())
    }

    fn network_status(
        &self,
        atts: &[Attachment],
        results: &[Value],
    ) -> Result<String, EngineError> {
        let mut statuses = Vec::new();
        for (att, value) in atts.iter().zip(results) {
            let version = cluster_version(att)?;
            let result = CniResult::from_value(value, version).unwrap_or_default();
            statuses.extend(statuses_from_result(
                &att.network,
                &att.ifname,
                &result,
                att.is_default,
                &[],
                None,
            ));
        }
        Ok(plexus_netattach::status::status_annotation_value(&statuses))
    }
}

fn cluster_version(att: &Attachment) -> Result<CniVersion, EngineError> {
    att.config
        .effective_version()
        .map_err(|e| EngineError::NetworkConfig {
            pod: String::new(),
            network: att.network.clone(),
            reason: e.to_string(),
        })
}

fn chain_of(att: &Attachment) -> Result<Chain<'_>, EngineError> {
    Ok(Chain {
        config: &att.config,
        version: cluster_version(att)?,
        ifname: &att.ifname,
        runtime_config: &att.runtime_config,
    })
}
