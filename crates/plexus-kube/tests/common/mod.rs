//! A tiny canned-answer HTTP(S) server standing in for the API server, plus kubeconfig helpers.
//!
//! It runs on its own thread and runtime because `LiveKube` blocks the test thread on its own
//! runtime. Every request is recorded; a "gate" can hold all responses until a number of requests
//! have arrived, which lets a test prove requests were in flight concurrently without timing.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The HTTP version the request came over.
    pub version: hyper::Version,
    /// Which accepted connection it came over (0, 1, ... in accept order).
    pub conn: usize,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A canned answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// 0: close the connection without answering.
    pub status: u16,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            headers: Vec::new(),
        }
    }

    /// No answer: the connection is closed once the request is read.
    pub fn drop_connection() -> Reply {
        Reply {
            status: 0,
            body: String::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// A Kubernetes `Status` failure, as the API server sends it.
    pub fn status(code: u16, reason: &str, message: &str) -> Reply {
        Reply::json(
            code,
            serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code,
            }),
        )
    }
}

type Responder = Box<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// Server behaviour.
pub struct Options {
    pub responder: Responder,
    /// Hold every response until this many requests have arrived (0: no gate). Bounded by 5 s
    /// so that a failing test fails rather than hangs.
    pub gate: usize,
    /// Delay before each response, after the gate.
    pub delay: Duration,
    /// Serve TLS with this certificate chain and key instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Options {
    pub fn new(responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Options {
        Options {
            responder: Box::new(responder),
            gate: 0,
            delay: Duration::ZERO,
            tls: None,
        }
    }
}

struct State {
    opts: Options,
    log: Mutex<Vec<Recorded>>,
    arrived: watch::Sender<usize>,
    /// How many requests had arrived when the first response was sent.
    arrived_at_first_response: Mutex<Option<usize>>,
    /// Connections accepted so far (TLS ones count once their handshake is done).
    connections: std::sync::atomic::AtomicUsize,
}

pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeApi {
    pub fn start(opts: Options) -> FakeApi {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            opts,
            log: Mutex::new(Vec::new()),
            arrived: watch::channel(0).0,
            arrived_at_first_response: Mutex::new(None),
            connections: Default::default(),
        });
        let (tx, mut rx) = oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let st = st.clone();
                            tokio::spawn(async move {
                                match st.opts.tls.clone() {
                                    Some(cfg) => {
                                        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                                        if let Ok(tls) = acceptor.accept(stream).await {
                                            let conn = st.connections.fetch_add(1, SeqCst);
                                            serve(st, tls, conn).await;
                                        }
                                    }
                                    None => {
                                        let conn = st.connections.fetch_add(1, SeqCst);
                                        serve(st, stream, conn).await
                                    }
                                }
                            });
                        }
                    }
                }
            });
        });
        FakeApi {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.state.opts.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.log.lock().unwrap().clone()
    }

    /// Connections accepted (and, over TLS, handshaken) so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(SeqCst)
    }

    pub fn arrived_at_first_response(&self) -> Option<usize> {
        *self.state.arrived_at_first_response.lock().unwrap()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves HTTP/1.1, or HTTP/2 when the client starts with its preface (after ALPN `h2` over TLS,
/// when the server config offers it).
async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    st: Arc<State>,
    io: S,
    conn: usize,
) {
    let svc = service_fn(move |req| handle(st.clone(), req, conn));
    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// Makes hyper close the connection without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dropped")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    st: Arc<State>,
    req: Request<Incoming>,
    conn: usize,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
        version: parts.version,
        conn,
    };
    let reply = (st.opts.responder)(&rec);
    st.log.lock().unwrap().push(rec);
    st.arrived.send_modify(|n| *n += 1);
    if st.opts.gate > 0 {
        let mut rx = st.arrived.subscribe();
        let gate = st.opts.gate;
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|n| *n >= gate)).await;
    }
    tokio::time::sleep(st.opts.delay).await;
    {
        let mut first = st.arrived_at_first_response.lock().unwrap();
        if first.is_none() {
            *first = Some(*st.arrived.borrow());
        }
    }
    if reply.status == 0 {
        return Err(Dropped);
    }
    let mut resp = Response::builder()
        .status(reply.status)
        .header("content-type", "application/json");
    for (k, v) in &reply.headers {
        resp = resp.header(*k, v);
    }
    Ok(resp.body(Full::new(Bytes::from(reply.body))).unwrap())
}

/// Writes a kubeconfig for `server` into `dir`. `user` is the YAML body of the user entry
/// (indented by the caller's choice of keys), `ca` an optional `certificate-authority` path.
pub fn write_kubeconfig(dir: &Path, server: &str, ca: Option<&str>, user_yaml: &str) -> PathBuf {
    let ca_line = ca
        .map(|p| format!("\n    certificate-authority: {p}"))
        .unwrap_or_default();
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: {server}{ca_line}
contexts:
- name: ctx
  context:
    cluster: c
    user: u
current-context: ctx
users:
- name: u
  user:
{user_yaml}
"
    );
    let path = dir.join("plexus.kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}
