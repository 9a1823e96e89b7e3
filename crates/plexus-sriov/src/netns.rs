//! Network namespaces without ever leaving a thread in one: work that must happen inside a
//! namespace runs on a fresh thread that enters it and then ends (spec rust-ecosystem §4 rule 2),
//! and netlink sockets are opened there and driven from the calling thread (rule 1: a socket stays
//! bound to the namespace it was created in).

use nix::sched::{CloneFlags, setns};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// A network namespace: the one this process started in, or one named by a path (a pod's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ns {
    /// The plugin's own (the host's).
    Host,
    /// A namespace file such as `/var/run/netns/x` or `/proc/<pid>/ns/net`.
    Path(PathBuf),
}

impl Ns {
    /// Whether the namespace still exists (the host's always does).
    pub fn exists(&self) -> bool {
        match self {
            Ns::Host => true,
            Ns::Path(p) => File::open(p).is_ok(),
        }
    }

    /// A file descriptor of the namespace (for `IFLA_NET_NS_FD`). The host's is opened from the
    /// calling thread, which is never moved, so it is the process's namespace.
    pub fn open(&self) -> io::Result<File> {
        match self {
            Ns::Host => File::open("/proc/thread-self/ns/net"),
            Ns::Path(p) => File::open(p),
        }
    }

    /// Runs `f` inside the namespace: on this thread for the host, else on a short-lived thread
    /// that enters the namespace and ends with `f`.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        match self {
            Ns::Host => f(),
            Ns::Path(p) => run_in(p, f),
        }
    }
}

/// Runs `f` on a new thread that has entered the network namespace at `path`; the thread exits
/// when `f` returns, so no thread is ever left (or reused) in the namespace.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let ns = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("netns {}: {e}", path.display())))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            f()
        })
        .join()
        .map_err(|_| io::Error::other("netns worker thread panicked"))?
    })
}
