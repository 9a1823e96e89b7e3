//! Killing delegates when `plexus` itself is killed.
//!
//! When the kubelet gives up on a CRI call, the runtime SIGKILLs `plexus`; nothing in `plexus`
//! runs after that, and its delegates, each leading a process group of its own, would keep
//! running. `PR_SET_PDEATHSIG` cannot be set without `unsafe` (it must be called between `fork`
//! and `exec`), and even then it reaches only the delegate, not the processes the delegate
//! started. So the process groups are handed to a watchdog instead: a second process (a copy of
//! the `plexus` binary started with [`WATCHDOG_ENV`] set, see [`serve`]) that reads
//! `+<pgid>` / `-<pgid>` lines on a pipe from us. The kernel closes that pipe when we die,
//! however we die; the watchdog then SIGKILLs every group still registered and exits. On a normal
//! exit every group has been deregistered and the watchdog just exits.
//!
//! A group is deregistered only after its leader was reaped, and killed before that, so a
//! registered ID is never free for reuse while we live. After we die, our unreaped children are
//! reaped by init; the watchdog acts within milliseconds of the pipe closing, long before the
//! kernel hands the same ID out again as a group leader.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

/// Environment variable that turns a `plexus` process into the watchdog (any value).
pub const WATCHDOG_ENV: &str = "PLEXUS_WATCHDOG";

/// Our end of the watchdog: started on the first registration, stopped on drop.
#[derive(Debug)]
pub struct Watchdog {
    program: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    Running {
        child: Child,
        pipe: ChildStdin,
    },
    /// It could not be started or its pipe broke; delegates still run, unguarded.
    Failed,
}

impl Watchdog {
    /// A watchdog that runs `program` (the `plexus` binary, which must call [`serve`] when it
    /// finds [`WATCHDOG_ENV`] set) when the first group is registered.
    pub fn new(program: PathBuf) -> Self {
        Self {
            program,
            state: Mutex::new(State::Idle),
        }
    }

    /// The watchdog for the running binary.
    pub fn for_current_exe() -> std::io::Result<Self> {
        Ok(Self::new(std::env::current_exe()?))
    }

    /// Have `pgid` killed if this process dies before [`Watchdog::unregister`].
    pub(crate) fn register(&self, pgid: Pid) {
        self.send(&format!("+{pgid}\n"));
    }

    /// `pgid` is dead and reaped.
    pub(crate) fn unregister(&self, pgid: Pid) {
        self.send(&format!("-{pgid}\n"));
    }

    fn send(&self, line: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, State::Idle) {
            *state = match self.start() {
                Ok((child, pipe)) => State::Running { child, pipe },
                Err(e) => {
                    tracing::warn!(program = %self.program.display(), "cannot start the delegate watchdog: {e}; delegates will outlive a killed plexus");
                    State::Failed
                }
            };
        }
        if let State::Running { pipe, .. } = &mut *state
            && let Err(e) = pipe.write_all(line.as_bytes())
        {
            tracing::warn!(
                "the delegate watchdog is gone: {e}; delegates will outlive a killed plexus"
            );
            *state = State::Failed;
        }
    }

    fn start(&self) -> std::io::Result<(Child, ChildStdin)> {
        let mut child = Command::new(&self.program)
            .env(WATCHDOG_ENV, "1")
            .stdin(Stdio::piped())
            // Never hold the runtime's pipes: it reads our stdout until EOF.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in our group, so that a signal to our group does not take it down with us.
            .process_group(0)
            .spawn()?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin pipe"))?;
        Ok((child, pipe))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let state = std::mem::take(self.state.get_mut().unwrap_or_else(|p| p.into_inner()));
        if let State::Running { mut child, pipe } = state {
            // EOF with nothing registered: it exits at once; reaping it keeps no zombie around.
            drop(pipe);
            let _ = child.wait();
        }
    }
}

/// The watchdog process: reads `+<pgid>` / `-<pgid>` lines until EOF, then SIGKILLs every group
/// still registered. Returns how many groups it killed (for tests and the log).
pub fn serve(input: impl BufRead) -> usize {
    let mut groups = BTreeSet::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        let (op, id) = line.split_at(line.len().min(1));
        let Ok(id) = id.trim().parse::<i32>() else {
            continue;
        };
        // 0, 1 and negative IDs would address our own group, init or every process.
        if id <= 1 {
            continue;
        }
        match op {
            "+" => {
                groups.insert(id);
            }
            "-" => {
                groups.remove(&id);
            }
            _ => {}
        }
    }
    groups
        .into_iter()
        .filter(|id| killpg(Pid::from_raw(*id), Signal::SIGKILL).is_ok())
        .count()
}

/// [`serve`] on this process's stdin (the entry point of the watchdog process).
pub fn serve_stdin() {
    serve(std::io::stdin().lock());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn sleeper() -> Child {
        Command::new("sleep")
            .arg("3600")
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn registered_groups_are_killed_at_eof_and_deregistered_ones_are_not() {
        let (mut a, mut b) = (sleeper(), sleeper());
        let input = format!("+{}\n+{}\n-{}\n", a.id(), b.id(), b.id());
        assert_eq!(serve(input.as_bytes()), 1);
        assert_eq!(a.wait().unwrap().signal(), Some(libc_sigkill()));
        assert_eq!(b.try_wait().unwrap(), None, "deregistered group left alone");
        b.kill().unwrap();
        b.wait().unwrap();
    }

    #[test]
    fn garbage_and_dangerous_ids_are_ignored() {
        assert_eq!(serve("+0\n+1\n+-5\nhello\n+\n".as_bytes()), 0);
    }

    fn libc_sigkill() -> i32 {
        Signal::SIGKILL as i32
    }
}
