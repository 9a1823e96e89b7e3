//! One CNI call's context: the plugin configuration, the runtime's environment, and the effects
//! (delegate exec, API, routes, devices) the phases run against. The verbs ([`crate::engine`])
//! and the phases ([`crate::plan`], [`crate::attach`]) all take it; it depends on neither.

use crate::api::KubeApi;
use crate::cache::CacheError;
use crate::config::PlexusConfig;
use crate::error::EngineError;
use crate::exec::DelegateExec;
use crate::routes::NetnsRoutes;
use plexus_cni::CniEnv;

/// One CNI call.
pub struct Engine<'a> {
    pub config: &'a PlexusConfig,
    pub env: &'a CniEnv,
    pub exec: &'a dyn DelegateExec,
    /// `None` when no API server is configured.
    pub kube: Option<&'a dyn KubeApi>,
    /// Route changes in the pod's netns (`default-route`).
    pub routes: &'a dyn NetnsRoutes,
    /// Devices allocated to the pod (kubelet PodResources, DRA), for NADs with a
    /// `resourceName`; `None` when no source is wired (such NADs then fail with code 105).
    pub devices: Option<&'a dyn crate::device::DeviceLookup>,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl Engine<'_> {
    /// A cache failure of this call's container, with what was being done.
    pub(crate) fn cache_err(&self, op: &str, source: CacheError) -> EngineError {
        EngineError::Cache {
            context: format!("container {}: cache {op}", self.env.container_id),
            source,
        }
    }
}
