//! The fault suite (issue #8): the real `plexus`, real delegates and the fake API server. For
//! every step of an ADD — waiting on the API, the first delegate, each delegate, between
//! delegates, the status write — `plexus` is SIGKILLed there or the step fails; then containerd's
//! two DELs run and nothing may be left: no link in the pod netns, no host-local lease, no bridge
//! port, no file in `cniDir` (entry, lock, `.tmp-*`) and no delegate process. Then concurrency
//! (two ADDs of one container, DEL racing ADD) and API faults during the ADD.
//!
//! The pod, its networks and the `cni-gate` kill points are described in `plexus_e2e::faults`.

use plexus_e2e::bed::container_processes;
use plexus_e2e::faults::{Action, AddEnd, Fault, GatedNode, Step, run};
use std::time::{Duration, Instant};

/// Holds the ADD at `step`, applies `action`, runs containerd's DELs, asserts nothing is left.
fn stop_then_dels(step: Step, action: Action) {
    let node = GatedNode::new();
    let pod = node.pod("kill");
    pod.arm(step, action);
    let running = pod.spawn_add();
    let end = pod
        .stop_at(running, step, action)
        .unwrap_or_else(|e| panic!("{e}"));
    let prev = match (&end, action) {
        (AddEnd::Killed, Action::Kill) => None,
        (AddEnd::Failed(out), Action::Fail) => {
            // A failed step is a CNI error naming the pod, and the ADD rolled itself back.
            let msg = out.json()["msg"].as_str().unwrap_or_default().to_owned();
            assert!(
                msg.contains(&pod.name),
                "error does not name the pod: {out:#?}"
            );
            None
        }
        (other, _) => panic!("{step:?}/{action:?}: unexpected end of the ADD: {other:#?}"),
    };
    let dels = pod.containerd_dels(prev);
    for d in &dels {
        d.assert_ok();
    }
    pod.assert_no_leaks();
}

macro_rules! step_tests {
    ($($kill:ident, $fail:ident => $step:expr;)*) => {$(
        #[test]
        fn $kill() {
            stop_then_dels($step, Action::Kill);
        }
        #[test]
        fn $fail() {
            stop_then_dels($step, Action::Fail);
        }
    )*};
}

step_tests! {
    kill_waiting_on_the_pod_get, fail_on_the_pod_get => Step::PodGet;
    kill_after_the_cache_write, fail_first_delegate_before_it_made_anything => Step::ClusterStart;
    kill_during_the_cluster_delegate, fail_cluster_delegate_after_eth0 => Step::ClusterEnd;
    kill_during_the_macvlan_delegate, fail_macvlan_delegate_after_net1 => Step::MacvlanEnd;
    kill_between_delegates, fail_at_the_start_of_the_last_delegate => Step::Between;
    kill_during_the_last_delegate, fail_last_delegate_after_net2 => Step::BridgeEnd;
    kill_during_the_status_write, fail_the_status_write => Step::StatusWrite;
}

/// A complete ADD, then containerd's DELs: the baseline every fault is compared to.
#[test]
fn unfaulted_add_then_containerd_dels_leave_nothing() {
    let node = GatedNode::new();
    let pod = node.pod("base");
    let out = pod.spawn_add().wait();
    out.assert_ok();
    assert_eq!(
        node.bed.status_of(plexus_e2e::faults::NS, &pod.name).len(),
        3
    );
    for d in pod.containerd_dels(Some(&out.json())) {
        d.assert_ok();
    }
    pod.assert_no_leaks();
}

/// A killed ADD is retried by the kubelet (a new sandbox, so a new container ID in real life;
/// the same one when the runtime itself retries): the retry must succeed and the DELs of both
/// leave nothing.
#[test]
fn a_retried_add_after_a_kill_succeeds_and_leaves_nothing() {
    let node = GatedNode::new();
    let pod = node.pod("retry");
    node.arm("m1");
    let mut first = pod.spawn_add();
    assert!(
        node.wait_gate("m1", &pod.cid, &mut first).is_some(),
        "ADD never reached m1"
    );
    first.kill();
    node.release("m1", false);
    let out = pod.spawn_add().wait();
    out.assert_ok();
    assert_eq!(
        node.bed.status_of(plexus_e2e::faults::NS, &pod.name).len(),
        3
    );
    for d in pod.containerd_dels(Some(&out.json())) {
        d.assert_ok();
    }
    pod.assert_no_leaks();
}

/// Waits up to `wait` for `running` to exit by itself (a DEL that should be blocked).
fn exits_within(running: &mut plexus_e2e::bed::Running, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if running.finished() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Two ADDs of one container at once (a runtime that retries while the first still runs): the
/// second waits for the first, and the end state is one consistent set of interfaces whose
/// leases are all accounted for; the DELs then leave nothing.
#[test]
fn two_adds_of_one_container_at_once() {
    let node = GatedNode::new();
    let pod = node.pod("twoadd");
    node.arm("c1");
    let mut a = pod.spawn_add();
    assert!(
        node.wait_gate("c1", &pod.cid, &mut a).is_some(),
        "first ADD never reached c1"
    );
    let mut b = pod.spawn_add();
    // Give the second ADD every chance to barge in while the first holds the container.
    let b_early = exits_within(&mut b, Duration::from_millis(500));
    node.release("c1", false);
    let (a, b) = (a.wait(), b.wait());
    assert!(
        a.code == 0 || b.code == 0,
        "neither ADD succeeded: {a:#?} {b:#?}"
    );
    assert!(
        !(b_early && b.code == 0),
        "the second ADD succeeded while the first still held the container: {b:#?}"
    );
    let mut names = plexus_e2e::cni::link_names(&pod.netns);
    names.sort();
    assert_eq!(
        names,
        ["eth0", "lo", "net1", "net2"],
        "interfaces after two ADDs"
    );
    assert_eq!(
        node.bed.node.leases().len(),
        3,
        "one lease per network, none orphaned"
    );
    // The runtime keeps the last successful result.
    let last = if b.code == 0 { &b } else { &a };
    let eth0 = plexus_e2e::cni::ipv4_of(&pod.netns, "eth0");
    let returned = last.json()["ips"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        eth0,
        vec![returned],
        "eth0 does not hold the address the last ADD returned"
    );
    for d in pod.containerd_dels(Some(&last.json())) {
        d.assert_ok();
    }
    pod.assert_no_leaks();
}

/// A DEL arriving while an ADD of the same container is in a delegate waits for it, then
/// removes everything: a DEL that returned 0 must never be followed by the ADD leaving an entry
/// or interfaces behind.
#[test]
fn del_racing_add_waits_and_leaves_nothing() {
    let node = GatedNode::new();
    let pod = node.pod("race");
    node.arm("m1");
    let mut add = pod.spawn_add();
    assert!(
        node.wait_gate("m1", &pod.cid, &mut add).is_some(),
        "ADD never reached m1"
    );
    let mut del = pod.spawn_del();
    let del_early = exits_within(&mut del, Duration::from_millis(500));
    node.release("m1", false);
    let add = add.wait();
    let del = del.wait();
    del.assert_ok();
    // Nothing else runs: the runtime believes the pod is gone.
    let leaks = pod.leaks();
    assert!(
        leaks.is_empty(),
        "DEL returned 0 (before the ADD ended: {del_early}), then the ADD (code {}) left:\n  {}",
        add.code,
        leaks.join("\n  ")
    );
}

/// Defect 3 of issue #8: a retried ADD (the container has an entry) tears the previous attempt
/// down first; that must not give up the container's lock, or a DEL arriving during the rest of
/// the ADD runs in parallel, returns 0, and the ADD then writes its entry and leaks.
#[test]
fn del_during_a_retried_add_waits_for_it() {
    let node = GatedNode::new();
    let pod = node.pod("relock");
    node.arm("c1");
    let mut first = pod.spawn_add();
    assert!(
        node.wait_gate("c1", &pod.cid, &mut first).is_some(),
        "ADD never reached c1"
    );
    first.kill();
    node.release("c1", false);
    node.arm("b0");
    let mut retry = pod.spawn_add();
    assert!(
        node.wait_gate("b0", &pod.cid, &mut retry).is_some(),
        "retried ADD never reached b0"
    );
    let mut del = pod.spawn_del();
    let del_early = exits_within(&mut del, Duration::from_millis(500));
    node.release("b0", false);
    let retry = retry.wait();
    let del = del.wait();
    del.assert_ok();
    let leaks = pod.leaks();
    assert!(
        leaks.is_empty(),
        "DEL returned 0 (before the retried ADD ended: {del_early}), then the ADD (code {}) left:\n  {}",
        retry.code,
        leaks.join("\n  ")
    );
}

/// A killed ADD leaves its delegate to a runtime that no longer waits: no delegate process may
/// outlive the `plexus` that started it (they are killed with it).
#[test]
fn no_delegate_outlives_a_killed_plexus() {
    let node = GatedNode::new();
    let pod = node.pod("orphan");
    node.arm("b1");
    let mut add = pod.spawn_add();
    let gate = node
        .wait_gate("b1", &pod.cid, &mut add)
        .expect("ADD never reached b1");
    add.kill();
    // The watchdog lets a delegate finish for its grace (3 s), then kills it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !container_processes(&pod.cid).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        container_processes(&pod.cid),
        Vec::<String>::new(),
        "delegate (cni-gate pid {gate}) still running after plexus was killed"
    );
}

/// Asserts a run of `fault` left nothing and, for a transient fault, that the ADD succeeded
/// with the full network-status.
fn api_fault(fault: Fault, transient: bool) {
    let r = run(&fault);
    if let Fault::Api(label, _) = &fault
        && !label.contains("latency")
    {
        assert!(
            r.requests.iter().any(|q| q.status == 0 || q.status >= 400),
            "{label}: the fault never hit a request: {:#?}",
            r.requests
        );
    }
    assert!(
        r.leaks.is_empty(),
        "{fault:?} leaked:\n  {}",
        r.leaks.join("\n  ")
    );
    if transient {
        assert!(
            r.add.is_ok(),
            "{fault:?}: a transient API fault failed the ADD: {:#?}",
            r.add
        );
        let status = r.network_status.unwrap_or_default();
        assert_eq!(
            status.len(),
            3,
            "{fault:?}: network-status incomplete: {status:#?}"
        );
    }
}

/// Each transient fault on its own node, run in parallel threads to keep the suite short.
fn api_faults(faults: Vec<Fault>, transient: bool) {
    let handles: Vec<_> = faults
        .into_iter()
        .map(|f| std::thread::spawn(move || api_fault(f, transient)))
        .collect();
    let failures: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().err())
        .map(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "panic".into())
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} API faults failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn transient_api_faults_are_ridden_out_and_leave_nothing() {
    api_faults(plexus_e2e::faults::transient_api_faults(), true);
}

#[test]
fn permanent_api_errors_fail_the_add_and_leave_nothing() {
    api_faults(plexus_e2e::faults::permanent_api_faults(), false);
}

#[test]
fn api_latency_of_seconds_on_every_request_leaves_nothing() {
    api_fault(Fault::ApiLatency(Duration::from_secs(2)), true);
}

/// A small tmpfs mounted on a directory for the test's lifetime (unmounted on drop).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_owned())
    }

    /// Fills the filesystem until writes fail with ENOSPC; returns the filler's path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let p = self.0.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The disk holding `cniDir` fills up during an ADD (the cache update after the first delegate
/// fails with ENOSPC): the ADD fails and rolls back, no `.tmp-*` stays, and once space is back
/// containerd's DELs leave nothing.
#[test]
fn a_full_cni_dir_fails_the_add_and_leaves_nothing() {
    let node = GatedNode::new();
    let tmpfs = Tmpfs::mount(&node.bed.node.cni_dir, "1m");
    let pod = node.pod("enospc");
    node.arm("c1");
    let mut add = pod.spawn_add();
    assert!(
        node.wait_gate("c1", &pod.cid, &mut add).is_some(),
        "ADD never reached c1"
    );
    let filler = tmpfs.fill();
    node.release("c1", false);
    let out = add.wait();
    assert_ne!(out.code, 0, "ADD succeeded on a full cniDir: {out:#?}");
    let msg = out.json()["msg"].as_str().unwrap_or_default().to_owned();
    assert!(
        msg.contains("No space left"),
        "the error does not say why: {out:#?}"
    );
    std::fs::remove_file(filler).unwrap();
    for d in pod.containerd_dels(None) {
        d.assert_ok();
    }
    pod.assert_no_leaks();
}

/// A SIGKILL between the temp file's creation and its rename (the cache write after a delegate)
/// leaves `.tmp-<id>.<random>`; the soak hits it with kills at random moments. The container's
/// DELs hold its lock and must sweep it: waiting for GC's grace period leaves a file per killed
/// pod in `cniDir` meanwhile. The kill is made at a gate and the half-written file planted, since
/// the window between create and rename is microseconds wide.
#[test]
fn a_temp_file_left_by_a_killed_cache_write_is_removed_by_del() {
    let node = GatedNode::new();
    let pod = node.pod("tmpkill");
    node.arm("m1");
    let mut add = pod.spawn_add();
    assert!(
        node.wait_gate("m1", &pod.cid, &mut add).is_some(),
        "ADD never reached m1"
    );
    add.kill();
    let entry = std::fs::read(node.bed.node.cni_dir.join(format!("{}.json", pod.cid))).unwrap();
    let torn = node
        .bed
        .node
        .cni_dir
        .join(format!(".tmp-{}.Kq3xZb", pod.cid));
    std::fs::write(&torn, &entry[..entry.len() / 2]).unwrap();
    for d in pod.containerd_dels(None) {
        d.assert_ok();
    }
    pod.assert_no_leaks();
}
