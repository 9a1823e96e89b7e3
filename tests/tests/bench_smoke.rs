//! Keeps hack/bench.sh from rotting: runs the bench driver with 2 samples and checks that it
//! measured what it claims (numbers are not judged: benchmarks never fail CI on a figure).

use serde_json::Value;

#[test]
fn bench_driver_runs_and_reports_every_figure() {
    plexus_e2e::netns::require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plexus-bench"))
        .args([
            "--samples",
            "2",
            "--networks",
            "0,1",
            "--pods",
            "4",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| networks | API |"), "{stdout}");
    assert!(stdout.contains("### Throughput"), "{stdout}");

    let raw: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let scenarios = raw["scenarios"].as_array().unwrap();
    // 2 network counts × (http 0 ms, http 10 ms, https 0 ms).
    assert_eq!(scenarios.len(), 6);
    for s in scenarios {
        let n = s["networks"].as_u64().unwrap() as usize;
        for key in ["add", "check", "del", "base_add", "base_check", "base_del"] {
            assert_eq!(
                s["samples"][key].as_array().unwrap().len(),
                2,
                "{key} in {s}"
            );
        }
        // The API budget the bench reports: 1 pod GET + N NAD GETs + 1 PATCH; none on DEL.
        assert_eq!(
            s["api_requests_add"].as_u64().unwrap() as usize,
            n + 2,
            "{s}"
        );
        assert_eq!(s["api_requests_del"], 0);
        assert!(s["rss_kib_add"].as_u64().unwrap() > 0);
    }
    assert_eq!(
        raw["throughput"]["per_pod_add_ms"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert!(raw["binary_bytes"].as_u64().unwrap() > 0);
}
