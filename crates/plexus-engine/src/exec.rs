//! Running delegate plugins. The engine only sees [`DelegateExec`]; [`ProcessExec`] execs the
//! binaries the way a CNI runtime does.

use plexus_cni::{CniError, Command};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

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
}

/// Runs a delegate and returns its stdout.
pub trait DelegateExec: Send + Sync {
    fn exec(&self, req: &ExecRequest<'_>) -> Result<Vec<u8>, ExecError>;
}

/// Execs plugin binaries found in `search_path` (our `binDir` first, then the runtime's `CNI_PATH`).
#[derive(Debug, Clone)]
pub struct ProcessExec {
    pub search_path: Vec<PathBuf>,
}

impl ProcessExec {
    pub fn new(search_path: Vec<PathBuf>) -> Self {
        Self { search_path }
    }

    /// The first executable file named `plugin` in the search path.
    pub fn find(&self, plugin: &str) -> Result<PathBuf, ExecError> {
        // A type such as "../../bin/sh" must not escape the plugin directories.
        if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
            return Err(ExecError::BadName(plugin.to_owned()));
        }
        self.search_path
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
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
}

impl DelegateExec for ProcessExec {
    fn exec(&self, req: &ExecRequest<'_>) -> Result<Vec<u8>, ExecError> {
        let bin = self.find(req.plugin)?;
        let cni_path = std::env::join_paths(&self.search_path).map_err(|e| ExecError::Spawn {
            plugin: req.plugin.to_owned(),
            reason: e.to_string(),
        })?;
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
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // STATUS and GC carry no attachment parameters (CNI 1.1.0 §2).
        if req.command.is_attachment_op() {
            cmd.env("CNI_CONTAINERID", req.container_id)
                .env("CNI_IFNAME", req.ifname)
                .env("CNI_ARGS", req.args);
            if let Some(ns) = req.netns {
                cmd.env("CNI_NETNS", ns);
            }
        }
        let mut child = cmd.spawn().map_err(|e| ExecError::Spawn {
            plugin: req.plugin.to_owned(),
            reason: e.to_string(),
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin may exit without reading stdin (e.g. on a usage error); EPIPE is not our error.
            let _ = stdin.write_all(req.stdin);
        }
        let out = if req.command == Command::Status {
            wait_bounded(child, STATUS_TIMEOUT)
        } else {
            child.wait_with_output()
        }
        .map_err(|e| ExecError::Spawn {
            plugin: req.plugin.to_owned(),
            reason: e.to_string(),
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(
                plugin = req.plugin,
                command = req.command.as_str(),
                ifname = req.ifname,
                "delegate stderr: {line}"
            );
        }
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

/// STATUS must never block (CNI 1.1.0 §2), so a delegate's STATUS gets this long.
pub const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `wait_with_output` with a deadline: the child is killed when it has not exited by then.
/// Output is drained on threads so that a chatty child cannot block on a full pipe.
fn wait_bounded(
    mut child: std::process::Child,
    timeout: std::time::Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}; killed"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    Ok(std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let script = dir.path().join("envdump");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"$CNI_COMMAND $CNI_IFNAME $CNI_ARGS\"; cat\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let e = ProcessExec::new(vec![dir.path().into()]);
        let out = e
            .exec(&ExecRequest {
                plugin: "envdump",
                command: Command::Add,
                container_id: "c1",
                netns: None,
                ifname: "net1",
                args: "A=b",
                stdin: b"{}",
            })
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "ADD net1 A=b\n{}");
    }

    #[test]
    fn a_hanging_status_is_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("sleeper");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let child = std::process::Command::new(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t = std::time::Instant::now();
        let e = wait_bounded(child, std::time::Duration::from_millis(100)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn failure_carries_the_plugin_error() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("failer");
        std::fs::write(
            &script,
            "#!/bin/sh\necho '{\"code\":7,\"msg\":\"bad\"}'; echo oops >&2; exit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let e = ProcessExec::new(vec![dir.path().into()]);
        let err = e
            .exec(&ExecRequest {
                plugin: "failer",
                command: Command::Add,
                container_id: "c1",
                netns: None,
                ifname: "net1",
                args: "",
                stdin: b"{}",
            })
            .unwrap_err();
        match err {
            ExecError::Failed { error, .. } => {
                assert_eq!(error.code, 7);
                assert_eq!(error.msg, "bad");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
