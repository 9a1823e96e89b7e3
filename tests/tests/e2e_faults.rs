//! Faults end to end: the real `plexus` binary, real delegates, and a fake API server that
//! fails the way a sick one does. Transient API errors are retried inside the call's budget; a
//! delegate that hangs is cut off at the budget and rolled back; nothing is left behind and no
//! process keeps running.

use plexus_e2e::bed::{Bed, Sandbox, group_alive, wait_for};
use plexus_e2e::fakeapi::Fault;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Guards against hangs only: far above any budget used here.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A bed with two NADs in `blue`: `macvlan-a` and `bridge-b` (real delegates).
fn two_nad_bed() -> Bed {
    let bed = Bed::new();
    bed.nad(
        "blue",
        "macvlan-a",
        &bed.node.macvlan_config("macvlan-a", "10.79.1.0/24"),
    );
    bed.nad(
        "blue",
        "bridge-b",
        &bed.node.bridge_config("bridge-b", "10.79.2.0/24"),
    );
    bed
}

/// The pod's network-status names the cluster network and both NADs, in order.
fn assert_full_status(bed: &Bed, sb: &Sandbox) {
    let names: Vec<Value> = bed
        .status_of(&sb.namespace, &sb.pod)
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(
        names,
        [
            json!("cluster"),
            json!("blue/macvlan-a"),
            json!("blue/bridge-b")
        ]
    );
}

/// ADD with `fault` injected succeeds with the full network-status; then the sandbox is torn
/// down cleanly. Returns the bed for more checks.
fn add_survives(fault: Fault) -> (Bed, Sandbox) {
    let bed = two_nad_bed();
    let sb = bed.sandbox("blue", "p", Some("macvlan-a, bridge-b"));
    bed.api.clear_requests();
    bed.api.inject(fault);
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();
    assert_full_status(&bed, &sb);
    bed.teardown(&sb, &config);
    bed.assert_no_leaks(&sb.ns, &sb.cid);
    (bed, sb)
}

#[test]
fn two_500s_on_the_pod_get_are_retried() {
    let (bed, _) = add_survives(Fault::on("GET", "/pods/p").status(500).times(2));
    assert_eq!(bed.api.statuses("GET", "/pods/p"), [500, 500, 200]);
    // Every request, retries included, says who sent it: the build's version and commit.
    let want = format!(
        "plexus/{} ({})",
        env!("CARGO_PKG_VERSION"),
        plexus_cni::build::COMMIT
    );
    let requests = bed.api.requests();
    assert!(!requests.is_empty());
    for r in requests {
        assert_eq!(r.user_agent.as_deref(), Some(want.as_str()), "{r:?}");
    }
}

#[test]
fn a_dropped_connection_on_a_nad_get_is_retried() {
    let (bed, _) = add_survives(
        Fault::on("GET", "/network-attachment-definitions/bridge-b")
            .drop_connection()
            .once(),
    );
    assert_eq!(
        bed.api
            .statuses("GET", "/network-attachment-definitions/bridge-b"),
        [0, 200],
        "0 = dropped without an answer"
    );
    assert_eq!(
        bed.api
            .statuses("GET", "/network-attachment-definitions/macvlan-a"),
        [200],
        "the other NAD is not asked twice"
    );
}

#[test]
fn one_500_on_the_status_patch_is_retried() {
    let (bed, _) = add_survives(Fault::on("PATCH", "/pods/p/status").status(500).once());
    assert_eq!(bed.api.statuses("PATCH", "/pods/p/status"), [500, 200]);
}

#[test]
fn a_nad_get_that_times_out_is_retried() {
    // apiTimeoutSeconds bounds each attempt; the slow answer is abandoned and asked again.
    let bed = two_nad_bed();
    let sb = bed.sandbox("blue", "p", Some("macvlan-a, bridge-b"));
    bed.api.inject(
        Fault::on("GET", "/network-attachment-definitions/macvlan-a")
            .delay(Duration::from_secs(5))
            .once(),
    );
    let config = bed.config(json!({"apiTimeoutSeconds": 1}));
    bed.add(&sb, &config).assert_ok();
    assert_full_status(&bed, &sb);
    bed.teardown(&sb, &config);
    bed.assert_no_leaks(&sb.ns, &sb.cid);
}

#[test]
fn too_many_requests_waits_as_long_as_retry_after_says() {
    let (bed, _) = add_survives(Fault::on("GET", "/pods/p").too_many_requests(2).once());
    let gets: Vec<_> = bed
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/pods/p"))
        .collect();
    assert_eq!(
        gets.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    // The retry came no sooner than the server asked (the backoff alone is far shorter).
    assert!(
        gets[1].at_ms - gets[0].at_ms >= 2000,
        "retried after {} ms",
        gets[1].at_ms - gets[0].at_ms
    );
}

#[test]
fn persistent_500s_answer_try_again_later_within_the_budget() {
    let bed = two_nad_bed();
    let sb = bed.sandbox("blue", "p", Some("macvlan-a, bridge-b"));
    bed.api
        .inject(Fault::on("GET", "/pods/p").status(500).always());
    let t = Instant::now();
    let out = bed.add(&sb, &bed.config(json!({"callTimeoutSeconds": 10})));
    let msg = out.assert_error(11);
    assert!(
        msg.contains("blue/p") && msg.contains("Internal error occurred"),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_secs(10) + HANG_GUARD);
    let gets = bed.api.statuses("GET", "/pods/p");
    assert!(
        gets.len() > 1 && gets.iter().all(|s| *s == 500),
        "retried, and every answer was a 500: {gets:?}"
    );
    assert_eq!(bed.api.count("PATCH", ""), 0);
    bed.assert_no_leaks(&sb.ns, &sb.cid);
}

#[test]
fn an_api_server_slower_than_the_budget_answers_try_again_later() {
    let bed = two_nad_bed();
    let sb = bed.sandbox("blue", "p", Some("macvlan-a, bridge-b"));
    bed.api.inject(
        Fault::on("GET", "/network-attachment-definitions/")
            .delay(Duration::from_secs(120))
            .always(),
    );
    let t = Instant::now();
    let out = bed.add(
        &sb,
        &bed.config(json!({"callTimeoutSeconds": 5, "apiTimeoutSeconds": 60})),
    );
    let msg = out.assert_error(11);
    assert!(
        msg.contains("blue/macvlan-a") || msg.contains("blue/bridge-b"),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_secs(5) + HANG_GUARD);
    bed.assert_no_leaks(&sb.ns, &sb.cid);
}

#[test]
fn a_conflict_on_the_status_patch_is_not_retried() {
    let bed = two_nad_bed();
    let sb = bed.sandbox("blue", "p", Some("macvlan-a, bridge-b"));
    bed.api
        .inject(Fault::on("PATCH", "/pods/p/status").status(409).once());
    let out = bed.add(&sb, &bed.config(json!({})));
    out.assert_error(104);
    assert_eq!(bed.api.statuses("PATCH", "/pods/p/status"), [409]);
    bed.assert_no_leaks(&sb.ns, &sb.cid);
}

#[test]
fn a_hanging_delegate_fails_the_add_within_the_budget_and_leaves_nothing() {
    let bed = two_nad_bed();
    bed.recorder_nad("blue", "hang", json!({"sleep": {"ADD": 3600}}));
    let sb = bed.sandbox("blue", "p", Some("macvlan-a, hang"));
    let t = Instant::now();
    let out = bed.add(&sb, &bed.config(json!({"callTimeoutSeconds": 10})));
    let msg = out.assert_error(100);
    // Plugin, network and the time it was given.
    assert!(
        msg.contains("\"cni-recorder\"")
            && msg.contains("blue/hang")
            && msg.contains("net2")
            && msg.contains("callTimeoutSeconds")
            && msg.contains("s it was given"),
        "{msg}"
    );
    assert!(!msg.contains("rollback incomplete"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(10) + HANG_GUARD);
    let adds = bed.records_of("ADD", "hang");
    assert_eq!(adds.len(), 1);
    let pid = adds[0]["pid"].as_u64().expect("pid recorded");
    assert!(
        wait_for(Duration::from_secs(10), || !group_alive(pid)),
        "the hanging delegate still runs"
    );
    assert_eq!(bed.records_of("DEL", "hang").len(), 1, "rolled back");
    bed.assert_no_leaks(&sb.ns, &sb.cid);
}

#[test]
fn a_delegate_leaving_a_child_on_its_stdout_does_not_block() {
    let bed = two_nad_bed();
    bed.recorder_nad("blue", "leaver", json!({"background": {"ADD": 3600}}));
    let sb = bed.sandbox("blue", "p", Some("leaver"));
    let config = bed.config(json!({}));
    let t = Instant::now();
    bed.add(&sb, &config).assert_ok();
    // Without a budget this waited an hour; with one it would fail at the budget. It did neither.
    assert!(t.elapsed() < HANG_GUARD);
    let add = &bed.records_of("ADD", "leaver")[0];
    let (pid, child) = (add["pid"].as_u64().unwrap(), add["childPid"].as_u64());
    assert!(child.is_some(), "the recorder started its child: {add}");
    assert!(
        wait_for(Duration::from_secs(10), || !group_alive(pid)),
        "the leftover child was not killed"
    );
    bed.teardown(&sb, &config);
    bed.assert_no_leaks(&sb.ns, &sb.cid);
}

#[test]
fn status_of_a_hanging_cluster_network_is_capped() {
    let bed = Bed::new();
    let cluster = bed
        .recorder_cluster_with(json!({"sleep": {"STATUS": 3600}, "background": {"STATUS": 3600}}));
    let config = bed.node.plexus_config(
        cluster.to_str().unwrap(),
        None,
        json!({"callTimeoutSeconds": 100}),
    );
    let t = Instant::now();
    let msg = bed.verb("STATUS", &config).assert_error(50);
    assert!(msg.contains("STATUS") && msg.contains("5.0s"), "{msg}");
    assert!(t.elapsed() < HANG_GUARD);
    let pid = bed.records_of("STATUS", "rec-cluster")[0]["pid"]
        .as_u64()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || !group_alive(pid)),
        "the hanging STATUS still runs"
    );
}

/// The runtime SIGKILLs plexus while a delegate is half-way through its ADD and sends its DEL at
/// once. The delegate is let finish (within the watchdog's grace) and keeps the container lock
/// until it has, so the DEL waits and tears down a whole attachment instead of racing a
/// half-made one (hack/soak.sh found a veth left in the pod that way).
#[test]
fn a_del_after_plexus_is_killed_waits_for_the_delegate_it_interrupted() {
    let bed = two_nad_bed();
    bed.recorder_nad("blue", "slow", json!({"sleep": {"ADD": 1}}));
    let sb = bed.sandbox("blue", "p", Some("macvlan-a, slow"));
    let config = bed.config(json!({}));
    let plexus = bed.spawn_add(&sb, &config);
    assert!(
        wait_for(HANG_GUARD, || !bed.records_of("ADD", "slow").is_empty()),
        "the slow delegate never started"
    );
    plexus.kill();
    bed.teardown(&sb, &config);
    let names: Vec<String> = bed
        .records()
        .iter()
        .filter(|r| r["stdin"]["name"] == "slow")
        .map(|r| r["command"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        names.first().map(String::as_str),
        Some("ADD"),
        "records of the slow delegate: {names:?}"
    );
    assert_eq!(
        names.get(1).map(String::as_str),
        Some("ADD done"),
        "the interrupted delegate was killed half-way or the DEL did not wait for it: {names:?}"
    );
    assert!(names[2..].iter().all(|n| n == "DEL"), "{names:?}");
    bed.assert_no_leaks(&sb.ns, &sb.cid);
}

#[test]
fn sigkill_of_plexus_takes_its_delegates_with_it() {
    let bed = two_nad_bed();
    bed.recorder_nad("blue", "hang", json!({"sleep": {"ADD": 3600}}));
    let sb = bed.sandbox("blue", "p", Some("macvlan-a, hang"));
    let config = bed.config(json!({}));
    let plexus = bed.spawn_add(&sb, &config);
    assert!(
        wait_for(HANG_GUARD, || !bed.records_of("ADD", "hang").is_empty()),
        "the hanging delegate never started"
    );
    let pid = bed.records_of("ADD", "hang")[0]["pid"].as_u64().unwrap();
    assert!(
        group_alive(pid),
        "the delegate runs while plexus waits for it"
    );
    // What the runtime does when the kubelet's deadline passes.
    plexus.kill();
    assert!(
        wait_for(Duration::from_secs(10), || !group_alive(pid)),
        "the delegate's process group outlived plexus"
    );
    // The runtime's DELs then clean up what the killed ADD made.
    bed.teardown(&sb, &config);
    bed.assert_no_leaks(&sb.ns, &sb.cid);
}
