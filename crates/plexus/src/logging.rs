//! Logging of one `plexus` call: stderr (which the runtime collects) and/or `logFile` (rotated per
//! `logOptions`), never stdout.
//!
//! Levels apply to Plexus's own crates (every target starting with `plexus`); libraries (kube,
//! hyper, rustls, tower) stay at `warn` so that `logLevel: debug` shows what Plexus does rather
//! than TLS records. `logLevel: trace` opens everything, for debugging the API client itself.

use crate::logfile;
use plexus_engine::config::{LogLevel, LogOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};

/// Where and how much to log.
#[derive(Debug, Clone, Copy)]
pub struct LogSetup<'a> {
    pub level: LogLevel,
    pub file: Option<&'a Path>,
    pub options: &'a LogOptions,
    pub to_stderr: bool,
}

/// The `EnvFilter` directives for `level`.
pub fn directives(level: LogLevel) -> Option<String> {
    let (ours, others) = match level {
        LogLevel::Off => return None,
        LogLevel::Error => ("error", "error"),
        LogLevel::Warn => ("warn", "warn"),
        LogLevel::Info => ("info", "warn"),
        LogLevel::Debug => ("debug", "warn"),
        LogLevel::Trace => ("trace", "debug"),
    };
    // A directive's target matches every target it prefixes: `plexus` covers plexus_engine,
    // plexus_kube, plexus_cni... and the binary itself.
    Some(format!("{others},plexus={ours}"))
}

/// Installs the global subscriber. Returns the problems met (an unopenable log file) for the
/// caller to log once logging works, rather than failing the CNI call over its log.
pub fn init(setup: &LogSetup<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(directives) = directives(setup.level) else {
        return problems;
    };
    let file = match setup.file {
        None => None,
        Some(path) => match logfile::open(path, setup.options, SystemTime::now()) {
            Ok(opened) => {
                if let (Some(rotated), true) = (&opened.rotated, setup.options.compress)
                    && let Err(e) = logfile::spawn_compressor(rotated)
                {
                    problems.push(format!(
                        "cannot start compressing the rotated log file {}: {e}",
                        rotated.display()
                    ));
                }
                Some(Arc::new(opened.file))
            }
            Err(e) => {
                problems.push(format!("cannot open logFile {}: {e}", path.display()));
                None
            }
        },
    };
    let writer = match (file, setup.to_stderr) {
        (Some(f), true) => BoxMakeWriter::new(f.and(std::io::stderr)),
        (Some(f), false) => BoxMakeWriter::new(f),
        (None, true) => BoxMakeWriter::new(std::io::stderr),
        (None, false) => return problems,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_env_filter(EnvFilter::new(directives))
        .try_init();
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Captures what a subscriber with `level`'s filter writes for events of several targets.
    fn emitted(level: LogLevel) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || buf.clone())
            .with_ansi(false)
            .with_env_filter(EnvFilter::new(directives(level).unwrap()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "plexus_engine::engine", "engine-debug");
            tracing::info!(target: "plexus", "binary-info");
            tracing::debug!(target: "hyper_util::client", "hyper-debug");
            tracing::debug!(target: "rustls::client", "rustls-debug");
            tracing::warn!(target: "kube_client", "kube-warn");
            tracing::trace!(target: "plexus_kube", "kube-trace");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn debug_shows_plexus_but_not_library_internals() {
        let text = emitted(LogLevel::Debug);
        assert!(
            text.contains("engine-debug") && text.contains("binary-info"),
            "{text}"
        );
        assert!(
            !text.contains("hyper-debug") && !text.contains("rustls-debug"),
            "{text}"
        );
        assert!(
            text.contains("kube-warn"),
            "library warnings still show: {text}"
        );
        assert!(!text.contains("kube-trace"));
    }

    #[test]
    fn trace_opens_libraries() {
        let text = emitted(LogLevel::Trace);
        assert!(
            text.contains("hyper-debug") && text.contains("kube-trace"),
            "{text}"
        );
    }

    #[test]
    fn info_and_warn_levels() {
        let text = emitted(LogLevel::Info);
        assert!(
            text.contains("binary-info") && !text.contains("engine-debug"),
            "{text}"
        );
        let text = emitted(LogLevel::Warn);
        assert!(
            !text.contains("binary-info") && text.contains("kube-warn"),
            "{text}"
        );
        assert_eq!(directives(LogLevel::Off), None);
    }
}
