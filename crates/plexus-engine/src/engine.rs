//! ADD, DEL and CHECK of a pod: the contracts of DESIGN.md §3.

use crate::api::{ApiError, EventType, KubeApi, PodEvent};
use crate::cache::{CACHE_KIND, Cache, CacheEntry, CachedAttachment};
use crate::config::PlexusConfig;
use crate::delegate::{Chain, ChainError, Invocation};
use crate::error::EngineError;
use crate::exec::DelegateExec;
use crate::resolve::{Attachment, PodRef, local_config, resolve};
use crate::routes::{self, NetnsRoutes, RouteMove};
use plexus_cni::{CniArgs, CniEnv, CniError, CniResult, CniVersion, NetworkConfig};
use plexus_netattach::{NETWORKS_ANNOTATION, statuses_from_result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// How long GC waits for one container's lock before reporting it busy and moving on.
const GC_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The runtimeConfig key under which containerd and CRI-O pass the pod's annotations.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// The pod annotation that replaces the cluster network for one pod (Multus's key).
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";

/// Set by the kubelet on the API object of a static pod (its "mirror pod"), whose UID differs
/// from the one the kubelet gives the runtime.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// A pod that is not in the API server yet (an informer lag in the API server's watch cache, or
/// a pod created an instant ago) is retried this often, this far apart, before the ADD fails with
/// "try again later". Bounded so that a deleted pod fails fast.
const POD_GET_TRIES: u32 = 3;
const POD_GET_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// One CNI call.
pub struct Engine<'a> {
    pub config: &'a PlexusConfig,
    pub env: &'a CniEnv,
    pub exec: &'a dyn DelegateExec,
    /// `None` when no API server is configured.
    pub kube: Option<&'a dyn KubeApi>,
    /// Route changes in the pod's netns (`default-route`).
    pub routes: &'a dyn NetnsRoutes,
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

    /// ADD: returns the cluster network's result in the request's version. Posts one Event about
    /// the pod (Normal with the attachments, or Warning with the reason) when `events` is on.
    pub fn add(&self) -> Result<Value, EngineError> {
        let pod = PodRef::from_env(self.env);
        match self.add_inner(pod.as_ref()) {
            Ok((value, uid, summary)) => {
                if let Some(p) = &pod {
                    self.event(p, &uid, EventType::Normal, "AddedInterface", summary);
                }
                Ok(value)
            }
            Err(e) => {
                // "Try again later" means the API server is unwell or the pod is not there yet:
                // an Event would only cost another timeout.
                if let Some(p) = &pod
                    && e.code() != plexus_cni::codes::TRY_AGAIN_LATER
                {
                    self.event(p, &p.uid, EventType::Warning, "AddFailed", e.to_string());
                }
                Err(e)
            }
        }
    }

    /// Best effort: logged on failure, never fatal. One request, bounded by the client's timeout.
    fn event(&self, pod: &PodRef, uid: &str, kind: EventType, reason: &str, message: String) {
        let (true, Some(kube)) = (self.config.events, self.kube) else {
            return;
        };
        let ev = PodEvent {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            uid: uid.to_owned(),
            kind,
            reason: reason.to_owned(),
            message,
        };
        if let Err(e) = kube.post_event(&ev) {
            tracing::warn!(pod = %pod, "could not post the {} event: {e}", kind.as_str());
        }
    }

    /// ADD proper; returns the result, the UID to name in events, and the event summary.
    fn add_inner(&self, pod: Option<&PodRef>) -> Result<(Value, String, String), EngineError> {
        let version = self.request_version()?;
        if let Some(f) = &self.config.readiness_indicator_file
            && !f.exists()
        {
            return Err(EngineError::NotReady(f.display().to_string()));
        }
        let label = self.pod_label(pod);
        let (annotations, api_uid) = self.pod_annotations(pod)?;
        if let (Some(p), Some(text)) = (pod, annotations.get(NETWORKS_ANNOTATION)) {
            crate::resolve::check_annotation_size(self.config, p, text)?;
        }
        let selections =
            match (pod, annotations.get(NETWORKS_ANNOTATION)) {
                (Some(p), Some(text)) => plexus_netattach::parse_networks(text, &p.namespace)
                    .map_err(|source| EngineError::Annotation {
                        pod: label.clone(),
                        source,
                    })?,
                _ => Vec::new(),
            };
        let cluster_override = match annotations.get(DEFAULT_NETWORK_ANNOTATION) {
            Some(text) if pod.is_some() => Some(self.default_network(text, &label)?),
            _ => None,
        };
        let attachments = resolve(
            self.config,
            self.env,
            pod,
            cluster_override,
            selections,
            self.kube,
        )?;
        let attachments = attachments
            .into_iter()
            .map(|a| crate::request::apply_selection(a, &label))
            .collect::<Result<Vec<_>, _>>()?;
        // Conflicting explicit gateways fail here, before anything runs.
        routes::plan(&attachments, None).map_err(|reason| EngineError::DefaultRoute {
            pod: label.clone(),
            reason,
        })?;

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
        let mut entry = self.new_entry(pod, &attachments, &args);
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

        // Now that results are known, empty `default-route` lists resolve to their own gateways.
        let moves = match routes::plan(&attachments, Some(&results)) {
            Ok(m) => m,
            Err(reason) => {
                let rollback = self.rollback(&cache, &entry, attachments.len());
                return Err(EngineError::DefaultRoute {
                    pod: label,
                    reason: format!("{reason}{rollback}"),
                });
            }
        };
        if !moves.is_empty() {
            self.move_default_routes(
                &cache,
                &mut entry,
                &attachments,
                &mut results,
                &moves,
                &label,
            )?;
        }

        let uid = api_uid
            .or_else(|| pod.map(|p| p.uid.clone()))
            .unwrap_or_default();
        if let (Some(p), Some(kube)) = (pod, self.kube) {
            let status = self.network_status(&attachments, &results, &moves)?;
            tracing::debug!(pod = %label, "writing network-status");
            if let Err(source) = kube.patch_network_status(&p.namespace, &p.name, &uid, &status) {
                let rollback = self.rollback(&cache, &entry, attachments.len());
                return Err(EngineError::Status {
                    pod: label,
                    source,
                    rollback,
                });
            }
        }

        tracing::debug!(pod = %label, "ADD done");
        let summary = summary(&attachments, &results);
        let cluster = &attachments[0];
        let cluster_version = cluster_version(cluster)?;
        CniResult::from_value(&results[0], cluster_version)
            .and_then(|r| r.to_value(version))
            .map(|v| (v, uid, summary))
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

    /// `v1.multus-cni.io/default-network`: exactly one entry, namespace defaulting to
    /// `multusNamespace` (Multus's rule, so that users cannot point it at a NAD of their own
    /// namespace by accident).
    fn default_network(
        &self,
        text: &str,
        label: &str,
    ) -> Result<plexus_netattach::NetworkSelectionElement, EngineError> {
        let bad = |reason: String| EngineError::DefaultNetwork {
            pod: label.to_owned(),
            reason,
        };
        let mut v = plexus_netattach::parse_networks(text, &self.config.multus_namespace)
            .map_err(|e| bad(e.to_string()))?;
        match v.len() {
            1 => Ok(v.remove(0)),
            n => Err(bad(format!(
                "{text:?} names {n} networks; exactly one is allowed"
            ))),
        }
    }

    /// Applies the default-route moves in the pod's netns and fixes the results (in memory and in
    /// the cache) to match; rolls the whole ADD back on failure.
    fn move_default_routes(
        &self,
        cache: &Cache,
        entry: &mut CacheEntry,
        atts: &[Attachment],
        results: &mut [Value],
        moves: &[RouteMove],
        label: &str,
    ) -> Result<(), EngineError> {
        let first = &atts[moves[0].attachment];
        let applied = match self.env.netns.as_deref() {
            Some(netns) => routes::apply(self.routes, netns, atts, moves),
            None => Err("the runtime gave no network namespace".to_owned()),
        };
        if let Err(reason) = applied {
            let rollback = self.rollback(cache, entry, atts.len());
            return Err(EngineError::RouteFix {
                pod: label.to_owned(),
                network: first.network.clone(),
                ifname: first.ifname.clone(),
                reason,
                rollback,
            });
        }
        routes::fix_results(results, moves);
        for (cached, r) in entry.attachments.iter_mut().zip(results.iter()) {
            cached.result = Some(r.clone());
        }
        cache
            .update(entry)
            .map_err(|source| self.cache_err("write", source))
            .or_else(|e| self.fail_add(cache, entry, e))
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

    /// The pod's annotations: from the runtime when it passed them, else one GET (retried a few
    /// times while the pod is not found). Also returns the API object's UID when it must guard
    /// the status PATCH instead of the runtime's (a static pod's mirror).
    fn pod_annotations(
        &self,
        pod: Option<&PodRef>,
    ) -> Result<(BTreeMap<String, String>, Option<String>), EngineError> {
        let Some(pod) = pod else {
            return Ok((BTreeMap::new(), None));
        };
        if let Some(Value::Object(m)) = self.config.runtime_config.get(POD_ANNOTATIONS_CAPABILITY) {
            let annotations = m
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect();
            return Ok((annotations, None));
        }
        let Some(kube) = self.kube else {
            tracing::warn!(pod = %pod, "no Kubernetes API configured: attaching only the cluster and default networks");
            return Ok((BTreeMap::new(), None));
        };
        let mut tries = 0;
        let info = loop {
            tries += 1;
            match kube.get_pod(&pod.namespace, &pod.name) {
                Ok(info) => break info,
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
        };
        if !pod.uid.is_empty() && !info.uid.is_empty() && info.uid != pod.uid {
            if is_mirror_pod(&info.annotations) {
                tracing::info!(pod = %pod, runtime_uid = %pod.uid, api_uid = %info.uid, "static pod: using the mirror pod's UID");
                return Ok((info.annotations, Some(info.uid)));
            }
            return Err(EngineError::PodUidMismatch {
                pod: pod.to_string(),
                expected: pod.uid.clone(),
                actual: info.uid,
            });
        }
        Ok((info.annotations, None))
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
        self.del_attachments_in(entry, self.env.netns.as_deref())
    }

    /// DELs every attachment of `entry` in reverse, in `netns`; one message per failure.
    fn del_attachments_in(&self, entry: &CacheEntry, netns: Option<&Path>) -> Vec<String> {
        let mut failures = Vec::new();
        for att in entry.attachments.iter().rev() {
            let inv = Invocation {
                exec: self.exec,
                container_id: &entry.container_id,
                netns,
                args: &att.cni_args,
            };
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

    /// STATUS (CNI 1.1.0): can an ADD succeed now? Code 50 when the readiness indicator file is
    /// missing or the cluster network's own STATUS fails (asked only when its cniVersion is
    /// ≥ 1.1.0, as libcni does). Never talks to the API server: a cluster network that only a NAD
    /// defines is not asked.
    pub fn status(&self) -> Result<(), EngineError> {
        let unavailable = |m: String| EngineError::Unavailable(m);
        if let Some(f) = &self.config.readiness_indicator_file
            && !f.exists()
        {
            return Err(unavailable(format!(
                "cluster network not ready: readiness indicator file {} does not exist",
                f.display()
            )));
        }
        let (config, network) = match local_config(self.config, &self.config.cluster_network) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(reason) => {
                return Err(unavailable(format!(
                    "cluster network config unusable: {reason}"
                )));
            }
        };
        let version = config
            .effective_version()
            .map_err(|e| unavailable(format!("cluster network {network}: invalid config: {e}")))?;
        if !version.supports_status_gc() {
            return Ok(());
        }
        for (i, plugin) in config.plugin_types().iter().enumerate() {
            let stdin = serde_json::to_vec(&config.plugin_stdin(i, version, None, None))
                .expect("JSON values always serialize");
            self.exec
                .exec(&config_request(plugin, plexus_cni::Command::Status, &stdin))
                .map_err(|e| unavailable(format!("cluster network {network}: STATUS: {e}")))?;
        }
        Ok(())
    }

    /// GC (CNI 1.1.0): DELs every cached container that the runtime did not list in
    /// `cni.dev/valid-attachments` and removes its entry, then forwards GC to every delegate
    /// network of version ≥ 1.1.0 (cluster, default and cached networks) with the attachments
    /// that stay valid for it. Errors are collected; the sweep goes on.
    pub fn gc(&self) -> Result<(), EngineError> {
        let cache = self.cache();
        let valid = &self.config.valid_attachments;
        let mut failures: Vec<String> = Vec::new();
        let ids = cache
            .list()
            .map_err(|source| self.cache_err("list", source))?;
        // Network name → its config; and the (containerID, ifname) pairs still valid for it.
        let mut networks: Vec<(String, NetworkConfig)> = Vec::new();
        let mut still_valid: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let remember = |config: NetworkConfig, networks: &mut Vec<(String, NetworkConfig)>| {
            if !networks.iter().any(|(n, _)| *n == config.name) {
                networks.push((config.name.clone(), config));
            }
        };
        for r in std::iter::once(&self.config.cluster_network).chain(&self.config.default_networks)
        {
            match local_config(self.config, r) {
                Ok(Some((c, _))) => remember(c, &mut networks),
                Ok(None) => {}
                Err(e) => failures.push(format!("cannot load a configured network: {e}")),
            }
        }
        for id in ids {
            let _lock = match cache.try_lock_for(&id, GC_LOCK_WAIT) {
                Ok(Some(l)) => l,
                Ok(None) => {
                    failures.push(format!(
                        "container {id}: busy (locked by another operation), skipped"
                    ));
                    continue;
                }
                Err(e) => {
                    failures.push(format!("container {id}: {e}"));
                    continue;
                }
            };
            let entry = match cache.read(&id) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(e) => {
                    failures.push(format!("container {id}: {e}"));
                    continue;
                }
            };
            let is_valid = valid
                .iter()
                .any(|v| v.container_id == entry.container_id && v.ifname == entry.ifname);
            for att in &entry.attachments {
                let Ok(config) = NetworkConfig::from_slice(att.config.as_bytes()) else {
                    continue;
                };
                if is_valid {
                    still_valid.entry(config.name.clone()).or_default().push(
                        serde_json::json!({"containerID": entry.container_id, "ifname": att.ifname}),
                    );
                }
                remember(config, &mut networks);
            }
            if is_valid {
                continue;
            }
            tracing::info!(container = %id, "GC: tearing down a stale attachment");
            // The sandbox is usually gone by now; plugins DEL without a netns then.
            let netns = entry.netns.as_deref().map(Path::new).filter(|p| p.exists());
            let dels = self.del_attachments_in(&entry, netns);
            if dels.is_empty() {
                if let Err(e) = cache.remove(&id) {
                    failures.push(format!("container {id}: {e}"));
                }
            } else {
                failures.extend(dels.into_iter().map(|f| format!("container {id}: {f}")));
            }
        }
        for (name, config) in &networks {
            let Ok(version) = config.effective_version() else {
                continue;
            };
            if !version.supports_status_gc() || config.disable_gc {
                continue;
            }
            let list = Value::Array(still_valid.get(name).cloned().unwrap_or_default());
            for (i, plugin) in config.plugin_types().iter().enumerate() {
                let mut stdin = config.plugin_stdin(i, version, None, None);
                stdin[crate::config::VALID_ATTACHMENTS_KEY] = list.clone();
                stdin[crate::config::LEGACY_ATTACHMENTS_KEY] = list.clone();
                let bytes = serde_json::to_vec(&stdin).expect("JSON values always serialize");
                if let Err(e) =
                    self.exec
                        .exec(&config_request(plugin, plexus_cni::Command::Gc, &bytes))
                {
                    failures.push(format!("network {name}: GC: {e}"));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Gc { failures })
        }
    }

    fn network_status(
        &self,
        atts: &[Attachment],
        results: &[Value],
        moves: &[RouteMove],
    ) -> Result<String, EngineError> {
        let mut statuses = Vec::new();
        for (i, (att, value)) in atts.iter().zip(results).enumerate() {
            let version = cluster_version(att)?;
            let result = CniResult::from_value(value, version).unwrap_or_default();
            statuses.extend(statuses_from_result(
                &att.network,
                &att.ifname,
                &result,
                att.is_default,
                &routes::gateways_of(moves, i),
                None,
            ));
        }
        Ok(plexus_netattach::status::status_annotation_value(&statuses))
    }
}

/// The static pod test: Multus skips the UID check when `kubernetes.io/config.source` is not
/// `api`; the kubelet also marks the API object with `kubernetes.io/config.mirror`.
fn is_mirror_pod(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(MIRROR_ANNOTATION)
        || annotations
            .get(CONFIG_SOURCE_ANNOTATION)
            .is_some_and(|s| s != "api")
}

/// `eth0 10.0.0.5/24 from cluster, net1 10.1.0.5/24 from blue/macvlan` for the Normal event.
fn summary(atts: &[Attachment], results: &[Value]) -> String {
    atts.iter()
        .zip(results)
        .map(|(att, value)| {
            let ips: Vec<String> = cluster_version(att)
                .ok()
                .and_then(|v| CniResult::from_value(value, v).ok())
                .map(|r| r.ips.into_iter().map(|ip| ip.address).collect())
                .unwrap_or_default();
            if ips.is_empty() {
                format!("{} from {}", att.ifname, att.network)
            } else {
                format!("{} {} from {}", att.ifname, ips.join(" "), att.network)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A STATUS or GC request: no attachment parameters.
fn config_request<'r>(
    plugin: &'r str,
    command: plexus_cni::Command,
    stdin: &'r [u8],
) -> crate::exec::ExecRequest<'r> {
    crate::exec::ExecRequest {
        plugin,
        command,
        container_id: "",
        netns: None,
        ifname: "",
        args: "",
        stdin,
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
