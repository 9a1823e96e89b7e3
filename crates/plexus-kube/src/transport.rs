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

use http::Uri;
use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{Body, ClientBuilder, ConfigExt};
use kube::{Client, Config};
use tower::{BoxError, ServiceBuilder};

/// How often an HTTP/2 connection is pinged. client-go's default for its HTTP/2 health check
/// (`ReadIdleTimeout`) is 30 s as well.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Builds a [`Client`] from `config` over the stack described in the module docs. `config` is the
/// loaded and tuned config (its timeouts, headers and CA are used as they are); `ping_timeout`
/// is how long an HTTP/2 ping may go unanswered before the connection is closed.
pub fn client(config: &Config, ping_timeout: Duration) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() {
        // Proxies (and their errors when kube is built without proxy support) stay kube's.
        return Client::try_from(config.clone());
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
    Ok(ClientBuilder::new(service, config.default_namespace.clone()).build())
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
}
