//! The installer's errors. Every variant names the file or the setting involved, because the
//! operator reading a crash-looping DaemonSet's log has nothing else to go on.
//!
//! Each message is complete on its own (the cause's text included), so a variant keeps its cause
//! as a plain field rather than as [`std::error::Error::source`]: printing the error with its
//! source chain would otherwise say the cause twice.

use std::path::PathBuf;

/// Anything the installer cannot do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed; `action` says what we were doing.
    #[error("cannot {action} {}: {cause}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// An installed binary does not start or does not answer `CNI_COMMAND=VERSION` properly.
    #[error("installed binary {} does not work: {detail}", path.display())]
    BinaryBroken { path: PathBuf, detail: String },
    /// A user-supplied file (the config template) is not what it must be.
    #[error("invalid {what} {}: {reason}", path.display())]
    InvalidFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// A flag value that cannot be used.
    #[error("invalid setting {flag}: {reason}")]
    InvalidSetting { flag: &'static str, reason: String },
    /// The file-system watcher could not be started.
    #[error("cannot watch {}: {cause}", path.display())]
    Watch { path: PathBuf, cause: notify::Error },
    /// Waiting for the primary network config (or the readiness indicator) took longer than allowed.
    #[error("gave up waiting: {0}")]
    Timeout(String),
}

impl Error {
    /// Builds an [`Error::Io`]; used as `.map_err(Error::io("read", &path))`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |cause| Error::Io {
            action,
            path,
            cause,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
