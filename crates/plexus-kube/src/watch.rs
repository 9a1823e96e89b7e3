//! Watch caches for the node daemon (thick mode): kube-runtime reflectors of the
//! NetworkAttachmentDefinitions and of the pods bound to this node.
//!
//! A pod ADD in thin mode costs a pod GET and one GET per NAD before the status PATCH. The daemon
//! answers those reads from memory instead: one reflector lists and then watches every NAD, one
//! lists and watches the *metadata* of the pods whose `spec.nodeName` is this node (the engine
//! needs only UID and annotations, and a pod's spec and status are most of its size). Both
//! resume from the last resourceVersion when a watch ends, and relist on `410 Gone`.
//!
//! Memory: `managedFields` are dropped from every cached object before it is stored (they are
//! often the largest part of the metadata and Plexus never reads them).

use crate::{NAD_GROUP, NAD_KIND, NAD_VERSION, nad_info, nad_resource};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::core::{DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use plexus_engine::api::{NadInfo, PodInfo};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A pod as cached: metadata only.
pub type PodMeta = PartialObjectMeta<Pod>;

/// What a cache has seen, for `/metrics`, `/v1/status` and tests that must wait until a change
/// has reached the daemon.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// The highest `metadata.resourceVersion` seen in an event (resourceVersions are opaque to
    /// clients in general; this is only reported when it parses as an integer, as the API
    /// server's etcd revisions do).
    pub resource_version: AtomicU64,
    /// Watch events applied to the store.
    pub events: AtomicU64,
    /// Watch or list failures (each is retried with backoff).
    pub errors: AtomicU64,
}

impl CacheStats {
    fn saw(&self, rv: Option<&str>) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if let Some(v) = rv.and_then(|v| v.parse::<u64>().ok()) {
            self.resource_version.fetch_max(v, Ordering::Relaxed);
        }
    }
}

/// The two reflectors' stores (cheap to clone: handles to shared maps).
#[derive(Clone)]
pub struct Caches {
    pods: Store<PodMeta>,
    nads: Store<DynamicObject>,
    /// Statistics of the pod cache.
    pub pod_stats: Arc<CacheStats>,
    /// Statistics of the NAD cache.
    pub nad_stats: Arc<CacheStats>,
    node: String,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("node", &self.node)
            .field("pods", &self.pods.len())
            .field("nads", &self.nads.len())
            .finish_non_exhaustive()
    }
}

impl Caches {
    /// Starts both reflectors on the current tokio runtime (they run until the runtime stops).
    /// `node` is the node's name; only pods with `spec.nodeName=<node>` are cached.
    pub fn start(client: Client, node: &str) -> Caches {
        let pod_stats = Arc::new(CacheStats::default());
        let nad_stats = Arc::new(CacheStats::default());

        let (pods, pod_writer) = reflector::store::<PodMeta>();
        let pod_api: Api<PodMeta> = Api::all(client.clone());
        let pod_config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let stats = pod_stats.clone();
        let stream = watcher(pod_api, pod_config)
            .default_backoff()
            .modify(|p: &mut PodMeta| p.managed_fields_mut().clear())
            .reflect(pod_writer);
        tokio::spawn(drive(stream, stats, "pods"));

        let ar = nad_resource();
        let nad_writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let nads = nad_writer.as_reader();
        let nad_api: Api<DynamicObject> = Api::all_with(client, &ar);
        let stats = nad_stats.clone();
        let stream = watcher(nad_api, watcher::Config::default())
            .default_backoff()
            .modify(|n: &mut DynamicObject| n.managed_fields_mut().clear())
            .reflect(nad_writer);
        tokio::spawn(drive(stream, stats, "network-attachment-definitions"));

        Caches {
            pods,
            nads,
            pod_stats,
            nad_stats,
            node: node.to_owned(),
        }
    }

    /// Returns once both caches hold a complete initial list (the daemon is ready then).
    pub async fn wait_synced(&self) {
        // The writers live as long as the runtime's tasks; an error means they are gone, and
        // the daemon is shutting down anyway.
        let _ = self.pods.wait_until_ready().await;
        let _ = self.nads.wait_until_ready().await;
    }

    /// The node whose pods are cached.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Number of pods cached.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Number of NADs cached.
    pub fn nad_count(&self) -> usize {
        self.nads.len()
    }

    /// The cached pod, if the watch has delivered it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        let meta = self.pods.get(&ObjectRef::new(name).within(namespace))?;
        let m = &meta.metadata;
        Some(PodInfo {
            namespace: m.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
            name: m.name.clone().unwrap_or_else(|| name.to_owned()),
            uid: m.uid.clone().unwrap_or_default(),
            annotations: m.annotations.clone().unwrap_or_default(),
        })
    }

    /// The cached NAD, if the watch has delivered it.
    pub fn nad(&self, namespace: &str, name: &str) -> Option<NadInfo> {
        let ar = nad_resource();
        let obj = self
            .nads
            .get(&ObjectRef::new_with(name, ar).within(namespace))?;
        Some(nad_info((*obj).clone(), namespace, name))
    }
}

/// Polls a reflector's stream forever, counting events and logging failures (the watcher
/// retries them with backoff).
async fn drive<K: kube::Resource>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    stats: Arc<CacheStats>,
    what: &'static str,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(
                watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o),
            ) => {
                stats.saw(o.meta().resource_version.as_deref());
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(cache = what, "watch failed (retrying with backoff): {e}");
            }
        }
    }
}

/// The group/version/kind the NAD cache watches, for messages.
pub fn nad_gvk() -> String {
    format!("{NAD_GROUP}/{NAD_VERSION} {NAD_KIND}")
}
