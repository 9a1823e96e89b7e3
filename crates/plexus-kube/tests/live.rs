//! `LiveKube` against a canned in-test API server: request shapes, concurrency, error mapping,
//! credentials.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{FakeApi, Options, Recorded, Reply, write_kubeconfig};
use plexus_engine::api::{ApiError, KubeApi};
use plexus_kube::{Credentials, KubeError, LiveKube, RetryPolicy};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);
const TOKEN_USER: &str = "    token: static-token";

fn live(dir: &Path, server: &FakeApi) -> LiveKube {
    let kc = write_kubeconfig(dir, &server.url(), None, TOKEN_USER);
    LiveKube::new(&Credentials::Kubeconfig(kc), TIMEOUT).unwrap()
}

fn pod_json(ns: &str, name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "namespace": ns, "name": name, "uid": "0c1f-uid",
            "annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan-a, b/sriov", "other": "x"}
        },
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    })
}

fn nad_json(ns: &str, name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"namespace": ns, "name": name,
                     "annotations": {"k8s.v1.cni.cncf.io/resourceName": format!("example.com/{name}")}},
        "spec": {"config": format!("{{\"cniVersion\":\"1.0.0\",\"name\":\"{name}\",\"type\":\"macvlan\"}}")}
    })
}

/// Routes `/apis/k8s.cni.cncf.io/v1/namespaces/<ns>/network-attachment-definitions/<name>` to a NAD,
/// with `missing` answering 404.
fn nad_route(rec: &Recorded) -> Reply {
    let parts: Vec<&str> = rec.path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [
            "apis",
            "k8s.cni.cncf.io",
            "v1",
            "namespaces",
            ns,
            "network-attachment-definitions",
            name,
        ] => {
            if *name == "missing" {
                Reply::status(
                    404,
                    "NotFound",
                    "network-attachment-definitions.k8s.cni.cncf.io \"missing\" not found",
                )
            } else {
                Reply::json(200, nad_json(ns, name))
            }
        }
        _ => Reply::status(400, "BadRequest", "unexpected path"),
    }
}

#[test]
fn get_pod_maps_metadata_with_one_get() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApi::start(Options::new(|_| Reply::json(200, pod_json("ns1", "pod-a"))));
    let kube = live(dir.path(), &server);

    let pod = kube.get_pod("ns1", "pod-a").unwrap();
    assert_eq!(pod.namespace, "ns1");
    assert_eq!(pod.name, "pod-a");
    assert_eq!(pod.uid, "0c1f-uid");
    assert_eq!(pod.annotations.len(), 2);
    assert_eq!(
        pod.annotations["k8s.v1.cni.cncf.io/networks"],
        "macvlan-a, b/sriov"
    );

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, "/api/v1/namespaces/ns1/pods/pod-a");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer static-token"));
}

#[test]
fn get_pod_404_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApi::start(Options::new(|_| {
        Reply::status(404, "NotFound", "pods \"gone\" not found")
    }));
    let kube = live(dir.path(), &server);
    assert_eq!(
        kube.get_pod("ns1", "gone"),
        Err(ApiError::NotFound {
            kind: "pod",
            namespace: "ns1".into(),
            name: "gone".into()
        })
    );
    assert_eq!(server.requests().len(), 1, "no retries");
}

type Check = fn(&ApiError) -> bool;

/// Retries as the tests want them: fast, so that a test that retries costs milliseconds.
fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

#[test]
fn error_statuses_are_classified() {
    let cases: [(u16, Check); 6] = [
        (
            409,
            |e| matches!(e, ApiError::Conflict(m) if m == "msg-409"),
        ),
        (
            401,
            |e| matches!(e, ApiError::Forbidden(m) if m == "msg-401"),
        ),
        (
            403,
            |e| matches!(e, ApiError::Forbidden(m) if m == "msg-403"),
        ),
        (
            429,
            |e| matches!(e, ApiError::Unreachable(m) if m.contains("msg-429")),
        ),
        (
            503,
            |e| matches!(e, ApiError::Unreachable(m) if m.contains("msg-503")),
        ),
        (
            422,
            |e| matches!(e, ApiError::Other { status: 422, message } if message == "msg-422"),
        ),
    ];
    for (code, check) in cases {
        let dir = tempfile::tempdir().unwrap();
        let server = FakeApi::start(Options::new(move |_| {
            Reply::status(code, "R", &format!("msg-{code}"))
        }));
        let kube = live(dir.path(), &server).with_retry_policy(RetryPolicy::none());
        let err = kube.get_pod("ns", "p").unwrap_err();
        assert!(check(&err), "{code}: {err:?}");
        // kube's default retry layer (429/503/504) must be off: one request per call.
        assert_eq!(server.requests().len(), 1, "{code}");
    }
}

#[test]
fn permanent_errors_are_answered_at_once() {
    for code in [401, 403, 404, 409, 410, 422] {
        let dir = tempfile::tempdir().unwrap();
        let server = FakeApi::start(Options::new(move |_| Reply::status(code, "R", "msg")));
        let kube = live(dir.path(), &server).with_retry_policy(fast_retries());
        kube.get_pod("ns", "p").unwrap_err();
        kube.patch_network_status("ns", "p", "u", "[]").unwrap_err();
        assert_eq!(server.requests().len(), 2, "{code}: no retry");
        assert_eq!(kube.retries(), 0);
    }
}

/// Answers with `fail(n)` for the first `failures` requests, then with `ok`.
fn failing_first(
    failures: usize,
    fail: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ok: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
) -> Options {
    let seen = std::sync::atomic::AtomicUsize::new(0);
    Options::new(move |rec| {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n < failures { fail(n) } else { ok(rec) }
    })
}

#[test]
fn transient_errors_are_retried_on_every_call() {
    let dir = tempfile::tempdir().unwrap();
    // 500, 503, 504, a dropped connection: each retried, and the call then succeeds.
    let fail = |n: usize| match n % 4 {
        0 => Reply::status(500, "InternalError", "etcd leader changed"),
        1 => Reply::status(503, "ServiceUnavailable", "not ready"),
        2 => Reply::drop_connection(),
        _ => Reply::status(504, "Timeout", "timeout"),
    };
    let server = FakeApi::start(failing_first(3, fail, |_| {
        Reply::json(200, pod_json("ns1", "pod-a"))
    }));
    let kube = live(dir.path(), &server).with_retry_policy(fast_retries());
    assert_eq!(kube.get_pod("ns1", "pod-a").unwrap().uid, "0c1f-uid");
    assert_eq!(server.requests().len(), 4);
    assert_eq!(kube.retries(), 3);

    let server = FakeApi::start(failing_first(2, fail, |_| {
        Reply::json(200, pod_json("ns1", "pod-a"))
    }));
    let kube = live(dir.path(), &server).with_retry_policy(fast_retries());
    kube.patch_network_status("ns1", "pod-a", "u", "[]")
        .unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter()
            .all(|r| r.method == "PATCH" && r.body == reqs[0].body)
    );
}

#[test]
fn each_nad_is_retried_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let b_failures = std::sync::atomic::AtomicUsize::new(0);
    let server = FakeApi::start(Options::new(move |rec| {
        if rec.path.ends_with("/b")
            && b_failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2
        {
            return Reply::drop_connection();
        }
        nad_route(rec)
    }));
    let kube = live(dir.path(), &server).with_retry_policy(fast_retries());
    let got = kube.get_nads(&[("n".into(), "a".into()), ("n".into(), "b".into())]);
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths.iter().filter(|p| p.ends_with("/a")).count(),
        1,
        "{paths:?}"
    );
    assert_eq!(
        paths.iter().filter(|p| p.ends_with("/b")).count(),
        3,
        "{paths:?}"
    );
}

#[test]
fn persistent_errors_stop_after_the_attempt_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApi::start(Options::new(|_| {
        Reply::status(500, "InternalError", "down")
    }));
    let kube = live(dir.path(), &server).with_retry_policy(fast_retries());
    let err = kube.get_pod("ns", "p").unwrap_err();
    assert!(
        matches!(&err, ApiError::Unreachable(m) if m.contains("down") && m.contains("after 4 attempts")),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn retry_after_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApi::start(failing_first(
        1,
        |_| Reply::status(429, "TooManyRequests", "slow down").with_header("retry-after", "1"),
        |_| Reply::json(200, pod_json("ns1", "pod-a")),
    ));
    let kube = live(dir.path(), &server).with_retry_policy(fast_retries());
    let t = std::time::Instant::now();
    kube.get_pod("ns1", "pod-a").unwrap();
    // The fast policy would have retried after at most 20 ms; the server asked for a second.
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn retries_stop_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApi::start(Options::new(|_| {
        Reply::status(429, "TooManyRequests", "slow down").with_header("retry-after", "30")
    }));
    let kube = live(dir.path(), &server)
        .with_retry_policy(fast_retries())
        .with_deadline(std::time::Instant::now() + Duration::from_secs(5));
    let t = std::time::Instant::now();
    let err = kube.get_pod("ns", "p").unwrap_err();
    assert!(
        matches!(&err, ApiError::Unreachable(m) if m.contains("deadline")),
        "{err:?}"
    );
    assert_eq!(
        server.requests().len(),
        1,
        "a 30 s wait does not fit in 5 s"
    );
    // Guards against a hang only.
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_spent_deadline_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApi::start(Options::new(|_| Reply::json(200, pod_json("ns", "p"))));
    let kube = live(dir.path(), &server).with_deadline(std::time::Instant::now());
    let err = kube.get_pod("ns", "p").unwrap_err();
    assert!(
        matches!(&err, ApiError::Unreachable(m) if m.contains("callTimeoutSeconds")),
        "{err:?}"
    );
    assert!(server.requests().is_empty());
}

#[test]
fn every_request_names_plexus_and_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApi::start(Options::new(nad_route));
    let kube = live(dir.path(), &server);
    let _ = kube.get_pod("n", "p");
    let _ = kube.get_nads(&[("n".into(), "a".into())]);
    let _ = kube.patch_network_status("n", "p", "u", "[]");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    // The build's version and commit, as `plexus --version` names them.
    let want = format!(
        "plexus/{} ({})",
        env!("CARGO_PKG_VERSION"),
        plexus_cni::build::COMMIT
    );
    for r in &reqs {
        assert_eq!(r.header("user-agent"), Some(want.as_str()), "{}", r.path);
    }
    assert_eq!(plexus_kube::USER_AGENT, want);
}

#[test]
fn non_status_error_body_keeps_http_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApi::start(Options::new(|_| Reply {
        status: 404,
        body: "404 page not found".into(),
        headers: Vec::new(),
    }));
    let kube = live(dir.path(), &server);
    assert!(matches!(
        kube.get_nads(&[("n".into(), "x".into())])[0],
        Err(ApiError::NotFound { .. })
    ));
}

#[test]
fn get_nads_requests_are_concurrent_and_results_ordered() {
    const N: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::new(nad_route);
    // Every response waits until N requests have arrived, then 200 ms more. Were the GETs
    // sequential, the first would be answered after the gate's 5 s bound with only 1 arrived.
    opts.gate = N;
    opts.delay = Duration::from_millis(200);
    let server = FakeApi::start(opts);
    let kube = live(dir.path(), &server);

    let refs: Vec<(String, String)> = vec![
        ("a".into(), "net1".into()),
        ("b".into(), "net2".into()),
        ("a".into(), "missing".into()),
        ("c".into(), "net3".into()),
    ];
    let results = kube.get_nads(&refs);

    assert_eq!(
        server.arrived_at_first_response(),
        Some(N),
        "all GETs in flight before any answer"
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), N);
    assert!(reqs.iter().all(|r| r.method == "GET"));

    assert_eq!(results.len(), N);
    for (i, (ns, name)) in refs.iter().enumerate() {
        if name == "missing" {
            assert_eq!(
                results[i],
                Err(ApiError::NotFound {
                    kind: "network-attachment-definition",
                    namespace: ns.clone(),
                    name: name.clone()
                })
            );
            continue;
        }
        let nad = results[i].as_ref().unwrap();
        assert_eq!((&nad.namespace, &nad.name), (ns, name));
        assert_eq!(
            nad.config.as_deref(),
            Some(
                format!("{{\"cniVersion\":\"1.0.0\",\"name\":\"{name}\",\"type\":\"macvlan\"}}")
                    .as_str()
            )
        );
        assert_eq!(
            nad.annotations["k8s.v1.cni.cncf.io/resourceName"],
            format!("example.com/{name}")
        );
    }
    let mut paths: Vec<String> = reqs.iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/apis/k8s.cni.cncf.io/v1/namespaces/a/network-attachment-definitions/missing",
            "/apis/k8s.cni.cncf.io/v1/namespaces/a/network-attachment-definitions/net1",
            "/apis/k8s.cni.cncf.io/v1/namespaces/b/network-attachment-definitions/net2",
            "/apis/k8s.cni.cncf.io/v1/namespaces/c/network-attachment-definitions/net3",
        ]
    );
}

#[test]
fn get_nads_without_config_and_empty_input() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApi::start(Options::new(|_| {
        Reply::json(
            200,
            json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                                "metadata": {"namespace": "n", "name": "byfile"}, "spec": {}}),
        )
    }));
    let kube = live(dir.path(), &server);
    assert!(kube.get_nads(&[]).is_empty());
    assert!(server.requests().is_empty());
    let nad = kube
        .get_nads(&[("n".into(), "byfile".into())])
        .remove(0)
        .unwrap();
    assert_eq!(nad.config, None);
    assert!(nad.annotations.is_empty());
}

#[test]
fn patch_sends_one_merge_patch_to_status() {
    let dir = tempfile::tempdir().unwrap();
    // A minimal answer: the patch must not depend on parsing the returned pod.
    let server = FakeApi::start(Options::new(|_| Reply::json(200, json!({"metadata": {}}))));
    let kube = live(dir.path(), &server);
    let status = r#"[{"name":"cbr0","interface":"eth0","ips":["10.1.0.5"],"default":true}]"#;

    kube.patch_network_status("ns", "name", "uid-1", status)
        .unwrap();

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = &reqs[0];
    assert_eq!(r.method, "PATCH");
    assert_eq!(
        r.path.split('?').next(),
        Some("/api/v1/namespaces/ns/pods/name/status")
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/merge-patch+json")
    );
    // The answer is asked for as metadata only, with plain JSON as the fallback.
    assert_eq!(
        r.header("accept"),
        Some("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json")
    );
    let expected = json!({"metadata": {"uid": "uid-1", "annotations": {"k8s.v1.cni.cncf.io/network-status": status}}});
    assert_eq!(
        String::from_utf8(r.body.clone()).unwrap(),
        expected.to_string()
    );
}

#[test]
fn patch_without_uid_leaves_it_out_and_maps_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApi::start(Options::new(|rec| {
        let body: serde_json::Value = serde_json::from_slice(&rec.body).unwrap();
        if body["metadata"].get("uid").is_some() {
            Reply::status(
                409,
                "Conflict",
                "Precondition failed: UID in precondition: other",
            )
        } else {
            Reply::json(200, json!({"metadata": {}}))
        }
    }));
    let kube = live(dir.path(), &server);

    kube.patch_network_status("ns", "name", "", "[]").unwrap();
    assert_eq!(
        String::from_utf8(server.requests()[0].body.clone()).unwrap(),
        r#"{"metadata":{"annotations":{"k8s.v1.cni.cncf.io/network-status":"[]"}}}"#
    );
    let err = kube
        .patch_network_status("ns", "name", "stale-uid", "[]")
        .unwrap_err();
    assert!(
        matches!(err, ApiError::Conflict(ref m) if m.contains("Precondition")),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn connection_refused_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let kc = write_kubeconfig(
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
        None,
        TOKEN_USER,
    );
    let kube = LiveKube::new(&Credentials::Kubeconfig(kc), TIMEOUT)
        .unwrap()
        .with_retry_policy(fast_retries());

    let err = kube.get_pod("ns", "p").unwrap_err();
    assert!(
        matches!(err, ApiError::Unreachable(ref m) if m.to_lowercase().contains("refused") && m.contains("after 4 attempts")),
        "{err:?}"
    );
    let errs = kube.get_nads(&[("n".into(), "a".into()), ("n".into(), "b".into())]);
    assert!(
        errs.iter()
            .all(|e| matches!(e, Err(ApiError::Unreachable(_)))),
        "{errs:?}"
    );
    let err = kube.patch_network_status("ns", "p", "u", "[]").unwrap_err();
    assert!(matches!(err, ApiError::Unreachable(_)), "{err:?}");
}

#[test]
fn silent_server_times_out_as_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections (kernel backlog) but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let kc = write_kubeconfig(dir.path(), &url, None, TOKEN_USER);
    let kube = LiveKube::new(&Credentials::Kubeconfig(kc), Duration::from_millis(300))
        .unwrap()
        .with_retry_policy(fast_retries());

    let err = kube.get_pod("ns", "p").unwrap_err();
    assert!(matches!(err, ApiError::Unreachable(_)), "{err:?}");
    let errs = kube.get_nads(&[("n".into(), "a".into())]);
    assert!(matches!(errs[0], Err(ApiError::Unreachable(_))), "{errs:?}");
    drop(listener);
}

#[test]
fn kubeconfig_token_file_is_sent_as_bearer() {
    // A kubelet-projected token has no trailing newline; one written by a script usually has,
    // and client-go trims it, so both must work.
    for content in ["projected-sa-token", "projected-sa-token\n"] {
        let dir = tempfile::tempdir().unwrap();
        // Relative to the kubeconfig's directory, as kubectl resolves it.
        std::fs::write(dir.path().join("token"), content).unwrap();
        let server = FakeApi::start(Options::new(|_| Reply::json(200, pod_json("ns", "p"))));
        let kc = write_kubeconfig(dir.path(), &server.url(), None, "    tokenFile: token");
        let kube = LiveKube::new(&Credentials::Kubeconfig(kc), TIMEOUT).unwrap();

        kube.get_pod("ns", "p").unwrap();
        assert_eq!(
            server.requests()[0].header("authorization"),
            Some("Bearer projected-sa-token"),
            "{content:?}"
        );
    }
}

#[test]
fn unusable_token_is_a_credentials_error_not_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "two\nlines").unwrap();
    let server = FakeApi::start(Options::new(|_| Reply::json(200, pod_json("ns", "p"))));
    let kc = write_kubeconfig(dir.path(), &server.url(), None, "    tokenFile: token");
    let kube = LiveKube::new(&Credentials::Kubeconfig(kc), TIMEOUT).unwrap();

    let err = kube.get_pod("ns", "p").unwrap_err();
    assert!(
        matches!(err, ApiError::Other { status: 0, ref message } if message.contains("credentials")),
        "{err:?}"
    );
    assert!(
        !format!("{err}").contains("two"),
        "the token must not appear in errors: {err}"
    );
    assert!(server.requests().is_empty());
}

#[test]
fn construction_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.kubeconfig");
    let err = LiveKube::new(&Credentials::Kubeconfig(missing.clone()), TIMEOUT).unwrap_err();
    assert!(
        matches!(err, KubeError::Kubeconfig { ref path, .. } if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope.kubeconfig"), "{err}");
    // Printed with its causes (as a binary's `{:#}` does), the OS error is said once.
    let mut printed = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        printed = format!("{printed}: {c}");
        cause = c.source();
    }
    let os = std::io::Error::from_raw_os_error(2).to_string();
    assert_eq!(printed.matches(&os).count(), 1, "{printed}");

    let kc = write_kubeconfig(
        dir.path(),
        "https://127.0.0.1:1",
        Some("missing-ca.crt"),
        TOKEN_USER,
    );
    let err = LiveKube::new(&Credentials::Kubeconfig(kc), TIMEOUT).unwrap_err();
    let text = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(
        text.contains("certificate authority") && text.contains("missing-ca.crt"),
        "{text}"
    );

    let kc = write_kubeconfig(
        dir.path(),
        "https://127.0.0.1:1",
        None,
        "    tokenFile: absent-token",
    );
    let err = LiveKube::new(&Credentials::Kubeconfig(kc), TIMEOUT).unwrap_err();
    assert!(err.to_string().contains("absent-token"), "{err}");
}

/// A CA and a server certificate for 127.0.0.1 signed by it; returns (CA PEM, server config).
/// The server offers no ALPN protocol, so clients speak HTTP/1.1.
fn tls_material() -> (String, Arc<rustls::ServerConfig>) {
    tls_material_offering(&[])
}

/// Starts `opts` over TLS offering these ALPN protocols; returns the server and its CA (PEM).
fn start_tls(mut opts: Options, alpn: &[&[u8]]) -> (FakeApi, String) {
    let (ca_pem, server_cfg) = tls_material_offering(alpn);
    opts.tls = Some(server_cfg);
    (FakeApi::start(opts), ca_pem)
}

/// [`tls_material`] with a server that offers these ALPN protocols (kube-apiserver offers `h2`
/// and `http/1.1`).
fn tls_material_offering(alpn: &[&[u8]]) -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();

    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    let mut cfg = cfg;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (ca.as_ref().pem(), Arc::new(cfg))
}

/// Answers a pod GET, NAD GETs and a status PATCH, as the API server would for one thin ADD.
fn add_route(rec: &Recorded) -> Reply {
    if rec.path.contains("/network-attachment-definitions/") {
        nad_route(rec)
    } else {
        Reply::json(200, pod_json("ns", "p"))
    }
}

/// What one thin ADD with four networks asks: the pod, its four NADs at once, the status PATCH.
fn thin_add(kube: &LiveKube) {
    assert_eq!(kube.get_pod("ns", "p").unwrap().uid, "0c1f-uid");
    let refs: Vec<(String, String)> = (1..=4).map(|i| ("ns".into(), format!("n{i}"))).collect();
    assert!(kube.get_nads(&refs).iter().all(Result::is_ok));
    kube.patch_network_status("ns", "p", "0c1f-uid", "[]")
        .unwrap();
}

/// A TLS kubeconfig for `server` (whose CA is `ca_pem`) and the client built from it.
fn live_tls(dir: &Path, server: &FakeApi, ca_pem: &str) -> LiveKube {
    std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
    let kc = write_kubeconfig(dir, &server.url(), Some("ca.crt"), TOKEN_USER);
    LiveKube::new(&Credentials::Kubeconfig(kc), TIMEOUT).unwrap()
}

#[test]
fn over_tls_every_request_shares_one_http2_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca_pem) = start_tls(Options::new(add_route), &[b"h2", b"http/1.1"]);
    let kube = live_tls(dir.path(), &server, &ca_pem);

    thin_add(&kube);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 6, "{reqs:?}");
    assert!(
        reqs.iter()
            .all(|r| r.version == hyper::Version::HTTP_2 && r.conn == 0),
        "{:?}",
        reqs.iter().map(|r| (r.version, r.conn)).collect::<Vec<_>>()
    );
    assert_eq!(server.connections(), 1, "one TLS handshake for the call");
    // Credentials and headers still go with each request over HTTP/2.
    assert!(reqs.iter().all(|r| {
        r.header("authorization") == Some("Bearer static-token")
            && r.header("user-agent") == Some(plexus_kube::USER_AGENT)
    }));
}

#[test]
fn servers_without_h2_get_http1() {
    // A TLS server offering only http/1.1, and a plain-HTTP one (no h2c): HTTP/1.1, and the
    // parallel NAD GETs open connections of their own as before.
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca_pem) = start_tls(Options::new(add_route), &[b"http/1.1"]);
    thin_add(&live_tls(dir.path(), &tls, &ca_pem));
    let plain = FakeApi::start(Options::new(add_route));
    thin_add(&live(dir.path(), &plain));
    for server in [&tls, &plain] {
        let reqs = server.requests();
        assert_eq!(reqs.len(), 6, "{reqs:?}");
        assert!(reqs.iter().all(|r| r.version == hyper::Version::HTTP_11));
        assert!(server.connections() > 1, "{}", server.connections());
    }
}

#[test]
fn a_failed_http2_stream_is_retried_on_the_same_connection() {
    // The server's handler fails without an answer: over HTTP/2 that resets the one stream
    // (INTERNAL_ERROR, as Go's server does when a handler panics) and keeps the connection.
    let dir = tempfile::tempdir().unwrap();
    let (server, ca_pem) = start_tls(
        failing_first(1, |_| Reply::drop_connection(), add_route),
        &[b"h2", b"http/1.1"],
    );
    let kube = live_tls(dir.path(), &server, &ca_pem).with_retry_policy(fast_retries());
    assert_eq!(kube.get_pod("ns", "p").unwrap().uid, "0c1f-uid");
    assert_eq!(kube.retries(), 1);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.version == hyper::Version::HTTP_2));
    assert_eq!(server.connections(), 1);
}

#[test]
fn kubeconfig_certificate_authority_file_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, server_cfg) = tls_material();
    std::fs::write(dir.path().join("ca.crt"), ca_pem).unwrap();
    let mut opts = Options::new(|_| Reply::json(200, pod_json("ns", "p")));
    opts.tls = Some(server_cfg);
    let server = FakeApi::start(opts);

    let kc = write_kubeconfig(dir.path(), &server.url(), Some("ca.crt"), TOKEN_USER);
    let kube = LiveKube::new(&Credentials::Kubeconfig(kc), TIMEOUT).unwrap();
    assert_eq!(kube.get_pod("ns", "p").unwrap().uid, "0c1f-uid");

    // Without the CA the server is not trusted: a TLS failure is "unreachable".
    let other = tempfile::tempdir().unwrap();
    let kc = write_kubeconfig(other.path(), &server.url(), None, TOKEN_USER);
    let kube = LiveKube::new(&Credentials::Kubeconfig(kc), TIMEOUT).unwrap();
    let err = kube.get_pod("ns", "p").unwrap_err();
    assert!(matches!(err, ApiError::Unreachable(_)), "{err:?}");
    assert_eq!(
        server.requests().len(),
        1,
        "the untrusted attempt never reached HTTP"
    );
}

#[test]
fn detect_rules() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let incluster: &[(&str, &str)] = &[
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
    ];
    let path = PathBuf::from("/etc/cni/net.d/plexus.d/plexus.kubeconfig");

    assert_eq!(
        Credentials::detect_with(Some(&path), env(incluster)),
        Some(Credentials::Kubeconfig(path.clone()))
    );
    assert_eq!(
        Credentials::detect_with(None, env(incluster)),
        Some(Credentials::InCluster)
    );
    assert_eq!(
        Credentials::detect_with(Some(Path::new("")), env(incluster)),
        Some(Credentials::InCluster)
    );
    assert_eq!(
        Credentials::detect_with(None, env(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")])),
        None
    );
    assert_eq!(
        Credentials::detect_with(
            None,
            env(&[
                ("KUBERNETES_SERVICE_HOST", ""),
                ("KUBERNETES_SERVICE_PORT", "443")
            ])
        ),
        None
    );
    assert_eq!(Credentials::detect_with(None, env(&[])), None);
}

#[test]
fn an_idle_http2_connection_outlives_the_read_timeout() {
    // The daemon's connection carries watches that may be quiet for minutes: a read timeout on
    // its socket would cut them all, so over HTTP/2 only the request timeouts and pings apply.
    let dir = tempfile::tempdir().unwrap();
    let (server, ca_pem) = start_tls(Options::new(add_route), &[b"h2", b"http/1.1"]);
    std::fs::write(dir.path().join("ca.crt"), ca_pem).unwrap();
    let kc = write_kubeconfig(dir.path(), &server.url(), Some("ca.crt"), TOKEN_USER);
    let timeout = Duration::from_millis(300);
    // On a runtime that keeps running between calls, as the daemon's does (a thin plugin's
    // runtime sleeps between calls, and with it every timer).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let creds = Credentials::Kubeconfig(kc);
    let (client, url) = rt
        .block_on(plexus_kube::build_client(&creds, timeout))
        .unwrap();
    let kube = LiveKube::on_handle(rt.handle().clone(), client, url, timeout);
    kube.get_pod("ns", "p").unwrap();
    std::thread::sleep(timeout * 3);
    kube.patch_network_status("ns", "p", "0c1f-uid", "[]")
        .unwrap();
    assert_eq!(server.connections(), 1);
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.version == hyper::Version::HTTP_2 && r.conn == 0)
    );
}
