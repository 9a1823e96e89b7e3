//! How a CNI entry point (`plexus`, `plexus-shim`) ends a call.

use std::io::Write;
use std::process::ExitCode;

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
