//! The HTTP side: accept loop, optional TLS, authentication, fault injection, routing to the
//! store, watch streams, and the request log.

use super::RequestRecord;
use super::faults::{Decision, Fault, decide};
use super::metadata::{self, View};
use super::patch::PatchType;
use super::resource::{Resource, Route};
use super::selector::Selectors;
use super::status::ApiError;
use super::store::{ListParams, Store, WatchStart};
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_rustls::TlsAcceptor;

pub type RespBody = BoxBody<Bytes, Infallible>;

/// State shared by the server tasks and the synchronous handle.
#[derive(Debug)]
pub struct Shared {
    pub store: Mutex<Store>,
    pub log: Mutex<Vec<RequestRecord>>,
    pub log_file: Option<Mutex<std::fs::File>>,
    pub latency: Mutex<Duration>,
    pub token: Mutex<Option<String>>,
    pub faults: Mutex<Vec<Fault>>,
    pub bookmark_interval: Duration,
    /// When the server started (request log times are counted from here).
    pub started: std::time::Instant,
    pub tokens: Mutex<super::tokens::Tokens>,
    /// TCP connections accepted.
    pub accepted: AtomicU64,
    /// TLS handshakes completed (each is a connection that can carry requests).
    pub handshakes: AtomicU64,
}

/// Locks ignoring poison: a panicking test thread must not take the server down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn record(&self, rec: RequestRecord) {
        if let Some(f) = &self.log_file
            && let Ok(line) = serde_json::to_string(&rec)
        {
            let _ = writeln!(lock(f), "{line}");
        }
        lock(&self.log).push(rec);
    }
}

/// Accepts connections until `shutdown` flips, then drops the listener (closing the port) and
/// acknowledges on `closed`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    closed: std::sync::mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, tls.clone(), shared.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
    drop(listener);
    let _ = closed.send(());
}

/// Serves one connection: HTTP/1.1, or HTTP/2 when the client opens with the HTTP/2 preface,
/// which over TLS it does after ALPN chose `h2` (see `tls.rs`). Like kube-apiserver, no h2c
/// upgrade is offered on plain HTTP, so clients use HTTP/1.1 there.
async fn connection(stream: tokio::net::TcpStream, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let id = shared.accepted.fetch_add(1, Ordering::SeqCst);
    let svc = {
        let shared = shared.clone();
        service_fn(move |req| handle(shared.clone(), req, id))
    };
    let server = auto::Builder::new(TokioExecutor::new());
    match tls {
        Some(acceptor) => {
            if let Ok(s) = acceptor.accept(stream).await {
                shared.handshakes.fetch_add(1, Ordering::SeqCst);
                let _ = server.serve_connection(TokioIo::new(s), svc).await;
            }
        }
        None => {
            let _ = server.serve_connection(TokioIo::new(stream), svc).await;
        }
    }
}

/// What a handler produced.
enum Reply {
    Json(u16, Value),
    Text(u16, &'static str),
    Watch(mpsc::Receiver<Bytes>),
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply::Json(e.code, e.to_status())
    }
}

/// Returned by the service to make hyper close the connection without an answer (a scripted
/// dropped connection). Over HTTP/2 hyper resets just that stream (INTERNAL_ERROR), as Go's
/// server does for a handler that panicked, and the connection's other streams go on.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by a scripted fault")]
pub struct Dropped;

async fn handle(
    shared: Arc<Shared>,
    req: http::Request<Incoming>,
    connection: u64,
) -> Result<Response<RespBody>, Dropped> {
    let http_version = format!("{:?}", req.version());
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers = req.headers().clone();
    let user_agent = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let arrived = shared.started.elapsed().as_millis() as u64;
    let log_entry = |status, response_bytes| RequestRecord {
        user_agent: user_agent.clone(),
        accept: accept.clone(),
        at_ms: arrived,
        http_version: http_version.clone(),
        connection,
        ..record(&method, &path, &query, status, body.len(), response_bytes)
    };

    // Faults apply after authentication, as a sick server still checks credentials first.
    let decision = match authenticate(&shared, &headers, Route::parse(&path).as_ref()) {
        Ok(()) => decide(&mut lock(&shared.faults), &method, &path),
        Err(_) => Decision::Serve,
    };
    let reply = match decision {
        Decision::Drop => {
            shared.record(log_entry(0, 0));
            return Err(Dropped);
        }
        Decision::Delay(d) => {
            tokio::time::sleep(d).await;
            respond(&shared, &method, &path, &query, &headers, &body).unwrap_or_else(Reply::from)
        }
        Decision::Fail(e) => Reply::from(e),
        Decision::Serve => {
            respond(&shared, &method, &path, &query, &headers, &body).unwrap_or_else(Reply::from)
        }
    };
    // The real server turns `details.retryAfterSeconds` into the header.
    let retry_after = match &reply {
        Reply::Json(code, v) if *code >= 400 => v["details"]["retryAfterSeconds"]
            .as_u64()
            .filter(|s| *s > 0),
        _ => None,
    };
    let (status, resp) = match reply {
        Reply::Json(code, v) => {
            let bytes = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
            (code, Some((bytes, "application/json")))
        }
        Reply::Text(code, t) => (
            code,
            Some((
                Bytes::from_static(t.as_bytes()),
                "text/plain; charset=utf-8",
            )),
        ),
        Reply::Watch(rx) => {
            shared.record(log_entry(200, 0));
            delay(&shared).await;
            let resp = Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("cache-control", "no-cache, private")
                .body(ChannelBody(rx).boxed())
                .expect("valid response");
            return Ok(resp);
        }
    };
    let (bytes, ct) = resp.expect("non-watch replies have a body");
    shared.record(log_entry(status, bytes.len()));
    delay(&shared).await;
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", ct)
        .header("cache-control", "no-cache, private");
    if let Some(secs) = retry_after {
        resp = resp.header("retry-after", secs.to_string());
    }
    Ok(resp.body(Full::new(bytes).boxed()).expect("valid response"))
}

fn record(
    method: &str,
    path: &str,
    query: &str,
    status: u16,
    request_bytes: usize,
    response_bytes: usize,
) -> RequestRecord {
    RequestRecord {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        status,
        request_bytes,
        response_bytes,
        user_agent: None,
        accept: None,
        at_ms: 0,
        http_version: String::new(),
        connection: 0,
    }
}

async fn delay(shared: &Shared) {
    let latency = *lock(&shared.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

/// Percent-decoded query parameters.
pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(
    shared: &Arc<Shared>,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let route = Route::parse(path);
    authenticate(shared, headers, route.as_ref())?;
    if let Some((ns, sa)) = super::tokens::token_request_path(path) {
        if method != "POST" {
            return Err(ApiError::method_not_allowed());
        }
        let body = parse_body(body)?;
        let store = lock(&shared.store);
        let tr = lock(&shared.tokens).request(&store, &ns, &sa, &body)?;
        return Ok(Reply::Json(201, tr));
    }
    let Some(route) = route else {
        return Err(ApiError::no_route());
    };
    let params = parse_query(query);
    let param = |k: &str| {
        params
            .iter()
            .find(|(pk, _)| pk == k)
            .map(|(_, v)| v.as_str())
    };
    let flag = |k: &str| param(k).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match (route, method) {
        (Route::Health, "GET") => Ok(Reply::Text(200, "ok")),
        (Route::Version, "GET") => Ok(Reply::Json(200, version())),
        (Route::CoreVersions, "GET") => Ok(Reply::Json(
            200,
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        )),
        (Route::Groups, "GET") => Ok(Reply::Json(200, groups())),
        (Route::ResourceList { group, version }, "GET") => {
            Ok(Reply::Json(200, resource_list(&group, &version)))
        }
        (Route::Collection { res, ns }, "GET") => {
            let sel = Selectors::parse(res, param("fieldSelector"), param("labelSelector"))?;
            if flag("watch") {
                let timeout = param("timeoutSeconds")
                    .and_then(|t| t.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let opts = WatchOpts {
                    meta_only: metadata::view(accept, false)? == View::Metadata,
                    res,
                    ns,
                    sel,
                    bookmarks: flag("allowWatchBookmarks"),
                    initial_events_end: flag("sendInitialEvents"),
                    timeout,
                    interval: shared.bookmark_interval,
                };
                // sendInitialEvents streams the current state whatever resourceVersion says.
                let rv = if opts.initial_events_end {
                    None
                } else {
                    param("resourceVersion")
                };
                let start = lock(&shared.store).watch(res, opts.ns.as_deref(), &opts.sel, rv)?;
                let (tx, rx) = mpsc::channel(64);
                tokio::spawn(watch_stream(opts, start, tx));
                return Ok(Reply::Watch(rx));
            }
            let page = ListParams {
                limit: param("limit").and_then(|l| l.parse().ok()),
                continue_token: param("continue").map(str::to_owned),
            };
            let view = metadata::view(accept, true)?;
            let list = lock(&shared.store).list(res, ns.as_deref(), &sel, &page)?;
            Ok(Reply::Json(
                200,
                match view {
                    View::Full => list,
                    View::Metadata => metadata::list(&list),
                },
            ))
        }
        (Route::Collection { res, ns: Some(ns) }, "POST") => {
            let obj = parse_body(body)?;
            Ok(Reply::Json(201, lock(&shared.store).create(res, &ns, obj)?))
        }
        (Route::Object { res, ns, name, .. }, "GET") => {
            let view = metadata::view(accept, false)?;
            let obj = lock(&shared.store).get(res, &ns, &name)?;
            Ok(Reply::Json(200, metadata::as_viewed(obj, view)))
        }
        (Route::Object { res, ns, name, sub }, "PATCH") => {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let ty = PatchType::from_content_type(ct)
                .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            // Negotiated before the write, as on the real server: a 406 changes nothing.
            let view = metadata::view(accept, false)?;
            let patch = parse_body(body)?;
            let obj = lock(&shared.store).patch(res, &ns, &name, sub.as_deref(), ty, &patch)?;
            Ok(Reply::Json(200, metadata::as_viewed(obj, view)))
        }
        (Route::Object { res, ns, name, sub }, "PUT") => {
            let view = metadata::view(accept, false)?;
            let obj = parse_body(body)?;
            let obj = lock(&shared.store).replace(res, &ns, &name, sub.as_deref(), obj)?;
            Ok(Reply::Json(200, metadata::as_viewed(obj, view)))
        }
        (
            Route::Object {
                res,
                ns,
                name,
                sub: None,
            },
            "DELETE",
        ) => {
            let opts = if body.is_empty() {
                Value::Null
            } else {
                parse_body(body)?
            };
            Ok(Reply::Json(
                200,
                lock(&shared.store).delete(res, &ns, &name, &opts["preconditions"])?,
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// With a token configured or any token issued through TokenRequest, every request needs
/// `Authorization: Bearer <token>`: the configured token, or an issued token that is still valid
/// (see [`super::tokens::Tokens::check`]). An anonymous request (no header at all) may read the
/// health and version endpoints, as the real server's `system:public-info-viewer` binding allows.
fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    route: Option<&Route>,
) -> Result<(), ApiError> {
    let bearer = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap_or_default())
        .map(|h| h.strip_prefix("Bearer ").map(str::trim));
    let configured = lock(&shared.token).clone();
    // Lock order: store before tokens (as in the TokenRequest handler).
    let store = lock(&shared.store);
    let tokens = lock(&shared.tokens);
    if let Some(Some(t)) = bearer
        && tokens.knows(t)
    {
        return tokens.check(&store, t);
    }
    if configured.is_none() && !tokens.any_issued() {
        return Ok(());
    }
    match bearer {
        Some(Some(t)) if configured.as_deref() == Some(t) => Ok(()),
        None if matches!(route, Some(Route::Health | Route::Version)) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-plexus-fake", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64"
    })
}

fn groups() -> Value {
    let groups: Vec<Value> = ["k8s.cni.cncf.io", "events.k8s.io"]
        .iter()
        .map(|g| {
            let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in Resource::ALL
        .into_iter()
        .filter(|r| r.group() == group && r.version() == version)
    {
        resources.push(json!({
            "name": r.plural(), "singularName": r.kind().to_lowercase(), "namespaced": r.namespaced(), "kind": r.kind(),
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]
        }));
        if r.has_subresource("status") {
            resources.push(json!({"name": format!("{}/status", r.plural()), "singularName": "", "namespaced": true, "kind": r.kind(), "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// Parameters of one watch stream.
#[derive(Debug)]
struct WatchOpts {
    /// Send `PartialObjectMetadata` objects (the request's `Accept` asked for them).
    meta_only: bool,
    res: Resource,
    ns: Option<String>,
    sel: Selectors,
    bookmarks: bool,
    initial_events_end: bool,
    timeout: Option<Duration>,
    interval: Duration,
}

fn event_line(ty: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(res: Resource, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind(), "apiVersion": res.api_version(), "metadata": meta})
}

/// Feeds one watch response: the initial events, then live changes and bookmarks, until the
/// client goes away, `timeoutSeconds` passes, or the watcher falls too far behind (then the
/// stream just ends and the client re-watches, as after a real server's watch timeout).
async fn watch_stream(o: WatchOpts, start: WatchStart, tx: mpsc::Sender<Bytes>) {
    let WatchStart {
        initial,
        mut rx,
        mut rv,
        expired,
    } = start;
    if let Some(e) = expired {
        let _ = tx.send(event_line("ERROR", &e.to_status())).await;
        return;
    }
    let view = |obj: Value| {
        if o.meta_only {
            metadata::object(&obj)
        } else {
            obj
        }
    };
    for (ty, obj) in initial {
        if tx.send(event_line(ty, &view(obj))).await.is_err() {
            return;
        }
    }
    if o.initial_events_end
        && tx
            .send(event_line("BOOKMARK", &view(bookmark(o.res, rv, true))))
            .await
            .is_err()
    {
        return;
    }
    let deadline = o.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + o.interval, o.interval);
    loop {
        let line = tokio::select! {
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => return,
            _ = tx.closed() => return,
            _ = ticks.tick(), if o.bookmarks => event_line("BOOKMARK", &view(bookmark(o.res, rv, false))),
            change = rx.recv() => match change {
                Ok(c) => {
                    rv = rv.max(c.rv);
                    match c.event_for(o.res, o.ns.as_deref(), &o.sel) {
                        Some((ty, obj)) => event_line(ty, &view(obj)),
                        None => continue,
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
            },
        };
        if tx.send(line).await.is_err() {
            return;
        }
    }
}

/// A streaming response body fed by a channel (one chunk per watch event).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("fieldSelector=spec.nodeName%3Dnode-1&watch=1&x"),
            vec![
                ("fieldSelector".into(), "spec.nodeName=node-1".into()),
                ("watch".into(), "1".into()),
                ("x".into(), String::new())
            ]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("l%20in+(a%2Cb)"), "l in (a,b)");
    }
}
