//! The CI slice of hack/soak.sh: 25 randomized fault runs of the real `plexus` (kills at random
//! steps and moments, failing delegates, API faults), each followed by containerd's DELs, and
//! not one leak. The seed is fixed so a failure replays with `plexus-soak --seed`.

use serde_json::Value;

#[test]
fn twenty_five_random_fault_runs_leak_nothing() {
    plexus_e2e::netns::require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("soak.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plexus-soak"))
        .args(["--runs", "25", "--seed", "8", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
        .unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}):\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(report["total"]["runs"], 25, "{stdout}");
    let kinds = report["byKind"].as_object().unwrap();
    let per_kind: u64 = kinds.values().map(|c| c["runs"].as_u64().unwrap()).sum();
    assert_eq!(per_kind, 25, "{stdout}");
    assert!(
        kinds.len() >= 5,
        "25 runs should cover several fault kinds: {stdout}"
    );
    assert_eq!(
        report["total"]["leaky"], 0,
        "leaks: {:#}\n{stdout}",
        report["leaks"]
    );
    assert!(out.status.success(), "{stdout}");
}
