//! `/healthz`, `/readyz` and `/metrics` on a TCP address, for kubelet probes and Prometheus.

use crate::metrics::{header, labels};
use crate::server::Api;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

/// Serves until the runtime stops.
pub async fn serve(listener: TcpListener, api: Arc<Api>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(answer(&api, req.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

fn answer(api: &Api, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => {
            if api.ready.load(Ordering::SeqCst) {
                text(StatusCode::OK, "ok\n".to_owned())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "caches not synced yet\n".to_owned(),
                )
            }
        }
        "/metrics" => {
            let mut r = text(StatusCode::OK, metrics(api));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
    }
}

/// The whole exposition.
pub fn metrics(api: &Api) -> String {
    let mut out = String::new();
    let shared = &api.shared;
    shared.metrics.render(&mut out);
    header(
        &mut out,
        "plexusd_api_requests_total",
        "counter",
        "Requests to the Kubernetes API server made for CNI requests (cache misses and status patches), by verb and HTTP code.",
    );
    for (verb, code, n) in shared.counters.snapshot() {
        let _ = writeln!(
            out,
            "plexusd_api_requests_total{} {n}",
            labels(&[("verb", verb.to_owned()), ("code", code)])
        );
    }
    header(
        &mut out,
        "plexusd_api_wait_seconds",
        "summary",
        "Time CNI requests waited on the API server, by verb (a batch of parallel NAD GETs counts once).",
    );
    for (verb, secs, calls) in shared.counters.wait_snapshot() {
        let l = labels(&[("verb", verb.to_owned())]);
        let _ = writeln!(out, "plexusd_api_wait_seconds_sum{l} {secs}");
        let _ = writeln!(out, "plexusd_api_wait_seconds_count{l} {calls}");
    }
    header(
        &mut out,
        "plexusd_cache_reads_total",
        "counter",
        "Pod and NAD reads, by whether the watch cache answered them.",
    );
    let _ = writeln!(
        out,
        "plexusd_cache_reads_total{{result=\"hit\"}} {}",
        shared.counters.cache_hits.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "plexusd_cache_reads_total{{result=\"miss\"}} {}",
        shared.counters.cache_misses.load(Ordering::Relaxed)
    );
    if let Some(k) = &shared.kube {
        header(
            &mut out,
            "plexusd_cache_objects",
            "gauge",
            "Objects in the watch caches.",
        );
        let _ = writeln!(
            out,
            "plexusd_cache_objects{{cache=\"pods\"}} {}",
            k.caches.pod_count()
        );
        let _ = writeln!(
            out,
            "plexusd_cache_objects{{cache=\"nads\"}} {}",
            k.caches.nad_count()
        );
        header(
            &mut out,
            "plexusd_watch_errors_total",
            "counter",
            "Failed lists and watches of the caches (each retried with backoff).",
        );
        for (name, stats) in [("pods", &k.caches.pod_stats), ("nads", &k.caches.nad_stats)] {
            let _ = writeln!(
                out,
                "plexusd_watch_errors_total{{cache=\"{name}\"}} {}",
                stats.errors.load(Ordering::Relaxed)
            );
        }
    }
    header(
        &mut out,
        "plexusd_queue_depth",
        "gauge",
        "CNI requests waiting for a free slot.",
    );
    let _ = writeln!(out, "plexusd_queue_depth {}", api.admission.queued());
    header(
        &mut out,
        "plexusd_inflight_requests",
        "gauge",
        "CNI requests running the engine.",
    );
    let _ = writeln!(
        out,
        "plexusd_inflight_requests {}",
        api.admission.inflight()
    );
    header(
        &mut out,
        "plexusd_ready",
        "gauge",
        "1 once the caches have synced.",
    );
    let _ = writeln!(
        out,
        "plexusd_ready {}",
        u8::from(api.ready.load(Ordering::SeqCst))
    );
    out
}
