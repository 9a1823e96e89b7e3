//! `plexus-shim`: the CNI plugin of thick mode. The runtime execs it like any plugin; it sends the
//! call (the `CNI_*` environment and the config on stdin) to `plexusd` over its unix socket
//! (`POST /v1/cni`, docs/architecture.md) and prints the daemon's answer.
//!
//! When the daemon cannot be reached it never waits: ADD and CHECK fail at once with code 11
//! ("try again later"; the runtime retries), STATUS answers code 50 ("plugin not available"), and
//! DEL and GC run **here**, from the on-disk cache, with the same engine the daemon runs (without
//! the Kubernetes API, which a teardown does not need), so that a pod can always be torn down.
//!
//! The shim is exec'd for every CNI call, so it is kept small: no async runtime, no TLS, no
//! Kubernetes client. The daemon API is one HTTP/1.1 request per connection over a local socket;
//! the few lines of [`http`] speak it over `std::os::unix::net::UnixStream`, which costs far less
//! start-up time and memory than an HTTP client crate and a tokio runtime would.

mod http;

use plexus_cni::{CniEnv, CniError, Command, codes};
use plexus_engine::exec::{Watchdog, watchdog};
use plexus_engine::{Budget, Engine, IpRoutes, PlexusConfig, ProcessExec};
use serde_json::{Map, Value, json};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where plexusd listens unless the config's `daemonSocket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/plexus/plexusd.sock";

/// Added to the call's budget when waiting for the daemon's answer: the daemon answers within the
/// budget; this only keeps a wedged daemon from holding the runtime forever.
const ANSWER_SLACK: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let started = Instant::now();
    if std::env::var_os(watchdog::WATCHDOG_ENV).is_some() {
        watchdog::serve_stdin();
        return ExitCode::SUCCESS;
    }
    let mut stdin = Vec::with_capacity(http::READ_CHUNK);
    let (out, ok) = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => match dispatch(&stdin, started) {
            Ok(out) => (out, true),
            Err(e) => (e.to_json(), false),
        },
        Err(e) => (
            CniError::new(codes::IO_FAILURE, format!("cannot read stdin: {e}")).to_json(),
            false,
        ),
    };
    plexus_engine::respond(&out, ok)
}

fn dispatch(stdin: &[u8], started: Instant) -> Result<String, CniError> {
    let env = CniEnv::from_lookup(|k| std::env::var(k).ok())?;
    if env.command == Command::Version {
        return Ok(plexus_engine::respond::version_reply_to(stdin));
    }
    let conf = plexus_engine::respond::decode_config(stdin)?;
    let version = plexus_engine::respond::config_version(conf.get("cniVersion"));
    let socket = match conf.get("daemonSocket") {
        None | Some(Value::Null) => PathBuf::from(DEFAULT_SOCKET),
        Some(Value::String(s)) if !s.is_empty() => PathBuf::from(s),
        Some(v) => {
            return Err(CniError::new(
                codes::INVALID_CONFIG,
                format!("invalid config key \"daemonSocket\" = {v}: must be the path of plexusd's socket"),
            )
            .with_version(&version));
        }
    };
    let call_timeout = PlexusConfig::call_timeout_of(&conf);
    let body = json!({
        "env": cni_vars(),
        "config": Value::Object(conf.clone()),
    });
    let body = serde_json::to_vec(&body).expect("JSON values serialize");
    match http::post(&socket, "/v1/cni", &body, call_timeout + ANSWER_SLACK) {
        Ok(reply) => answer(&reply, &version),
        Err(e) => unreachable_daemon(&e, &socket, &env, &conf, &version, started),
    }
}

/// Every `CNI_*` variable of our environment (the daemon validates them as the thin plugin does).
fn cni_vars() -> Map<String, Value> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("CNI_")
                .then(|| (k, Value::String(v.to_string_lossy().into_owned())))
        })
        .collect()
}

/// Turns the daemon's `{"result": ...}` / `{"error": ...}` into our stdout.
fn answer(reply: &http::Reply, version: &str) -> Result<String, CniError> {
    let bad = |why: String| {
        CniError::new(
            codes::TRY_AGAIN_LATER,
            format!("plexusd answered something unexpected ({why}); try again later"),
        )
        .with_version(version)
    };
    if reply.status != 200 {
        return Err(bad(format!("HTTP {}", reply.status)));
    }
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| bad(e.to_string()))?;
    if let Some(err) = v.get("error") {
        let e: CniError = serde_json::from_value(err.clone()).map_err(|e| bad(e.to_string()))?;
        return Err(e);
    }
    match v.get("result") {
        Some(Value::Null) => Ok(String::new()),
        Some(r) => Ok(r.to_string()),
        None => Err(bad("neither \"result\" nor \"error\"".to_owned())),
    }
}

/// The daemon could not be reached, or went away before answering.
fn unreachable_daemon(
    err: &http::Error,
    socket: &std::path::Path,
    env: &CniEnv,
    conf: &Map<String, Value>,
    version: &str,
    started: Instant,
) -> Result<String, CniError> {
    let why = format!("plexusd is not reachable at {}: {err}", socket.display());
    match env.command {
        // Teardown must always be possible: run it here, from the cache.
        Command::Del | Command::Gc => {
            eprintln!(
                "plexus-shim: {why}; running {} locally",
                env.command.as_str()
            );
            local(env, conf, version, started)
        }
        Command::Status => {
            Err(CniError::new(codes::PLUGIN_NOT_AVAILABLE, why).with_version(version))
        }
        _ => {
            let pod = match (
                env.args.get("K8S_POD_NAMESPACE"),
                env.args.get("K8S_POD_NAME"),
            ) {
                (Some(ns), Some(name)) => format!("pod {ns}/{name}: "),
                _ => String::new(),
            };
            Err(CniError::new(
                codes::TRY_AGAIN_LATER,
                format!("{pod}{why}; try again later"),
            )
            .with_version(version))
        }
    }
}

/// DEL or GC with the engine in this process, without the Kubernetes API.
fn local(
    env: &CniEnv,
    conf: &Map<String, Value>,
    version: &str,
    started: Instant,
) -> Result<String, CniError> {
    let config = PlexusConfig::from_map(conf)
        .map_err(|e| CniError::new(codes::INVALID_CONFIG, e.to_string()).with_version(version))?;
    plexus_engine::policy::check_cache_dir(&config).map_err(|e| e.with_version(version))?;
    let search = config.delegate_search_path(&env.path);
    let budget = Budget::starting_at(started, Duration::from_secs(config.call_timeout_secs));
    let mut exec = ProcessExec::new(search).with_budget(budget);
    if let Ok(w) = Watchdog::for_current_exe() {
        exec = exec.with_watchdog(Arc::new(w));
    }
    let engine = Engine {
        config: &config,
        env,
        exec: &exec,
        kube: None,
        routes: &IpRoutes::default(),
        devices: None,
    };
    let outcome = match env.command {
        Command::Gc => engine.gc(),
        _ => engine.del(),
    };
    outcome.map(|()| String::new()).map_err(|e| {
        eprintln!("plexus-shim: local {}: {e}", env.command.as_str());
        e.to_cni_error(version)
    })
}
