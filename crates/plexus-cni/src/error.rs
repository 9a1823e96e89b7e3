//! The CNI error object printed on stdout by a failed command.

use serde::{Deserialize, Serialize};

/// Well-known error codes (CNI spec §5 "Error"); 100+ are Plexus's own (see docs/errors.md).
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// A delegate plugin failed; details carry its own error.
    pub const DELEGATE_FAILED: u32 = 100;
    /// The Kubernetes API rejected or failed a request (other than "unreachable", which is 11).
    pub const API_ERROR: u32 = 101;
    /// The on-disk cache could not be read, written or parsed.
    pub const CACHE_ERROR: u32 = 102;
    /// A network-attachment-definition or its config could not be found.
    pub const NETWORK_NOT_FOUND: u32 = 103;
    /// The pod the runtime names is not the pod the API server has (same name, other UID).
    pub const POD_UID_MISMATCH: u32 = 104;
    /// The devices a network needs (its NAD's `resourceName`) cannot be found for the pod: no
    /// kubelet socket and no checkpoint, or fewer devices allocated than networks ask for.
    pub const DEVICES: u32 = 105;
    /// Anything else.
    pub const INTERNAL: u32 = 999;
}

/// `{"cniVersion","code","msg","details"}`. `cniVersion` is the version of the request when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            cni_version: String::new(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    pub fn with_version(mut self, v: impl Into<String>) -> Self {
        self.cni_version = v.into();
        self
    }
    /// The JSON text to print on stdout.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("CniError always serializes")
    }
}
