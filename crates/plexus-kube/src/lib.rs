//! kube-rs implementation of `plexus_engine::api::KubeApi` for the thin plugin.
//!
//! The thin plugin is one short-lived process per CNI call, so [`LiveKube`] is built for exactly
//! that: a current-thread tokio runtime of its own (the engine is synchronous), an [`ApiClient`]
//! (kube's client and HTTP stack, see `transport`) built inside it, and one `block_on` per trait
//! call. Client construction is sub-millisecond
//! (measured, see `spec/rust-ecosystem.md` §2), so it is built eagerly in [`LiveKube::new`]; the
//! cost of a call is its network round trips.
//!
//! Request budget (DESIGN.md §3): `get_pod` is one GET, `get_nads` is one GET per NAD, all in
//! flight at once, and `patch_network_status` is one PATCH, when the API server answers. A
//! transient failure (5xx, 429, a refused, reset or dropped connection, a timeout) is retried by
//! [`retry`] with jittered backoff inside the call's deadline ([`LiveKube::with_deadline`]): all
//! three are idempotent, and a pod should not wait for the runtime's next attempt because one
//! request failed. kube's own retry layer is off: it knows no deadline and retries only 429, 503
//! and 504. Every request carries `User-Agent: plexus/<version> (<commit>)` ([`USER_AGENT`]).

mod retry;
mod transport;

pub use transport::ApiClient;

pub mod cached;
pub mod dra;
pub mod watch;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{GetParams, Patch, PatchParams};
use kube::config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta, Status};
use kube::{Config, Resource};
use plexus_engine::api::{ApiError, KubeApi, NadInfo, PodEvent, PodInfo};
// kube's top-level messages ("ServiceError: client error (Connect)") hide the useful part
// ("Connection refused") in their causes.
use plexus_cni::report::chain;
use plexus_netattach::NETWORK_STATUS_ANNOTATION;
use serde_json::{Map, Value, json};
use tokio::runtime::Runtime;

pub use retry::RetryPolicy;
use retry::{Failure, Limits, Retry, with_retries};

/// The `User-Agent` of every request, `plexus/<version> (<commit>)`, so that API server audit
/// logs and rate limits can tell plexus apart from other clients of the node's identity, and
/// which build sent a request during a rollout.
pub const USER_AGENT: &str = plexus_cni::build::USER_AGENT;

/// Environment variables whose presence means "running in a pod" (the same test client-go's
/// `rest.InClusterConfig` makes). Both must be non-empty.
const SERVICE_HOST_ENV: &str = "KUBERNETES_SERVICE_HOST";
const SERVICE_PORT_ENV: &str = "KUBERNETES_SERVICE_PORT";

const NAD_GROUP: &str = "k8s.cni.cncf.io";
const NAD_VERSION: &str = "v1";
const NAD_KIND: &str = "NetworkAttachmentDefinition";
const NAD_PLURAL: &str = "network-attachment-definitions";

const POD_KIND: &str = "pod";
const NAD_KIND_LABEL: &str = "network-attachment-definition";

/// Where the API server address and credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A kubeconfig file (the plugin conf's `kubeconfig`). Relative `certificate-authority`,
    /// `client-certificate`, `client-key` and `tokenFile` paths are resolved against the file's
    /// directory, and `tokenFile` is re-read by kube when it may have rotated, which is how a
    /// node's projected service-account token is used.
    Kubeconfig(PathBuf),
    /// The pod's own service account (`KUBERNETES_SERVICE_HOST`/`_PORT` and
    /// `/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}`).
    InCluster,
}

impl Credentials {
    /// Picks credentials from the process environment; see [`Credentials::detect_with`].
    pub fn detect(kubeconfig: Option<&Path>) -> Option<Credentials> {
        Self::detect_with(kubeconfig, |key| std::env::var(key).ok())
    }

    /// Picks credentials: the configured kubeconfig when there is one; else in-cluster when both
    /// service env variables are set and non-empty; else `None`, meaning "no Kubernetes" (the engine
    /// then attaches only the cluster network).
    ///
    /// The environment is read through `env` so tests need not mutate the process environment.
    /// The kubeconfig path is not checked for existence here: a configured but missing file is a
    /// configuration error that [`LiveKube::new`] reports with the path, not a reason to silently
    /// fall back to other credentials.
    pub fn detect_with(
        kubeconfig: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<Credentials> {
        if let Some(path) = kubeconfig.filter(|p| !p.as_os_str().is_empty()) {
            return Some(Credentials::Kubeconfig(path.to_path_buf()));
        }
        let set = |key: &str| env(key).is_some_and(|v| !v.is_empty());
        (set(SERVICE_HOST_ENV) && set(SERVICE_PORT_ENV)).then_some(Credentials::InCluster)
    }
}

/// Why a [`LiveKube`] could not be built. Each variant names the file or step that failed, since
/// this surfaces in kubelet events where the operator has nothing else to go on.
///
/// Each message is complete (the cause's text, with kube's own causes, included once), so the
/// causes are plain fields rather than [`std::error::Error::source`]: printed with its source chain,
/// the error would otherwise say the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The private runtime could not be created (out of file descriptors, typically).
    #[error("cannot create the Kubernetes client runtime: {0}")]
    Runtime(std::io::Error),
    /// The kubeconfig file could not be read or parsed, or a file it references (CA, client
    /// certificate or key) could not be loaded.
    #[error("kubeconfig {}: {}", path.display(), chain(cause))]
    Kubeconfig {
        path: PathBuf,
        cause: KubeconfigError,
    },
    /// The in-cluster service account files or env variables are missing or unusable.
    #[error("in-cluster Kubernetes config: {}", chain(.0))]
    InCluster(InClusterError),
    /// The client could not be assembled from an otherwise valid config: an unreadable `tokenFile`,
    /// a CA bundle rustls rejects, an unsupported auth provider.
    #[error("cannot build the Kubernetes client from {source_desc}: {message}")]
    Client {
        source_desc: String,
        message: String,
    },
}

/// Where [`LiveKube`]'s blocking calls run their futures.
enum Rt {
    /// The thin plugin's private current-thread runtime.
    Owned(Runtime),
    /// A runtime owned by someone else (the node daemon's); calls must come from threads outside
    /// it, such as `spawn_blocking` workers.
    Shared(tokio::runtime::Handle),
}

impl Rt {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match self {
            Rt::Owned(rt) => rt.block_on(f),
            Rt::Shared(handle) => handle.block_on(f),
        }
    }
}

/// The live API client of the thin plugin (and of the daemon's cache misses and status patches).
/// See the crate docs for why it owns a runtime in thin mode.
pub struct LiveKube {
    rt: Rt,
    client: ApiClient,
    timeout: Duration,
    /// The API server's URL, for error messages.
    server: String,
    deadline: Option<Instant>,
    policy: RetryPolicy,
    retries: AtomicU32,
}

impl fmt::Debug for LiveKube {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client holds credentials; print only what is harmless.
        f.debug_struct("LiveKube")
            .field("timeout", &self.timeout)
            .field("deadline", &self.deadline)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl LiveKube {
    /// Loads `creds` and builds the client. `timeout` bounds every request (connect, request and
    /// response together), so an unreachable API server fails the call with
    /// [`ApiError::Unreachable`] instead of hanging the CNI invocation. Transient failures are
    /// retried with the default [`RetryPolicy`]; without [`LiveKube::with_deadline`], only the
    /// attempt limit bounds the retries.
    pub fn new(creds: &Credentials, timeout: Duration) -> Result<LiveKube, KubeError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(KubeError::Runtime)?;
        // Building the client spawns its tower Buffer worker, so it must run inside the runtime;
        // kubeconfig loading is async in kube (exec plugins), hence one block_on for all of it.
        let (client, server) = rt.block_on(build_client(creds, timeout))?;
        Ok(LiveKube {
            rt: Rt::Owned(rt),
            client,
            timeout,
            server,
            deadline: None,
            policy: RetryPolicy::default(),
            retries: AtomicU32::new(0),
        })
    }

    /// A client that runs its calls on `handle` (a runtime owned by the caller, which must call
    /// from outside it, e.g. from `spawn_blocking`) over `client`, built by [`build_client`] in
    /// that runtime. Cheap: the node daemon makes one per CNI request so that each has its own
    /// deadline and retry count, while all of them share `client`'s connection pool.
    pub fn on_handle(
        handle: tokio::runtime::Handle,
        client: ApiClient,
        server: String,
        timeout: Duration,
    ) -> LiveKube {
        LiveKube {
            rt: Rt::Shared(handle),
            client,
            timeout,
            server,
            deadline: None,
            policy: RetryPolicy::default(),
            retries: AtomicU32::new(0),
        }
    }

    /// The API server's URL (as configured, e.g. `https://10.96.0.1:443/`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The per-attempt timeout this client was built with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Every call, retries included, must be over by `deadline` (the call budget's
    /// [`plexus_engine::Budget::work_deadline`]); each request gets at most what is left of it.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Replaces the default [`RetryPolicy`] ([`RetryPolicy::none`] turns retries off).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How many requests were retried so far (each retry is also logged).
    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
    }

    fn limits(&self) -> Limits {
        Limits {
            policy: self.policy,
            attempt_timeout: self.timeout,
            deadline: self.deadline.map(tokio::time::Instant::from_std),
        }
    }

    /// Sends one request and returns the body of a 2xx answer; anything else becomes a
    /// [`Failure`] that says whether another attempt may help.
    async fn attempt(
        &self,
        request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
        kind: &'static str,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<u8>, Failure> {
        let request = request.map_err(|e| Failure {
            error: ApiError::Other {
                status: 0,
                message: format!("cannot build the request: {e}"),
            },
            retry: Retry::No,
        })?;
        let transport = |e: kube::Error| Failure {
            retry: if retry::transient(&e) {
                Retry::Backoff
            } else {
                Retry::No
            },
            error: map_error(e, kind, namespace, name),
        };
        let answer = self
            .client
            .send(request.map(kube::client::Body::from))
            .await
            .map_err(transport)?;
        let code = answer.status;
        let retry_after = retry::retry_after(&answer.headers);
        let body = answer.body.to_vec();
        if code.is_success() {
            return Ok(body);
        }
        // Not every error body is a Status (a proxy's HTML, a bare "404 page not found").
        let mut status = serde_json::from_slice::<Status>(&body).unwrap_or_else(|_| {
            Status::failure(String::from_utf8_lossy(&body).trim(), "").with_code(code.as_u16())
        });
        status.code = code.as_u16();
        let retry = match code.as_u16() {
            429 | 500..=599 => retry_after.map_or(Retry::Backoff, Retry::After),
            _ => Retry::No,
        };
        Err(Failure {
            error: map_status(&status, kind, namespace, name),
            retry,
        })
    }
}

/// Loads `creds` and builds a client in the current tokio runtime (kube spawns the client's
/// buffer worker there, so the client is usable only while that runtime runs). Returns the client
/// and the API server's URL. `timeout` bounds every transport phase of every request (over
/// HTTP/2, reads are bounded by the request timeouts and keep-alive pings instead; see
/// `transport`). Over TLS the client speaks HTTP/2 when the server offers it, so one pooled
/// connection carries every request.
pub async fn build_client(
    creds: &Credentials,
    timeout: Duration,
) -> Result<(ApiClient, String), KubeError> {
    let (mut config, source_desc) = match creds {
        Credentials::Kubeconfig(path) => {
            let wrap = |cause| KubeError::Kubeconfig {
                path: path.clone(),
                cause,
            };
            let kc = Kubeconfig::read_from(path).map_err(wrap)?;
            let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(wrap)?;
            (config, format!("kubeconfig {}", path.display()))
        }
        Credentials::InCluster => (
            Config::incluster().map_err(KubeError::InCluster)?,
            "in-cluster config".to_owned(),
        ),
    };
    warn_if_insecure(&config, &source_desc);
    let server = config.cluster_url.to_string();
    tune(&mut config, timeout);
    trim_token_file(&mut config);
    let client = transport::client(&config, timeout).map_err(|e| KubeError::Client {
        source_desc,
        message: chain(&e),
    })?;
    Ok((client, server))
}

/// A 2xx answer that cannot be decoded: the server is not what we think it is; no retry.
fn decode_failure(what: &str, e: serde_json::Error) -> Failure {
    Failure {
        error: ApiError::Other {
            status: 0,
            message: format!("{what}: cannot decode the answer: {e}"),
        },
        retry: Retry::No,
    }
}

/// One warning per CNI call (this runs once per process) when the token can be read or replaced
/// on the wire: TLS verification off (`insecure-skip-tls-verify`), or plain HTTP with credentials.
fn warn_if_insecure(config: &Config, source_desc: &str) {
    if config.accept_invalid_certs {
        tracing::warn!(
            "{source_desc}: insecure-skip-tls-verify is set: the API server's certificate is not \
             verified, so anyone on the path can impersonate it and capture the token"
        );
    }
    let has_credentials = config.auth_info.token.is_some()
        || config.auth_info.token_file.is_some()
        || config.auth_info.client_key_data.is_some()
        || config.auth_info.client_key.is_some();
    if config.cluster_url.scheme_str() == Some("http") && has_credentials {
        tracing::warn!(
            "{source_desc}: the API server {} is plain HTTP: the credentials travel in clear text",
            config.cluster_url
        );
    }
}

/// Applies the plugin's needs to a loaded config: every transport phase bounded by `timeout`, and
/// no automatic retries (see the crate docs).
fn tune(config: &mut Config, timeout: Duration) {
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    // Count the read timeout from when the request was written, not from when a pooled
    // connection went idle.
    config.reset_reader_on_write = true;
    config.default_retry = false;
    // Without a CA, kube's rustls setup loads every system root certificate (~3 ms on each call,
    // measured by hack/bench.sh). A plain-HTTP server needs none, so give it an empty store.
    if config.cluster_url.scheme_str() == Some("http") && config.root_cert.is_none() {
        config.root_cert = Some(Vec::new());
    }
}

/// Works around kube 5 sending a token file's content untrimmed: client-go trims it, so a token
/// file written with a trailing newline (`echo "$TOKEN" > file`) works with kubectl and Multus but
/// makes kube fail every request with "invalid bearer token". Only such a file is replaced by its
/// trimmed content read once now; a clean file is left to kube, which re-reads it as it rotates.
/// Losing the re-read is harmless here because a thin-plugin process lives for seconds. The token
/// itself is never logged.
fn trim_token_file(config: &mut Config) {
    if config.auth_info.token.is_some() {
        return; // an inline token takes precedence over the file anyway
    }
    let Some(path) = config.auth_info.token_file.as_deref() else {
        return;
    };
    // An unreadable file is left for kube to report with its path.
    let Ok(content) = std::fs::read_to_string(path) else {
        return;
    };
    let trimmed = content.trim();
    if trimmed.len() != content.len() && !trimmed.is_empty() {
        tracing::debug!(
            path,
            "token file has surrounding whitespace; using its trimmed content"
        );
        config.auth_info.token = Some(trimmed.to_owned().into());
        config.auth_info.token_file = None;
    }
}

/// The transport timeouts above do not cover everything (TLS handshake stalls, a server that
/// trickles bytes), so the whole call is bounded too.
async fn with_timeout<T>(
    timeout: Duration,
    what: impl fmt::Display,
    fut: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::Unreachable(format!(
            "{what}: no answer within {timeout:?}"
        ))),
    }
}

fn nad_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(NAD_GROUP, NAD_VERSION, NAD_KIND),
        NAD_PLURAL,
    )
}

impl KubeApi for LiveKube {
    fn post_event(&self, event: &PodEvent) -> Result<(), ApiError> {
        tracing::debug!(namespace = %event.namespace, pod = %event.pod, "POST event");
        self.post_event_impl(event)
    }

    fn get_pod(&self, namespace: &str, name: &str) -> Result<PodInfo, ApiError> {
        tracing::debug!(namespace, name, "GET pod");
        let what = format!("GET pod {namespace}/{name}");
        let url = Pod::url_path(&(), Some(namespace));
        let (url, what_ref) = (url.as_str(), what.as_str());
        self.rt.block_on(with_retries(
            self.limits(),
            &what,
            &self.retries,
            move || {
                // Metadata only: the engine needs uid and annotations, and the spec/status of a
                // pod can be large. Still a single GET.
                let request =
                    kube::core::Request::new(url).get_metadata(name, &GetParams::default());
                async move {
                    let body = self.attempt(request, POD_KIND, namespace, name).await?;
                    let meta = serde_json::from_slice::<PartialObjectMeta<Pod>>(&body)
                        .map_err(|e| decode_failure(what_ref, e))?
                        .metadata;
                    Ok(PodInfo {
                        namespace: meta.namespace.unwrap_or_else(|| namespace.to_owned()),
                        name: meta.name.unwrap_or_else(|| name.to_owned()),
                        uid: meta.uid.unwrap_or_default(),
                        annotations: meta.annotations.unwrap_or_default(),
                    })
                }
            },
        ))
    }

    fn get_nads(&self, refs: &[(String, String)]) -> Vec<Result<NadInfo, ApiError>> {
        if refs.is_empty() {
            return Vec::new();
        }
        tracing::debug!(count = refs.len(), "GET network-attachment-definitions");
        let resource = nad_resource();
        let limits = self.limits();
        let gets = refs.iter().map(|(namespace, name)| {
            let (namespace, name) = (namespace.as_str(), name.as_str());
            let url = DynamicObject::url_path(&resource, Some(namespace));
            let what = format!("GET {NAD_KIND_LABEL} {namespace}/{name}");
            // Each GET is retried on its own, so one failing NAD costs only its own requests.
            async move {
                let (url, what_ref) = (url.as_str(), what.as_str());
                with_retries(limits, &what, &self.retries, move || {
                    let request = kube::core::Request::new(url).get(name, &GetParams::default());
                    async move {
                        let body = self
                            .attempt(request, NAD_KIND_LABEL, namespace, name)
                            .await?;
                        let obj = serde_json::from_slice::<DynamicObject>(&body)
                            .map_err(|e| decode_failure(what_ref, e))?;
                        Ok(nad_info(obj, namespace, name))
                    }
                })
                .await
            }
        });
        // join_all polls every future before awaiting any, so all requests are in flight at once
        // (one connection each over HTTP/1.1), and results come back in input order.
        self.rt.block_on(join_all(gets))
    }

    fn patch_network_status(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        status_json: &str,
    ) -> Result<(), ApiError> {
        tracing::debug!(namespace, name, "PATCH pod status network-status");
        let body = status_patch(uid, status_json);
        let what = format!("PATCH pod {namespace}/{name}/status");
        let url = Pod::url_path(&(), Some(namespace));
        let (url, body) = (url.as_str(), &body);
        // A merge patch of one annotation sets the same value however often it is applied, so it
        // is retried like a read. The answer is not parsed: the patch has taken effect once the
        // server says 2xx, and a response that fails to deserialize must not turn a successful
        // write into an error (and an ADD rollback). It is asked for as metadata only (see
        // [`METADATA_ONLY`]), so the server does not encode, and the node does not download, the
        // pod's spec and status on every ADD.
        self.rt.block_on(with_retries(
            self.limits(),
            &what,
            &self.retries,
            move || {
                let request = kube::core::Request::new(url)
                    .patch_subresource("status", name, &PatchParams::default(), &Patch::Merge(body))
                    .map(|mut r| {
                        r.headers_mut()
                            .insert(http::header::ACCEPT, METADATA_ONLY.clone());
                        r
                    });
                async move {
                    self.attempt(request, POD_KIND, namespace, name)
                        .await
                        .map(drop)
                }
            },
        ))
    }
}

impl LiveKube {
    /// POST a core v1 Event (see [`KubeApi::post_event`]), bounded by the client's timeout like
    /// every call: the thin plugin posts events from a detached process, so nothing waits on it.
    fn post_event_impl(&self, ev: &PodEvent) -> Result<(), ApiError> {
        let body = event_body(ev, &rfc3339(std::time::SystemTime::now()));
        let url = format!("/api/v1/namespaces/{}/events", ev.namespace);
        let bytes = serde_json::to_vec(&body).map_err(|e| ApiError::Other {
            status: 0,
            message: e.to_string(),
        })?;
        let request = kube::core::Request::new(url)
            .create(&kube::api::PostParams::default(), bytes)
            .map_err(|e| ApiError::Other {
                status: 0,
                message: format!("cannot build the event request: {e}"),
            })?;
        let (ns, pod) = (ev.namespace.as_str(), ev.pod.as_str());
        self.rt.block_on(with_timeout(
            self.timeout,
            format!("POST event for pod {ns}/{pod}"),
            async {
                self.client
                    .kube()
                    .request_text(request)
                    .await
                    .map(drop)
                    .map_err(|e| map_error(e, "event", ns, pod))
            },
        ))
    }
}

/// A core v1 Event about the pod, in the shape kubelet's recorder writes.
fn event_body(ev: &PodEvent, now: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{}.", ev.pod), "namespace": ev.namespace},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod",
            "namespace": ev.namespace, "name": ev.pod, "uid": ev.uid,
        },
        "type": ev.kind.as_str(),
        "reason": ev.reason,
        "message": ev.message,
        "source": {"component": "plexus"},
        "reportingComponent": "plexus",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC (days-to-civil conversion; no date crate for one timestamp).
fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `Accept` of the status PATCH: the answer as `PartialObjectMetadata` (kube-apiserver applies
/// the same output negotiation to a patch's answer as to a get, as client-go's metadata client
/// relies on), or else as the whole object, so that a server or proxy that cannot transform it
/// still answers 2xx rather than 406. Either answer only confirms the write.
static METADATA_ONLY: http::HeaderValue = http::HeaderValue::from_static(
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
);

/// The merge patch body. `metadata.uid` is immutable, so the API server answers 409 if the pod was
/// replaced by another with the same name; an empty `uid` (runtime did not pass `K8S_POD_UID`)
/// leaves the guard out rather than patching `uid: ""`.
fn status_patch(uid: &str, status_json: &str) -> Value {
    let mut metadata = Map::new();
    if !uid.is_empty() {
        metadata.insert("uid".to_owned(), Value::String(uid.to_owned()));
    }
    metadata.insert(
        "annotations".to_owned(),
        json!({ NETWORK_STATUS_ANNOTATION: status_json }),
    );
    json!({ "metadata": metadata })
}

/// Maps a NAD read as a `DynamicObject`; the dynamic type keeps this crate independent of the
/// typed CRD in `plexus-netattach`, and only `spec.config` is needed.
fn nad_info(obj: DynamicObject, namespace: &str, name: &str) -> NadInfo {
    let config = match obj.data.pointer("/spec/config") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        // The CRD schema says string; the API server enforces it. Should an unvalidated CRD let an
        // inline object through, hand the engine its JSON text rather than dropping it, so the
        // engine's config parser reports on the actual content.
        Some(other) => Some(other.to_string()),
    };
    NadInfo {
        namespace: obj
            .metadata
            .namespace
            .unwrap_or_else(|| namespace.to_owned()),
        name: obj.metadata.name.unwrap_or_else(|| name.to_owned()),
        config,
        annotations: obj.metadata.annotations.unwrap_or_default(),
    }
}

/// Classifies a kube error by what the engine should do about it (see [`ApiError`]).
fn map_error(err: kube::Error, kind: &'static str, namespace: &str, name: &str) -> ApiError {
    match err {
        kube::Error::Api(status) => map_status(&status, kind, namespace, name),
        // Everything below failed before an HTTP status came back: connection refused, DNS,
        // connect/read timeouts (hyper-timeout surfaces through the service stack), TLS.
        // The auth layer failed to produce credentials (unreadable token, failing exec plugin):
        // a local configuration problem, not an unreachable server.
        kube::Error::Service(e) if e.is::<kube::client::AuthError>() => ApiError::Other {
            status: 0,
            message: format!("cannot present credentials: {}", chain(&*e)),
        },
        e @ (kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::RustlsTls(_)
        | kube::Error::TlsRequired
        | kube::Error::ReadEvents(_)) => ApiError::Unreachable(chain(&e)),
        other => ApiError::Other {
            status: 0,
            message: chain(&other),
        },
    }
}

fn map_status(status: &Status, kind: &'static str, namespace: &str, name: &str) -> ApiError {
    let message = if status.message.is_empty() {
        status.reason.clone()
    } else {
        status.message.clone()
    };
    match status.code {
        404 => ApiError::NotFound {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        },
        409 => ApiError::Conflict(message),
        401 | 403 => ApiError::Forbidden(message),
        429 | 500..=599 => ApiError::Unreachable(format!("HTTP {}: {message}", status.code)),
        code => ApiError::Other {
            status: code,
            message,
        },
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn status(code: u16, message: &str) -> Status {
        Status::failure(message, "Reason").with_code(code)
    }

    #[test]
    fn status_codes_map_to_api_errors() {
        let m = |code| map_status(&status(code, "msg"), "pod", "ns", "p");
        assert_eq!(
            m(404),
            ApiError::NotFound {
                kind: "pod",
                namespace: "ns".into(),
                name: "p".into()
            }
        );
        assert_eq!(m(409), ApiError::Conflict("msg".into()));
        assert_eq!(m(401), ApiError::Forbidden("msg".into()));
        assert_eq!(m(403), ApiError::Forbidden("msg".into()));
        assert!(matches!(m(429), ApiError::Unreachable(_)));
        assert!(matches!(m(500), ApiError::Unreachable(_)));
        assert!(matches!(m(503), ApiError::Unreachable(_)));
        assert_eq!(
            m(422),
            ApiError::Other {
                status: 422,
                message: "msg".into()
            }
        );
    }

    #[test]
    fn empty_message_falls_back_to_reason() {
        let s = Status::failure("", "Invalid").with_code(422);
        assert_eq!(
            map_status(&s, "pod", "ns", "p"),
            ApiError::Other {
                status: 422,
                message: "Invalid".into()
            }
        );
    }

    #[test]
    fn rfc3339_dates() {
        let t = |s| std::time::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(rfc3339(t(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(t(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(t(1_798_761_599)), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn event_names_the_pod() {
        let ev = PodEvent {
            namespace: "blue".into(),
            pod: "p".into(),
            uid: "u1".into(),
            kind: plexus_engine::EventType::Warning,
            reason: "AddFailed".into(),
            message: "boom".into(),
        };
        let b = event_body(&ev, "2026-01-01T00:00:00Z");
        assert_eq!(
            b["involvedObject"],
            json!({"apiVersion": "v1", "kind": "Pod", "namespace": "blue", "name": "p", "uid": "u1"})
        );
        assert_eq!(b["type"], "Warning");
        assert_eq!(b["metadata"]["generateName"], "p.");
    }

    #[test]
    fn patch_body_with_and_without_uid() {
        assert_eq!(
            serde_json::to_string(&status_patch("u-1", "[]")).unwrap(),
            r#"{"metadata":{"uid":"u-1","annotations":{"k8s.v1.cni.cncf.io/network-status":"[]"}}}"#
        );
        assert_eq!(
            serde_json::to_string(&status_patch("", "[]")).unwrap(),
            r#"{"metadata":{"annotations":{"k8s.v1.cni.cncf.io/network-status":"[]"}}}"#
        );
    }

    #[test]
    fn nad_config_extraction() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "a", "namespace": "n", "annotations": {"k": "v"}},
            "spec": {"config": "{\"type\":\"macvlan\"}"}
        }))
        .unwrap();
        let info = nad_info(obj, "n", "a");
        assert_eq!(info.config.as_deref(), Some(r#"{"type":"macvlan"}"#));
        assert_eq!(info.annotations.get("k").map(String::as_str), Some("v"));

        let bare: DynamicObject =
            serde_json::from_value(json!({"metadata": {}, "spec": {}})).unwrap();
        let info = nad_info(bare, "n", "b");
        assert_eq!(
            (info.namespace.as_str(), info.name.as_str(), info.config),
            ("n", "b", None)
        );
    }
}
