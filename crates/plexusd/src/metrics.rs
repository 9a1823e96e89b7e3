//! Prometheus text exposition of the daemon's counters (hand-written: a handful of counters and
//! histograms do not justify a metrics crate and its registry).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds, in seconds: from a bare delegate's millisecond to the call budget.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// Labels as `(name, value)` pairs, rendered in this order.
type Labels = Vec<(&'static str, String)>;

/// The daemon's own metrics (the API and cache ones live in `plexus_kube`).
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<Labels, Histogram>>,
    delegates: Mutex<BTreeMap<Labels, Histogram>>,
    errors: Mutex<BTreeMap<u32, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// One CNI request of `verb`, from receipt to answer.
    pub fn request(&self, verb: &str, took: Duration) {
        lock(&self.requests)
            .entry(vec![("verb", verb.to_owned())])
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// One delegate invocation.
    pub fn delegate(&self, plugin: &str, verb: &str, took: Duration) {
        lock(&self.delegates)
            .entry(vec![("type", plugin.to_owned()), ("verb", verb.to_owned())])
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// One request answered with CNI error `code`.
    pub fn error(&self, code: u32) {
        *lock(&self.errors).entry(code).or_default() += 1;
    }
}

/// Appends `# HELP`/`# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `{a="x",b="y"}` with Prometheus escaping.
pub fn labels(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn histograms(out: &mut String, name: &str, help: &str, map: &BTreeMap<Labels, Histogram>) {
    header(out, name, "histogram", help);
    for (l, h) in map {
        for (i, b) in BUCKETS.iter().enumerate() {
            let mut with_le = l.clone();
            with_le.push(("le", b.to_string()));
            let _ = writeln!(out, "{name}_bucket{} {}", labels(&with_le), h.counts[i]);
        }
        let mut inf = l.clone();
        inf.push(("le", "+Inf".to_owned()));
        let _ = writeln!(out, "{name}_bucket{} {}", labels(&inf), h.count);
        let _ = writeln!(out, "{name}_sum{} {}", labels(l), h.sum);
        let _ = writeln!(out, "{name}_count{} {}", labels(l), h.count);
    }
}

impl Metrics {
    /// Appends this struct's metrics in the text format.
    pub fn render(&self, out: &mut String) {
        histograms(
            out,
            "plexusd_request_duration_seconds",
            "CNI requests from receipt to answer, by verb.",
            &lock(&self.requests),
        );
        histograms(
            out,
            "plexusd_delegate_duration_seconds",
            "Delegate plugin invocations, by plugin type and verb.",
            &lock(&self.delegates),
        );
        header(
            out,
            "plexusd_errors_total",
            "counter",
            "CNI requests answered with an error, by CNI error code.",
        );
        for (code, n) in lock(&self.errors).iter() {
            let _ = writeln!(
                out,
                "plexusd_errors_total{} {n}",
                labels(&[("code", code.to_string())])
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_labels_escaped() {
        let m = Metrics::default();
        m.request("ADD", Duration::from_millis(3));
        m.request("ADD", Duration::from_millis(40));
        m.delegate("br\"x", "ADD", Duration::from_millis(1));
        m.error(11);
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("plexusd_request_duration_seconds_bucket{verb=\"ADD\",le=\"0.0025\"} 0")
        );
        assert!(
            out.contains("plexusd_request_duration_seconds_bucket{verb=\"ADD\",le=\"0.005\"} 1")
        );
        assert!(
            out.contains("plexusd_request_duration_seconds_bucket{verb=\"ADD\",le=\"0.05\"} 2")
        );
        assert!(out.contains("plexusd_request_duration_seconds_count{verb=\"ADD\"} 2"));
        assert!(
            out.contains(
                "plexusd_delegate_duration_seconds_count{type=\"br\\\"x\",verb=\"ADD\"} 1"
            )
        );
        assert!(out.contains("plexusd_errors_total{code=\"11\"} 1"));
    }
}
