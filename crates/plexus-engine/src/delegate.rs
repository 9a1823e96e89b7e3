//! Running one attachment's plugins (a conf, or a conflist as a chain) with the CNI runtime rules:
//! `cniVersion`/`name` injected into every plugin, `prevResult` chaining on ADD, DEL in reverse with
//! the final result as `prevResult` (0.4.0+), CHECK only where the version has it.

use crate::exec::{DelegateExec, ExecError, ExecRequest};
use plexus_cni::{CniResult, CniVersion, Command, NetworkConfig};
use serde_json::{Map, Value};
use std::path::Path;

/// The invocation context shared by every plugin of every attachment of one CNI call.
#[derive(Clone, Copy)]
pub struct Invocation<'a> {
    pub exec: &'a dyn DelegateExec,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    /// `CNI_ARGS` for delegates.
    pub args: &'a str,
}

impl std::fmt::Debug for Invocation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation")
            .field("container_id", &self.container_id)
            .field("netns", &self.netns)
            .finish()
    }
}

/// Why an ADD chain failed.
#[derive(Debug, Clone)]
pub enum ChainError {
    Exec(ExecError),
    /// The plugin succeeded but printed something that is not a result of its version.
    BadResult {
        plugin: String,
        reason: String,
    },
}

/// One attachment's plugins, ready to run.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a> {
    pub config: &'a NetworkConfig,
    pub version: CniVersion,
    pub ifname: &'a str,
    pub runtime_config: &'a Map<String, Value>,
}

impl Chain<'_> {
    fn request<'r>(
        &'r self,
        inv: &Invocation<'r>,
        plugin: &'r str,
        command: Command,
        stdin: &'r [u8],
    ) -> ExecRequest<'r> {
        ExecRequest {
            plugin,
            command,
            container_id: inv.container_id,
            netns: inv.netns,
            ifname: self.ifname,
            args: inv.args,
            stdin,
            lock: None,
        }
    }

    fn stdin(&self, index: usize, prev: Option<&Value>) -> Vec<u8> {
        let v = self
            .config
            .plugin_stdin(index, self.version, prev, Some(self.runtime_config));
        serde_json::to_vec(&v).expect("JSON values always serialize")
    }

    /// ADD every plugin in order. On success, the last plugin's result (in `version`).
    /// On failure, the result of the last plugin that succeeded is returned with the error, so the
    /// caller's rollback can hand it to DEL.
    pub fn add(&self, inv: &Invocation<'_>) -> Result<Value, (ChainError, Option<Value>)> {
        self.add_after(inv, None)
    }

    /// [`Chain::add`] with `prev` as the first plugin's prevResult: a chain that continues another
    /// attachment's (the auxiliary chain continues the cluster network's).
    pub fn add_after(
        &self,
        inv: &Invocation<'_>,
        prev: Option<Value>,
    ) -> Result<Value, (ChainError, Option<Value>)> {
        let types = self.config.plugin_types();
        let mut prev = prev;
        for (i, plugin) in types.iter().enumerate() {
            let stdin = self.stdin(i, prev.as_ref());
            tracing::debug!(plugin = %plugin, ifname = self.ifname, "ADD delegate");
            let out = match inv
                .exec
                .exec(&self.request(inv, plugin, Command::Add, &stdin))
            {
                Ok(out) => out,
                Err(e) => return Err((ChainError::Exec(e), prev)),
            };
            let value: Value = match serde_json::from_slice(&out) {
                Ok(v) => v,
                Err(e) => {
                    let reason = format!("plugin {plugin:?} printed an invalid result: {e}");
                    return Err((
                        ChainError::BadResult {
                            plugin: plugin.clone(),
                            reason,
                        },
                        prev,
                    ));
                }
            };
            if let Err(e) = CniResult::from_value(&value, self.version) {
                return Err((
                    ChainError::BadResult {
                        plugin: plugin.clone(),
                        reason: e.to_string(),
                    },
                    prev,
                ));
            }
            prev = Some(value);
        }
        prev.ok_or_else(|| {
            (
                ChainError::BadResult {
                    plugin: String::new(),
                    reason: "config has no plugins".into(),
                },
                None,
            )
        })
    }

    /// DEL every plugin in reverse, continuing past failures (a failed `tuning` DEL must not keep
    /// `bridge` from releasing the IP). Returns one error per failed plugin.
    pub fn del(&self, inv: &Invocation<'_>, result: Option<&Value>) -> Vec<ExecError> {
        // DEL carries prevResult only from 0.4.0 on; older plugins reject unknown input shapes.
        let prev = result.filter(|_| self.version.supports_check());
        let types = self.config.plugin_types();
        let mut errors = Vec::new();
        for (i, plugin) in types.iter().enumerate().rev() {
            let stdin = self.stdin(i, prev);
            if let Err(e) = inv
                .exec
                .exec(&self.request(inv, plugin, Command::Del, &stdin))
            {
                errors.push(e);
            }
        }
        errors
    }

    /// CHECK every plugin in order with the cached final result; skipped (Ok) below 0.4.0 and
    /// when the config sets `disableCheck`.
    pub fn check(&self, inv: &Invocation<'_>, result: &Value) -> Result<(), ExecError> {
        if !self.version.supports_check() || self.config.disable_check {
            return Ok(());
        }
        for (i, plugin) in self.config.plugin_types().iter().enumerate() {
            let stdin = self.stdin(i, Some(result));
            inv.exec
                .exec(&self.request(inv, plugin, Command::Check, &stdin))?;
        }
        Ok(())
    }
}
