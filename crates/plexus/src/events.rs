//! Events off the critical path. A thin plugin cannot outlive its CNI call, and the runtime waits
//! for it to exit, so posting an Event in-process would add one API round trip to every ADD.
//! Instead the event is handed to a detached copy of this binary (stdio closed, not waited for),
//! which posts it after the runtime already has its result.

use plexus_engine::{ApiError, EventType, KubeApi, NadInfo, PodEvent, PodInfo};
use plexus_kube::{Credentials, LiveKube};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Environment variable that turns a `plexus` process into the event sender.
pub const EVENT_ENV: &str = "PLEXUS_POST_EVENT";

/// The live client for reads and the status patch, with events posted by a detached child.
pub struct DetachedEvents<'a> {
    pub kube: &'a LiveKube,
    pub creds: Credentials,
    pub timeout: Duration,
}

impl KubeApi for DetachedEvents<'_> {
    fn get_pod(&self, namespace: &str, name: &str) -> Result<PodInfo, ApiError> {
        self.kube.get_pod(namespace, name)
    }
    fn get_nads(&self, refs: &[(String, String)]) -> Vec<Result<NadInfo, ApiError>> {
        self.kube.get_nads(refs)
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
    }
    fn post_event(&self, event: &PodEvent) -> Result<(), ApiError> {
        let kubeconfig = match &self.creds {
            Credentials::Kubeconfig(p) => Value::String(p.display().to_string()),
            Credentials::InCluster => Value::Null,
        };
        let payload = json!({
            "kubeconfig": kubeconfig,
            "timeoutMs": self.timeout.as_millis() as u64,
            "namespace": event.namespace, "pod": event.pod, "uid": event.uid,
            "type": event.kind.as_str(), "reason": event.reason, "message": event.message,
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

/// The detached child: posts the event described by `payload` and exits.
pub fn post_from_env(payload: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(payload) else {
        return false;
    };
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let creds = match v["kubeconfig"].as_str() {
        Some(p) => Credentials::Kubeconfig(p.into()),
        None => Credentials::InCluster,
    };
    let timeout = Duration::from_millis(v["timeoutMs"].as_u64().unwrap_or(500));
    let Ok(kube) = LiveKube::new(&creds, timeout) else {
        return false;
    };
    let event = PodEvent {
        namespace: s("namespace"),
        pod: s("pod"),
        uid: s("uid"),
        kind: if s("type") == "Warning" {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: s("reason"),
        message: s("message"),
    };
    kube.post_event(&event).is_ok()
}
