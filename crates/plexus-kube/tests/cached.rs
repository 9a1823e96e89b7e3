//! `CachedKube`, the node daemon's `KubeApi`: what is answered from the watch caches and what
//! costs a request, against the canned in-test API server.

mod common;

use std::time::Duration;

use common::{FakeApi, Options, Reply, write_kubeconfig};
use kube::core::{DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use plexus_engine::api::{ApiError, KubeApi};
use plexus_kube::cached::{ApiCounters, CachedKube};
use plexus_kube::watch::{Caches, PodMeta};
use plexus_kube::{Credentials, LiveKube};
use serde_json::json;

fn pod_meta(name: &str, uid: &str) -> PodMeta {
    serde_json::from_value::<PartialObjectMeta<k8s_openapi::api::core::v1::Pod>>(json!({
        "metadata": {"namespace": "blue", "name": name, "uid": uid, "resourceVersion": "3",
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "a"}}
    }))
    .unwrap()
}

fn nad(name: &str, subnet: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"namespace": "blue", "name": name, "resourceVersion": "4"},
        "spec": {"config": format!("{{\"name\":\"{name}\",\"subnet\":\"{subnet}\"}}")}
    }))
    .unwrap()
}

/// The API server: any pod GET answers pod `uid-live`, NAD `late` exists, others are 404.
fn server() -> FakeApi {
    FakeApi::start(Options::new(|rec| {
        if rec.path.contains("/pods/") {
            Reply::json(
                200,
                json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"namespace": "blue",
                       "name": rec.path.rsplit('/').next().unwrap(), "uid": "uid-live"}}),
            )
        } else if rec.path.ends_with("/late") {
            Reply::json(200, serde_json::to_value(nad("late", "from-get")).unwrap())
        } else {
            Reply::status(404, "NotFound", "not found")
        }
    }))
}

/// The API server, caches over two stores, and the stores' writers (returned apart, so that a
/// test can fill a store while a `CachedKube` borrows the fixture).
struct Fixture {
    server: FakeApi,
    caches: Caches,
    counters: ApiCounters,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

impl Fixture {
    fn new() -> (Fixture, Writer<PodMeta>, Writer<DynamicObject>) {
        let server = server();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = write_kubeconfig(dir.path(), &server.url(), None, "    token: t");
        let pods = Writer::<PodMeta>::new(());
        let nads = Writer::<DynamicObject>::new(Caches::nad_resource());
        let caches = Caches::from_stores(pods.as_reader(), nads.as_reader(), "node-1");
        let f = Fixture {
            server,
            caches,
            counters: ApiCounters::default(),
            _dir: dir,
            kubeconfig,
        };
        (f, pods, nads)
    }

    fn kube(&self, expected_uid: Option<&str>, nad_wait: Duration) -> CachedKube<'_> {
        CachedKube {
            caches: &self.caches,
            live: LiveKube::new(
                &Credentials::Kubeconfig(self.kubeconfig.clone()),
                Duration::from_secs(5),
            )
            .unwrap(),
            expected_uid: expected_uid.map(str::to_owned),
            nad_wait,
            counters: &self.counters,
            events: None,
        }
    }
}

#[test]
fn a_cached_pod_costs_nothing_another_uid_or_a_miss_one_get() {
    let (f, mut pods, _nads) = Fixture::new();
    pods.apply_watcher_event(&Event::Apply(pod_meta("web", "uid-cached")));
    let k = f.kube(Some("uid-cached"), Duration::ZERO);
    let pod = k.get_pod("blue", "web").unwrap();
    assert_eq!(pod.uid, "uid-cached");
    assert_eq!(pod.annotations["k8s.v1.cni.cncf.io/networks"], "a");
    assert!(f.server.requests().is_empty());

    // The runtime's pod is a newer one of the same name: read it.
    let k = f.kube(Some("uid-live"), Duration::ZERO);
    assert_eq!(k.get_pod("blue", "web").unwrap().uid, "uid-live");
    assert_eq!(f.server.requests().len(), 1);
    // Not cached at all (its watch event has not arrived).
    assert_eq!(k.get_pod("blue", "fresh").unwrap().uid, "uid-live");
    let paths: Vec<String> = f.server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/blue/pods/web",
            "/api/v1/namespaces/blue/pods/fresh"
        ]
    );
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (
            f.counters.cache_hits.load(Relaxed),
            f.counters.cache_misses.load(Relaxed)
        ),
        (1, 2)
    );
}

#[test]
fn nads_from_the_cache_a_late_one_after_a_bounded_wait_and_one_get() {
    let (f, _pods, mut nads) = Fixture::new();
    nads.apply_watcher_event(&Event::Apply(nad("a", "cached")));
    let k = f.kube(None, Duration::from_millis(50));
    let refs = vec![
        ("blue".to_owned(), "a".to_owned()),
        ("blue".to_owned(), "late".to_owned()),
        ("blue".to_owned(), "nope".to_owned()),
    ];
    let got = k.get_nads(&refs);
    assert!(
        got[0]
            .as_ref()
            .unwrap()
            .config
            .as_deref()
            .unwrap()
            .contains("cached")
    );
    assert!(
        got[1]
            .as_ref()
            .unwrap()
            .config
            .as_deref()
            .unwrap()
            .contains("from-get")
    );
    assert!(
        matches!(got[2], Err(ApiError::NotFound { .. })),
        "{:?}",
        got[2]
    );
    // Only the two the cache did not have were fetched, once each.
    let mut paths: Vec<String> = f.server.requests().into_iter().map(|r| r.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/apis/k8s.cni.cncf.io/v1/namespaces/blue/network-attachment-definitions/late",
            "/apis/k8s.cni.cncf.io/v1/namespaces/blue/network-attachment-definitions/nope",
        ]
    );
}

#[test]
fn a_nad_delivered_during_the_wait_costs_no_request() {
    let (f, _pods, mut nads) = Fixture::new();
    let k = f.kube(None, Duration::from_secs(30));
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            nads.apply_watcher_event(&Event::Apply(nad("soon", "watched")));
        });
        let got = k.get_nads(&[("blue".to_owned(), "soon".to_owned())]);
        assert!(
            got[0]
                .as_ref()
                .unwrap()
                .config
                .as_deref()
                .unwrap()
                .contains("watched")
        );
    });
    assert!(f.server.requests().is_empty());
}
