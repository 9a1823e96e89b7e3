//! `cni-recorder`: a test-only CNI plugin that speaks every version up to 1.1.0 (ADD, DEL, CHECK,
//! STATUS, GC, VERSION). The Debian plugins stop at 1.0.0, so STATUS/GC forwarding and exact
//! stdin assertions need a delegate that accepts anything and tells us what it was given.
//!
//! Config keys (all optional):
//! - `recordFile`: path; each invocation appends one JSON line
//!   `{"command", "env": {CNI_*...}, "stdin": <parsed stdin>}`.
//! - `result`: the ADD result to print (its `cniVersion` is set to the request's). Without it, a
//!   chained call returns its `prevResult`, and a first plugin returns one sandbox interface named
//!   `CNI_IFNAME` with the address `address` (default `192.0.2.10/24`) and `gateway` when set.
//! - `fail`: `{"VERB": "message"}`; that verb fails with code 7 (or `failCode`) and the message.
//! - `sleep`: `{"VERB": seconds}`; that verb sleeps this long (after recording) before answering:
//!   a hanging (or slow) delegate. When the sleep is over it appends a second record whose
//!   `command` is `"<VERB> done"`: proof that it was not killed half-way.
//! - `background`: `{"VERB": seconds}`; that verb first starts a `sleep <seconds>` child that
//!   inherits stdout and stderr, then answers and exits: a delegate that leaves a background
//!   child holding its output pipes.
//!
//! Each record also has `pid` (the plugin leads its own process group when plexus runs it, so
//! this is also its group ID) and, with `background`, `childPid`.

use serde_json::{Map, Value, json};
use std::io::{Read, Write};
use std::process::ExitCode;

const VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let conf: Map<String, Value> = serde_json::from_slice(&stdin).unwrap_or_default();
    let version = conf
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.1.0")
        .to_owned();
    let child_pid = verb_seconds(&conf, "background", &command).and_then(|secs| {
        // stdio inherited: the child keeps our stdout and stderr open after we exit.
        std::process::Command::new("sleep")
            .arg(secs.to_string())
            .spawn()
            .ok()
            .map(|c| c.id())
    });
    record(&conf, &command, &stdin, child_pid);
    if let Some(secs) = verb_seconds(&conf, "sleep", &command) {
        std::thread::sleep(std::time::Duration::from_secs(secs));
        record(&conf, &format!("{command} done"), &stdin, None);
    }

    if command == "VERSION" {
        return print(
            &json!({"cniVersion": version, "supportedVersions": VERSIONS}),
            true,
        );
    }
    if let Some(msg) = conf
        .get("fail")
        .and_then(|f| f.get(&command))
        .and_then(Value::as_str)
    {
        let code = conf.get("failCode").and_then(Value::as_u64).unwrap_or(7);
        return print(
            &json!({"cniVersion": version, "code": code, "msg": msg}),
            false,
        );
    }
    match command.as_str() {
        "ADD" => print(&add_result(&conf, &version), true),
        "DEL" | "CHECK" | "STATUS" | "GC" => ExitCode::SUCCESS,
        other => print(
            &json!({"cniVersion": version, "code": 4, "msg": format!("unknown CNI_COMMAND {other:?}")}),
            false,
        ),
    }
}

fn add_result(conf: &Map<String, Value>, version: &str) -> Value {
    if let Some(Value::Object(r)) = conf.get("result") {
        let mut r = r.clone();
        r.insert("cniVersion".into(), json!(version));
        return Value::Object(r);
    }
    if let Some(prev) = conf.get("prevResult") {
        return prev.clone();
    }
    let address = conf
        .get("address")
        .and_then(Value::as_str)
        .unwrap_or("192.0.2.10/24");
    let gateway = conf.get("gateway").and_then(Value::as_str);
    if version.starts_with("0.1") || version.starts_with("0.2") {
        let mut ip4 = json!({"ip": address});
        if let Some(gw) = gateway {
            ip4["gateway"] = json!(gw);
        }
        return json!({"cniVersion": version, "ip4": ip4});
    }
    let ifname = std::env::var("CNI_IFNAME").unwrap_or_default();
    let netns = std::env::var("CNI_NETNS").unwrap_or_default();
    let mut ip = json!({"address": address, "interface": 0});
    if version.starts_with("0.3") {
        ip["version"] = json!("4");
    }
    if let Some(gw) = gateway {
        ip["gateway"] = json!(gw);
    }
    json!({
        "cniVersion": version,
        "interfaces": [{"name": ifname, "mac": "02:00:00:00:00:01", "sandbox": netns}],
        "ips": [ip],
    })
}

/// `conf[key][command]` as whole seconds.
fn verb_seconds(conf: &Map<String, Value>, key: &str, command: &str) -> Option<u64> {
    conf.get(key)?.get(command)?.as_u64()
}

fn record(conf: &Map<String, Value>, command: &str, stdin: &[u8], child_pid: Option<u32>) {
    let Some(path) = conf.get("recordFile").and_then(Value::as_str) else {
        return;
    };
    let env: Map<String, Value> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CNI_"))
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let stdin: Value = serde_json::from_slice(stdin)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(stdin).into_owned()));
    let mut rec =
        json!({"command": command, "env": env, "stdin": stdin, "pid": std::process::id()});
    if let Some(pid) = child_pid {
        rec["childPid"] = json!(pid);
    }
    let line = rec.to_string() + "\n";
    // One write of the whole line with O_APPEND keeps concurrent invocations' lines whole.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

fn print(v: &Value, ok: bool) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(v.to_string().as_bytes());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
