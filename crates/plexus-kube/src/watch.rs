//! Watch caches for the node daemon (thick mode): kube-runtime reflectors of the
//! NetworkAttachmentDefinitions and of the pods bound to this node.
//!
//! A pod ADD in thin mode costs a pod GET and one GET per NAD before the status PATCH. The daemon
//! answers those reads from memory instead: one reflector lists and then watches every NAD, one
//! lists and watches the *metadata* of the pods whose `spec.nodeName` is this node (the engine
//! needs only UID and annotations, and a pod's spec and status are most of its size). Both
//! resume from the last resourceVersion when a watch ends, and relist on `410 Gone`.
//!
//! Memory: each cached object is cut down before it is stored to what the engine reads — name,
//! namespace, UID, resourceVersion and annotations (without `kubectl`'s last-applied copy of the
//! whole object), plus a NAD's `spec.config`. `managedFields`, labels, owner references and the
//! rest are often most of an object's metadata, and would cost memory per pod on the node and per
//! NAD in the cluster.

use crate::{nad_info, nad_resource};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
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
    /// One store for all namespaces, or one per watched namespace.
    nads: Vec<Store<DynamicObject>>,
    /// `None`: every namespace's NADs are watched.
    nad_namespaces: Option<Vec<String>>,
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
            .field("nads", &self.nad_count())
            .finish_non_exhaustive()
    }
}

impl Caches {
    /// Starts the reflectors on the current tokio runtime (they run until the runtime stops).
    /// `node` is the node's name; only pods with `spec.nodeName=<node>` are cached. NADs are
    /// watched in every namespace when `nad_namespaces` is empty, else in those only (for a
    /// daemon whose RBAC grants list/watch in some namespaces: a NAD elsewhere costs one GET).
    pub fn start(client: Client, node: &str, nad_namespaces: &[String]) -> Caches {
        let pod_stats = Arc::new(CacheStats::default());
        let nad_stats = Arc::new(CacheStats::default());

        let (pods, pod_writer) = reflector::store::<PodMeta>();
        let pod_api: Api<PodMeta> = Api::all(client.clone());
        let pod_config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let stats = pod_stats.clone();
        let stream = watcher(pod_api, pod_config)
            .default_backoff()
            .modify(|p: &mut PodMeta| trim_meta(&mut p.metadata))
            .reflect(pod_writer);
        tokio::spawn(drive(stream, stats, "pods"));

        let ar = nad_resource();
        let apis: Vec<Api<DynamicObject>> = if nad_namespaces.is_empty() {
            vec![Api::all_with(client, &ar)]
        } else {
            nad_namespaces
                .iter()
                .map(|ns| Api::namespaced_with(client.clone(), ns, &ar))
                .collect()
        };
        let mut nads = Vec::new();
        for nad_api in apis {
            // A writer per reflector: a relist replaces its whole store.
            let nad_writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
            nads.push(nad_writer.as_reader());
            let stream = watcher(nad_api, watcher::Config::default())
                .default_backoff()
                .modify(trim_nad)
                .reflect(nad_writer);
            tokio::spawn(drive(
                stream,
                nad_stats.clone(),
                "network-attachment-definitions",
            ));
        }

        Caches {
            pods,
            nads,
            nad_namespaces: (!nad_namespaces.is_empty()).then(|| nad_namespaces.to_vec()),
            pod_stats,
            nad_stats,
            node: node.to_owned(),
        }
    }

    /// Caches over stores filled by someone else (tests, or an embedder running its own
    /// reflectors). Objects should be trimmed as [`Caches::start`] trims them.
    /// `nads` holds the NADs of every namespace.
    pub fn from_stores(pods: Store<PodMeta>, nads: Store<DynamicObject>, node: &str) -> Caches {
        Caches {
            pods,
            nads: vec![nads],
            nad_namespaces: None,
            pod_stats: Arc::default(),
            nad_stats: Arc::default(),
            node: node.to_owned(),
        }
    }

    /// The resource the NAD cache holds (for building a NAD store's writer).
    pub fn nad_resource() -> kube::core::ApiResource {
        nad_resource()
    }

    /// Returns once both caches hold a complete initial list (the daemon is ready then).
    pub async fn wait_synced(&self) {
        // The writers live as long as the runtime's tasks; an error means they are gone, and
        // the daemon is shutting down anyway.
        let _ = self.pods.wait_until_ready().await;
        for nads in &self.nads {
            let _ = nads.wait_until_ready().await;
        }
    }

    /// Whether the NADs of `namespace` are watched (a NAD missing from a watched namespace is
    /// worth waiting for a moment; one elsewhere is fetched at once).
    pub fn watches_nads_in(&self, namespace: &str) -> bool {
        self.nad_namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == namespace))
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
        self.nads.iter().map(Store::len).sum()
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
        let key = ObjectRef::new_with(name, nad_resource()).within(namespace);
        let obj = self.nads.iter().find_map(|s| s.get(&key))?;
        Some(nad_info((*obj).clone(), namespace, name))
    }
}

/// `kubectl apply`'s copy of the whole object, in an annotation Plexus never reads.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Keeps only the metadata the engine reads (see the module docs).
fn trim_meta(m: &mut ObjectMeta) {
    let mut annotations = m.annotations.take();
    if let Some(a) = annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
    *m = ObjectMeta {
        name: m.name.take(),
        namespace: m.namespace.take(),
        uid: m.uid.take(),
        resource_version: m.resource_version.take(),
        annotations,
        ..ObjectMeta::default()
    };
}

/// A NAD as cached: trimmed metadata and `spec.config` only.
fn trim_nad(n: &mut DynamicObject) {
    trim_meta(&mut n.metadata);
    let config = n
        .data
        .pointer_mut("/spec/config")
        .map(serde_json::Value::take);
    n.data = match config {
        Some(c) => serde_json::json!({"spec": {"config": c}}),
        None => serde_json::json!({"spec": {}}),
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cached_objects_keep_only_what_the_engine_reads() {
        let mut nad: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {
                "name": "a", "namespace": "n", "uid": "u", "resourceVersion": "7",
                "labels": {"l": "1"},
                "annotations": {"k8s.v1.cni.cncf.io/resourceName": "r", LAST_APPLIED: "{...}"},
                "managedFields": [{"manager": "kubectl"}],
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "x"}]
            },
            "spec": {"config": "{\"type\":\"macvlan\"}", "other": 1},
            "status": {"x": 1}
        }))
        .unwrap();
        trim_nad(&mut nad);
        let m = &nad.metadata;
        assert_eq!(
            (
                m.name.as_deref(),
                m.namespace.as_deref(),
                m.uid.as_deref(),
                m.resource_version.as_deref()
            ),
            (Some("a"), Some("n"), Some("u"), Some("7"))
        );
        assert_eq!(
            m.annotations.as_ref().unwrap().keys().collect::<Vec<_>>(),
            ["k8s.v1.cni.cncf.io/resourceName"]
        );
        assert!(m.labels.is_none() && m.managed_fields.is_none() && m.owner_references.is_none());
        assert_eq!(
            nad.data,
            json!({"spec": {"config": "{\"type\":\"macvlan\"}"}})
        );
        let info = nad_info(nad, "n", "a");
        assert_eq!(info.config.as_deref(), Some(r#"{"type":"macvlan"}"#));
    }
}
