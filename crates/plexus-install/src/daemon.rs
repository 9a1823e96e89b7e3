//! The loop that waits for the primary and keeps config and credentials current.
//!
//! Woken by inotify (config dir, service-account dir, readiness indicator's dir) so a rotated token
//! or a replaced primary is picked up within milliseconds, and by a slow timer as a safety net for
//! events a watch can miss (an overflowed queue, a dir replaced wholesale). Each wake-up runs the
//! same idempotent [`installer::sync`], so a missed or duplicated event costs nothing.

use crate::error::{Error, Result};
use crate::health;
use crate::installer::{self, Settings, SyncOutcome, WaitLog};
use crate::token::TokenKeeper;
use crate::tokenrequest::KubeIssuer;
use nix::sys::signal::{SigSet, Signal};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant, SystemTime};
use tracing::{error, info, warn};

/// How the loop ends.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Init container: return as soon as the config is written.
    Once { timeout: Option<Duration> },
    /// Main container: keep everything current until SIGTERM/SIGINT.
    Forever {
        recheck: Duration,
        health_file: Option<PathBuf>,
        cleanup_on_exit: bool,
    },
}

#[derive(Debug)]
enum Wake {
    Fs,
    Stop(Signal),
}

/// While waiting, poll this often too (the readiness indicator's dir may not exist to be watched).
const WAIT_POLL: Duration = Duration::from_millis(500);
/// Events arriving this close together are handled by one sync.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Consecutive failed syncs tolerated in `Forever` mode before giving up (kubelet restarts us).
const MAX_FAILURES: u32 = 10;

/// Installs the binaries, then syncs according to `mode`.
pub fn run(s: &Settings, mode: &Mode) -> Result<()> {
    // Handle SIGTERM/SIGINT on a thread of our own: block them here, before any other thread
    // exists, so every thread inherits the mask and only `sigwait` sees them.
    let (tx, rx) = channel();
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()
        .map_err(|e| Error::io("block signals for", "plexus-install")(e.into()))?;
    let sig_tx = tx.clone();
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            let _ = sig_tx.send(Wake::Stop(sig));
        }
    });

    installer::install_binaries(s)?;
    let mut keeper = keeper(s);
    let _watcher = watch(s, tx)?;
    let started = Instant::now();
    let mut wait_log = WaitLog::default();
    let mut failures = 0u32;
    let mut installed = false;
    loop {
        let next = match installer::sync(s, keeper.as_mut()) {
            Ok(SyncOutcome::Waiting(reason)) => {
                failures = 0;
                wait_log.waiting(&reason);
                if let Mode::Once { timeout: Some(t) } = mode
                    && started.elapsed() > *t
                {
                    return Err(Error::Timeout(reason));
                }
                WAIT_POLL
            }
            Ok(SyncOutcome::Refused(reason)) => {
                failures = 0;
                wait_log.refused(&reason);
                // Not ready at once, not only once the last touch ages out.
                if let Mode::Forever {
                    health_file: Some(h),
                    ..
                } = mode
                {
                    health::clear(h)?;
                }
                installed = false;
                if let Mode::Once { timeout: Some(t) } = mode
                    && started.elapsed() > *t
                {
                    return Err(Error::Timeout(reason));
                }
                WAIT_POLL
            }
            Ok(SyncOutcome::Current { .. }) => {
                failures = 0;
                wait_log.clear();
                if !installed {
                    info!("{} is installed and current", s.config_path().display());
                    installed = true;
                }
                match mode {
                    Mode::Once { .. } => return Ok(()),
                    Mode::Forever {
                        recheck,
                        health_file,
                        ..
                    } => {
                        if let Some(h) = health_file {
                            health::touch(h)?;
                        }
                        // Wake up for the token's refresh (or retry) too.
                        keeper
                            .as_ref()
                            .and_then(|k| k.next_due(SystemTime::now()))
                            .map_or(*recheck, |due| due.clamp(DEBOUNCE, *recheck))
                    }
                }
            }
            Err(e) if matches!(mode, Mode::Forever { .. }) && failures < MAX_FAILURES => {
                failures += 1;
                error!("sync failed ({failures}/{MAX_FAILURES}), retrying: {e}");
                Duration::from_secs(1)
            }
            Err(e) => return Err(e),
        };
        match wait(&rx, next) {
            None => {}
            Some(sig) => {
                info!("received {sig}");
                if let Mode::Forever {
                    cleanup_on_exit: true,
                    ..
                } = mode
                {
                    installer::remove_config(s)?;
                } else if installed {
                    info!(
                        "leaving {} in place so pods keep their networks while plexus-install restarts",
                        s.config_path().display()
                    );
                }
                return match mode {
                    Mode::Once { .. } if !installed => Err(Error::Timeout(format!(
                        "stopped by {sig} before the config was written"
                    ))),
                    _ => Ok(()),
                };
            }
        }
    }
}

/// Blocks until SIGTERM or SIGINT (a DaemonSet container that has done its work).
pub fn wait_for_termination() -> Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()
        .map_err(|e| Error::io("block signals for", "plexus-install")(e.into()))?;
    let sig = set
        .wait()
        .map_err(|e| Error::io("wait for signals in", "plexus-install")(e.into()))?;
    info!("received {sig}");
    Ok(())
}

/// The keeper of the plugin's Node-bound token, when a node name is configured.
fn keeper(s: &Settings) -> Option<installer::Keeper> {
    let Some(spec) = s.token.clone() else {
        warn!(
            "no --node-name: the plugin uses this pod's projected token, which the API server \
             invalidates when this pod is deleted (during a DaemonSet rollout, pods on this node \
             fail to get their networks until the new pod has written its token)"
        );
        return None;
    };
    match KubeIssuer::new(&s.api_server, &s.sa_dir) {
        Ok(i) => Some(TokenKeeper::new(Box::new(i), spec)),
        Err(e) => {
            warn!("{e}; the plugin uses this pod's projected token");
            None
        }
    }
}

/// Sleeps until an event, a signal (returned) or `timeout`.
fn wait(rx: &Receiver<Wake>, timeout: Duration) -> Option<Signal> {
    match rx.recv_timeout(timeout) {
        Ok(Wake::Stop(sig)) => return Some(sig),
        Ok(Wake::Fs) => {}
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
    }
    // Coalesce a burst (a rename is several events; a token rotation is a dozen).
    let until = Instant::now() + DEBOUNCE;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(Wake::Stop(sig)) => return Some(sig),
            Ok(Wake::Fs) => {}
            Err(_) => break,
        }
    }
    None
}

/// Starts inotify watches on the config dir, the service-account dir and the readiness
/// indicator's dir (those that exist; the timer covers the rest).
fn watch(s: &Settings, tx: Sender<Wake>) -> Result<notify::RecommendedWatcher> {
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Err(e) = &ev {
            warn!("file watch error (the periodic re-check covers it): {e}");
        }
        let _ = tx.send(Wake::Fs);
    })
    .map_err(|cause| Error::Watch {
        path: PathBuf::from("(inotify)"),
        cause,
    })?;
    let conf_dir = s.on_host(&s.cni_conf_dir);
    let mut dirs: Vec<PathBuf> = vec![conf_dir, s.sa_dir.clone()];
    if let Some(r) = &s.readiness_indicator_file
        && let Some(parent) = s.on_host(r).parent()
    {
        dirs.push(parent.to_path_buf());
    }
    for d in dirs {
        watch_dir(&mut w, &d)?;
    }
    Ok(w)
}

fn watch_dir(w: &mut notify::RecommendedWatcher, dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        warn!(
            "{} does not exist; relying on periodic re-checks for it",
            dir.display()
        );
        return Ok(());
    }
    w.watch(dir, RecursiveMode::NonRecursive)
        .map_err(|cause| Error::Watch {
            path: dir.to_path_buf(),
            cause,
        })?;
    info!("watching {}", dir.display());
    Ok(())
}
