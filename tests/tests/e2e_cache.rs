//! End-to-end tests of the cache and lock rules (docs/architecture.md): what `cniDir` holds after
//! the runtime's lifecycles, corrupt entries at ADD and DEL, GC's refusal to guess, and a full
//! disk. The real `plexus` binary, real delegates, real network namespaces.

use plexus_e2e::bed::Bed;
use plexus_e2e::fakeapi::{FakeApiOptions, FakeApiServer};
use serde_json::json;
use std::path::{Path, PathBuf};

#[test]
fn add_del_del_leaves_no_file_and_del_logs_its_completion() {
    let bed = Bed::new();
    bed.macvlan_nad("blue", "macvlan-a", "10.78.40.0/24");
    let sb = bed.sandbox("blue", "twodels", Some("macvlan-a"));
    let c = &sb.cid;
    let log = bed.node.root.path().join("plexus.log");
    let config = bed.config(json!({"logFile": log, "logToStderr": false, "logLevel": "debug"}));
    bed.add(&sb, &config).assert_ok();
    assert!(!bed.cni_files_of(c).is_empty(), "ADD records the container");
    // containerd: StopPodSandbox (with the netns), then RemovePodSandbox (CNI_NETNS empty).
    bed.teardown(&sb, &config);
    bed.assert_clean(&sb.ns);
    assert_eq!(
        bed.cni_files_of(c),
        Vec::<String>::new(),
        "cniDir keeps a file of a deleted pod"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let done: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("DEL done") && l.contains(c.as_str()))
        .collect();
    assert_eq!(done.len(), 2, "one completion line per DEL: {text}");
    assert!(done[0].contains("attachments=2"), "{}", done[0]);
}

#[test]
fn a_failed_add_then_the_runtimes_dels_leave_no_file() {
    let bed = Bed::new();
    let mut broken = bed.node.macvlan_config("broken", "10.78.41.0/24");
    broken["master"] = json!("pxnomaster0");
    bed.nad("blue", "broken", &broken);
    let sb = bed.sandbox("blue", "failed", Some("broken"));
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_error(100);
    assert_eq!(
        bed.cni_files_of(&sb.cid),
        Vec::<String>::new(),
        "a clean rollback leaves no file"
    );
    bed.teardown(&sb, &config);
    bed.assert_clean(&sb.ns);
    assert_eq!(bed.cni_files_of(&sb.cid), Vec::<String>::new());
}

/// Overwrites the container's entry and its previous generation (when there is one) with a
/// torn write.
fn tear_entry(bed: &Bed, cid: &str) {
    for suffix in ["json", "prev"] {
        let p = bed.node.cni_dir.join(format!("{cid}.{suffix}"));
        if suffix == "json" || p.exists() {
            std::fs::write(&p, b"{\"kind\":\"plexusCacheV1\",\"containerId\":\"").unwrap();
        }
    }
}

/// A kubeconfig for an API server that is down (its port closed).
fn unreachable_kubeconfig(dir: &Path) -> PathBuf {
    let gone = FakeApiServer::start(FakeApiOptions::default()).expect("fake API server");
    let path = gone.write_kubeconfig(dir).expect("kubeconfig");
    gone.stop();
    path
}

#[test]
fn a_corrupt_entry_fails_add_untouched_and_del_rebuilds_it_from_the_pod() {
    let bed = Bed::new();
    bed.macvlan_nad("blue", "macvlan-a", "10.78.42.0/24");
    let sb = bed.sandbox("blue", "torn", Some("macvlan-a"));
    let (c, ns) = (&sb.cid, &sb.ns);
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();
    assert_eq!(bed.node.leases().len(), 2);
    tear_entry(&bed, c);
    let torn = std::fs::read(bed.node.cni_dir.join(format!("{c}.json"))).unwrap();

    // A retried ADD must not overwrite what it cannot read.
    let msg = bed.add(&sb, &config).assert_error(102);
    assert!(
        msg.contains(c.as_str()) && msg.contains("corrupt") && msg.contains("DEL"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(bed.node.cni_dir.join(format!("{c}.json"))).unwrap(),
        torn
    );
    assert_eq!(
        plexus_e2e::cni::link_names(ns),
        vec!["eth0", "lo", "net1"],
        "nothing was touched"
    );
    assert_eq!(bed.node.leases().len(), 2);

    // DEL needs the pod to rebuild the entry: with the API server down it is "try again later".
    let down = bed
        .config(json!({"kubeconfig": unreachable_kubeconfig(&bed.node.root.path().join("down"))}));
    let msg = bed.del(&sb, &down).assert_error(11);
    assert!(msg.contains("blue/torn"), "{msg}");
    assert_eq!(bed.node.leases().len(), 2, "nothing torn down half-way");

    bed.api.clear_requests();
    bed.del(&sb, &config).assert_ok();
    assert_eq!(
        bed.api.count("GET", "/pods/torn"),
        1,
        "{:?}",
        bed.api.requests()
    );
    bed.assert_clean(ns);
    assert_eq!(bed.cni_files_of(c), Vec::<String>::new());
    bed.del_without_netns(&sb, &config).assert_ok();
    assert_eq!(bed.cni_files_of(c), Vec::<String>::new());
}

#[test]
fn gc_without_valid_attachments_is_code_7_and_touches_nothing() {
    let bed = Bed::new();
    bed.macvlan_nad("blue", "macvlan-a", "10.78.43.0/24");
    let sb = bed.sandbox("blue", "kept", Some("macvlan-a"));
    let config = bed.config(json!({}));
    bed.add(&sb, &config).assert_ok();
    let files = bed.cni_files_of(&sb.cid);
    let msg = bed
        .verb("GC", &bed.config(json!({"cniVersion": "1.1.0"})))
        .assert_error(7);
    assert!(msg.contains("cni.dev/valid-attachments"), "{msg}");
    assert_eq!(
        plexus_e2e::cni::link_names(&sb.ns),
        vec!["eth0", "lo", "net1"]
    );
    assert_eq!(bed.node.leases().len(), 2);
    assert_eq!(bed.cni_files_of(&sb.cid), files);
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

/// A tmpfs mounted on a directory of the test, unmounted on drop (also on panic).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Self(dir)
    }

    /// Writes zeros into `filler` until the filesystem is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
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

#[test]
fn a_full_disk_fails_add_before_any_delegate_and_leaves_no_file() {
    let bed = Bed::new();
    bed.macvlan_nad("blue", "macvlan-a", "10.78.44.0/24");
    let sb = bed.sandbox("blue", "full", Some("macvlan-a"));
    let disk = Tmpfs::mount(bed.node.root.path().join("fullcache"), "64k");
    disk.fill();
    let config = bed.config(json!({"cniDir": disk.0}));
    let msg = bed.add(&sb, &config).assert_error(102);
    assert!(
        msg.contains(&sb.cid) && msg.contains("cache write"),
        "{msg}"
    );
    let left: Vec<String> = std::fs::read_dir(&disk.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["filler"],
        "no lock, entry or temp file of the container"
    );
    bed.assert_clean(&sb.ns);
}

/// A delegate whose ADD records that it started (`<dir>/reached`) and then waits for
/// `<dir>/open` (at most a minute) before answering; its DEL succeeds at once.
const GATE_PLUGIN: &str = r#"#!/bin/sh
dir="$(dirname "$0")"
cat > /dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  : > "$dir/reached"
  i=0
  while [ ! -e "$dir/open" ]; do
    i=$((i + 1)); [ "$i" -gt 1200 ] && exit 1
    sleep 0.05
  done
  printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[]}' "$CNI_IFNAME" "$CNI_NETNS"
fi
exit 0
"#;

/// Waits (at most a minute) for `path` to exist.
fn wait_for(path: &Path) {
    for _ in 0..1200 {
        if path.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn a_del_arriving_during_a_retried_add_waits_for_it() {
    let bed = Bed::new();
    bed.install_script_plugin("pxgate", GATE_PLUGIN);
    let gate = bed.plugin_dir();
    bed.nad(
        "blue",
        "gated",
        &json!({"cniVersion": "1.0.0", "name": "gated", "type": "pxgate"}),
    );
    let sb = bed.sandbox("blue", "race", Some("gated"));
    let config = bed.config(json!({}));
    std::fs::write(gate.join("open"), b"").unwrap();
    bed.add(&sb, &config).assert_ok();
    std::fs::remove_file(gate.join("open")).unwrap();
    std::fs::remove_file(gate.join("reached")).unwrap();

    // The runtime retries the ADD (it lost our answer); the retry tears the first attempt down,
    // adds eth0 again and blocks in the gated delegate. Now the runtime gives up and DELs.
    std::thread::scope(|s| {
        let add = s.spawn(|| bed.add(&sb, &config));
        wait_for(&gate.join("reached"));
        let (tx, rx) = std::sync::mpsc::channel();
        let (bed, sb, config) = (&bed, &sb, &config);
        let del = s.spawn(move || {
            let out = bed.del(sb, config);
            let _ = tx.send(());
            out
        });
        let finished_early = rx
            .recv_timeout(std::time::Duration::from_millis(500))
            .is_ok();
        std::fs::write(gate.join("open"), b"").unwrap();
        add.join().unwrap().assert_ok();
        del.join().unwrap().assert_ok();
        assert!(
            !finished_early,
            "DEL ran while the retried ADD held the container"
        );
    });
    // The DEL came after the ADD, so nothing of the pod is left.
    bed.assert_clean(&sb.ns);
    assert_eq!(bed.cni_files_of(&sb.cid), Vec::<String>::new());
}
