//! The API as the thin plugin uses it: the live client for reads and the status patch, with API
//! errors naming the server and the timeout, and Events posted off the critical path.
//!
//! A thin plugin cannot outlive its CNI call, and the runtime waits for it to exit, so posting an
//! Event in-process would add one API round trip to every ADD. Instead the event is handed to a
//! detached copy of this binary (stdio closed, not waited for), which posts it after the runtime
//! already has its result, and logs a failure to `logFile` (its stderr is closed: holding the
//! runtime's stderr pipe open would make the runtime wait for it).

use crate::logging::{self, LogSetup};
use plexus_engine::config::{LogLevel, LogOptions};
use plexus_engine::{ApiError, EventType, KubeApi, NadInfo, PodEvent, PodInfo};
use plexus_kube::{Credentials, LiveKube};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Environment variable that turns a `plexus` process into the event sender.
pub const EVENT_ENV: &str = "PLEXUS_POST_EVENT";

/// The live client for reads and the status patch, with events posted by a detached child.
pub struct DetachedEvents<'a> {
    pub kube: &'a LiveKube,
    pub creds: Credentials,
    /// `apiTimeoutSeconds`: bounds the event's POST too.
    pub timeout: Duration,
    /// Where and at what level the event sender logs (a failure at warn, a success at debug).
    pub log_file: Option<&'a Path>,
    pub log_level: LogLevel,
    pub log_options: LogOptions,
}

impl DetachedEvents<'_> {
    /// Adds the server and the timeout to errors an operator has to act on ("which API server
    /// refused, and how long did we wait?"): the kubeconfig on the node may not be the one they
    /// think, and the timeout is a config key they can change.
    fn context(&self, e: ApiError) -> ApiError {
        let ctx = format!(
            " (API server {}, timeout {}s)",
            self.kube.server(),
            self.kube.timeout().as_secs()
        );
        match e {
            ApiError::Unreachable(m) => ApiError::Unreachable(m + &ctx),
            ApiError::Forbidden(m) => ApiError::Forbidden(m + &ctx),
            ApiError::Other { status, message } => ApiError::Other {
                status,
                message: message + &ctx,
            },
            e @ (ApiError::NotFound { .. } | ApiError::Conflict(_)) => e,
        }
    }
}

impl KubeApi for DetachedEvents<'_> {
    fn get_pod(&self, namespace: &str, name: &str) -> Result<PodInfo, ApiError> {
        self.kube
            .get_pod(namespace, name)
            .map_err(|e| self.context(e))
    }
    fn get_nads(&self, refs: &[(String, String)]) -> Vec<Result<NadInfo, ApiError>> {
        self.kube
            .get_nads(refs)
            .into_iter()
            .map(|r| r.map_err(|e| self.context(e)))
            .collect()
    }
    fn patch_network_status(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        status_json: &str,
    ) -> Result<(), ApiError> {
        self.kube
            .patch_network_status(namespace, name, uid, status_json)
            .map_err(|e| self.context(e))
    }
    fn post_event(&self, event: &PodEvent) -> Result<(), ApiError> {
        let kubeconfig = match &self.creds {
            Credentials::Kubeconfig(p) => Value::String(p.display().to_string()),
            Credentials::InCluster => Value::Null,
        };
        let o = &self.log_options;
        let payload = json!({
            "kubeconfig": kubeconfig,
            "timeoutMs": self.timeout.as_millis() as u64,
            "namespace": event.namespace, "pod": event.pod, "uid": event.uid,
            "type": event.kind.as_str(), "reason": event.reason, "message": event.message,
            "logFile": self.log_file.map(|p| p.display().to_string()),
            "logLevel": self.log_level.as_str(),
            "logOptions": {"maxSize": o.max_size_mb, "maxAge": o.max_age_days, "maxBackups": o.max_backups, "compress": o.compress},
        });
        let exe = std::env::current_exe().map_err(|e| ApiError::Other {
            status: 0,
            message: e.to_string(),
        })?;
        Command::new(exe)
            .env(EVENT_ENV, payload.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| ApiError::Other {
                status: 0,
                message: format!("cannot start the event sender: {e}"),
            })
    }
}

/// The detached child: posts the event described by `payload` and exits, logging to the
/// `logFile` of the call that handed it over, at that call's level.
pub fn post_from_env(payload: &str) -> bool {
    let v: Value = serde_json::from_str(payload).unwrap_or_default();
    let log_file = v["logFile"].as_str().map(Path::new);
    let options = plexus_engine::config::log_options_from(v.get("logOptions")).unwrap_or_default();
    logging::init(&LogSetup {
        level: v["logLevel"]
            .as_str()
            .and_then(LogLevel::parse)
            .unwrap_or(LogLevel::Warn),
        file: log_file,
        options: &options,
        to_stderr: false,
    });
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let (kind, reason, ns, pod) = (s("type"), s("reason"), s("namespace"), s("pod"));
    let span = tracing::error_span!(
        "plexus-event",
        version = %plexus_cni::build::VERSION,
        commit = %plexus_cni::build::COMMIT
    );
    let _entered = span.enter();
    let fail = |why: String| {
        tracing::warn!("could not post the {kind} event {reason} for pod {ns}/{pod}: {why}");
        false
    };
    if v.is_null() {
        return fail(format!("unreadable event description {payload:?}"));
    }
    let creds = match v["kubeconfig"].as_str() {
        Some(p) => Credentials::Kubeconfig(p.into()),
        None => Credentials::InCluster,
    };
    let timeout = Duration::from_millis(v["timeoutMs"].as_u64().unwrap_or(10_000));
    let kube = match LiveKube::new(&creds, timeout) {
        Ok(k) => k,
        Err(e) => return fail(e.to_string()),
    };
    let event = PodEvent {
        namespace: ns.clone(),
        pod: pod.clone(),
        uid: s("uid"),
        kind: if kind == "Warning" {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.clone(),
        message: s("message"),
    };
    match kube.post_event(&event) {
        Ok(()) => {
            tracing::debug!("posted the {kind} event {reason} for pod {ns}/{pod}");
            true
        }
        Err(e) => fail(format!(
            "{e} (API server {}, timeout {}s)",
            kube.server(),
            timeout.as_secs()
        )),
    }
}
