//! Running the IPAM plugin: exec `<CNI_PATH dir>/<ipam.type>` with the network configuration on
//! stdin and the CNI environment of the attachment, as libcni's `ipam.ExecAdd/ExecDel` do.

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The CNI environment of one IPAM call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamEnv {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// `CNI_PATH`.
    pub path: String,
}

/// Why an IPAM call failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// No such plugin in CNI_PATH.
    #[error("IPAM plugin {0:?} not found in CNI_PATH {1:?}")]
    NotFound(String, String),
    /// It could not be run.
    #[error("running IPAM plugin {0}: {1}")]
    Exec(String, std::io::Error),
    /// It returned an error (its CNI error JSON, or its exit status and stderr).
    #[error("IPAM plugin {plugin} {command} failed: {msg}")]
    Failed {
        /// The plugin.
        plugin: String,
        /// The command.
        command: String,
        /// Its error code (0 when it printed none).
        code: u32,
        /// Its message.
        msg: String,
    },
    /// Its result is not JSON.
    #[error("IPAM plugin {0} printed a result that is not JSON: {1}")]
    BadResult(String, String),
}

/// Runs IPAM plugins.
pub trait Ipam {
    /// Runs `plugin` with `stdin`; the result (ADD) or `None` (empty output: DEL, CHECK, GC).
    fn exec(&self, plugin: &str, env: &IpamEnv, stdin: &[u8]) -> Result<Option<Value>, IpamError>;
}

/// Execs the plugin binary from `CNI_PATH`.
#[derive(Debug, Default)]
pub struct ExecIpam;

impl Ipam for ExecIpam {
    fn exec(&self, plugin: &str, env: &IpamEnv, stdin: &[u8]) -> Result<Option<Value>, IpamError> {
        let bin = env
            .path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| IpamError::NotFound(plugin.to_owned(), env.path.clone()))?;
        let mut child = Command::new(&bin)
            .env("CNI_COMMAND", &env.command)
            .env("CNI_CONTAINERID", &env.container_id)
            .env("CNI_NETNS", &env.netns)
            .env("CNI_IFNAME", &env.ifname)
            .env("CNI_ARGS", &env.args)
            .env("CNI_PATH", &env.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| IpamError::Exec(plugin.to_owned(), e))?;
        if let Some(mut w) = child.stdin.take() {
            // A plugin that exits without reading stdin closes the pipe: its exit status says why.
            let _ = w.write_all(stdin);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| IpamError::Exec(plugin.to_owned(), e))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let (code, msg) = match serde_json::from_str::<Value>(&stdout) {
                Ok(v) => (
                    v["code"].as_u64().unwrap_or(0) as u32,
                    [v["msg"].as_str(), v["details"].as_str()]
                        .into_iter()
                        .flatten()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(": "),
                ),
                Err(_) => (
                    0,
                    format!(
                        "{}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ),
            };
            return Err(IpamError::Failed {
                plugin: plugin.to_owned(),
                command: env.command.clone(),
                code,
                msg,
            });
        }
        if stdout.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&stdout)
            .map(Some)
            .map_err(|e| IpamError::BadResult(plugin.to_owned(), e.to_string()))
    }
}
