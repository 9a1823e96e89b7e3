//! A recording, scriptable [`DelegateExec`] for tests of the engine and of anything built on it.

use super::{DelegateExec, ExecError, ExecRequest};
use plexus_cni::{CniError, Command};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::Duration;

/// One recorded delegate call.
#[derive(Debug, Clone)]
pub struct Call {
    pub plugin: String,
    pub command: Command,
    pub ifname: String,
    pub args: String,
    /// The stdin as JSON (`Value::Null` when it was not JSON).
    pub stdin: Value,
}

/// What a scripted call does instead of succeeding.
#[derive(Debug, Clone)]
pub enum Script {
    /// Fail with CNI code 7 and "scripted failure".
    Fail,
    /// Time out as [`super::ProcessExec`] does when the budget runs out.
    Timeout(Duration),
}

/// Records every call. ADD returns a 1.0.0-style result naming the interface (or passes
/// `prevResult` through for chained plugins); other verbs return nothing. Scripted
/// `(plugin, command)` pairs fail or time out instead.
#[derive(Debug, Default)]
pub struct FakeExec {
    calls: Mutex<Vec<Call>>,
    scripts: Mutex<Vec<(String, Command, Script)>>,
}

impl FakeExec {
    /// Every `command` of `plugin` fails.
    pub fn fail_on(&self, plugin: &str, command: Command) {
        self.script(plugin, command, Script::Fail);
    }

    /// Every `command` of `plugin` times out, reporting `given` as the time it had.
    pub fn time_out_on(&self, plugin: &str, command: Command, given: Duration) {
        self.script(plugin, command, Script::Timeout(given));
    }

    pub fn script(&self, plugin: &str, command: Command, script: Script) {
        lock(&self.scripts).push((plugin.into(), command, script));
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// `"ADD bridge eth0"` per call, in order.
    pub fn trace(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{} {} {}", c.command.as_str(), c.plugin, c.ifname))
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl DelegateExec for FakeExec {
    fn exec(&self, req: &ExecRequest<'_>) -> Result<Vec<u8>, ExecError> {
        let stdin: Value = serde_json::from_slice(req.stdin).unwrap_or(Value::Null);
        let n = {
            let mut calls = lock(&self.calls);
            calls.push(Call {
                plugin: req.plugin.into(),
                command: req.command,
                ifname: req.ifname.into(),
                args: req.args.into(),
                stdin: stdin.clone(),
            });
            calls.len()
        };
        let script = lock(&self.scripts)
            .iter()
            .find(|(p, c, _)| p == req.plugin && *c == req.command)
            .map(|(_, _, s)| s.clone());
        match script {
            Some(Script::Fail) => {
                return Err(ExecError::Failed {
                    plugin: req.plugin.into(),
                    error: CniError::new(7, "scripted failure"),
                });
            }
            Some(Script::Timeout(given)) => {
                return Err(ExecError::Timeout {
                    plugin: req.plugin.into(),
                    command: req.command,
                    given,
                });
            }
            None => {}
        }
        if req.command != Command::Add {
            return Ok(Vec::new());
        }
        if let Some(prev) = stdin.get("prevResult") {
            return Ok(serde_json::to_vec(prev).expect("JSON values always serialize"));
        }
        let r = json!({
            "cniVersion": stdin["cniVersion"],
            "interfaces": [{"name": req.ifname, "mac": format!("02:00:00:00:00:{n:02x}"), "sandbox": "/run/netns/x"}],
            "ips": [{"address": format!("10.0.{n}.5/24"), "gateway": format!("10.0.{n}.1"), "interface": 0}]
        });
        Ok(serde_json::to_vec(&r).expect("JSON values always serialize"))
    }
}
