//! End-to-end tests of what an operator sees of the real `plexus` binary (issue 14): the version,
//! loud configuration errors, logs (levels, rotation), event failures, static pods with
//! runtime-supplied annotations, and messages that name what to fix.

use plexus_cni::build;
use plexus_e2e::bed::{Bed, cid};
use plexus_e2e::cni::{link_names, plexus_bin};
use plexus_e2e::fakeapi::FakeApiOptions;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Generous bound for things that happen in the background (detached event sender, compressor).
const BACKGROUND: Duration = Duration::from_secs(15);

/// Polls `f` until it returns `Some` or [`BACKGROUND`] has passed.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + BACKGROUND;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `plexus <arg>` with a stdin that stays open (a terminal, or `sleep 10 | plexus ...`);
/// returns its stdout, or panics if it has not exited within a generous bound.
fn run_with_open_stdin(arg: &str) -> String {
    let mut child = Command::new(plexus_bin())
        .arg(arg)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take(); // held open until the end of this function
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`plexus {arg}` waited on stdin instead of answering");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn version_and_help_answer_without_reading_stdin() {
    let text = run_with_open_stdin("--version");
    assert!(
        text.starts_with(&format!(
            "plexus {} (commit {})",
            build::VERSION,
            build::COMMIT
        )),
        "{text}"
    );
    assert!(text.contains("1.1.0"), "{text}");
    let help = run_with_open_stdin("--help");
    assert!(
        help.contains("--version") && help.contains("CNI_COMMAND"),
        "{help}"
    );
}

#[test]
fn the_version_answer_and_every_log_line_name_the_build() {
    let bed = Bed::new();
    let out = bed.verb("VERSION", &json!({"cniVersion": "1.0.0"}));
    out.assert_ok();
    let v = out.json();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["plexus"],
        json!({"version": build::VERSION, "commit": build::COMMIT})
    );

    let sb = bed.sandbox("blue", "ver", None);
    let log = bed.node.root.path().join("plexus.log");
    let config = bed.config(json!({"logFile": log, "logLevel": "info"}));
    bed.add(&sb, &config).assert_ok();
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().expect("a log line");
    for want in [
        format!("version={}", build::VERSION),
        format!("commit={}", build::COMMIT),
        "command=ADD".to_owned(),
        format!("container={}", sb.cid),
        "pod=blue/ver".to_owned(),
    ] {
        assert!(first.contains(&want), "{want} missing from {first}");
    }
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[test]
fn a_misspelt_key_is_code_7_naming_both_and_nothing_runs() {
    let bed = Bed::new();
    let sb = bed.sandbox("blue", "typo", None);
    // `kubeConfig` for `kubeconfig`: without the check, plexus would run without credentials and
    // give the pod only eth0.
    let mut config = bed.config(json!({}));
    let kubeconfig = config
        .as_object_mut()
        .unwrap()
        .remove("kubeconfig")
        .unwrap();
    config["kubeConfig"] = kubeconfig;
    bed.api.clear_requests();
    let msg = bed.add(&sb, &config).assert_error(7);
    assert!(
        msg.contains("\"kubeConfig\"") && msg.contains("did you mean \"kubeconfig\"?"),
        "{msg}"
    );
    assert!(bed.api.requests().is_empty());
    bed.assert_clean(&sb.ns);
}

#[test]
fn keys_without_effect_and_unknown_keys_are_logged_at_warn() {
    let bed = Bed::new();
    let sb = bed.sandbox("blue", "keys", None);
    let config = bed.config(json!({
        "logLevel": "warning", "retryDeleteOnError": true, "vendorExtension": {"a": 1}
    }));
    let out = bed.add(&sb, &config);
    out.assert_ok();
    let warns: Vec<&str> = out.stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert!(
        warns
            .iter()
            .any(|l| l.contains("\"retryDeleteOnError\" has no effect")
                && l.contains("until every delegate's DEL has succeeded")),
        "{}",
        out.stderr
    );
    assert!(
        warns
            .iter()
            .any(|l| l.contains("\"vendorExtension\" is not a Plexus, Multus or CNI key")),
        "{}",
        out.stderr
    );
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[test]
fn runtime_annotations_asking_for_networks_without_credentials_fail_with_code_7() {
    let bed = Bed::new();
    let sb = bed.sandbox_without_pod("blue", "nocreds", "u1");
    let mut config = bed.config(json!({"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan-a"}}}));
    config.as_object_mut().unwrap().remove("kubeconfig");
    let msg = bed.add(&sb, &config).assert_error(7);
    assert!(
        msg.contains("blue/nocreds") && msg.contains("macvlan-a") && msg.contains("kubeconfig"),
        "{msg}"
    );
    bed.assert_clean(&sb.ns);
}

#[test]
fn a_static_pod_with_runtime_supplied_annotations_patches_its_mirror() {
    let bed = Bed::new();
    bed.macvlan_nad("blue", "macvlan-s", "10.78.61.0/24");
    // The API server holds the mirror pod, with a UID of its own.
    let mirror_uid = bed.pod_annotated(
        "blue",
        "static-web",
        json!({"kubernetes.io/config.mirror": "h1", "kubernetes.io/config.source": "file",
               "kubernetes.io/config.hash": "h1", "k8s.v1.cni.cncf.io/networks": "macvlan-s"}),
    );
    // The runtime has the static pod's own UID, from its manifest file.
    let sb = bed.sandbox_without_pod("blue", "static-web", "kubelet-static-uid");
    // What containerd passes for a static pod: the pod's annotations as the kubelet has them.
    let config = bed.config(json!({"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {
        "kubernetes.io/config.source": "file", "kubernetes.io/config.hash": "h1",
        "kubernetes.io/config.seen": "2026-11-29T10:00:00Z", "k8s.v1.cni.cncf.io/networks": "macvlan-s"
    }}}));
    bed.api.clear_requests();
    bed.add(&sb, &config).assert_ok();
    assert_eq!(link_names(&sb.ns), vec!["eth0", "lo", "net1"]);
    let status = bed.status_of("blue", "static-web");
    assert_eq!(status.len(), 2, "{status:?}");
    assert_eq!(status[1]["name"], "blue/macvlan-s");
    // One GET for the mirror's UID (static pods only), the NAD, the patch guarded by that UID.
    assert_eq!(bed.api.count("GET", "/pods/static-web"), 1);
    assert_eq!(bed.api.count("PATCH", "/pods/static-web/status"), 1);
    assert_eq!(bed.api.requests().len(), 3, "{:?}", bed.api.requests());
    let pod = bed.api.get_pod("blue", "static-web").unwrap();
    assert_eq!(pod["metadata"]["uid"], mirror_uid.as_str());
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);

    // A regular pod under the same name is not a mirror: UID mismatch, nothing left behind.
    bed.api.delete_pod("blue", "static-web");
    bed.pod("blue", "static-web", None);
    let sb = sb.with_cid(cid("static2"));
    bed.add(&sb, &config).assert_error(104);
    bed.assert_clean(&sb.ns);
}

#[test]
fn a_missing_kubeconfig_is_named_once_with_where_it_comes_from() {
    let bed = Bed::new();
    let sb = bed.sandbox_without_pod("blue", "nokc", "u1");
    let path = bed.node.root.path().join("plexus.d/plexus.kubeconfig");
    let config = bed.config(json!({"kubeconfig": path}));
    let msg = bed.add(&sb, &config).assert_error(7);
    let shown = path.display().to_string();
    assert_eq!(msg.matches(&shown).count(), 1, "{msg}");
    assert!(msg.contains(&format!("{shown:?} ")), "quoted once: {msg}");
    assert!(
        msg.contains("does not exist") && msg.contains("plexus-install"),
        "{msg}"
    );
    assert!(msg.starts_with("pod blue/nokc: "), "{msg}");
    bed.assert_clean(&sb.ns);
}

/// A bed whose API server speaks TLS and accepts only `token`.
fn tls_bed(token: &str) -> Bed {
    Bed::with_options(FakeApiOptions {
        tls: true,
        token: Some(token.into()),
        ..Default::default()
    })
}

#[test]
fn api_errors_name_the_server_and_the_timeout() {
    let bed = tls_bed("right-token");
    let sb = bed.sandbox("blue", "srv", None);
    let config = bed.config(json!({"apiTimeoutSeconds": 7}));
    // Refused credentials.
    std::fs::write(bed.kubeconfig.parent().unwrap().join("token"), "expired").unwrap();
    let msg = bed.add(&sb, &config).assert_error(101);
    assert!(
        msg.contains(&format!("API server {}", bed.api.url())) && msg.contains("timeout 7s"),
        "{msg}"
    );
    // No server at all.
    bed.api.stop();
    let sb = sb.with_cid(cid("srv2"));
    let msg = bed.add(&sb, &config).assert_error(11);
    assert!(
        msg.contains(&format!("API server {}", bed.api.url())) && msg.contains("timeout 7s"),
        "{msg}"
    );
    bed.assert_clean(&sb.ns);
}

#[test]
fn debug_logs_show_plexus_but_not_tls_and_http_internals() {
    let bed = tls_bed("t0k3n");
    let sb = bed.sandbox("blue", "dbg", None);
    let config = bed.config(json!({"logLevel": "debug"}));
    let out = bed.add(&sb, &config);
    out.assert_ok();
    assert!(out.stderr.contains("DEBUG"), "{}", out.stderr);
    for noisy in ["rustls", "hyper", "tower", "kube_client"] {
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains(&format!(" {noisy}")))
            .collect();
        assert!(
            lines.is_empty(),
            "{noisy} internals at logLevel debug: {lines:#?}"
        );
    }
    // Multus's `verbose` is less detailed than its `debug`.
    let verbose = bed.config(json!({"logLevel": "verbose"}));
    let out = bed.del(&sb, &verbose);
    out.assert_ok();
    assert!(
        out.stderr.contains("INFO") && !out.stderr.contains("DEBUG"),
        "{}",
        out.stderr
    );
    bed.assert_clean(&sb.ns);
}

/// Rotated files of `log`, by name.
fn rotated_files(log: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(log.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("plexus-") && n.contains(".log"))
        .collect();
    v.sort();
    v
}

#[test]
fn log_options_rotate_prune_and_compress_the_log_file() {
    let bed = Bed::new();
    let sb = bed.sandbox("blue", "rot", None);
    let dir = bed.node.root.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("plexus.log");
    std::fs::write(&log, "x".repeat(1024 * 1024)).unwrap();
    // Two earlier rotations: one older than maxAge, one recent.
    let now = SystemTime::now();
    let old = dir.join("plexus-2026-01-01T00-00-00.000.log.gz");
    let recent = dir.join("plexus-2026-01-02T00-00-00.000.log.gz");
    for (p, days) in [(&old, 10), (&recent, 1)] {
        let f = std::fs::File::create(p).unwrap();
        f.set_modified(now - Duration::from_secs(86_400 * days))
            .unwrap();
    }
    let config = bed.config(json!({
        "logFile": log, "logToStderr": false, "logLevel": "debug",
        "logOptions": {"maxSize": 1, "maxAge": 5, "maxBackups": 3, "compress": true}
    }));
    bed.add(&sb, &config).assert_ok();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.len() < 1024 * 1024 && text.contains("ADD done"),
        "{text}"
    );
    assert!(!old.exists(), "older than maxAge");
    assert!(recent.exists());
    // The rotated file is compressed in the background: wait for exactly one new .gz.
    let files = wait_for("the rotated log to be compressed", || {
        let f = rotated_files(&log);
        (f.len() == 2 && f.iter().all(|n| n.ends_with(".log.gz"))).then_some(f)
    });
    let newest = dir.join(&files[1]);
    assert_eq!(gunzip(&newest), "x".repeat(1024 * 1024));
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

/// The decompressed content of `p`, by `gzip -dc` (an independent reader of what plexus wrote).
fn gunzip(p: &Path) -> String {
    let out = Command::new("gzip").arg("-dc").arg(p).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn events_use_the_api_timeout_and_their_failures_are_logged() {
    let bed = Bed::new();
    let log = bed.node.root.path().join("plexus.log");
    let config = bed
        .config(json!({"events": true, "logFile": log, "logToStderr": false, "logLevel": "debug"}));
    let event_line = |pod: &str| {
        let pod = format!("for pod blue/{pod}");
        wait_for(&format!("the event sender's line {pod}"), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .find(|l| l.contains("event AddedInterface") && l.contains(&pod))
                .map(str::to_owned)
        })
    };

    // A slow API server: 0.8 s per answer, within apiTimeoutSeconds (10), which
    // docs/configuration.md says bounds events too. (The fake server stores the event before it
    // delays the answer, so only the sender knows whether it waited for it.)
    let sb = bed.sandbox("blue", "slow", None);
    bed.api.set_latency(Duration::from_millis(800));
    bed.add(&sb, &config).assert_ok();
    let line = event_line("slow");
    assert!(line.contains("posted the Normal event"), "{line}");
    bed.api.set_latency(Duration::ZERO);
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);

    // A refused event is logged with the pod, the event and the server.
    let sb = bed.sandbox("blue", "noev", None);
    bed.api.set_fail_next("POST", "/events", 403);
    bed.add(&sb, &config).assert_ok();
    let line = event_line("noev");
    assert!(
        line.contains("WARN")
            && line.contains("could not post the Normal event AddedInterface for pod blue/noev")
            && line.contains("access denied")
            && line.contains(&bed.api.url()),
        "{line}"
    );
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}
