//! End-to-end tests of thick mode: the real `plexusd` against the fake API server, the real
//! `plexus-shim` exec'd like a runtime, real delegates and network namespaces. What only thick
//! mode has: the API budget served from the watch caches, the daemon down or restarted around a
//! call, back-pressure, graceful shutdown, probes and metrics. (The scenarios both modes share
//! run in both modes in e2e_thin.rs.)

use plexus_e2e::bed::{Bed, Mode, wait_for};
use plexus_e2e::cni::{ipv4_of, link_names};
use plexus_e2e::daemon::DaemonOptions;
use plexus_e2e::fakeapi::FakeApiOptions;
use serde_json::json;
use std::time::{Duration, Instant};

/// Generous bound for "fails fast": far below any API or daemon timeout the shim could have
/// waited on (it is a hang guard, not a timing assertion).
const FAST: Duration = Duration::from_secs(5);

#[test]
fn add_costs_one_patch_and_del_nothing_whatever_the_networks() {
    let bed = Bed::in_mode(Mode::Thick);
    let n = &bed.node;
    bed.nad("blue", "mv-a", &n.macvlan_config("mv-a", "10.78.20.0/24"));
    bed.nad("blue", "br-a", &n.bridge_config("br-a", "10.79.20.0/24"));
    let sb = bed.sandbox("blue", "budget", Some("mv-a, br-a"));
    let config = bed.config(json!({}));
    bed.api.clear_requests();
    bed.add(&sb, &config).assert_ok();
    assert_eq!(link_names(&sb.ns), vec!["eth0", "lo", "net1", "net2"]);
    let reqs = bed.cni_requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("PATCH", "/api/v1/namespaces/blue/pods/budget/status")
    );
    assert_eq!(bed.status_of("blue", "budget").len(), 3);
    // Its answer is asked for as the pod's metadata only (the fake answers so, as the real
    // server does: fakeapi.rs): the API server need not encode, nor the node download, the
    // spec and status on every ADD.
    let accept = reqs[0].accept.as_deref().unwrap_or_default();
    assert!(accept.contains("as=PartialObjectMetadata"), "{accept}");

    bed.api.clear_requests();
    bed.teardown(&sb, &config);
    assert!(bed.cni_requests().is_empty(), "{:?}", bed.cni_requests());
    bed.assert_clean(&sb.ns);

    // The reads were cache hits: one pod and two NADs (DEL reads nothing).
    let (_, metrics) = bed.daemon().health_get("/metrics").unwrap();
    assert!(
        metrics.contains("plexusd_cache_reads_total{result=\"hit\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plexusd_cache_reads_total{result=\"miss\"} 0"),
        "{metrics}"
    );
    // The daemon's log starts with the build, so a line can be tied to the image that wrote it.
    let log = bed.daemon().log_text();
    let first = log.lines().next().unwrap_or_default();
    let build = plexus_cni::build::long_version();
    assert!(
        first.contains(&format!("plexusd {build} starting")),
        "{log}"
    );
}

/// The daemon lists and watches its node's pods as metadata only (`PartialObjectMetadata`): the
/// engine reads UID and annotations, and a pod's spec and status are most of its size, in every
/// list and in every event (one per status PATCH).
#[test]
fn pods_are_listed_and_watched_as_metadata_only() {
    let bed = Bed::in_mode(Mode::Thick);
    let pod_reads: Vec<_> = bed
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v1/pods")
        .collect();
    assert!(
        pod_reads.iter().any(|r| r.param("watch").is_some())
            && pod_reads.iter().any(|r| r.param("watch").is_none()),
        "a list and a watch: {pod_reads:?}"
    );
    for r in &pod_reads {
        let accept = r.accept.as_deref().unwrap_or_default();
        assert!(accept.contains("as=PartialObjectMetadata"), "{r:?}");
        assert_eq!(
            r.param("fieldSelector").as_deref(),
            Some("spec.nodeName=node-1"),
            "{r:?}"
        );
    }
}

#[test]
fn pod_missing_from_the_cache_costs_exactly_one_get() {
    let bed = Bed::in_mode(Mode::Thick);
    // Bound to another node, so the daemon's pod watch (spec.nodeName=node-1) never delivers it:
    // the same path as a pod whose watch event has not arrived when its ADD does.
    let pod = bed.api.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "fresh", "namespace": "blue"},
        "spec": {"nodeName": "node-2"}
    }));
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
    let sb = bed.sandbox_without_pod("blue", "fresh", &uid);
    let config = bed.config(json!({}));
    bed.api.clear_requests();
    bed.add(&sb, &config).assert_ok();
    assert_eq!(bed.api.count("GET", "/pods/fresh"), 1);
    assert_eq!(bed.api.count("PATCH", "/pods/fresh/status"), 1);
    assert_eq!(bed.cni_requests().len(), 2, "{:?}", bed.cni_requests());
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[test]
fn a_changed_nad_is_seen_by_the_next_pod() {
    let bed = Bed::in_mode(Mode::Thick);
    bed.nad(
        "blue",
        "moving",
        &bed.node.macvlan_config("moving", "10.78.21.0/24"),
    );
    let config = bed.config(json!({}));
    let first = bed.sandbox("blue", "before", Some("moving"));
    bed.add(&first, &config).assert_ok();
    assert!(ipv4_of(&first.ns, "net1")[0].starts_with("10.78.21."));

    let changed = bed
        .api
        .patch_nad(
            "blue",
            "moving",
            &json!({"spec": {"config": bed.node.macvlan_config("moving", "10.78.22.0/24").to_string()}}),
        )
        .unwrap();
    bed.synced("nads", &changed);
    let second = bed.sandbox("blue", "after", Some("moving"));
    bed.api.clear_requests();
    bed.add(&second, &config).assert_ok();
    assert!(
        ipv4_of(&second.ns, "net1")[0].starts_with("10.78.22."),
        "{:?}",
        ipv4_of(&second.ns, "net1")
    );
    assert_eq!(bed.cni_requests().len(), 1, "{:?}", bed.cni_requests());
    bed.teardown(&first, &config);
    bed.teardown(&second, &config);
    bed.assert_clean(&first.ns);
    bed.assert_clean(&second.ns);
}

#[test]
fn nads_outside_the_watched_namespaces_cost_one_get_each() {
    let bed = Bed::with_mode(
        Mode::Thick,
        FakeApiOptions::default(),
        DaemonOptions {
            nad_namespaces: vec!["blue".to_owned()],
            ..DaemonOptions::default()
        },
    );
    let n = &bed.node;
    bed.api.create_nad(
        "other",
        "mv-o",
        Some(&n.macvlan_config("mv-o", "10.78.25.0/24").to_string()),
    );
    bed.nad("blue", "mv-w", &n.macvlan_config("mv-w", "10.78.24.0/24"));
    let sb = bed.sandbox("blue", "scoped", Some("mv-w, other/mv-o"));
    let config = bed.config(json!({}));
    bed.api.clear_requests();
    bed.add(&sb, &config).assert_ok();
    assert_eq!(link_names(&sb.ns), vec!["eth0", "lo", "net1", "net2"]);
    assert_eq!(
        bed.api.count(
            "GET",
            "/namespaces/other/network-attachment-definitions/mv-o"
        ),
        1
    );
    assert_eq!(
        bed.api
            .count("GET", "/namespaces/blue/network-attachment-definitions/"),
        0
    );
    assert_eq!(bed.cni_requests().len(), 2, "{:?}", bed.cni_requests());
    assert_eq!(
        bed.daemon().status().unwrap()["caches"]["nads"]["objects"],
        1
    );
    bed.teardown(&sb, &config);
    bed.assert_clean(&sb.ns);
}

/// The daemon's connection to the API server: over TLS it negotiates HTTP/2, and one connection
/// carries its lists, its long-lived watches and every status PATCH, so an ADD pays no TCP or
/// TLS handshake however many pods come (kube 5's own client offers only HTTP/1.1: a connection
/// per watch, and a PATCH on a pooled or new one).
#[test]
fn over_tls_watches_and_status_patches_share_one_http2_connection() {
    let bed = Bed::over_tls(Mode::Thick);
    bed.nad(
        "blue",
        "mv-h",
        &bed.node.macvlan_config("mv-h", "10.78.28.0/24"),
    );
    let config = bed.config(json!({}));
    let synced = bed.api.connections();
    assert_eq!((synced.accepted, synced.handshakes), (1, 1));
    let pods: Vec<_> = (0..4)
        .map(|i| bed.sandbox("blue", &format!("warm-{i}"), Some("mv-h")))
        .collect();
    for sb in &pods[..2] {
        bed.add(sb, &config).assert_ok();
    }
    // Two at once: concurrent PATCHes are streams of the same connection.
    let running: Vec<_> = pods[2..]
        .iter()
        .map(|sb| bed.spawn_add(sb, &config))
        .collect();
    for r in running {
        r.wait().assert_ok();
    }
    // A NAD created now still reaches the cache: the watches are alive on that connection.
    bed.nad(
        "blue",
        "mv-late",
        &bed.node.macvlan_config("mv-late", "10.78.29.0/24"),
    );

    let reqs = bed.api.requests();
    let patches = reqs.iter().filter(|r| r.method == "PATCH").count();
    assert_eq!(patches, 4, "{reqs:?}");
    assert!(reqs.iter().any(|r| r.param("watch").is_some()), "{reqs:?}");
    assert!(
        reqs.iter()
            .all(|r| r.http_version == "HTTP/2.0" && r.connection == reqs[0].connection),
        "{reqs:?}"
    );
    assert_eq!(
        bed.api.connections(),
        synced,
        "no TCP or TLS handshake for any ADD"
    );
    for sb in &pods {
        bed.teardown(sb, &config);
    }
    for sb in &pods {
        bed.assert_clean(&sb.ns);
    }
}

/// deploy/thick's `--chroot-dir`: every delegate (and the IPAM plugin nested in it) is started
/// chrooted into the given root by the engine thread that spawns it. Chrooted into `/` here, so
/// the same real delegates attach and tear down; the unit tests of `plexus_engine::exec::chroot`
/// show that a child really is confined to the root while no other thread ever sees it.
#[test]
fn delegates_run_chrooted_into_the_given_root() {
    let bed = Bed::with_mode(
        Mode::Thick,
        FakeApiOptions::default(),
        DaemonOptions {
            chroot_dir: Some("/".into()),
            ..DaemonOptions::default()
        },
    );
    bed.nad(
        "blue",
        "mv-c",
        &bed.node.macvlan_config("mv-c", "10.78.27.0/24"),
    );
    let sb = bed.sandbox("blue", "chrooted", Some("mv-c"));
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();
    assert_eq!(link_names(&sb.ns), vec!["eth0", "lo", "net1"]);
    assert!(ipv4_of(&sb.ns, "net1")[0].starts_with("10.78.27."));
    bed.teardown(&sb, &config);
    bed.assert_clean(&sb.ns);
}

#[test]
fn daemon_down_add_fails_fast_with_code_11_and_status_answers_50() {
    let mut bed = Bed::in_mode(Mode::Thick);
    let sb = bed.sandbox("blue", "nodaemon", None);
    let config = bed.config(json!({}));
    bed.daemon_mut().kill();
    bed.api.clear_requests();
    let t = Instant::now();
    let out = bed.add(&sb, &config);
    assert!(t.elapsed() < FAST, "the shim waited {:?}", t.elapsed());
    let msg = out.assert_error(11);
    assert!(
        msg.contains("blue/nodaemon") && msg.contains("plexusd"),
        "{msg}"
    );
    assert!(bed.api.requests().is_empty(), "{:?}", bed.api.requests());
    bed.assert_clean(&sb.ns);

    let status = bed.verb("STATUS", &config);
    let msg = status.assert_error(50);
    assert!(msg.contains("plexusd"), "{msg}");
    // VERSION never needs the daemon.
    bed.verb("VERSION", &config).assert_ok();
}

#[test]
fn daemon_down_del_runs_locally_from_the_cache() {
    let mut bed = Bed::in_mode(Mode::Thick);
    bed.nad(
        "blue",
        "mv-b",
        &bed.node.macvlan_config("mv-b", "10.78.23.0/24"),
    );
    let sb = bed.sandbox("blue", "orphan", Some("mv-b"));
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();
    assert_eq!(link_names(&sb.ns), vec!["eth0", "lo", "net1"]);
    bed.daemon_mut().kill();
    bed.api.clear_requests();
    bed.teardown(&sb, &config);
    assert!(bed.api.requests().is_empty(), "{:?}", bed.api.requests());
    bed.assert_clean(&sb.ns);
}

#[test]
fn daemon_killed_mid_add_loses_nothing() {
    let mut bed = Bed::in_mode(Mode::Thick);
    bed.recorder_nad("blue", "slow", json!({"sleep": {"ADD": 30}}));
    let sb = bed.sandbox("blue", "midadd", Some("slow"));
    let config = bed.config(json!({}));
    let running = bed.spawn_add(&sb, &config);
    assert!(
        wait_for(Duration::from_secs(20), || !bed
            .records_of("ADD", "slow")
            .is_empty()),
        "the slow delegate never started"
    );
    let t = Instant::now();
    bed.daemon_mut().kill();
    let out = running.wait();
    assert!(t.elapsed() < FAST, "the shim waited {:?}", t.elapsed());
    out.assert_error(11);
    // The runtime tears the sandbox down while the daemon restarts: the shim does it locally,
    // from what the daemon had cached before it died (the delegate watchdog killed the slow
    // delegate when the daemon died).
    bed.teardown(&sb, &config);
    bed.assert_no_leaks(&sb.ns, &sb.cid);
    // The restarted daemon serves the runtime's retry of the ADD.
    bed.daemon_mut().restart().unwrap();
    let retry = bed.sandbox("blue", "retried", None);
    bed.add(&retry, &config).assert_ok();
    bed.teardown(&retry, &config);
    bed.assert_clean(&retry.ns);
}

#[test]
fn full_queue_answers_code_11_at_once() {
    let bed = Bed::with_mode(
        Mode::Thick,
        FakeApiOptions::default(),
        DaemonOptions {
            max_inflight: 1,
            queue: 0,
            ..DaemonOptions::default()
        },
    );
    bed.recorder_nad("blue", "slow", json!({"sleep": {"ADD": 3}}));
    let busy = bed.sandbox("blue", "busy", Some("slow"));
    let config = bed.config(json!({}));
    let running = bed.spawn_add(&busy, &config);
    assert!(
        wait_for(Duration::from_secs(20), || !bed
            .records_of("ADD", "slow")
            .is_empty()),
        "the slow delegate never started"
    );
    let turned_away = bed.sandbox("blue", "turned-away", None);
    let t = Instant::now();
    let out = bed.add(&turned_away, &config);
    assert!(t.elapsed() < FAST, "the shim waited {:?}", t.elapsed());
    let msg = out.assert_error(11);
    assert!(
        msg.contains("busy") && msg.contains("blue/turned-away"),
        "{msg}"
    );
    // Nothing of its own (the node-wide checks wait until the busy pod is gone).
    assert_eq!(link_names(&turned_away.ns), vec!["lo"]);
    assert!(bed.cni_files_of(&turned_away.cid).is_empty());
    running.wait().assert_ok();
    let (_, metrics) = bed.daemon().health_get("/metrics").unwrap();
    assert!(
        metrics.contains("plexusd_errors_total{code=\"11\"} 1"),
        "{metrics}"
    );
    bed.teardown(&busy, &config);
    bed.assert_clean(&busy.ns);
    bed.assert_clean(&turned_away.ns);
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_refuses_new_ones() {
    let mut bed = Bed::in_mode(Mode::Thick);
    bed.recorder_nad("blue", "slow", json!({"sleep": {"ADD": 2}}));
    let sb = bed.sandbox("blue", "draining", Some("slow"));
    let config = bed.config(json!({}));
    let conf_file = bed.cluster_file.clone();
    let running = bed.spawn_add(&sb, &config);
    assert!(
        wait_for(Duration::from_secs(20), || !bed
            .records_of("ADD", "slow")
            .is_empty()),
        "the slow delegate never started"
    );
    let socket = bed.daemon().socket.clone();
    let status = bed.daemon_mut().terminate().expect("plexusd was running");
    assert!(status.success(), "{status:?}");
    running.wait().assert_ok();
    assert!(!socket.exists(), "the socket is removed on shutdown");
    assert!(conf_file.exists(), "the CNI config stays");
    // New calls now get the daemon-down answers; the finished pod tears down locally.
    let late = bed.sandbox("blue", "late", None);
    bed.add(&late, &config).assert_error(11);
    bed.teardown(&sb, &config);
    bed.assert_clean(&sb.ns);
}

#[test]
fn probes_metrics_and_status() {
    let bed = Bed::in_mode(Mode::Thick);
    let d = bed.daemon();
    assert_eq!(d.health_get("/healthz").unwrap().0, 200);
    assert_eq!(d.health_get("/readyz").unwrap().0, 200);
    let sb = bed.sandbox("blue", "seen", None);
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();
    let status = d.status().unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(status["caches"]["node"], "node-1");
    assert_eq!(status["caches"]["pods"]["objects"], 1);
    let (code, metrics) = d.health_get("/metrics").unwrap();
    assert_eq!(code, 200);
    for needle in [
        "plexusd_request_duration_seconds_count{verb=\"ADD\"} 1",
        "plexusd_delegate_duration_seconds_count{type=\"bridge\",verb=\"ADD\"} 1",
        "plexusd_api_requests_total{verb=\"patch_status\",code=\"200\"} 1",
        "plexusd_api_wait_seconds_count{verb=\"patch_status\"} 1",
        "plexusd_cache_objects{cache=\"pods\"} 1",
        "plexusd_queue_depth 0",
        "plexusd_ready 1",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    // The PATCH's wait is part of the request's time, and no GET was waited on (cache hits).
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
    };
    let patch = value("plexusd_api_wait_seconds_sum{verb=\"patch_status\"}");
    let request = value("plexusd_request_duration_seconds_sum{verb=\"ADD\"}");
    assert!(
        patch > 0.0 && patch < request,
        "patch {patch} s, request {request} s"
    );
    assert!(
        !metrics.contains("plexusd_api_wait_seconds_count{verb=\"get_"),
        "{metrics}"
    );
    // Every log line of the request names the pod and the container.
    let log = d.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&sb.cid)).collect();
    assert!(!lines.is_empty(), "{log}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("JSON log line");
        assert_eq!(v["span"]["pod"], "blue/seen", "{l}");
        assert_eq!(v["span"]["ifname"], "eth0", "{l}");
    }
    bed.teardown(&sb, &config);
    bed.assert_clean(&sb.ns);
}

#[test]
fn only_root_may_use_the_daemon_socket() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let bed = Bed::in_mode(Mode::Thick);
    let socket = bed.daemon().socket.clone();
    let dir = socket.parent().unwrap().to_owned();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&socket), 0o600);
    let config = bed.config(json!({}));
    bed.verb("STATUS", &config).assert_ok();

    // Open the file permissions so that only the peer-credential check stands in the way.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    // The build tree may sit where nobody cannot reach (a 0700 clone directory): run a copy.
    let copy_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(copy_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shim_bin = copy_dir.path().join("plexus-shim");
    std::fs::copy(plexus_e2e::cni::bin_path("plexus-shim"), &shim_bin).unwrap();
    let mut shim = std::process::Command::new(&shim_bin);
    shim.env_clear()
        .env("CNI_COMMAND", "STATUS")
        .env("CNI_PATH", &bed.cni_path)
        .uid(65534)
        .gid(65534)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = shim.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    let out = plexus_e2e::cni::Outcome::from(child.wait_with_output().unwrap());
    // Connected, then dropped without an answer: the daemon served nobody.
    let msg = out.assert_error(50);
    assert!(msg.contains("no answer"), "{msg}");
    assert!(
        bed.daemon().log_text().contains("non-root peer"),
        "{}",
        bed.daemon().log_text()
    );
}
