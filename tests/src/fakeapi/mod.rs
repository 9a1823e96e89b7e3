//! An in-process fake Kubernetes API server over real HTTP(S), for tests and benchmarks: HTTP/1.1,
//! and HTTP/2 over TLS for clients that offer it (ALPN `h2`), as kube-apiserver serves.
//!
//! It serves exactly what Plexus talks to — pods (with `pods/status`), NetworkAttachmentDefinitions
//! and events — with the real server's paths, `Status` bodies, resourceVersion semantics, patch
//! formats, UID preconditions, watch protocol and metadata-only (`PartialObjectMetadata`) views, and it logs every request so tests can assert
//! the API budget of DESIGN.md §3. It owns a multi-thread tokio runtime on background threads so
//! that synchronous tests (which exec binaries) can use it; dropping it closes the port.
//!
//! Deliberate simplifications: no admission, no RBAC beyond one bearer token, immediate deletion
//! (no graceful deletion or finalizers), strategic merge patch applied as a JSON merge patch, and
//! watches that fall too far behind are closed rather than sent a `410`.

// `ApiError` mirrors a whole `Status` body (with `Retry-After`); it crosses a few stack frames per
// request of a test fixture, where boxing it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod faults;
pub mod metadata;
pub mod patch;
pub mod resource;
pub mod selector;
mod server;
pub mod status;
pub mod store;
mod tls;
pub mod tokens;

use anyhow::{Context, bail};
pub use faults::Fault;
use resource::Resource;
use serde::{Deserialize as _, Serialize};
use serde_json::{Value, json};
use server::{Shared, lock};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::Store;

/// How to start a [`FakeApiServer`].
#[derive(Debug, Clone)]
pub struct FakeApiOptions {
    /// Serve HTTPS with a CA generated at start (see [`FakeApiServer::ca_pem`]).
    pub tls: bool,
    /// Require `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Delay every response by this much.
    pub latency: Duration,
    /// Where to listen; the default is an ephemeral port on 127.0.0.1.
    pub listen: SocketAddr,
    /// Also append every request as one JSON line to this file.
    pub request_log: Option<PathBuf>,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl Default for FakeApiOptions {
    fn default() -> Self {
        Self {
            tls: false,
            token: None,
            latency: Duration::ZERO,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            request_log: None,
            bookmark_interval: Duration::from_secs(2),
        }
    }
}

/// One request as the server saw it, logged before the response is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    pub method: String,
    /// The URL path, not decoded.
    pub path: String,
    /// The raw query string ("" when none).
    pub query: String,
    pub status: u16,
    /// Request body size.
    pub request_bytes: usize,
    /// Response body size (0 for watch streams, whose size is not known when they start).
    pub response_bytes: usize,
    /// The `User-Agent` header, when sent.
    pub user_agent: Option<String>,
    /// The `Accept` header, when sent (a metadata-only read asks for
    /// `as=PartialObjectMetadata` there).
    pub accept: Option<String>,
    /// When the request arrived, in milliseconds since the server started.
    pub at_ms: u64,
    /// The HTTP version it came over: `HTTP/1.1`, or `HTTP/2.0` over TLS when the client
    /// offered ALPN `h2`.
    pub http_version: String,
    /// Which TCP connection it came over (0, 1, ... in accept order; see
    /// [`FakeApiServer::connections`]).
    pub connection: u64,
}

impl RequestRecord {
    /// The percent-decoded value of query parameter `key`, when sent.
    pub fn param(&self, key: &str) -> Option<String> {
        server::parse_query(&self.query)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// A list or watch of a whole collection (`GET .../pods`, `GET .../network-attachment-definitions`,
    /// any `watch=` query): what a watch cache does, never a CNI call, which reads or writes
    /// one named object.
    pub fn is_collection_read(&self) -> bool {
        self.method == "GET"
            && (self.query.split('&').any(|q| q.starts_with("watch="))
                || self.path.ends_with("/pods")
                || self.path.ends_with("/network-attachment-definitions"))
    }
}

/// Connection counts of a [`FakeApiServer`] (see [`FakeApiServer::connections`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    /// TCP connections accepted.
    pub accepted: u64,
    /// TLS handshakes completed.
    pub handshakes: u64,
}

/// The running server (see the module docs).
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    url: String,
    addr: SocketAddr,
    ca_pem: Option<String>,
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    runtime: tokio::runtime::Runtime,
    shutdown: tokio::sync::watch::Sender<bool>,
    closed: std::sync::mpsc::Receiver<()>,
}

impl FakeApiServer {
    /// Binds, generates the PKI if asked, and starts serving on background threads.
    pub fn start(opts: FakeApiOptions) -> anyhow::Result<FakeApiServer> {
        let pki = if opts.tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let std_listener = std::net::TcpListener::bind(opts.listen)
            .with_context(|| format!("bind {}", opts.listen))?;
        std_listener.set_nonblocking(true)?;
        let mut addr = std_listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("fake-apiserver")
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let log_file = match &opts.request_log {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("open {}", p.display()))?,
            )),
            None => None,
        };
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            log: Mutex::new(Vec::new()),
            log_file,
            latency: Mutex::new(opts.latency),
            token: Mutex::new(opts.token.clone()),
            faults: Mutex::new(Vec::new()),
            bookmark_interval: opts.bookmark_interval,
            started: std::time::Instant::now(),
            tokens: Mutex::new(tokens::Tokens::default()),
            accepted: Default::default(),
            handshakes: Default::default(),
        });
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let (closed_tx, closed) = std::sync::mpsc::channel();
        let acceptor = pki
            .as_ref()
            .map(|p| tokio_rustls::TlsAcceptor::from(p.server_config.clone()));
        runtime.spawn(server::serve(
            listener,
            acceptor,
            shared.clone(),
            shutdown_rx,
            closed_tx,
        ));
        let scheme = if opts.tls { "https" } else { "http" };
        Ok(FakeApiServer {
            shared,
            url: format!("{scheme}://{addr}"),
            addr,
            ca_pem: pki.map(|p| p.ca_pem),
            running: Mutex::new(Some(Running {
                runtime,
                shutdown,
                closed,
            })),
        })
    }

    /// `http(s)://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) that signed the server certificate, in TLS mode.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    /// Stops serving: the port is closed when this returns, open watch streams and keep-alive
    /// connections are cut. Idempotent; also done on drop.
    pub fn stop(&self) {
        let Some(r) = lock(&self.running).take() else {
            return;
        };
        let _ = r.shutdown.send(true);
        let _ = r.closed.recv_timeout(Duration::from_secs(5));
        // Blocking on the runtime's threads is not allowed from inside another runtime.
        if tokio::runtime::Handle::try_current().is_ok() {
            r.runtime.shutdown_background();
        } else {
            r.runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }

    /// Writes `<dir>/kubeconfig` pointing at this server (plus `<dir>/ca.crt` in TLS mode and
    /// `<dir>/token`, referenced as `tokenFile`, when a token is required) and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut cluster = json!({"server": self.url});
        if let Some(ca) = &self.ca_pem {
            let p = dir.join("ca.crt");
            std::fs::write(&p, ca)?;
            cluster["certificate-authority"] = json!(p);
        }
        let mut user = json!({});
        if let Some(t) = lock(&self.shared.token).clone() {
            let p = dir.join("token");
            std::fs::write(&p, t)?;
            user["tokenFile"] = json!(p);
        }
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
            "current-context": "fake",
            "preferences": {},
        });
        let path = dir.join("kubeconfig");
        std::fs::write(&path, serde_yaml::to_string(&config)?)?;
        Ok(path)
    }

    // ---- object store ----

    /// Creates a pod (namespace from `metadata.namespace`, default "default") and returns the
    /// stored object with uid, resourceVersion and creationTimestamp filled. Panics on conflict.
    pub fn create_pod(&self, mut pod: Value) -> Value {
        if pod.get("kind").is_none() {
            pod["apiVersion"] = json!("v1");
            pod["kind"] = json!("Pod");
        }
        self.create_object(pod)
            .unwrap_or_else(|e| panic!("create_pod: {e:#}"))
    }

    /// Creates a NetworkAttachmentDefinition; `config` is `spec.config` (none: an empty spec, so
    /// the plugin must find the config in its confDir). Panics on conflict.
    pub fn create_nad(&self, namespace: &str, name: &str, config: Option<&str>) -> Value {
        let spec = config.map_or_else(|| json!({}), |c| json!({"config": c}));
        let nad = json!({
            "apiVersion": Resource::Nads.api_version(),
            "kind": Resource::Nads.kind(),
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        });
        self.create_object(nad)
            .unwrap_or_else(|e| panic!("create_nad: {e:#}"))
    }

    /// Creates any served object by its `apiVersion`/`kind`. Server-set fields (uid,
    /// resourceVersion, creationTimestamp) in `obj` are dropped, so dumps from a real cluster load.
    pub fn create_object(&self, mut obj: Value) -> anyhow::Result<Value> {
        let (av, kind) = (
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        );
        let Some(res) = Resource::from_type(av, kind) else {
            bail!("the fake API server does not serve {av} {kind}");
        };
        let ns = if res.namespaced() {
            obj["metadata"]["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_owned()
        } else {
            String::new()
        };
        if let Some(m) = obj["metadata"].as_object_mut() {
            for k in ["uid", "resourceVersion", "creationTimestamp"] {
                m.remove(k);
            }
        }
        Ok(lock(&self.shared.store).create(res, &ns, obj)?)
    }

    /// Loads a YAML or JSON file of objects (multi-document YAML and `kind: List` allowed);
    /// returns how many were created.
    pub fn load_file(&self, path: &Path) -> anyhow::Result<usize> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let mut n = 0;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde_json::to_value(serde_yaml::Value::deserialize(doc)?)?;
            let objs = match v {
                Value::Null => continue,
                Value::Object(ref o)
                    if o.get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.ends_with("List")) =>
                {
                    o.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                }
                other => vec![other],
            };
            for o in objs {
                self.create_object(o)
                    .with_context(|| format!("load {}", path.display()))?;
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn get_pod(&self, ns: &str, name: &str) -> Option<Value> {
        lock(&self.shared.store).get(Resource::Pods, ns, name).ok()
    }

    pub fn get_nad(&self, ns: &str, name: &str) -> Option<Value> {
        lock(&self.shared.store).get(Resource::Nads, ns, name).ok()
    }

    /// Deletes a NAD; returns it if it existed.
    pub fn delete_nad(&self, ns: &str, name: &str) -> Option<Value> {
        lock(&self.shared.store)
            .delete(Resource::Nads, ns, name, &Value::Null)
            .ok()
    }

    /// Deletes a pod; returns it if it existed.
    pub fn delete_pod(&self, ns: &str, name: &str) -> Option<Value> {
        lock(&self.shared.store)
            .delete(Resource::Pods, ns, name, &Value::Null)
            .ok()
    }

    /// Applies a JSON merge patch to a pod, as a controller would (watchers see MODIFIED).
    pub fn patch_pod(&self, ns: &str, name: &str, merge_patch: &Value) -> anyhow::Result<Value> {
        Ok(lock(&self.shared.store).patch(
            Resource::Pods,
            ns,
            name,
            None,
            patch::PatchType::Merge,
            merge_patch,
        )?)
    }

    /// Applies a JSON merge patch to a NAD, as `kubectl edit` would (watchers see MODIFIED).
    pub fn patch_nad(&self, ns: &str, name: &str, merge_patch: &Value) -> anyhow::Result<Value> {
        Ok(lock(&self.shared.store).patch(
            Resource::Nads,
            ns,
            name,
            None,
            patch::PatchType::Merge,
            merge_patch,
        )?)
    }

    /// All pods, in namespace/name order.
    pub fn pods(&self) -> Vec<Value> {
        lock(&self.shared.store).all(Resource::Pods, None)
    }

    /// All NADs, in namespace/name order.
    pub fn nads(&self) -> Vec<Value> {
        lock(&self.shared.store).all(Resource::Nads, None)
    }

    /// Events posted (core/v1 and events.k8s.io/v1), in the order they were created.
    pub fn events(&self) -> Vec<Value> {
        let store = lock(&self.shared.store);
        let mut v: Vec<Value> = [Resource::Events, Resource::EventsV1]
            .into_iter()
            .flat_map(|r| store.all(r, None))
            .collect();
        v.sort_by_key(|e| {
            e["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        });
        v
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).resource_version()
    }

    // ---- request log ----

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Connections so far: TCP connections accepted, and of those the TLS handshakes completed
    /// (0 without TLS). A pooled HTTP/2 client makes one of each however many requests it sends.
    pub fn connections(&self) -> Connections {
        Connections {
            accepted: self
                .shared
                .accepted
                .load(std::sync::atomic::Ordering::SeqCst),
            handshakes: self
                .shared
                .handshakes
                .load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    /// Requests with `method` (case-insensitive) whose path contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.contains(path_contains))
            .count()
    }

    // ---- faults ----

    /// Delays every response from now on.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.latency) = latency;
    }

    /// Answers the next request with `method` whose path contains `path_contains` with `status`
    /// and a `Status` body (once; queue several by calling again). Short for
    /// `inject(Fault::on(method, path_contains).status(status).once())`.
    pub fn set_fail_next(&self, method: &str, path_contains: &str, status: u16) {
        self.inject(Fault::on(method, path_contains).status(status).once());
    }

    /// Adds a scripted fault (see [`faults`]); faults apply in the order they were added.
    pub fn inject(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Removes every scripted fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Requests that a fault answered or dropped, and others, in one list: the statuses seen for
    /// requests with `method` whose path contains `path_contains`, in order (0: dropped).
    pub fn statuses(&self, method: &str, path_contains: &str) -> Vec<u16> {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.contains(path_contains))
            .map(|r| r.status)
            .collect()
    }

    // ---- identities and tokens (see the `tokens` module) ----

    /// Creates a service account (idempotent); returns its UID.
    pub fn create_service_account(&self, ns: &str, name: &str) -> String {
        lock(&self.shared.tokens).create_service_account(ns, name)
    }

    /// Registers a node; returns its UID (a new one when re-registered).
    pub fn create_node(&self, name: &str) -> String {
        lock(&self.shared.tokens).create_node(name)
    }

    /// Deletes a node: tokens bound to it stop working.
    pub fn delete_node(&self, name: &str) -> bool {
        lock(&self.shared.tokens).delete_node(name)
    }

    /// What the kubelet does for a pod's projected service-account volume: a token for the pod's
    /// service account, bound to the pod (it stops working when the pod is deleted). The service
    /// account must exist.
    pub fn issue_pod_token(&self, ns: &str, pod: &str) -> anyhow::Result<String> {
        let store = lock(&self.shared.store);
        let p = store.get(Resource::Pods, ns, pod)?;
        let sa = p["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let body = json!({"spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod,
            "uid": p["metadata"]["uid"]}, "expirationSeconds": 3607}});
        let tr = lock(&self.shared.tokens).request(&store, ns, sa, &body)?;
        Ok(tr["status"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// What the server recorded about a token it issued.
    pub fn issued_token(&self, token: &str) -> Option<tokens::Issued> {
        lock(&self.shared.tokens).issued(token)
    }

    /// Turns the `ServiceAccountTokenNodeBinding` feature on (the default) or off.
    pub fn set_node_token_binding(&self, on: bool) {
        lock(&self.shared.tokens).node_binding = on;
    }

    /// Caps the lifetime of issued tokens (`--service-account-max-token-expiration`).
    pub fn set_max_token_expiration(&self, max: Option<Duration>) {
        lock(&self.shared.tokens).max_expiration = max;
    }

    /// Changes the accepted bearer token (token rotation); `None` disables authentication.
    /// Kubeconfigs written earlier keep pointing at their old token file.
    pub fn set_token(&self, token: Option<String>) {
        *lock(&self.shared.token) = token;
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
