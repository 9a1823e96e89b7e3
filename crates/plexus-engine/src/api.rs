//! The Kubernetes API as the engine sees it: three calls. Implemented over kube-rs by
//! `plexus-kube` (live client in thin mode, watch caches in thick mode) and by fakes in tests.
//! The trait is blocking so that the engine needs no async runtime; implementations run their own.

use std::collections::BTreeMap;

/// What the engine needs of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub annotations: BTreeMap<String, String>,
}

/// What the engine needs of a NetworkAttachmentDefinition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NadInfo {
    pub namespace: String,
    pub name: String,
    /// `spec.config`; `None` or empty means "look in confDir for a config with this name".
    pub config: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// A failed API call, classified by what the caller should do about it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    /// HTTP 404.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// Connection refused, timeout, TLS failure, 5xx, 429 (after the implementation's own
    /// retries, if any), or the call's time budget spent: the caller may retry later (CNI code 11).
    #[error("API server unreachable: {0}")]
    Unreachable(String),
    /// 409 on the UID-guarded status patch: the pod was replaced by one with another UID.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 401/403.
    #[error("access denied: {0}")]
    Forbidden(String),
    /// Anything else the API server answered (status code and its Status message).
    #[error("API error {status}: {message}")]
    Other { status: u16, message: String },
}

/// The three API calls of an ADD. Implementations must be cheap to call from one thread.
pub trait KubeApi: Send + Sync {
    /// POST a core v1 Event about a pod. Optional (not in the ADD budget); the default does
    /// nothing so that fakes and read-only implementations need not care.
    fn post_event(&self, _event: &PodEvent) -> Result<(), ApiError> {
        Ok(())
    }

    /// GET the pod.
    fn get_pod(&self, namespace: &str, name: &str) -> Result<PodInfo, ApiError>;

    /// GET every `(namespace, name)` NAD, **concurrently**; one result per input, same order.
    fn get_nads(&self, refs: &[(String, String)]) -> Vec<Result<NadInfo, ApiError>>;

    /// One JSON merge patch of `metadata.annotations[k8s.v1.cni.cncf.io/network-status]` on the
    /// `pods/status` subresource, with `metadata.uid` in the body as a guard (the API server answers
    /// 409 when the pod's UID differs). No GET, no PUT, no conflict loop; implementations may
    /// resend it on a transient failure, as it is idempotent.
    fn patch_network_status(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        status_json: &str,
    ) -> Result<(), ApiError>;
}

/// `type` of a Kubernetes Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// An Event about a pod (core v1 `Event` with `involvedObject` = the pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub kind: EventType,
    /// CamelCase reason, e.g. `AddedInterface`, `AddFailed`.
    pub reason: String,
    pub message: String,
}
