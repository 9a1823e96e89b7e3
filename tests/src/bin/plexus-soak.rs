//! `plexus-soak`: randomized fault runs of the real `plexus` binary (hack/soak.sh drives it).
//!
//! Each run builds a fresh node (fake API server, bridges, the gated cluster network and two NADs
//! of `plexus_e2e::faults`), picks a fault at random — a SIGKILL at a precise step of the ADD or
//! at a random moment, a failing delegate or status write, an API error or latency — runs the
//! ADD, then containerd's two DELs, and checks that nothing is left (links, leases, bridge
//! ports, files in cniDir, delegate processes). It prints the counts per fault kind and every
//! leak with its details; the exit status is non-zero when any run leaked.

// The driver prints its report on stdout by design.
#![allow(clippy::print_stdout)]

use clap::Parser;
use plexus_e2e::faults::{
    Action, AddEnd, Fault, Step, permanent_api_faults, run, transient_api_faults,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Randomized fault runs of plexus with leak checks")]
struct Args {
    /// How many runs.
    #[arg(long, short = 'n', default_value_t = 1000)]
    runs: usize,
    /// Seed of the fault choices (default: from the clock; printed so a run can be replayed).
    #[arg(long)]
    seed: Option<u64>,
    /// Upper bound of the random kill moment, in ms (about one unfaulted ADD).
    #[arg(long, default_value_t = 400)]
    kill_window_ms: u64,
    /// Also write the counts and every leak as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// SplitMix64: enough randomness to pick faults, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn pick(rng: &mut Rng, kill_window: u64) -> Fault {
    match rng.below(4) {
        0 => {
            let step = Step::ALL[rng.below(Step::ALL.len() as u64) as usize];
            Fault::At(step, Action::Kill)
        }
        1 => Fault::KillAfter(Duration::from_millis(rng.below(kill_window + 1))),
        2 => match rng.below(3) {
            0 => Fault::ApiLatency(Duration::from_millis(100 + rng.below(1500))),
            _ => {
                let mut all = transient_api_faults();
                all.extend(permanent_api_faults());
                all.swap_remove(rng.below(all.len() as u64) as usize)
            }
        },
        _ => {
            let step = Step::ALL[rng.below(Step::ALL.len() as u64) as usize];
            Fault::At(step, Action::Fail)
        }
    }
}

#[derive(Default, serde::Serialize)]
struct Counts {
    runs: usize,
    ok: usize,
    failed: usize,
    killed: usize,
    leaky: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("plexus-soak: {} runs, seed {seed}", args.runs);
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut total = Counts::default();
    let mut by_kind: BTreeMap<String, Counts> = BTreeMap::new();
    let mut leaks: Vec<String> = Vec::new();
    // Durations of the ADDs that succeeded without injected latency, to size `--kill-window-ms`.
    let mut ok_ms: Vec<u128> = Vec::new();
    for i in 0..args.runs {
        let fault = pick(&mut rng, args.kill_window_ms);
        let report = run(&fault);
        if report.add.is_ok() && !matches!(fault, Fault::ApiLatency(_)) {
            ok_ms.push(report.add_elapsed.as_millis());
        }
        let kind = by_kind.entry(fault.kind()).or_default();
        for c in [&mut total, kind] {
            c.runs += 1;
            match &report.add {
                AddEnd::Ok(_) => c.ok += 1,
                AddEnd::Failed(_) => c.failed += 1,
                AddEnd::Killed => c.killed += 1,
            }
            if !report.leaks.is_empty() {
                c.leaky += 1;
            }
        }
        if !report.leaks.is_empty() {
            let line = format!("run {i} ({fault:?}): {}", report.leaks.join("; "));
            println!("LEAK {line}");
            leaks.push(line);
        }
        if (i + 1) % 50 == 0 {
            println!(
                "  {} runs, {} leaky, {:.0} s",
                i + 1,
                total.leaky,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!();
    println!(
        "{:<48} {:>5} {:>6} {:>7} {:>7} {:>6}",
        "fault", "runs", "ADD ok", "failed", "killed", "leaky"
    );
    for (k, c) in by_kind
        .iter()
        .chain(std::iter::once((&"total".to_owned(), &total)))
    {
        println!(
            "{k:<48} {:>5} {:>6} {:>7} {:>7} {:>6}",
            c.runs, c.ok, c.failed, c.killed, c.leaky
        );
    }
    println!(
        "\nruns: {}  ADD ok: {}  ADD failed: {}  killed: {}  leaky runs: {}  wall time: {:.0} s  seed: {seed}",
        total.runs,
        total.ok,
        total.failed,
        total.killed,
        total.leaky,
        started.elapsed().as_secs_f64()
    );
    ok_ms.sort_unstable();
    let median_ok_ms = ok_ms.get(ok_ms.len() / 2).copied();
    if let Some(m) = median_ok_ms {
        println!("median successful ADD (no injected latency): {m} ms");
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "seed": seed,
            "wallSeconds": started.elapsed().as_secs_f64(),
            "medianOkAddMs": median_ok_ms,
            "total": total,
            "byKind": by_kind,
            "leaks": leaks,
        });
        if let Err(e) = std::fs::write(path, doc.to_string()) {
            eprintln!("cannot write {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    if leaks.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
