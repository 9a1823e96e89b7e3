//! One CNI request, run by the same engine as the thin plugin (`plexus_engine::Engine`) on a
//! blocking thread. What differs from thin mode is only where things come from: the Kubernetes
//! reads from the watch caches, the client already connected, the delegate watchdog shared.

use crate::metrics::Metrics;
use plexus_cni::{CniEnv, CniError, Command, codes};
use plexus_engine::exec::{ExecError, ExecRequest, Watchdog};
use plexus_engine::{Budget, DelegateExec, Engine, IpRoutes, KubeApi, PlexusConfig, ProcessExec};
use plexus_kube::cached::{ApiCounters, CachedKube, EventPoster};
use plexus_kube::watch::Caches;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The daemon's connection to the API server (absent when it has no credentials, like a thin
/// plugin with no kubeconfig: only the cluster network is attached then).
#[derive(Clone)]
pub struct Kube {
    pub caches: Caches,
    pub client: plexus_kube::ApiClient,
    pub server: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("caches", &self.caches)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// What every request shares.
#[derive(Debug)]
pub struct Shared {
    pub kube: Option<Kube>,
    pub counters: ApiCounters,
    pub metrics: Metrics,
    pub watchdog: Option<Arc<Watchdog>>,
    pub handle: tokio::runtime::Handle,
    /// How long a NAD missing from the cache is waited for before a GET.
    pub nad_wait: Duration,
    /// `--chroot-dir`: delegates run chrooted into it.
    pub chroot_dir: Option<std::path::PathBuf>,
}

/// A decoded request: the runtime's environment and the config it gave the shim.
#[derive(Debug)]
pub struct Request {
    pub env: BTreeMap<String, String>,
    pub config: Value,
}

/// Reads `{"env": {...}, "config": ...}`.
pub fn decode(body: &[u8]) -> Result<Request, CniError> {
    let bad = |why: String| {
        CniError::new(
            codes::DECODING_FAILURE,
            format!("plexusd: bad request: {why}"),
        )
    };
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let env = match v.get("env") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(bad(format!("env.{k} is not a string"))),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("\"env\" must be an object of strings".to_owned())),
    };
    let config = v.get("config").cloned().unwrap_or(Value::Null);
    Ok(Request { env, config })
}

/// The validated CNI environment of a request.
pub fn cni_env(req: &Request) -> Result<CniEnv, CniError> {
    CniEnv::from_lookup(|k| req.env.get(k).cloned())
}

/// The request's `callTimeoutSeconds` (the default when absent or invalid: the engine reports
/// the invalid value itself).
pub fn call_timeout(config: &Value) -> Duration {
    config.as_object().map_or(
        plexus_engine::budget::DEFAULT_CALL_TIMEOUT,
        PlexusConfig::call_timeout_of,
    )
}

/// Delegate execution with timing per plugin type (for `/metrics`).
struct TimedExec<'a> {
    inner: ProcessExec,
    metrics: &'a Metrics,
}

impl DelegateExec for TimedExec<'_> {
    fn exec(&self, req: &ExecRequest<'_>) -> Result<Vec<u8>, ExecError> {
        let t = Instant::now();
        let out = self.inner.exec(req);
        self.metrics
            .delegate(req.plugin, req.command.as_str(), t.elapsed());
        out
    }
}

/// Runs the engine for one request (blocking: call from `spawn_blocking`). Returns the result
/// (`Value::Null` for verbs without one) or the CNI error to send back.
pub fn run(
    shared: &Shared,
    env: &CniEnv,
    config: &Value,
    budget: Budget,
) -> Result<Value, CniError> {
    let version = plexus_engine::respond::config_version(config.get("cniVersion"));
    let conf: &Map<String, Value> = config.as_object().ok_or_else(|| {
        CniError::new(
            codes::DECODING_FAILURE,
            "the plexus configuration must be a JSON object",
        )
    })?;
    let config = PlexusConfig::from_map(conf)
        .map_err(|e| CniError::new(codes::INVALID_CONFIG, e.to_string()).with_version(&version))?;
    for note in &config.key_notes {
        tracing::warn!("{note}");
    }
    if env.command != Command::Status {
        plexus_engine::policy::check_cache_dir(&config).map_err(|e| e.with_version(&version))?;
    }
    let search = config.delegate_search_path(&env.path);
    let mut exec = ProcessExec::new(search).with_budget(budget);
    if let Some(w) = &shared.watchdog {
        exec = exec.with_watchdog(w.clone());
    }
    let mut routes = IpRoutes::default();
    if let Some(root) = &shared.chroot_dir {
        exec = exec.with_chroot(root.clone());
        routes = IpRoutes::chrooted(root.clone());
    }
    let exec = TimedExec {
        inner: exec,
        metrics: &shared.metrics,
    };
    let cached = match (&shared.kube, env.command) {
        (Some(k), Command::Add | Command::Del) => Some(CachedKube {
            caches: &k.caches,
            live: plexus_kube::LiveKube::on_handle(
                shared.handle.clone(),
                k.client.clone(),
                k.server.clone(),
                k.timeout,
            )
            .with_deadline(budget.work_deadline()),
            expected_uid: env.args.get("K8S_POD_UID").map(str::to_owned),
            nad_wait: shared
                .nad_wait
                .min(budget.remaining_for(Command::Add, Instant::now())),
            counters: &shared.counters,
            events: Some(EventPoster {
                handle: shared.handle.clone(),
                client: k.client.clone(),
                server: k.server.clone(),
                timeout: Duration::from_secs(config.api_timeout_secs),
            }),
        }),
        _ => None,
    };
    let devices = plexus_kubelet::KubeletDevices::new(
        &config.pod_resources_socket,
        &config.device_checkpoint_file,
        Duration::from_secs(config.kubelet_timeout_secs),
    )
    .with_call_deadline(budget.work_deadline());
    let dra = cached
        .as_ref()
        .map(|c| plexus_kube::dra::DraDevices(&c.live));
    let devices = plexus_engine::device::Fallback {
        primary: &devices,
        fallback: dra.as_ref().map(|d| d as &dyn plexus_engine::DeviceLookup),
    };
    let engine = Engine {
        config: &config,
        env,
        exec: &exec,
        kube: cached.as_ref().map(|k| k as &dyn KubeApi),
        routes: &routes,
        devices: Some(&devices),
    };
    let outcome = match env.command {
        Command::Add => engine.add(),
        Command::Del => engine.del().map(|()| Value::Null),
        Command::Check => engine.check().map(|()| Value::Null),
        Command::Status => engine.status().map(|()| Value::Null),
        Command::Gc => engine.gc().map(|()| Value::Null),
        Command::Version => {
            return Ok(plexus_engine::respond::version_reply(&Value::Object(
                conf.clone(),
            )));
        }
    };
    outcome.map_err(|e| {
        tracing::error!("{e}");
        e.to_cni_error(&version)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_request_bodies_are_decoding_failures_naming_the_cause() {
        for (body, needle) in [
            (&b"not json"[..], "expected"),
            (br#"{"config": {}}"#, "\"env\" must be an object"),
            (
                br#"{"env": {"CNI_COMMAND": 1}, "config": {}}"#,
                "env.CNI_COMMAND",
            ),
        ] {
            let e = decode(body).unwrap_err();
            assert_eq!(e.code, codes::DECODING_FAILURE);
            assert!(e.msg.contains(needle), "{}", e.msg);
        }
        let req =
            decode(br#"{"env": {"CNI_COMMAND": "VERSION"}, "config": {"cniVersion": "0.4.0"}}"#)
                .unwrap();
        assert_eq!(cni_env(&req).unwrap().command, Command::Version);
        assert_eq!(
            plexus_engine::respond::version_reply(&req.config)["cniVersion"],
            "0.4.0"
        );
    }

    #[test]
    fn the_call_budget_comes_from_the_request() {
        let v = serde_json::json!({"clusterNetwork": "a", "callTimeoutSeconds": 7});
        assert_eq!(call_timeout(&v), Duration::from_secs(7));
        assert_eq!(
            call_timeout(&Value::Null),
            plexus_engine::budget::DEFAULT_CALL_TIMEOUT
        );
        // Out of range: the default (the engine reports the bad value when it parses).
        let v = serde_json::json!({"clusterNetwork": "a", "callTimeoutSeconds": 6000});
        assert_eq!(
            call_timeout(&v),
            plexus_engine::budget::DEFAULT_CALL_TIMEOUT
        );
        // The budget is read on its own: a mistake elsewhere does not take it away.
        let v = serde_json::json!({"callTimeoutSeconds": 7, "maxNetworksPerPod": -1});
        assert_eq!(call_timeout(&v), Duration::from_secs(7));
    }
}
