//! Command-line arguments. A container runtime execs `plexus` without any (the CNI protocol is the
//! environment and stdin), so arguments only ever come from a person at a terminal: they are
//! answered before stdin is touched, because a terminal's stdin never reaches EOF.

use plexus_cni::{SUPPORTED_VERSIONS, build};
use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

/// Handles the arguments, if any: `Some(exit code)` when the process is done, `None` for a CNI
/// invocation (no arguments).
pub fn handle(args: impl IntoIterator<Item = OsString>) -> Option<ExitCode> {
    let args: Vec<OsString> = args.into_iter().collect();
    let first = args.first()?;
    let (text, code) = match first.to_str() {
        Some("--version" | "-v" | "-V" | "version") if args.len() == 1 => {
            (version_text(), ExitCode::SUCCESS)
        }
        Some("--help" | "-h" | "help") if args.len() == 1 => (help_text(), ExitCode::SUCCESS),
        _ => {
            let shown: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let _ = writeln!(
                std::io::stderr(),
                "plexus: unexpected arguments {shown:?}\n\n{}",
                help_text()
            );
            return Some(ExitCode::from(2));
        }
    };
    // A closed stdout (`plexus --version | true`) is not worth a panic.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Some(code)
}

/// `plexus --version`.
pub fn version_text() -> String {
    format!(
        "plexus {}\nCNI spec versions: {}\n",
        build::long_version(),
        SUPPORTED_VERSIONS.join(", ")
    )
}

fn help_text() -> String {
    format!(
        "plexus {} - a multi-network meta CNI plugin for Kubernetes (a Multus replacement).\n\
         \n\
         A container runtime runs it: CNI_COMMAND and the other CNI_* variables in the\n\
         environment, the network configuration on stdin, the result or error as JSON on stdout.\n\
         Logs go to stderr and the configured logFile.\n\
         \n\
         Options:\n\
         \x20 -v, --version   print the version and the git commit it was built from\n\
         \x20 -h, --help      print this help\n\
         \n\
         Configuration keys and error codes: docs/configuration.md, docs/errors.md;\n\
         when pods do not get their networks: docs/troubleshooting.md.\n",
        build::long_version()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Option<ExitCode> {
        handle(args.iter().map(OsString::from))
    }

    #[test]
    fn no_arguments_means_a_cni_call() {
        assert!(run(&[]).is_none());
    }

    #[test]
    fn version_help_and_nonsense() {
        assert_eq!(run(&["--version"]), Some(ExitCode::SUCCESS));
        assert_eq!(run(&["-h"]), Some(ExitCode::SUCCESS));
        assert_eq!(run(&["--frobnicate"]), Some(ExitCode::from(2)));
        assert_eq!(run(&["--version", "extra"]), Some(ExitCode::from(2)));
        assert!(version_text().contains(build::COMMIT));
    }
}
