//! Keeps hack/bench.sh from rotting: runs the bench driver with 2 samples in both modes and checks
//! that it measured what it claims (numbers are not judged: benchmarks never fail CI on a figure;
//! API request counts are behaviour, not timing, and are checked).

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
            "--rounds",
            "2",
            // The test runs next to others: the machine never goes idle.
            "--settle",
            "0",
            "--memory",
            "20:5,40:10",
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
    for heading in [
        "| mode | networks | API |",
        "### Throughput",
        "### plexusd memory",
        "### Startup and size",
    ] {
        assert!(stdout.contains(heading), "{heading}: {stdout}");
    }

    let raw: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let scenarios = raw["scenarios"].as_array().unwrap();
    // 2 network counts × 2 modes × (http 0 ms, http 10 ms, https 0 ms).
    assert_eq!(scenarios.len(), 12);
    for s in scenarios {
        let n = s["networks"].as_u64().unwrap() as usize;
        for key in ["add", "check", "del", "base_add", "base_check", "base_del"] {
            assert_eq!(
                s["samples"][key].as_array().unwrap().len(),
                2,
                "{key} in {s}"
            );
        }
        // The API budget the bench reports. Thin: 1 pod GET + N NAD GETs + 1 PATCH. Thick: the
        // PATCH only, pods and NADs coming from the daemon's caches. None on DEL.
        let want = match s["mode"].as_str().unwrap() {
            "thin" => n + 2,
            "thick" => 1,
            other => panic!("mode {other}"),
        };
        assert_eq!(
            s["api_requests_add"].as_u64().unwrap() as usize,
            want,
            "{s}"
        );
        assert_eq!(s["api_requests_del"], 0);
        assert!(s["rss_kib_add"].as_u64().unwrap() > 0);
        assert_eq!(
            s["daemon_peak_rss_kib"].as_u64().is_some(),
            s["mode"] == "thick",
            "{s}"
        );
        // Thick: plexusd's own time per ADD from its metrics, with the PATCH's wait inside it.
        if s["mode"] == "thick" {
            let own = s["daemon_own_ms_add"].as_f64().unwrap();
            let api = s["daemon_api_ms_add"].as_f64().unwrap();
            assert!(api > 0.0 && api < own, "{s}");
        } else {
            assert!(s["daemon_own_ms_add"].is_null(), "{s}");
        }
    }
    let tps = raw["throughput"].as_array().unwrap();
    let runs: Vec<(&str, u64)> = tps
        .iter()
        .map(|t| (t["what"].as_str().unwrap(), t["round"].as_u64().unwrap()))
        .collect();
    // Two rounds, the second in the reverse order.
    assert_eq!(
        runs,
        [
            ("thin", 0),
            ("thick", 0),
            ("bare", 0),
            ("bare", 1),
            ("thick", 1),
            ("thin", 1)
        ]
    );
    for t in tps {
        assert_eq!(t["per_pod_add_ms"].as_array().unwrap().len(), 4, "{t}");
        assert_eq!(t["per_pod_del_ms"].as_array().unwrap().len(), 4, "{t}");
        // Four ADDs exec at least eight processes: the machine was busy for some ticks.
        assert!(t["add_cpu_ms_per_pod"].as_f64().unwrap() > 0.0, "{t}");
        // plexusd's CPU is read for thick runs only (over four ADDs it may round to 0 ticks).
        assert_eq!(
            t["add_daemon_cpu_ms_per_pod"].as_f64().is_some(),
            t["what"] == "thick",
            "{t}"
        );
    }
    let curve = raw["memory"].as_array().unwrap();
    assert_eq!(curve.len(), 2);
    for (p, want) in curve.iter().zip([(20, 5), (40, 10)]) {
        assert_eq!(
            (p["pods"].as_u64(), p["nads"].as_u64()),
            (Some(want.0), Some(want.1))
        );
        assert!(p["rss_kib"].as_u64().unwrap() > 0, "{p}");
    }
    for b in ["plexus", "plexus-shim", "plexusd"] {
        assert!(raw["binary_bytes"][b].as_u64().unwrap() > 0, "{b}");
    }
}
