//! The daemon API (docs/architecture.md "Daemon API"): HTTP/1.1 over a unix socket.
//!
//! - `POST /v1/cni` with `{"env": {"CNI_COMMAND": ..., ...}, "config": <the runtime's stdin>}`
//!   answers `200 {"result": <CNI result or null>}` or `200 {"error": <CNI error>}`.
//! - `GET /v1/status` answers readiness, cache sizes and resourceVersions, queue depth.
//!
//! The socket is the only access control that matters (a request runs plugins as root): its
//! directory is made 0700 and the socket 0600, both owned by root, and every connection's peer
//! credentials (`SO_PEERCRED`) are checked: only uid 0 is served.

use crate::admit::{Admission, Refused};
use crate::cni::{self, Shared};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use plexus_cni::{CniError, Command, codes};
use plexus_engine::Budget;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UnixListener;

/// A request body larger than this is refused (a CNI config with a large prevResult is a few
/// hundred KiB at most).
const MAX_BODY: usize = 4 << 20;
/// Slack after a request's budget before the daemon answers for an engine run that has not
/// returned (its delegates are killed at the budget's end; this only guards against a hang).
const ANSWER_SLACK: Duration = Duration::from_secs(5);

/// Everything the API handlers need.
#[derive(Debug)]
pub struct Api {
    pub shared: Arc<Shared>,
    pub admission: Admission,
    pub ready: AtomicBool,
    /// Flipped on SIGTERM: open connections finish their request in flight, then close.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Connections being served (graceful shutdown waits for them).
    pub connections: std::sync::atomic::AtomicUsize,
}

impl Api {
    /// Waits until every connection is closed, or until `deadline`; true when all are.
    pub async fn connections_closed(&self, deadline: Instant) -> bool {
        while self.connections.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// Counts a connection for as long as it is served.
struct Served<'a>(&'a Api);

impl<'a> Served<'a> {
    fn new(api: &'a Api) -> Self {
        api.connections.fetch_add(1, Ordering::SeqCst);
        Served(api)
    }
}

impl Drop for Served<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Creates the socket's directory (0700) and binds the socket (0600), replacing a stale one.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use anyhow::Context;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(socket = %path.display(), "removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove stale {}", path.display())),
    }
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(listener)
}

/// Serves one accepted connection if its peer is root.
pub async fn connection(api: Arc<Api>, stream: tokio::net::UnixStream) {
    let _served = Served::new(&api);
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == 0 => {}
        Ok(cred) => {
            tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "refused a daemon API connection from a non-root peer");
            return;
        }
        Err(e) => {
            tracing::warn!("cannot read a daemon API peer's credentials: {e}; connection refused");
            return;
        }
    }
    let mut stopping = api.stopping.subscribe();
    let for_service = api.clone();
    let service = hyper::service::service_fn(move |req| {
        let api = for_service.clone();
        async move { Ok::<_, Infallible>(route(&api, req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        () = async {
            // The guard `wait_for` returns is not Send: drop it here.
            let _ = stopping.wait_for(|s| *s).await.map(drop);
        } => {
            // Finish the request in flight (if any), then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!("daemon API connection ended: {e}");
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn route(api: &Api, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/cni") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let err = CniError::new(
                        codes::IO_FAILURE,
                        format!("plexusd: cannot read the request: {e}"),
                    );
                    return json_response(StatusCode::OK, &json!({"error": err}));
                }
            };
            let reply = match cni_request(api, &body).await {
                Ok(result) => json!({"result": result}),
                Err(e) => {
                    api.shared.metrics.error(e.code);
                    json!({"error": e})
                }
            };
            json_response(StatusCode::OK, &reply)
        }
        (&Method::GET, "/v1/status") => json_response(StatusCode::OK, &status(api)),
        (_, "/v1/cni" | "/v1/status") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"message": "method not allowed"}),
        ),
        (_, path) => json_response(
            StatusCode::NOT_FOUND,
            &json!({"message": format!("no such endpoint {path:?}; the daemon API is under /v1")}),
        ),
    }
}

/// `GET /v1/status`.
pub fn status(api: &Api) -> Value {
    let caches = api.shared.kube.as_ref().map(|k| {
        let c = &k.caches;
        json!({
            "node": c.node(),
            "pods": {"objects": c.pod_count(), "resourceVersion": c.pod_stats.resource_version.load(Ordering::Relaxed).to_string()},
            "nads": {"objects": c.nad_count(), "resourceVersion": c.nad_stats.resource_version.load(Ordering::Relaxed).to_string()},
        })
    });
    json!({
        "apiVersion": "v1",
        "ready": api.ready.load(Ordering::SeqCst),
        "version": plexus_cni::build::VERSION,
        "commit": plexus_cni::build::COMMIT,
        "inflight": api.admission.inflight(),
        "queued": api.admission.queued(),
        "caches": caches,
    })
}

async fn cni_request(api: &Api, body: &[u8]) -> Result<Value, CniError> {
    let received = Instant::now();
    let req = cni::decode(body)?;
    let version = plexus_engine::respond::config_version(req.config.get("cniVersion"));
    let env = cni::cni_env(&req).map_err(|e| e.with_version(&version))?;
    let verb = env.command.as_str();
    if env.command == Command::Version {
        return Ok(plexus_engine::respond::version_reply(&req.config));
    }
    let pod = match (
        env.args.get("K8S_POD_NAMESPACE"),
        env.args.get("K8S_POD_NAME"),
    ) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        _ => "-".to_owned(),
    };
    let span = tracing::error_span!(
        "cni",
        command = verb,
        pod = %pod,
        container = %env.container_id,
        ifname = %env.ifname,
    );
    let budget = Budget::starting_at(received, cni::call_timeout(&req.config));
    // STATUS must answer quickly whatever the load: it is how the runtime decides whether the
    // node's network is ready, and it runs no delegate but the cluster network's STATUS.
    let admitted = if env.command == Command::Status {
        Ok(None)
    } else {
        api.admission.admit(budget.work_deadline()).await.map(Some)
    };
    let permit = match admitted {
        Ok(p) => p,
        Err(refused) => {
            let why = match refused {
                Refused::QueueFull { inflight, queue } => format!(
                    "plexusd is busy: {inflight} requests running and {queue} waiting (--max-inflight, --queue); try again later"
                ),
                Refused::Deadline => "plexusd is busy: the request waited for a free slot until its deadline (callTimeoutSeconds); try again later".to_owned(),
            };
            span.in_scope(|| tracing::warn!("{why}"));
            return Err(
                CniError::new(codes::TRY_AGAIN_LATER, format!("pod {pod}: {why}"))
                    .with_version(&version),
            );
        }
    };
    let shared = api.shared.clone();
    let run_span = span.clone();
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _entered = run_span.enter();
        tracing::info!("invoked");
        cni::run(&shared, &env, &req.config, budget)
    });
    let deadline = tokio::time::Instant::from_std(budget.end() + ANSWER_SLACK);
    let outcome = match tokio::time::timeout_at(deadline, task).await {
        Ok(Ok(out)) => out,
        Ok(Err(join)) => Err(CniError::new(
            codes::INTERNAL,
            format!("pod {pod}: plexusd: the engine failed: {join}"),
        )
        .with_version(&version)),
        Err(_) => {
            span.in_scope(|| {
                tracing::error!("the engine did not return within callTimeoutSeconds")
            });
            Err(CniError::new(
                codes::TRY_AGAIN_LATER,
                format!("pod {pod}: plexusd: the {verb} did not finish within callTimeoutSeconds"),
            )
            .with_version(&version))
        }
    };
    api.shared.metrics.request(verb, received.elapsed());
    span.in_scope(|| match &outcome {
        Ok(_) => tracing::info!(took_ms = received.elapsed().as_millis() as u64, "done"),
        Err(e) => tracing::info!(
            code = e.code,
            took_ms = received.elapsed().as_millis() as u64,
            "failed"
        ),
    });
    outcome
}
