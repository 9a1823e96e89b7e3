//! Engine errors. Each names the pod, the network and the cause, and maps to one CNI error code
//! (DESIGN.md §4; codes ≥ 100 are documented in docs/errors.md).

use crate::api::ApiError;
use crate::cache::CacheError;
use crate::exec::ExecError;
use crate::teardown::{TeardownFailure, TeardownReport};
use plexus_cni::{CniError, codes};

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A CNI-level problem with the request itself (environment, stdin, version).
    #[error("{}", .0.msg)]
    Request(CniError),
    #[error("pod {pod}: invalid k8s.v1.cni.cncf.io/networks annotation: {source}")]
    Annotation {
        pod: String,
        source: plexus_netattach::SelectionError,
    },
    #[error(
        "pod {pod}: namespace isolation forbids network-attachment-definition {network} (allowed namespaces: {allowed})"
    )]
    Isolation {
        pod: String,
        network: String,
        allowed: String,
    },
    /// The delegate policy refused a plugin of this network (crate::policy).
    #[error("pod {pod}: network {network}: {violation}")]
    Policy {
        pod: String,
        network: String,
        violation: crate::policy::Violation,
    },
    #[error(
        "pod {pod}: asks for {count} networks (cluster network and defaultNetworks included); maxNetworksPerPod is {max}"
    )]
    TooManyNetworks {
        pod: String,
        count: usize,
        max: usize,
    },
    #[error("pod {pod}: interface {ifname} requested twice (by {first} and by {second})")]
    DuplicateInterface {
        pod: String,
        ifname: String,
        first: String,
        second: String,
    },
    #[error("pod {pod}: network {network}: {detail}")]
    NetworkNotFound {
        pod: String,
        network: String,
        detail: String,
    },
    #[error("pod {pod}: network {network}: invalid config: {reason}")]
    NetworkConfig {
        pod: String,
        network: String,
        reason: String,
    },
    #[error(
        "pod {pod}: network {network} needs the Kubernetes API, but no kubeconfig is configured and no in-cluster credentials exist"
    )]
    NoApi { pod: String, network: String },
    #[error("pod {pod}: {what}: {source}")]
    Api {
        pod: String,
        what: String,
        source: ApiError,
    },
    #[error(
        "pod {pod}: UID mismatch: the runtime asked for UID {expected} but the API server has UID {actual} (the pod was replaced)"
    )]
    PodUidMismatch {
        pod: String,
        expected: String,
        actual: String,
    },
    #[error("cluster network not ready: readiness indicator file {0} does not exist")]
    NotReady(String),
    #[error("pod {pod}: network {network} (interface {ifname}): {source}")]
    Delegate {
        pod: String,
        network: String,
        ifname: String,
        source: ExecError,
    },
    #[error("pod {pod}: network {network} (interface {ifname}): {reason}")]
    BadResult {
        pod: String,
        network: String,
        ifname: String,
        reason: String,
    },
    #[error("pod {pod}: writing network-status failed: {source}")]
    Status { pod: String, source: ApiError },
    /// An ADD failed (`cause`) and its rollback could not undo everything: the entry keeps what
    /// still needs a DEL, so that the runtime's DEL finishes the job. A clean rollback returns
    /// `cause` alone.
    #[error("{cause}; rollback incomplete, DEL will retry: {report}")]
    RollbackIncomplete {
        cause: Box<EngineError>,
        report: TeardownReport,
    },
    #[error("{context}: {source}")]
    Cache { context: String, source: CacheError },
    /// ADD found an entry that neither generation of which reads back. It touches nothing: the
    /// attachments the entry described may still exist, and only DEL knows how to rebuild them.
    #[error(
        "container {container}: {source}; ADD will not overwrite it: the runtime's DEL of this container rebuilds what to tear down from the pod's annotations (docs/errors.md, code 102)"
    )]
    CorruptAtAdd {
        container: String,
        source: CacheError,
    },
    #[error("container {container}: DEL failed for {report}")]
    Del {
        container: String,
        report: TeardownReport,
    },
    #[error("container {container}: CHECK failed: {reason}")]
    Check { container: String, reason: String },
    #[error("pod {pod}: invalid v1.multus-cni.io/default-network annotation: {reason}")]
    DefaultNetwork { pod: String, reason: String },
    #[error("pod {pod}: invalid default-route request: {reason}")]
    DefaultRoute { pod: String, reason: String },
    #[error(
        "pod {pod}: network {network} (interface {ifname}): setting the default route failed: {reason}"
    )]
    RouteFix {
        pod: String,
        network: String,
        ifname: String,
        reason: String,
    },
    /// The devices of the pod could not be learnt (the kubelet busy until the deadline: code 11;
    /// no source at all: code 105).
    #[error("pod {pod}: network {network} needs a device of resource {resource}: {source}")]
    Devices {
        pod: String,
        network: String,
        resource: String,
        source: crate::device::DeviceError,
    },
    /// More networks ask for a resource than the pod was allocated devices of it.
    #[error(
        "pod {pod}: resource {resource}: {needed} networks need a device ({networks}) but the pod was allocated {available} device(s); request as many devices as networks in the pod spec"
    )]
    TooFewDevices {
        pod: String,
        resource: String,
        needed: usize,
        available: usize,
        networks: String,
    },
    #[error("pod {pod}: not found in the API server after {tries} tries; the runtime should retry")]
    PodNotFound { pod: String, tries: u32 },
    /// STATUS: ADD cannot succeed now (CNI code 50).
    #[error("{0}")]
    Unavailable(String),
    #[error("GC failed for {}", join(failures))]
    Gc { failures: Vec<GcFailure> },
    /// GC without `cni.dev/valid-attachments` (nor the legacy key): an empty list would mean
    /// "tear down every pod on the node", so it must be said, not assumed.
    #[error(
        "GC needs cni.dev/valid-attachments (or cni.dev/attachments) in its config; without it every attachment would be torn down, so nothing was touched"
    )]
    GcWithoutValidAttachments,
}

/// One thing a GC sweep could not do; the sweep goes on past it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GcFailure {
    /// Another operation held the container's lock for longer than GC waits.
    #[error("container {container}: busy (locked by another operation), skipped")]
    Busy { container: String },
    #[error("container {container}: {source}")]
    Cache {
        container: String,
        source: CacheError,
    },
    /// A stale attachment whose DEL failed; its entry is kept for the next GC.
    #[error("container {container}: {failure}")]
    Teardown {
        container: String,
        failure: TeardownFailure,
    },
    /// A delegate network's own GC failed.
    #[error("network {network}: GC: {source}")]
    Delegate { network: String, source: ExecError },
    /// The sweep of stale lock and temp files failed.
    #[error("sweeping stale cache files: {0}")]
    Sweep(CacheError),
    /// A configured (cluster or default) network could not be loaded.
    #[error("cannot load a configured network: {0}")]
    Config(String),
}

fn join(failures: &[GcFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl EngineError {
    /// The CNI error code for this failure.
    pub fn code(&self) -> u32 {
        match self {
            Self::RollbackIncomplete { cause, .. } => cause.code(),
            Self::CorruptAtAdd { .. } => codes::CACHE_ERROR,
            Self::GcWithoutValidAttachments => codes::INVALID_CONFIG,
            Self::Config(_)
            | Self::Annotation { .. }
            | Self::Isolation { .. }
            | Self::Policy { .. }
            | Self::TooManyNetworks { .. }
            | Self::DuplicateInterface { .. }
            | Self::DefaultNetwork { .. }
            | Self::DefaultRoute { .. } => codes::INVALID_CONFIG,
            Self::PodNotFound { .. } => codes::TRY_AGAIN_LATER,
            Self::Devices {
                source: crate::device::DeviceError::Busy(_),
                ..
            } => codes::TRY_AGAIN_LATER,
            Self::Devices { .. } | Self::TooFewDevices { .. } => codes::DEVICES,
            Self::Unavailable(_) => codes::PLUGIN_NOT_AVAILABLE,
            Self::RouteFix { .. } | Self::Gc { .. } => codes::DELEGATE_FAILED,
            Self::NetworkConfig { .. } | Self::NoApi { .. } => codes::INVALID_CONFIG,
            Self::Request(e) => e.code,
            Self::NetworkNotFound { .. } => codes::NETWORK_NOT_FOUND,
            Self::Api { source, .. } | Self::Status { source, .. } => api_code(source),
            Self::PodUidMismatch { .. } => codes::POD_UID_MISMATCH,
            Self::NotReady(_) => codes::TRY_AGAIN_LATER,
            Self::Delegate { .. }
            | Self::BadResult { .. }
            | Self::Del { .. }
            | Self::Check { .. } => codes::DELEGATE_FAILED,
            Self::Cache { .. } => codes::CACHE_ERROR,
        }
    }

    /// The CNI error object to print, in `cni_version`.
    pub fn to_cni_error(&self, cni_version: &str) -> CniError {
        CniError::new(self.code(), self.to_string())
            .with_details(self.details())
            .with_version(cni_version)
    }

    /// The failed delegate's own error JSON, when a delegate failed.
    fn details(&self) -> String {
        match self {
            Self::Delegate {
                source: ExecError::Failed { error, .. },
                ..
            } => error.to_json(),
            Self::Request(e) => e.details.clone(),
            Self::RollbackIncomplete { cause, .. } => cause.details(),
            _ => String::new(),
        }
    }
}

fn api_code(e: &ApiError) -> u32 {
    match e {
        ApiError::Unreachable(_) => codes::TRY_AGAIN_LATER,
        ApiError::NotFound { .. } => codes::TRY_AGAIN_LATER,
        ApiError::Conflict(_) => codes::POD_UID_MISMATCH,
        _ => codes::API_ERROR,
    }
}
