//! The client's HTTP stack: kube's credentials and TLS settings over a connection pool that speaks
//! HTTP/2 when the API server offers it.
//!
//! kube 5's own stack (`Client::try_from`) offers only `http/1.1` in its TLS handshake, so every
//! request in flight needs a connection (and a TLS handshake) of its own: the thin plugin's
//! parallel NAD GETs open one each, and the node daemon's watches hold one each. kube-apiserver
//! (like client-go) prefers HTTP/2, so here the TLS handshake offers `h2` and `http/1.1` and one
//! connection carries every request: the daemon's lists, watches and status PATCHes, or the thin
//! plugin's GETs and PATCH. Plain `http://` servers stay HTTP/1.1 (no h2c, as kube-apiserver
//! serves none).
//!
//! Kept from kube's stack: the auth layer (token files re-read as they rotate, exec plugins,
//! client certificates in the TLS config), the base URI, the extra headers (User-Agent,
//! impersonation), the default namespace, and the connect, read and write timeouts. Left out: the
//! tracing layer (plexus logs its own request lines) and `Client::valid_until` (the expiry of an
//! exec plugin's client certificate, which nothing here reads).
//!
//! Requests of a CNI call skip kube's `Buffer`: [`ApiClient::send`] calls a clone of the same
//! stack (credentials, headers, pool) directly, so a request is polled on the thread that waits for
//! it. Through `kube::Client` a request is first handed to the buffer's worker task and its
//! response future handed back: two more wake-ups of another thread per request, which the
//! daemon's status PATCH, the one request on an ADD's path, paid on every ADD (hack/bench.sh's
//! "of which API wait"). The watches keep `kube::Client`, which kube-runtime needs.
//!
//! Connection health: an HTTP/1.1 connection keeps kube's read timeout, which also ends an idle
//! pooled one. An HTTP/2 connection is shared by long-lived watches that may be quiet for minutes,
//! so a read timeout on its socket would cut all of them; it gets HTTP/2 keep-alive pings instead
//! (every [`PING_INTERVAL`], also while idle): a connection whose peer stops answering is closed
//! and the next request dials a new one, rather than waiting on a dead socket. Each request stays
//! bounded by [`crate::LiveKube`]'s per-attempt timeout either way.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{Body, ClientBuilder, ConfigExt};
use kube::{Client, Config};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// How often an HTTP/2 connection is pinged. client-go's default for its HTTP/2 health check
/// (`ReadIdleTimeout`) is 30 s as well.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// The stack below kube's `Buffer`, type-erased; cloning it shares the pool.
type Direct = BoxCloneSyncService<http::Request<Body>, http::Response<Incoming>, BoxError>;

/// A `kube::Client` for kube's APIs (watches, lists) and, beside it, the same stack without the
/// buffer for requests whose latency counts (see the module docs). Cheap to clone: both share one
/// connection pool.
#[derive(Clone)]
pub struct ApiClient {
    kube: Client,
    /// `None` behind a proxy, where the whole stack stays kube's.
    direct: Option<Direct>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The stack holds credentials: say only which path requests take.
        f.debug_struct("ApiClient")
            .field("direct", &self.direct.is_some())
            .finish_non_exhaustive()
    }
}

/// A whole answer: status, headers and the collected body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ApiClient {
    /// The client for kube's own APIs (kube-runtime's watchers, `apiserver_version`).
    pub fn kube(&self) -> &Client {
        &self.kube
    }

    /// Sends `request` and collects the answer. Errors are kube's, classified as
    /// `kube::Client::send` classifies them, so that retry decisions do not depend on the path.
    pub(crate) async fn send(&self, request: http::Request<Body>) -> Result<Answer, kube::Error> {
        let Some(direct) = &self.direct else {
            let response = self.kube.send(request).await?;
            let (parts, body) = response.into_parts();
            return Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body: body.collect_bytes().await?,
            });
        };
        let response = direct.clone().oneshot(request).await.map_err(|err| {
            err.downcast::<kube::Error>()
                .map(|e| *e)
                .or_else(|err| {
                    err.downcast::<hyper::Error>()
                        .map(|e| kube::Error::HyperError(*e))
                })
                .unwrap_or_else(kube::Error::Service)
        })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(kube::Error::HyperError)?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// Builds an [`ApiClient`] from `config` over the stack described in the module docs. `config` is
/// the loaded and tuned config (its timeouts, headers and CA are used as they are);
/// `ping_timeout` is how long an HTTP/2 ping may go unanswered before the connection is closed.
pub fn client(config: &Config, ping_timeout: Duration) -> Result<ApiClient, kube::Error> {
    if config.proxy_url.is_some() {
        // Proxies (and their errors when kube is built without proxy support) stay kube's.
        return Ok(ApiClient {
            kube: Client::try_from(config.clone())?,
            direct: None,
        });
    }
    let http = tcp_connector();
    let mut tls = HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = name
            .clone()
            .try_into()
            .map_err(kube::client::RustlsTlsError::InvalidServerName)
            .map_err(kube::Error::RustlsTls)?;
        tls = tls.with_server_name_resolver(FixedServerNameResolver::new(name));
    }
    // Offers ALPN `h2` and `http/1.1` on TLS connections; plain HTTP is HTTP/1.1.
    let https = tls.enable_all_versions().wrap_connector(http);

    let mut timed = TimeoutConnector::new(https);
    timed.set_connect_timeout(config.connect_timeout);
    timed.set_read_timeout(config.read_timeout);
    timed.set_write_timeout(config.write_timeout);
    timed.set_reset_reader_on_write(config.reset_reader_on_write);

    let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        // An idle HTTP/2 connection stays the warm one; dead ones are found by the pings (and
        // idle HTTP/1.1 ones end by the read timeout), so no idle expiry is needed.
        .pool_idle_timeout(None)
        .http2_keep_alive_interval(PING_INTERVAL)
        .http2_keep_alive_timeout(ping_timeout)
        .http2_keep_alive_while_idle(true)
        .build::<_, Body>(NoReadTimeoutOnH2(timed));

    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(pool);
    Ok(ApiClient {
        kube: ClientBuilder::new(service.clone(), config.default_namespace.clone()).build(),
        direct: Some(BoxCloneSyncService::new(service)),
    })
}

/// The TCP layer: any scheme (TLS is layered on top), and `TCP_NODELAY`. HTTP/2 writes a
/// request's HEADERS and DATA frames separately: with Nagle's algorithm on, the DATA frame waits
/// for the server's delayed ACK of the HEADERS, 40 ms on Linux, on every PATCH (hack/bench.sh
/// caught it). Go's net package, and so kube-apiserver and client-go, set `TCP_NODELAY` on every
/// connection as well.
fn tcp_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http
}

/// Wraps [`TimeoutConnector`]: a connection that negotiated HTTP/2 loses its read timeout (see
/// the module docs); HTTP/1.1 ones keep it.
#[derive(Clone)]
struct NoReadTimeoutOnH2<C>(TimeoutConnector<C>);

/// hyper-timeout's connection type (not exported by name).
type Timed<C> = <TimeoutConnector<C> as tower::Service<Uri>>::Response;

impl<C> tower::Service<Uri> for NoReadTimeoutOnH2<C>
where
    C: tower::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Send + Unpin,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = Timed<C>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Timed<C>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.0.call(dst);
        Box::pin(async move {
            let mut io = connecting.await?;
            if io.get_ref().connected().is_negotiated_h2() {
                io.as_mut().set_read_timeout_pinned(None);
            }
            Ok(io)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_are_opened_without_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("https://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let accepting = tokio::spawn(async move { listener.accept().await.map(drop) });
        let io = tower::ServiceExt::oneshot(tcp_connector(), uri)
            .await
            .unwrap();
        assert!(io.inner().nodelay().unwrap(), "TCP_NODELAY is off");
        accepting.await.unwrap().unwrap();
    }

    /// Answers every request on every connection with `200 {}` (HTTP/1.1).
    async fn serve_ok(listener: tokio::net::TcpListener) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                    if conn.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    #[test]
    fn requests_do_not_go_through_kubes_buffer_worker() {
        let server = tokio::runtime::Runtime::new().unwrap();
        let listener = server
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url: Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        server.spawn(serve_ok(listener));
        let config = Config::new(url);
        // kube spawns its buffer worker on the runtime that builds the client; once that runtime
        // is gone, only a request that bypasses the worker can still be answered.
        let builder = tokio::runtime::Runtime::new().unwrap();
        let api = builder
            .block_on(async { client(&config, Duration::from_secs(5)) })
            .unwrap();
        drop(builder);
        let caller = tokio::runtime::Runtime::new().unwrap();
        let get = || http::Request::get("/version").body(Body::empty()).unwrap();
        let through_buffer = caller.block_on(api.kube().send(get()));
        assert!(
            through_buffer.is_err(),
            "kube's buffer worker outlived its runtime"
        );
        let answer = caller.block_on(api.send(get())).unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], b"{}");
    }
}
