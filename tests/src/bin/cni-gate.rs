//! `cni-gate`: a test-only CNI plugin that holds an ADD at a precise point so that a test can
//! SIGKILL `plexus` (or make the step fail) exactly there.
//!
//! Config keys (all optional):
//! - `gate`: a name for the marker, telling the gates of one pod apart.
//! - `markerDir`: on ADD, before blocking, the gate writes `<markerDir>/gate-<pid>.json`
//!   (`{"pid", "gate", "ifname", "containerID"}`, written whole by a rename) so the test knows the
//!   ADD has reached it and which process to look for afterwards.
//! - `releaseFile`: the ADD blocks until this file exists (polling), forever if it never appears.
//!   When its content is `fail`, the ADD then fails (code 11), as a delegate that errors at
//!   this step would. Without the key the gate does not block.
//! - `fail`: `true` makes the ADD fail at once (after the marker), without waiting.
//!
//! Otherwise it is a pass-through chained plugin: ADD prints its `prevResult` (or, first in a
//! chain, an empty result of the request's version), DEL and CHECK succeed, VERSION answers every
//! version that has a `prevResult`. It never touches the network, so DELs of it cannot fail.

use serde_json::{Map, Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let conf: Map<String, Value> = serde_json::from_slice(&stdin).unwrap_or_default();
    let version = conf
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("1.0.0")
        .to_owned();
    match command.as_str() {
        "VERSION" => print(
            &json!({"cniVersion": version, "supportedVersions": VERSIONS}),
            true,
        ),
        "ADD" => add(&conf, &version),
        "DEL" | "CHECK" | "STATUS" | "GC" => ExitCode::SUCCESS,
        other => print(
            &error(&version, 4, &format!("unknown CNI_COMMAND {other:?}")),
            false,
        ),
    }
}

fn add(conf: &Map<String, Value>, version: &str) -> ExitCode {
    if let Some(dir) = conf.get("markerDir").and_then(Value::as_str)
        && let Err(e) = write_marker(Path::new(dir), conf)
    {
        return print(
            &error(version, 5, &format!("cannot write the gate marker: {e}")),
            false,
        );
    }
    let mut fail = conf.get("fail").and_then(Value::as_bool).unwrap_or(false);
    if let Some(release) = conf.get("releaseFile").and_then(Value::as_str) {
        let release = PathBuf::from(release);
        loop {
            if let Ok(text) = std::fs::read_to_string(&release) {
                fail |= text.trim() == "fail";
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if fail {
        return print(
            &error(version, 11, "cni-gate: failing this step as asked"),
            false,
        );
    }
    let result = conf
        .get("prevResult")
        .cloned()
        .map(|mut r| {
            r["cniVersion"] = json!(version);
            r
        })
        .unwrap_or_else(|| json!({"cniVersion": version, "interfaces": [], "ips": []}));
    print(&result, true)
}

fn write_marker(dir: &Path, conf: &Map<String, Value>) -> std::io::Result<()> {
    let pid = std::process::id();
    let marker = json!({
        "pid": pid,
        "gate": conf.get("gate").cloned().unwrap_or(Value::Null),
        "ifname": std::env::var("CNI_IFNAME").unwrap_or_default(),
        "containerID": std::env::var("CNI_CONTAINERID").unwrap_or_default(),
    });
    let tmp = dir.join(format!(".gate-{pid}.tmp"));
    std::fs::write(&tmp, marker.to_string())?;
    std::fs::rename(&tmp, dir.join(format!("gate-{pid}.json")))
}

fn error(version: &str, code: u64, msg: &str) -> Value {
    json!({"cniVersion": version, "code": code, "msg": msg})
}

fn print(v: &Value, ok: bool) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(v.to_string().as_bytes());
    let _ = out.flush();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
