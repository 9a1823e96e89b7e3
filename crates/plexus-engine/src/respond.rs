//! What every CNI entry point (`plexus`, `plexus-shim`, and `plexusd` for the calls it is sent)
//! does the same way: decode the configuration, answer VERSION, and end a call.

use plexus_cni::{CniError, SUPPORTED_VERSIONS, build, codes};
use serde_json::{Map, Value};
use std::io::Write;
use std::process::ExitCode;

/// The plexus configuration the runtime gave on stdin, as a JSON object.
pub fn decode_config(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            codes::DECODING_FAILURE,
            format!("cannot decode the plexus configuration on stdin: {e}"),
        )
    })
}

/// The version for error replies, from a configuration's `cniVersion` field (CNI's oldest when
/// it names none).
pub fn config_version(cni_version: Option<&Value>) -> String {
    cni_version
        .and_then(Value::as_str)
        .unwrap_or("0.1.0")
        .to_owned()
}

/// `{"cniVersion": <the request's>, "supportedVersions": [...]}` (spec §5 "Version"); `plexus`,
/// the build, is an extra field: runtimes read only the two the spec defines.
pub fn version_reply(config: &Value) -> Value {
    let requested = config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("1.1.0");
    serde_json::json!({"cniVersion": requested, "supportedVersions": SUPPORTED_VERSIONS, "plexus": build::json()})
}

/// [`version_reply`] to a VERSION call's stdin, which need not be valid JSON.
pub fn version_reply_to(stdin: &[u8]) -> String {
    version_reply(&serde_json::from_slice(stdin).unwrap_or(Value::Null)).to_string()
}

/// Writes `out` (the result or the CNI error JSON) to stdout, the only thing a CNI plugin may
/// print there, and returns the exit status the runtime reads: success only when `ok`.
pub fn respond(out: &str, ok: bool) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    // Nothing useful can be done if stdout is gone: the runtime has stopped listening.
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
