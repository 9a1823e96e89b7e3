//! Running delegate plugins. The engine only sees [`DelegateExec`]; [`ProcessExec`] execs the
//! binaries the way a CNI runtime does, each against the call's [`Budget`] and in a process group
//! of its own. Its recording fake is [`crate::testing::FakeExec`].

pub mod chroot;
mod run;
pub mod watchdog;

use crate::budget::Budget;
use plexus_cni::{CniError, Command};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use watchdog::Watchdog;

/// One delegate invocation.
#[derive(Debug, Clone)]
pub struct ExecRequest<'a> {
    /// The plugin `type`, i.e. the binary name.
    pub plugin: &'a str,
    pub command: Command,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    /// `CNI_ARGS` as passed to the delegate.
    pub args: &'a str,
    pub stdin: &'a [u8],
    /// The container lock this delegate runs under: it stays held while the delegate runs, even
    /// if this process is killed (see [`watchdog`]). Set by [`UnderLock`].
    pub lock: Option<BorrowedFd<'a>>,
}

/// Why a delegate invocation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    #[error("plugin binary {plugin:?} not found in {searched}")]
    NotFound { plugin: String, searched: String },
    #[error("plugin type {0:?} is not a plain binary name")]
    BadName(String),
    #[error("could not run plugin {plugin:?}: {reason}")]
    Spawn { plugin: String, reason: String },
    /// The plugin exited non-zero; its CNI error (or one built from its exit status and stderr).
    #[error("plugin {plugin:?} failed: {}{}", error.msg, if error.details.is_empty() { String::new() } else { format!(" ({})", error.details) })]
    Failed { plugin: String, error: CniError },
    /// The plugin did not finish within what was left of the call's budget (`callTimeoutSeconds`;
    /// STATUS at most [`STATUS_TIMEOUT`]); it was killed with its whole process group.
    #[error("{}", timeout_message(plugin, *command, *given))]
    Timeout {
        plugin: String,
        command: Command,
        /// The time the invocation was given (zero: the budget was spent before it could start).
        given: Duration,
    },
}

fn timeout_message(plugin: &str, command: Command, given: Duration) -> String {
    let verb = command.as_str();
    if given.is_zero() {
        format!(
            "plugin {plugin:?} {verb} not started: the call's time budget (callTimeoutSeconds) is spent"
        )
    } else {
        format!(
            "plugin {plugin:?} did not finish {verb} within the {:.1}s it was given (what was left of callTimeoutSeconds); it was killed with its process group",
            given.as_secs_f64()
        )
    }
}

/// Runs a delegate and returns its stdout.
pub trait DelegateExec: Send + Sync {
    fn exec(&self, req: &ExecRequest<'_>) -> Result<Vec<u8>, ExecError>;
}

/// Runs every delegate of `inner` under the container lock `lock` (see [`ExecRequest::lock`]).
/// The engine wraps its executor in this wherever it holds a container's lock.
#[derive(Clone, Copy)]
pub struct UnderLock<'a> {
    inner: &'a dyn DelegateExec,
    lock: Option<BorrowedFd<'a>>,
}

impl<'a> UnderLock<'a> {
    /// `inner`, with `lock` (when there is one) attached to each request.
    pub fn new(inner: &'a dyn DelegateExec, lock: Option<BorrowedFd<'a>>) -> Self {
        Self { inner, lock }
    }
}

impl std::fmt::Debug for UnderLock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnderLock")
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl DelegateExec for UnderLock<'_> {
    fn exec(&self, req: &ExecRequest<'_>) -> Result<Vec<u8>, ExecError> {
        let mut req = req.clone();
        req.lock = req.lock.or(self.lock);
        self.inner.exec(&req)
    }
}

/// Execs plugin binaries found in `search_path` (our `binDir` first, then the runtime's `CNI_PATH`).
///
/// Each delegate runs in a process group of its own, against what is left of the call's
/// [`Budget`]; the group is killed when that runs out, and whatever is still in the group when the
/// delegate exits is killed too (see [`run`]). With a [`Watchdog`], the groups are also killed
/// when this process dies without cleaning up (SIGKILL by the runtime).
#[derive(Debug, Clone)]
pub struct ProcessExec {
    pub search_path: Vec<PathBuf>,
    budget: Option<Budget>,
    watchdog: Option<Arc<Watchdog>>,
    /// Delegates run chrooted into this root (see [`ProcessExec::with_chroot`]).
    chroot: Option<PathBuf>,
    /// Watch for a delegate's exit with a waiter thread even where pidfds exist (the path of
    /// kernels older than 5.3, tested here on newer ones).
    exit_waiter_thread: bool,
}

impl ProcessExec {
    /// No budget and no watchdog: delegates may run as long as they like (STATUS excepted).
    pub fn new(search_path: Vec<PathBuf>) -> Self {
        Self {
            search_path,
            budget: None,
            watchdog: None,
            chroot: None,
            exit_waiter_thread: false,
        }
    }

    #[cfg(test)]
    fn with_exit_waiter_thread(mut self) -> Self {
        self.exit_waiter_thread = true;
        self
    }

    /// Runs every delegate chrooted into `root` (the host's root mounted into the daemon's
    /// container), so that delegates find the host's tools (`iptables` for portmap, `tc` for
    /// bandwidth) and see the host's files at their usual paths. The search path is read inside
    /// `root`. See [`chroot::spawn_in`] for how, without `unsafe` and without an extra exec.
    pub fn with_chroot(mut self, root: PathBuf) -> Self {
        self.chroot = Some(root);
        self
    }

    /// Every delegate runs against what is left of `budget` (see [`Budget::deadline_for`]).
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Registers every delegate's process group with `watchdog`.
    pub fn with_watchdog(mut self, watchdog: Arc<Watchdog>) -> Self {
        self.watchdog = Some(watchdog);
        self
    }

    /// The first executable file named `plugin` in the search path.
    pub fn find(&self, plugin: &str) -> Result<PathBuf, ExecError> {
        // A type such as "../../bin/sh" must not escape the plugin directories.
        if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
            return Err(ExecError::BadName(plugin.to_owned()));
        }
        let seen_from_here = |p: &Path| match &self.chroot {
            Some(root) => root.join(p.strip_prefix("/").unwrap_or(p)),
            None => p.to_owned(),
        };
        self.search_path
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| seen_from_here(p).is_file())
            .ok_or_else(|| ExecError::NotFound {
                plugin: plugin.to_owned(),
                searched: self
                    .search_path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            })
    }

    /// How long `command` may run, starting now; `None` is "no limit".
    fn limit(&self, command: Command) -> Option<Duration> {
        let budget = self
            .budget
            .map(|b| b.remaining_for(command, Instant::now()));
        if command == Command::Status {
            return Some(budget.map_or(STATUS_TIMEOUT, |b| b.min(STATUS_TIMEOUT)));
        }
        budget
    }
}

impl DelegateExec for ProcessExec {
    fn exec(&self, req: &ExecRequest<'_>) -> Result<Vec<u8>, ExecError> {
        let bin = self.find(req.plugin)?;
        let spawn_err = |reason: String| ExecError::Spawn {
            plugin: req.plugin.to_owned(),
            reason,
        };
        let cni_path =
            std::env::join_paths(&self.search_path).map_err(|e| spawn_err(e.to_string()))?;
        let limit = self.limit(req.command);
        let timeout = |given| ExecError::Timeout {
            plugin: req.plugin.to_owned(),
            command: req.command,
            given,
        };
        if limit.is_some_and(|l| l.is_zero()) {
            return Err(timeout(Duration::ZERO));
        }
        let mut cmd = std::process::Command::new(&bin);
        // Inherited CNI_* variables belong to our own invocation, not to the delegate's.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(&k);
            }
        }
        // A plexus found under another name refuses to run as our delegate (see crate::policy).
        cmd.env(crate::policy::NESTED_ENV, std::process::id().to_string());
        cmd.env("CNI_COMMAND", req.command.as_str())
            .env("CNI_PATH", cni_path);
        // STATUS and GC carry no attachment parameters (CNI 1.1.0 §2).
        if req.command.is_attachment_op() {
            cmd.env("CNI_CONTAINERID", req.container_id)
                .env("CNI_IFNAME", req.ifname)
                .env("CNI_ARGS", req.args);
            if let Some(ns) = req.netns {
                cmd.env("CNI_NETNS", ns);
            }
        }
        let out = match run::run(
            cmd,
            req.stdin,
            limit,
            self.watchdog.as_deref(),
            req.lock,
            self.chroot.as_deref(),
            !self.exit_waiter_thread,
        ) {
            Ok(out) => out,
            Err(run::RunError::Spawn(e)) => return Err(spawn_err(e.to_string())),
            Err(run::RunError::Io(e)) => return Err(spawn_err(e.to_string())),
            Err(run::RunError::TimedOut { stderr }) => {
                log_stderr(req, &stderr);
                return Err(timeout(limit.unwrap_or_default()));
            }
        };
        let stderr = log_stderr(req, &out.stderr);
        if out.status.success() {
            return Ok(out.stdout);
        }
        let error = serde_json::from_slice::<CniError>(&out.stdout).unwrap_or_else(|_| {
            let mut text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if text.is_empty() {
                text = stderr.trim().to_owned();
            }
            CniError::new(
                plexus_cni::codes::INTERNAL,
                format!("exited with {}", out.status),
            )
            .with_details(text)
        });
        Err(ExecError::Failed {
            plugin: req.plugin.to_owned(),
            error,
        })
    }
}

/// Logs a delegate's stderr line by line; returns it as text.
fn log_stderr(req: &ExecRequest<'_>, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr).into_owned();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        tracing::info!(
            plugin = req.plugin,
            command = req.command.as_str(),
            ifname = req.ifname,
            "delegate stderr: {line}"
        );
    }
    text
}

/// STATUS must never block (CNI 1.1.0 §2), so a delegate's STATUS gets at most this long.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn req<'a>(plugin: &'a str, command: Command, stdin: &'a [u8]) -> ExecRequest<'a> {
        ExecRequest {
            plugin,
            command,
            container_id: "c1",
            netns: None,
            ifname: "net1",
            args: "A=b",
            stdin,
            lock: None,
        }
    }

    /// Whether any live (not zombie) process is in group `pgid`.
    fn group_alive(pgid: i32) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp ...; comm may contain spaces, so split after ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
        })
    }

    /// Whether group `pgid` empties within 10 s: SIGKILL is delivered asynchronously, so a
    /// member can still show in /proc for a moment after `killpg` returned.
    fn group_dies(pgid: i32) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while group_alive(pgid) {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    #[test]
    fn with_a_chroot_plugins_are_found_and_run_inside_it() {
        let root = chroot::testing::shell_root();
        let inner = root.path().join("opt/cni/bin");
        std::fs::create_dir_all(&inner).unwrap();
        script(
            &inner,
            "inside",
            r#"read -r line; printf '%s %s %s' "$CNI_COMMAND" "$(pwd)" "$line""#,
        );
        let host_only = tempfile::tempdir().unwrap();
        script(host_only.path(), "outside", "exit 1");
        let e = ProcessExec::new(vec!["/opt/cni/bin".into(), host_only.path().into()])
            .with_chroot(root.path().into())
            .with_budget(Budget::from_now(Duration::from_secs(60)));
        let out = e.exec(&req("inside", Command::Add, b"{}\n")).unwrap();
        assert_eq!(String::from_utf8_lossy(&out), "ADD / {}");
        // A plugin that exists only outside the root is not found: the search path is the root's.
        assert!(matches!(
            e.exec(&req("outside", Command::Add, b"{}")),
            Err(ExecError::NotFound { .. })
        ));
    }

    #[test]
    fn plugin_names_cannot_escape_the_search_path() {
        let e = ProcessExec::new(vec!["/usr/bin".into()]);
        assert!(matches!(e.find("../bin/sh"), Err(ExecError::BadName(_))));
        assert!(matches!(e.find(""), Err(ExecError::BadName(_))));
    }

    #[test]
    fn missing_plugin_names_the_directories() {
        let e = ProcessExec::new(vec!["/nonexistent-a".into(), "/nonexistent-b".into()]);
        let err = e.find("bridge").unwrap_err().to_string();
        assert!(err.contains("/nonexistent-a:/nonexistent-b"), "{err}");
    }

    #[test]
    fn runs_a_binary_with_the_cni_environment() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "envdump",
            "echo \"$CNI_COMMAND $CNI_IFNAME $CNI_ARGS\"; cat",
        );
        let e = ProcessExec::new(vec![dir.path().into()])
            .with_budget(Budget::from_now(Duration::from_secs(60)));
        let out = e.exec(&req("envdump", Command::Add, b"{}")).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "ADD net1 A=b\n{}");
    }

    #[test]
    fn large_stdin_and_stdout_pass_through_whole() {
        // Both beyond a pipe's 64 KiB: neither side may stall the other.
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "echoer", "cat; head -c 300000 /dev/zero >&2");
        let input = vec![b'x'; 1 << 20];
        let e = ProcessExec::new(vec![dir.path().into()])
            .with_budget(Budget::from_now(Duration::from_secs(60)));
        let out = e.exec(&req("echoer", Command::Add, &input)).unwrap();
        assert_eq!(out.len(), input.len());
    }

    #[test]
    fn a_plugin_that_ignores_stdin_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "deaf", "echo ok");
        let e = ProcessExec::new(vec![dir.path().into()]);
        let out = e
            .exec(&req("deaf", Command::Add, &vec![b'x'; 1 << 20]))
            .unwrap();
        assert_eq!(out, b"ok\n");
    }

    /// `ProcessExec::new(search)`, watching for exits with the waiter thread of kernels without
    /// pidfds when `waiter_thread` is set (the tests that depend on exit detection run both).
    fn exec_watching(search: &Path, waiter_thread: bool) -> ProcessExec {
        let e = ProcessExec::new(vec![search.into()]);
        if waiter_thread {
            e.with_exit_waiter_thread()
        } else {
            e
        }
    }

    #[test]
    fn a_hanging_delegate_times_out_and_its_whole_group_is_killed() {
        for waiter_thread in [false, true] {
            hanging_delegate_times_out(waiter_thread);
        }
    }

    fn hanging_delegate_times_out(waiter_thread: bool) {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pgid");
        // The script (which leads its group, so its PID is the group ID) forks a child and both hang.
        script(
            dir.path(),
            "hang",
            &format!("sleep 3600 &\necho $$ > {}\nwait", pidfile.display()),
        );
        let e = exec_watching(dir.path(), waiter_thread)
            .with_budget(Budget::from_now(Duration::from_millis(1500)));
        let t = Instant::now();
        let err = e.exec(&req("hang", Command::Add, b"{}")).unwrap_err();
        let ExecError::Timeout {
            plugin,
            command,
            given,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!((plugin.as_str(), *command), ("hang", Command::Add));
        // ADD may use the budget less the teardown reserve (a fifth).
        assert!(*given <= Duration::from_millis(1200), "{given:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("\"hang\"") && msg.contains("ADD") && msg.contains("callTimeoutSeconds"),
            "{msg}"
        );
        // Guards against a hang only (the limit is 1.2 s).
        assert!(t.elapsed() < Duration::from_secs(30));
        let pgid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            group_dies(pgid),
            "process group {pgid} still has live members"
        );
    }

    #[test]
    fn del_may_use_the_teardown_reserve() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "slow", "sleep 0.3; echo done");
        let budget = Budget::from_now(Duration::from_secs(2));
        // Spend the ADD part of the budget (1.6 s) so that only the reserve is left.
        std::thread::sleep(budget.work_deadline() - Instant::now());
        let e = ProcessExec::new(vec![dir.path().into()]).with_budget(budget);
        let add = e.exec(&req("slow", Command::Add, b"{}")).unwrap_err();
        assert!(
            matches!(add, ExecError::Timeout { given, .. } if given.is_zero()),
            "{add:?}"
        );
        assert!(add.to_string().contains("not started"), "{add}");
        assert_eq!(
            e.exec(&req("slow", Command::Del, b"{}")).unwrap(),
            b"done\n"
        );
    }

    #[test]
    fn a_background_child_holding_stdout_does_not_block() {
        for waiter_thread in [false, true] {
            background_child_does_not_block(waiter_thread);
        }
    }

    fn background_child_does_not_block(waiter_thread: bool) {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pgid");
        // Prints its result and exits; the child keeps stdout and stderr open for an hour.
        script(
            dir.path(),
            "leaver",
            &format!(
                "echo $$ > {}\nsleep 3600 &\necho '{{\"cniVersion\":\"1.0.0\"}}'",
                pidfile.display()
            ),
        );
        let e = exec_watching(dir.path(), waiter_thread)
            .with_budget(Budget::from_now(Duration::from_secs(600)));
        let t = Instant::now();
        let out = e.exec(&req("leaver", Command::Add, b"{}")).unwrap();
        assert_eq!(out, b"{\"cniVersion\":\"1.0.0\"}\n");
        // Far below the budget: the call did not wait for the child.
        assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
        let pgid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(group_dies(pgid), "the leftover child was not killed");
    }

    #[test]
    fn status_is_capped_even_with_a_background_child_holding_stdout() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "stuck", "sleep 3600 &\nexec sleep 3600");
        let e = ProcessExec::new(vec![dir.path().into()]);
        let t = Instant::now();
        let err = e.exec(&req("stuck", Command::Status, b"{}")).unwrap_err();
        assert!(
            matches!(err, ExecError::Timeout { given, .. } if given == STATUS_TIMEOUT),
            "{err:?}"
        );
        // Guards against a hang only: the cap is 5 s.
        assert!(t.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn failure_carries_the_plugin_error() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "failer",
            "echo '{\"code\":7,\"msg\":\"bad\"}'; echo oops >&2; exit 1",
        );
        let e = ProcessExec::new(vec![dir.path().into()]);
        match e.exec(&req("failer", Command::Add, b"{}")).unwrap_err() {
            ExecError::Failed { error, .. } => {
                assert_eq!(error.code, 7);
                assert_eq!(error.msg, "bad");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn killed_by_a_signal_is_a_failure_with_stderr() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "crasher", "echo dying >&2; kill -9 $$");
        let e = ProcessExec::new(vec![dir.path().into()]);
        match e.exec(&req("crasher", Command::Add, b"{}")).unwrap_err() {
            ExecError::Failed { error, .. } => {
                assert!(error.msg.contains("signal"), "{error:?}");
                assert_eq!(error.details, "dying");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
