//! The Network Plumbing Working Group multi-network specification (v1.3) as Rust types:
//! the `NetworkAttachmentDefinition` custom resource, the `k8s.v1.cni.cncf.io/networks` selection
//! annotation (short and JSON forms) and the `k8s.v1.cni.cncf.io/network-status` annotation.
//! Pure: no I/O.

pub mod nad;
pub mod selection;
pub mod status;

pub use nad::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
pub use selection::{
    IgnoredKey, NetworkSelectionElement, Selection, SelectionError, UnknownKeys, parse_networks,
    parse_selection,
};
pub use status::{NetworkStatus, statuses_from_result};

/// Pod annotation listing the networks a pod asks for.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// Pod annotation the meta plugin writes after ADD.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";
/// Pod annotation replacing the cluster default network (Multus extension).
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";
/// NAD annotation naming a device-plugin resource.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";
