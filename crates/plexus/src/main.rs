//! `plexus`: the thin CNI plugin. The runtime execs it with `CNI_*` in the environment and the
//! config on stdin; it prints exactly one JSON document on stdout (a result or a CNI error) and
//! logs only to stderr or the configured log file.

use plexus_cni::{CniEnv, CniError, Command, build, codes};
use plexus_engine::exec::{Watchdog, watchdog};
use plexus_engine::{Budget, Engine, IpRoutes, KubeApi, PlexusConfig, ProcessExec};

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod cli;
mod events;
mod logfile;
mod logging;

fn main() -> ExitCode {
    // The runtime's clock for this call started when it execed us.
    let started = Instant::now();
    if std::env::var_os(watchdog::WATCHDOG_ENV).is_some() {
        watchdog::serve_stdin();
        return ExitCode::SUCCESS;
    }
    if let Ok(payload) = std::env::var(events::EVENT_ENV) {
        return if events::post_from_env(&payload) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if let Some(rotated) = std::env::var_os(logfile::COMPRESS_ENV) {
        return match logfile::compress(std::path::Path::new(&rotated)) {
            Ok(_) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    if let Some(code) = cli::handle(std::env::args_os().skip(1)) {
        return code;
    }
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let (out, ok) = match read {
        Ok(_) => run(&stdin, started),
        Err(e) => (
            CniError::new(codes::IO_FAILURE, format!("cannot read stdin: {e}")).to_json(),
            false,
        ),
    };
    plexus_engine::respond(&out, ok)
}

/// Returns the text for stdout and whether the command succeeded.
fn run(stdin: &[u8], started: Instant) -> (String, bool) {
    match dispatch(stdin, started) {
        Ok(out) => (out, true),
        Err(e) => (e.to_json(), false),
    }
}

fn dispatch(stdin: &[u8], started: Instant) -> Result<String, CniError> {
    let env = CniEnv::from_lookup(|k| std::env::var(k).ok())?;
    if env.command == Command::Version {
        return Ok(plexus_engine::respond::version_reply_to(stdin));
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
    let conf = plexus_engine::respond::decode_config(stdin)?;
    let version = plexus_engine::respond::config_version(conf.get("cniVersion"));
    let config = PlexusConfig::from_map(&conf)
        .map_err(|e| CniError::new(codes::INVALID_CONFIG, e.to_string()).with_version(&version))?;
    let problems = logging::init(&logging::LogSetup {
        level: config.log_level,
        file: config.log_file.as_deref(),
        options: &config.log_options,
        to_stderr: config.log_to_stderr,
    });
    // Every line of this call carries the build and the call, so that lines from concurrent
    // calls in one log file can be told apart and matched to a binary.
    let span = tracing::error_span!(
        "plexus",
        version = %build::VERSION,
        commit = %build::COMMIT,
        command = %env.command.as_str(),
        container = %env.container_id,
    );
    let _entered = span.enter();
    let pod = match (
        env.args.get("K8S_POD_NAMESPACE"),
        env.args.get("K8S_POD_NAME"),
    ) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        _ => "-".to_owned(),
    };
    tracing::info!(%pod, "invoked");
    for p in problems {
        tracing::warn!("{p}");
    }
    for note in &config.key_notes {
        tracing::warn!("{note}");
    }
    if env.command != Command::Status {
        plexus_engine::policy::check_cache_dir(&config).map_err(|e| e.with_version(&version))?;
    }

    let search = config.delegate_search_path(&env.path);
    let budget = Budget::starting_at(started, Duration::from_secs(config.call_timeout_secs));
    let mut exec = ProcessExec::new(search).with_budget(budget);
    match Watchdog::for_current_exe() {
        Ok(w) => exec = exec.with_watchdog(Arc::new(w)),
        Err(e) => tracing::warn!(
            "no delegate watchdog (cannot find our own binary: {e}); delegates will outlive a killed plexus"
        ),
    }
    let kube = match env.command {
        Command::Add => live_kube(&config, &env, &version, budget.work_deadline())?,
        // DEL reads only the cache, unless the entry is corrupt and must be rebuilt from the pod;
        // unusable credentials must not fail a DEL that does not need them.
        Command::Del => {
            live_kube(&config, &env, &version, budget.work_deadline()).unwrap_or_else(|e| {
                tracing::warn!("no Kubernetes API for DEL: {}", e.msg);
                None
            })
        }
        _ => None,
    };
    let detached = kube.as_ref().map(|(k, creds)| events::DetachedEvents {
        kube: k,
        creds: creds.clone(),
        // Off the critical path, so the whole API timeout is affordable.
        timeout: Duration::from_secs(config.api_timeout_secs),
        log_file: config.log_file.as_deref(),
        log_level: config.log_level,
        log_options: config.log_options,
    });
    // Asked only when a NAD names a resourceName (ADD; DEL only when rebuilding a lost entry).
    let devices = plexus_kubelet::KubeletDevices::new(
        &config.pod_resources_socket,
        &config.device_checkpoint_file,
        Duration::from_secs(config.kubelet_timeout_secs),
    )
    .with_call_deadline(budget.work_deadline());
    // DRA claims are read through the API only for resources the kubelet's device plugins lack.
    let dra = kube.as_ref().map(|(k, _)| plexus_kube::dra::DraDevices(k));
    let devices = plexus_engine::device::Fallback {
        primary: &devices,
        fallback: dra.as_ref().map(|d| d as &dyn plexus_engine::DeviceLookup),
    };
    let engine = Engine {
        config: &config,
        env: &env,
        exec: &exec,
        kube: detached.as_ref().map(|k| k as &dyn KubeApi),
        routes: &IpRoutes::default(),
        devices: Some(&devices),
    };
    let outcome = match env.command {
        Command::Add => engine.add().map(|v| v.to_string()),
        Command::Del => engine.del().map(|()| String::new()),
        Command::Check => engine.check().map(|()| String::new()),
        Command::Status => engine.status().map(|()| String::new()),
        Command::Gc => engine.gc().map(|()| String::new()),
        Command::Version => unreachable!("handled above"),
    };
    if let Some(retries) = kube.as_ref().map(|(k, _)| k.retries()).filter(|n| *n > 0) {
        tracing::info!(command = env.command.as_str(), container = %env.container_id, retries, "API requests were retried");
    }
    outcome.map_err(|e| {
        tracing::error!(command = env.command.as_str(), container = %env.container_id, "{e}");
        e.to_cni_error(&version)
    })
}

fn live_kube(
    config: &PlexusConfig,
    env: &CniEnv,
    version: &str,
    deadline: Instant,
) -> Result<Option<(plexus_kube::LiveKube, plexus_kube::Credentials)>, CniError> {
    let Some(creds) = plexus_kube::Credentials::detect(config.kubeconfig.as_deref()) else {
        return Ok(None);
    };
    let pod = match (
        env.args.get("K8S_POD_NAMESPACE"),
        env.args.get("K8S_POD_NAME"),
    ) {
        (Some(ns), Some(name)) => format!("pod {ns}/{name}: "),
        _ => String::new(),
    };
    let fail = |msg: String| {
        CniError::new(codes::INVALID_CONFIG, format!("{pod}{msg}")).with_version(version)
    };
    // Checked here so that the message names the file once and says where it comes from; kube's
    // own message repeats the path in Rust debug quoting.
    if let plexus_kube::Credentials::Kubeconfig(path) = &creds
        && let Err(e) = std::fs::File::open(path)
    {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist".to_owned()
        } else {
            format!("cannot be read: {e}")
        };
        return Err(fail(format!(
            "kubeconfig {path:?} (plexus config key \"kubeconfig\") {what}; plexus-install writes it \
             when the plexus DaemonSet's pod starts on this node: check that pod and its logs"
        )));
    }
    plexus_kube::LiveKube::new(&creds, Duration::from_secs(config.api_timeout_secs))
        .map(|k| Some((k.with_deadline(deadline), creds)))
        .map_err(|e| fail(format!("cannot use Kubernetes credentials: {e}")))
}
