//! The node daemon's `KubeApi`: reads from the watch caches ([`crate::watch`]), writes through
//! the daemon's one warm client.
//!
//! Request budget of an ADD in thick mode: the status PATCH, nothing else, when the caches hold
//! the pod and its NADs. A pod the pod watch has not delivered yet (created a moment before its
//! ADD), or one cached under another UID (deleted and re-created under the same name), costs one
//! GET. A NAD the NAD watch has not delivered is waited for a little ([`CachedKube::nad_wait`]),
//! since it was most likely created a moment ago (unless its namespace is not watched), then
//! fetched with one GET (which also gives the
//! real answer, 404, for a NAD that does not exist). Events are posted off the request's path.

use crate::LiveKube;
use crate::watch::Caches;
use plexus_engine::api::{ApiError, KubeApi, NadInfo, PodEvent, PodInfo};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a missing NAD is looked for again while waiting for the watch.
const NAD_POLL: Duration = Duration::from_millis(5);

/// Counters of what the daemon asked the API server and its caches, for `/metrics`.
#[derive(Debug, Default)]
pub struct ApiCounters {
    /// `(verb, code)` → requests; `code` is the HTTP status, or `unreachable`.
    requests: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Reads answered from a cache.
    pub cache_hits: AtomicU64,
    /// Reads that had to go to the API server.
    pub cache_misses: AtomicU64,
    /// `verb` → (seconds, calls): how long CNI requests waited on the API server, per call site
    /// (a batch of parallel NAD GETs is one wait).
    waits: Mutex<BTreeMap<&'static str, (f64, u64)>>,
}

impl ApiCounters {
    /// Counts one request of `verb` that ended with `result`.
    pub fn record<T>(&self, verb: &'static str, result: &Result<T, ApiError>) {
        let code = match result {
            Ok(_) => "200".to_owned(),
            Err(ApiError::NotFound { .. }) => "404".to_owned(),
            Err(ApiError::Conflict(_)) => "409".to_owned(),
            Err(ApiError::Forbidden(_)) => "403".to_owned(),
            Err(ApiError::Other { status, .. }) => status.to_string(),
            Err(ApiError::Unreachable(_)) => "unreachable".to_owned(),
        };
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((verb, code)).or_default() += 1;
    }

    /// Counts `took` as one wait of a CNI request on the API server for `verb`.
    pub fn waited(&self, verb: &'static str, took: Duration) {
        let mut map = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        let (secs, calls) = map.entry(verb).or_default();
        *secs += took.as_secs_f64();
        *calls += 1;
    }

    /// Every `(verb, seconds, calls)` of [`ApiCounters::waited`] so far.
    pub fn wait_snapshot(&self) -> Vec<(&'static str, f64, u64)> {
        let map = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(v, (s, n))| (*v, *s, *n)).collect()
    }

    /// Every `(verb, code, count)` so far.
    pub fn snapshot(&self) -> Vec<(&'static str, String, u64)> {
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|((v, c), n)| (*v, c.clone(), *n)).collect()
    }
}

/// One CNI request's view of the API (see the module docs). Built per request around a
/// per-request [`LiveKube`] (its deadline is the request's); all share the daemon's client.
pub struct CachedKube<'a> {
    pub caches: &'a Caches,
    pub live: LiveKube,
    /// The pod UID the runtime passed (`K8S_POD_UID`), if any: a cached pod with another UID is
    /// an older pod of the same name, so it is fetched instead.
    pub expected_uid: Option<String>,
    /// How long to wait for the NAD watch to deliver a NAD that is not cached, before one GET.
    pub nad_wait: Duration,
    pub counters: &'a ApiCounters,
    /// Where events are posted from, so that they cost the request nothing: `None` posts them
    /// inline (as the engine expects of a plain client).
    pub events: Option<EventPoster>,
}

impl std::fmt::Debug for CachedKube<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedKube")
            .field("caches", self.caches)
            .field("nad_wait", &self.nad_wait)
            .finish_non_exhaustive()
    }
}

/// Posts events on the daemon's runtime without waiting for them.
#[derive(Clone)]
pub struct EventPoster {
    pub handle: tokio::runtime::Handle,
    pub client: crate::ApiClient,
    pub server: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for EventPoster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPoster")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl EventPoster {
    fn post(&self, event: PodEvent) {
        let live = LiveKube::on_handle(
            self.handle.clone(),
            self.client.clone(),
            self.server.clone(),
            self.timeout,
        );
        // A blocking task, because LiveKube's calls block on the runtime; the event has its own
        // timeout and is best effort, as in thin mode.
        self.handle.spawn_blocking(move || {
            if let Err(e) = live.post_event(&event) {
                tracing::warn!(pod = %format!("{}/{}", event.namespace, event.pod), "could not post the {} event: {e}", event.kind.as_str());
            }
        });
    }
}

impl CachedKube<'_> {
    fn cached_nad(&self, namespace: &str, name: &str) -> Option<NadInfo> {
        self.caches.nad(namespace, name)
    }
}

impl KubeApi for CachedKube<'_> {
    fn post_event(&self, event: &PodEvent) -> Result<(), ApiError> {
        match &self.events {
            Some(poster) => {
                poster.post(event.clone());
                Ok(())
            }
            None => self.live.post_event(event),
        }
    }

    fn get_pod(&self, namespace: &str, name: &str) -> Result<PodInfo, ApiError> {
        if let Some(pod) = self.caches.pod(namespace, name)
            && self.expected_uid.as_deref().is_none_or(|u| u == pod.uid)
        {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(pod);
        }
        self.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            namespace,
            name,
            "pod not in the cache (or another UID): GET"
        );
        let started = Instant::now();
        let result = self.live.get_pod(namespace, name);
        self.counters.waited("get_pod", started.elapsed());
        self.counters.record("get_pod", &result);
        result
    }

    fn get_nads(&self, refs: &[(String, String)]) -> Vec<Result<NadInfo, ApiError>> {
        let mut out: Vec<Option<Result<NadInfo, ApiError>>> = refs
            .iter()
            .map(|(ns, name)| self.cached_nad(ns, name).map(Ok))
            .collect();
        // Only NADs the watches would deliver are worth waiting for.
        let awaited = |(slot, (ns, _)): (&Option<_>, &(String, String))| {
            slot.is_none() && self.caches.watches_nads_in(ns)
        };
        let wait_until = Instant::now() + self.nad_wait;
        while out.iter().zip(refs).any(awaited) && Instant::now() < wait_until {
            std::thread::sleep(NAD_POLL);
            for (slot, (ns, name)) in out.iter_mut().zip(refs) {
                if slot.is_none() {
                    *slot = self.cached_nad(ns, name).map(Ok);
                }
            }
        }
        let hits = out.iter().filter(|o| o.is_some()).count() as u64;
        self.counters.cache_hits.fetch_add(hits, Ordering::Relaxed);
        let missing: Vec<(usize, (String, String))> = out
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_none())
            .map(|(i, _)| (i, refs[i].clone()))
            .collect();
        if !missing.is_empty() {
            self.counters
                .cache_misses
                .fetch_add(missing.len() as u64, Ordering::Relaxed);
            tracing::debug!(count = missing.len(), "NADs not in the cache: GET");
            let want: Vec<(String, String)> = missing.iter().map(|(_, r)| r.clone()).collect();
            let started = Instant::now();
            let results = self.live.get_nads(&want);
            self.counters.waited("get_nad", started.elapsed());
            for ((i, _), result) in missing.iter().zip(results) {
                self.counters.record("get_nad", &result);
                out[*i] = Some(result);
            }
        }
        out.into_iter()
            .map(|o| o.expect("every slot is filled"))
            .collect()
    }

    fn patch_network_status(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        status_json: &str,
    ) -> Result<(), ApiError> {
        let started = Instant::now();
        let result = self
            .live
            .patch_network_status(namespace, name, uid, status_json);
        self.counters.waited("patch_status", started.elapsed());
        self.counters.record("patch_status", &result);
        result
    }
}
