//! The CNI verbs (ADD, DEL, CHECK, STATUS, GC) as thin entry points over the phases: plan
//! ([`crate::plan`]), attach ([`crate::attach`]) and teardown ([`crate::teardown`]). The contracts
//! are those of DESIGN.md §3. The call's context, [`Engine`], lives in [`crate::context`], below
//! the phases, so that they depend on it and not on the verbs.

use crate::api::{EventType, PodEvent};
use crate::attach::{Attach, version_of};
use crate::cache::{Cache, CacheEntry, CacheError};
pub use crate::context::Engine;
use crate::delegate::Chain;
use crate::error::{EngineError, GcFailure};
use crate::exec::UnderLock;
use crate::plan::{Plan, Purpose, plan};
use crate::request;
use crate::resolve::{Attachment, PodRef, local_config};
use crate::routes::{self, RouteMove};
use crate::teardown::{Strictness, teardown};
use plexus_cni::{CniError, CniResult, CniVersion, NetworkConfig};
use plexus_netattach::statuses_from_result;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;

pub use crate::plan::{DEFAULT_NETWORK_ANNOTATION, MIRROR_ANNOTATION, POD_ANNOTATIONS_CAPABILITY};

/// How long GC waits for one container's lock before reporting it busy and moving on.
const GC_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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

    fn invocation<'s>(&'s self, args: &'s str) -> crate::delegate::Invocation<'s> {
        crate::delegate::Invocation {
            exec: self.exec,
            container_id: &self.env.container_id,
            netns: self.env.netns.as_deref(),
            args,
        }
    }

    /// ADD: returns the cluster network's result in the request's version. Posts one Event about
    /// the pod (Normal with the attachments, or Warning with the reason) when `events` is on.
    pub fn add(&self) -> Result<Value, EngineError> {
        let pod = PodRef::from_env(self.env);
        match self.add_inner() {
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

    /// ADD proper: plan, then attach under the guard; returns the result, the UID to name in
    /// events, and the event summary.
    fn add_inner(&self) -> Result<(Value, String, String), EngineError> {
        let version = self.request_version()?;
        if let Some(f) = &self.config.readiness_indicator_file
            && !f.exists()
        {
            return Err(EngineError::NotReady(f.display().to_string()));
        }
        let plan = plan(self, Purpose::Add)?;
        if let (Some(p), false) = (&plan.pod, plan.ignored.is_empty()) {
            plan.ignored
                .iter()
                .for_each(|w| tracing::warn!(pod = %p, "{w}"));
            let message = request::ignored_keys_message(&plan.ignored);
            self.event(
                p,
                &plan.status_uid,
                EventType::Warning,
                request::IGNORED_KEYS_REASON,
                message,
            );
        }
        Attach::begin(self, &plan)?.run(|attach| {
            let mut results = attach.add_delegates(&plan)?;
            // Now that results are known, empty `default-route` lists resolve to their own
            // gateways.
            let moves = routes::plan(&plan.attachments, Some(&results)).map_err(|reason| {
                EngineError::DefaultRoute {
                    pod: plan.label.clone(),
                    reason,
                }
            })?;
            if !moves.is_empty() {
                self.move_default_routes(&plan, &moves)?;
                routes::fix_results(&mut results, &moves);
                attach.record_results(&results)?;
            }
            if let (Some(p), Some(kube)) = (&plan.pod, self.kube) {
                let status = self.network_status(&plan.attachments, &results, &moves)?;
                tracing::debug!(pod = %plan.label, "writing network-status");
                kube.patch_network_status(&p.namespace, &p.name, &plan.status_uid, &status)
                    .map_err(|source| EngineError::Status {
                        pod: plan.label.clone(),
                        source,
                    })?;
            }
            let cluster = &plan.attachments[0];
            let value = CniResult::from_value(&results[0], version_of(cluster, &plan.label)?)
                .and_then(|r| r.to_value(version))
                .map_err(|e| EngineError::BadResult {
                    pod: plan.label.clone(),
                    network: cluster.network.clone(),
                    ifname: cluster.ifname.clone(),
                    reason: format!(
                        "cannot return the cluster network's result as CNI {version}: {e}"
                    ),
                })?;
            tracing::debug!(pod = %plan.label, attachments = plan.attachments.len(), "ADD done");
            let summary = summary(&plan.attachments, &results);
            Ok((value, plan.status_uid.clone(), summary))
        })
    }

    /// Applies the default-route moves in the pod's netns.
    fn move_default_routes(&self, plan: &Plan, moves: &[RouteMove]) -> Result<(), EngineError> {
        let atts = &plan.attachments;
        let first = &atts[moves[0].attachment];
        let applied = match self.env.netns.as_deref() {
            Some(netns) => routes::apply(self.routes, netns, atts, moves),
            None => Err("the runtime gave no network namespace".to_owned()),
        };
        applied.map_err(|reason| EngineError::RouteFix {
            pod: plan.label.clone(),
            network: first.network.clone(),
            ifname: first.ifname.clone(),
            reason,
        })
    }

    /// DEL from the cache alone: no API request. Repeated DEL and a missing entry succeed. A
    /// corrupt entry (both generations) is rebuilt from the pod's annotations, its NADs and the
    /// cluster network, the way a meta plugin without a cache would; that needs the API server,
    /// and its absence is "try again later".
    pub fn del(&self) -> Result<(), EngineError> {
        let id = &self.env.container_id;
        let cache = self.cache();
        let lock = cache
            .lock(id)
            .map_err(|source| self.cache_err("lock", source))?;
        let (entry, strictness) = match cache.read(id) {
            Ok(Some(entry)) => (entry, Strictness::Cached),
            Ok(None) => {
                // CNI SPEC §DEL: plugins should handle multiple DELs permissively. What may be
                // left of the container: the temp file of a first cache write that was killed,
                // and the lock file this DEL holds.
                cache
                    .remove(id)
                    .map_err(|source| self.cache_err("remove", source))?;
                lock.unlink()
                    .map_err(|source| self.cache_err("remove lock", source))?;
                tracing::debug!(container = %id, "DEL done: no cache entry, nothing to do");
                return Ok(());
            }
            Err(CacheError::Corrupt { path, reason }) => {
                tracing::warn!(container = %id, "cache entry {} is corrupt ({reason}); rebuilding what to tear down from the pod", path.display());
                (self.rebuild_entry()?, Strictness::Rebuilt)
            }
            Err(source) => return Err(self.cache_err("read", source)),
        };
        let exec = UnderLock::new(self.exec, Some(lock.as_fd()));
        let report = teardown(&exec, &entry, self.env.netns.as_deref(), strictness);
        if !report.failures.is_empty() {
            return Err(EngineError::Del {
                container: id.clone(),
                report,
            });
        }
        cache
            .remove(id)
            .map_err(|source| self.cache_err("remove", source))?;
        lock.unlink()
            .map_err(|source| self.cache_err("remove lock", source))?;
        tracing::debug!(
            container = %id,
            pod = %format!("{}/{}", entry.pod_namespace, entry.pod_name),
            attachments = entry.attachments.len(),
            rebuilt = strictness == Strictness::Rebuilt,
            "DEL done"
        );
        Ok(())
    }

    /// What a lost entry described, planned again. A plan that fails for good (a NAD deleted
    /// since, an annotation edited into nonsense) falls back to the networks the configuration
    /// names; one that fails for now (the API server unreachable) is returned: code 11.
    fn rebuild_entry(&self) -> Result<CacheEntry, EngineError> {
        let plan = match plan(self, Purpose::Teardown) {
            Ok(p) => p,
            Err(e) if e.code() == plexus_cni::codes::TRY_AGAIN_LATER => return Err(e),
            Err(e) => {
                tracing::warn!(container = %self.env.container_id, "cannot plan the pod's networks again ({e}); tearing down the configured networks only");
                plan(self, Purpose::ConfiguredOnly)?
            }
        };
        Ok(plan.entry(self))
    }

    /// CHECK every cached attachment with its cached result.
    pub fn check(&self) -> Result<(), EngineError> {
        let cache = self.cache();
        let lock = cache
            .lock(&self.env.container_id)
            .map_err(|source| self.cache_err("lock", source))?;
        let container = self.env.container_id.clone();
        let Some(entry) = cache
            .read(&container)
            .map_err(|source| self.cache_err("read", source))?
        else {
            // The lock file this CHECK created must not outlive it.
            if let Err(e) = lock.unlink() {
                tracing::warn!(container = %container, "could not remove the lock file: {e}");
            }
            return Err(EngineError::Check {
                container,
                reason: "no ADD is recorded for this container".into(),
            });
        };
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
    /// that stay valid for it, and sweeps stale lock and temp files (older than
    /// [`crate::cache::STALE_GRACE`], held by nobody). Errors are collected; the sweep goes on.
    /// Without the list GC touches nothing: it cannot tell which pods are gone.
    pub fn gc(&self) -> Result<(), EngineError> {
        let Some(valid) = &self.config.valid_attachments else {
            return Err(EngineError::GcWithoutValidAttachments);
        };
        let cache = self.cache();
        let mut failures: Vec<GcFailure> = Vec::new();
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
                Err(e) => failures.push(GcFailure::Config(e.to_string())),
            }
        }
        for id in ids {
            let cache_failure = |source| GcFailure::Cache {
                container: id.clone(),
                source,
            };
            let lock = match cache.try_lock_for(&id, GC_LOCK_WAIT) {
                Ok(Some(l)) => l,
                Ok(None) => {
                    failures.push(GcFailure::Busy { container: id });
                    continue;
                }
                Err(e) => {
                    failures.push(cache_failure(e));
                    continue;
                }
            };
            let entry = match cache.read(&id) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    // DELed meanwhile; the lock file this GC created goes with it.
                    if let Err(e) = lock.unlink() {
                        failures.push(cache_failure(e));
                    }
                    continue;
                }
                Err(e) => {
                    failures.push(cache_failure(e));
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
            let exec = UnderLock::new(self.exec, Some(lock.as_fd()));
            let report = teardown(&exec, &entry, netns, Strictness::Cached);
            if report.failures.is_empty() {
                if let Err(e) = cache.remove(&id).and_then(|()| lock.unlink()) {
                    failures.push(cache_failure(e));
                }
            } else {
                failures.extend(
                    report
                        .failures
                        .into_iter()
                        .map(|failure| GcFailure::Teardown {
                            container: id.clone(),
                            failure,
                        }),
                );
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
                if let Err(source) =
                    self.exec
                        .exec(&config_request(plugin, plexus_cni::Command::Gc, &bytes))
                {
                    failures.push(GcFailure::Delegate {
                        network: name.clone(),
                        source,
                    });
                }
            }
        }
        match cache.sweep(crate::cache::STALE_GRACE) {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(files = ?removed, "GC: removed stale cache files");
            }
            Ok(_) => {}
            Err(source) => failures.push(GcFailure::Sweep(source)),
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
            // The auxiliary chain adds no interface of its own (Multus writes no entry for it).
            if att.auxiliary {
                continue;
            }
            let version = cluster_version(att)?;
            let result = CniResult::from_value(value, version).unwrap_or_default();
            let device_info = att
                .device
                .as_ref()
                .and_then(crate::device::read_device_info);
            statuses.extend(statuses_from_result(
                &att.network,
                &att.ifname,
                &result,
                att.is_default,
                &routes::gateways_of(moves, i),
                device_info.as_ref(),
            ));
        }
        Ok(plexus_netattach::status::status_annotation_value(&statuses))
    }
}

/// `eth0 10.0.0.5/24 from cluster, net1 10.1.0.5/24 from blue/macvlan` for the Normal event.
fn summary(atts: &[Attachment], results: &[Value]) -> String {
    atts.iter()
        .zip(results)
        .filter(|(att, _)| !att.auxiliary)
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
        lock: None,
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
