//! The pod sandbox's "pause" process for the containerd test bed.
//!
//! It runs as PID 1 of the sandbox's PID namespace, holds the namespaces open, exits 0 on SIGTERM or
//! SIGINT and reaps any orphan re-parented to it, like the pause image a kubelet uses. The signals
//! are blocked and taken with `sigwait`: the kernel drops default-disposition signals sent to a
//! namespace's init, but never drops blocked ones, so no handler (and no unsafe code) is needed.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

fn main() {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        eprintln!("plexus-pause: cannot block signals: {e}");
        std::process::exit(1);
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => reap(),
            Ok(_) => std::process::exit(0),
            Err(e) => {
                eprintln!("plexus-pause: sigwait: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Collects every exited child without blocking.
fn reap() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
