//! `plexus`: the thin CNI plugin. The runtime execs it with `CNI_*` in the environment and the
//! config on stdin; it prints exactly one JSON document on stdout (a result or a CNI error) and
//! logs only to stderr or the configured log file.

use plexus_cni::{CniEnv, CniError, Command, SUPPORTED_VERSIONS, codes};
use plexus_engine::config::LogLevel;
use plexus_engine::{Engine, IpRoutes, KubeApi, PlexusConfig, ProcessExec};
use serde_json::{Map, Value};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod events;

fn main() -> ExitCode {
    if let Ok(payload) = std::env::var(events::EVENT_ENV) {
        return if events::post_from_env(&payload) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let (out, ok) = match read {
        Ok(_) => run(&stdin),
        Err(e) => (
            CniError::new(codes::IO_FAILURE, format!("cannot read stdin: {e}")).to_json(),
            false,
        ),
    };
    let mut stdout = std::io::stdout().lock();
    // Nothing useful can be done if stdout is gone: the runtime has stopped listening.
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Returns the text for stdout and whether the command succeeded.
fn run(stdin: &[u8]) -> (String, bool) {
    match dispatch(stdin) {
        Ok(out) => (out, true),
        Err(e) => (e.to_json(), false),
    }
}

fn dispatch(stdin: &[u8]) -> Result<String, CniError> {
    let env = CniEnv::from_lookup(|k| std::env::var(k).ok())?;
    if env.command == Command::Version {
        return Ok(version_reply(stdin));
    }
    // Exec'd by a plexus (as a NAD's delegate, or as a delegate's IPAM) under a name the policy
    // did not recognise: the config on stdin was written by a NAD author; trust nothing of it.
    if let Some(parent) = std::env::var_os(plexus_engine::policy::NESTED_ENV) {
        return Err(CniError::new(
            codes::INVALID_CONFIG,
            format!(
                "plexus was run as a delegate of plexus (pid {}); meta plugins never run as delegates",
                parent.to_string_lossy()
            ),
        ));
    }
    let conf: Map<String, Value> = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            codes::DECODING_FAILURE,
            format!("cannot decode the plexus configuration on stdin: {e}"),
        )
    })?;
    let version = conf
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.1.0")
        .to_owned();
    let config = PlexusConfig::from_map(&conf)
        .map_err(|e| CniError::new(codes::INVALID_CONFIG, e.to_string()).with_version(&version))?;
    init_logging(&config);
    tracing::debug!(command = env.command.as_str(), container = %env.container_id, "invoked");
    if env.command != Command::Status {
        plexus_engine::policy::check_private_dir(&config.cni_dir).map_err(|reason| {
            CniError::new(
                codes::CACHE_ERROR,
                format!("unsafe cache directory (cniDir): {reason}"),
            )
            .with_version(&version)
        })?;
    }

    let mut search: Vec<PathBuf> = vec![config.bin_dir.clone()];
    search.extend(env.path.iter().filter(|p| **p != config.bin_dir).cloned());
    let exec = ProcessExec::new(search);
    let kube = if env.command == Command::Add {
        live_kube(&config, &version)?
    } else {
        None
    };
    let detached = kube.as_ref().map(|(k, creds)| events::DetachedEvents {
        kube: k,
        creds: creds.clone(),
        // Off the critical path, so the whole API timeout is affordable.
        timeout: Duration::from_secs(config.api_timeout_secs),
    });
    let engine = Engine {
        config: &config,
        env: &env,
        exec: &exec,
        kube: detached.as_ref().map(|k| k as &dyn KubeApi),
        routes: &IpRoutes,
    };
    let outcome = match env.command {
        Command::Add => engine.add().map(|v| v.to_string()),
        Command::Del => engine.del().map(|()| String::new()),
        Command::Check => engine.check().map(|()| String::new()),
        Command::Status => engine.status().map(|()| String::new()),
        Command::Gc => engine.gc().map(|()| String::new()),
        Command::Version => unreachable!("handled above"),
    };
    outcome.map_err(|e| {
        tracing::error!(command = env.command.as_str(), container = %env.container_id, "{e}");
        e.to_cni_error(&version)
    })
}

fn live_kube(
    config: &PlexusConfig,
    version: &str,
) -> Result<Option<(plexus_kube::LiveKube, plexus_kube::Credentials)>, CniError> {
    let Some(creds) = plexus_kube::Credentials::detect(config.kubeconfig.as_deref()) else {
        return Ok(None);
    };
    plexus_kube::LiveKube::new(&creds, Duration::from_secs(config.api_timeout_secs))
        .map(|k| Some((k, creds)))
        .map_err(|e| {
            CniError::new(
                codes::INVALID_CONFIG,
                format!("cannot use Kubernetes credentials: {e}"),
            )
            .with_version(version)
        })
}

/// `{"cniVersion": <the request's>, "supportedVersions": [...]}` (spec §5 "Version").
fn version_reply(stdin: &[u8]) -> String {
    let requested = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "1.1.0".to_owned());
    serde_json::json!({"cniVersion": requested, "supportedVersions": SUPPORTED_VERSIONS})
        .to_string()
}

fn init_logging(config: &PlexusConfig) {
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
    let level = match config.log_level {
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Off => return,
    };
    let file = config.log_file.as_ref().and_then(|p| {
        // Logs name pods, networks and delegate output: root-only, like the cache.
        std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new().create(true).append(true),
            0o600,
        )
        .open(p)
        .inspect(|f| {
            // A file left by an older version or another tool may be readable by others.
            let _ = f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
        })
        .map(std::sync::Arc::new)
        .ok()
    });
    let writer = match (file, config.log_to_stderr) {
        (Some(f), true) => BoxMakeWriter::new(
            f.with_max_level(level)
                .and(std::io::stderr.with_max_level(level)),
        ),
        (Some(f), false) => BoxMakeWriter::new(f.with_max_level(level)),
        (None, true) => BoxMakeWriter::new(std::io::stderr.with_max_level(level)),
        (None, false) => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_max_level(level)
        .try_init();
}
