//! One delegate process, start to finish, in safe code.
//!
//! - The delegate leads a new process group (`process_group(0)`), so that it and everything it
//!   starts can be killed with one `killpg`.
//! - stdin, stdout and stderr are pumped by one `poll(2)` loop on non-blocking pipes, which also
//!   watches for the delegate's exit through a pidfd (readable once the process has exited; it is
//!   not reaped). Kernels older than 5.3 have no `pidfd_open`: there a helper thread does a
//!   `waitid(WNOWAIT)` and closes a pipe when it returns. The pidfd spares a thread start and a
//!   thread wake-up per delegate, which on a small VM is a tenth of a millisecond each time.
//!   Nothing ever blocks on a pipe: a delegate that exits while a background child still holds
//!   its stdout is done when *it* exits, and a delegate that never reads a large stdin cannot
//!   stall us either.
//! - When the deadline passes, the whole group is SIGKILLed. When the delegate exits, whatever is
//!   left in its group is SIGKILLed as well: it belonged to this one invocation, and nothing may
//!   outlive the call (a daemon that wants to stay starts its own session with `setsid`).
//! - The group is killed *before* the delegate is reaped. Until then its PID, which is the group
//!   ID, cannot be reused, so `killpg` can never hit an unrelated process.

use super::watchdog::Watchdog;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a delegate that exited left us.
#[derive(Debug)]
pub(super) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug)]
pub(super) enum RunError {
    /// The binary could not be started.
    Spawn(std::io::Error),
    /// The pipes or the wait failed; the group was killed.
    Io(std::io::Error),
    /// The deadline passed; the group was killed. What it wrote to stderr, for the log.
    TimedOut { stderr: Vec<u8> },
}

/// After killing a group, how long to wait for its leader to die before leaving it to init (only
/// a process stuck in the kernel survives SIGKILL that long).
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Runs `cmd` with `stdin` as its input; `limit` bounds it (`None`: no limit). `pidfd` off
/// watches for the exit with a waiter thread even where pidfds exist (for tests of that path).
pub(super) fn run(
    mut cmd: Command,
    stdin: &[u8],
    limit: Option<Duration>,
    watchdog: Option<&Watchdog>,
    lock: Option<BorrowedFd<'_>>,
    root: Option<&std::path::Path>,
    pidfd: bool,
) -> Result<Finished, RunError> {
    let deadline = limit.map(|l| Instant::now() + l);
    cmd.process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = match root {
        None => cmd.spawn(),
        Some(root) => super::chroot::spawn_in(root, &mut cmd),
    }
    .map_err(RunError::Spawn)?;
    let mut group = Group::new(child, watchdog, lock, pidfd);
    let result = group.pump(stdin, deadline);
    let status = group.finish();
    let pumped = result.map_err(RunError::Io)?;
    match (pumped.outcome, status) {
        (Outcome::Exited, Some(status)) => Ok(Finished {
            status,
            stdout: pumped.stdout,
            stderr: pumped.stderr,
        }),
        (Outcome::Exited, None) => Err(RunError::Io(std::io::Error::other(
            "the delegate exited but could not be reaped",
        ))),
        (Outcome::TimedOut, _) => Err(RunError::TimedOut {
            stderr: pumped.stderr,
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Exited,
    TimedOut,
}

#[derive(Debug)]
struct Pumped {
    outcome: Outcome,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Something that becomes readable once a process has exited, without reaping it (its PID, which
/// is also its group ID, stays ours until it is waited for).
enum ExitWatch {
    /// The process's pidfd.
    Pidfd(OwnedFd),
    /// The read end of a pipe whose write end a waiter thread closes when `waitid(WNOWAIT)`
    /// returns (kernels without `pidfd_open`).
    Waiter {
        exited: std::io::PipeReader,
        thread: std::thread::JoinHandle<()>,
    },
}

impl ExitWatch {
    /// A pidfd when `pidfd` is set and the kernel has them, else a waiter thread; `None` when
    /// neither can be had (no file descriptor or thread left).
    fn new(pid: Pid, pidfd: bool) -> Option<Self> {
        if pidfd {
            let pid = rustix::process::Pid::from_raw(pid.as_raw()).expect("a child's PID is > 0");
            if let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
                return Some(Self::Pidfd(fd));
            }
        }
        let (exited, writer) = std::io::pipe().ok()?;
        let thread = std::thread::Builder::new()
            .name("delegate-wait".into())
            .spawn(move || {
                while let Err(Errno::EINTR) =
                    waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
                {
                }
                drop(writer);
            })
            .ok()?;
        Some(Self::Waiter { exited, thread })
    }
}

impl AsFd for ExitWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Pidfd(fd) => fd.as_fd(),
            Self::Waiter { exited, .. } => exited.as_fd(),
        }
    }
}

/// A running delegate and its process group. Dropping it (on any path, panics included) kills the
/// group and reaps the leader.
struct Group<'w> {
    child: Child,
    pgid: Pid,
    watchdog: Option<&'w Watchdog>,
    exited: Option<ExitWatch>,
    done: bool,
}

impl<'w> Group<'w> {
    fn new(
        child: Child,
        watchdog: Option<&'w Watchdog>,
        lock: Option<BorrowedFd<'_>>,
        pidfd: bool,
    ) -> Self {
        // process_group(0) made the child's PID its group ID.
        let pgid = Pid::from_raw(child.id() as i32);
        if let Some(w) = watchdog {
            w.register(pgid, lock);
        }
        Self {
            child,
            pgid,
            watchdog,
            exited: ExitWatch::new(pgid, pidfd),
            done: false,
        }
    }

    /// Feeds stdin and collects stdout/stderr until the leader exits or `deadline` passes.
    fn pump(&mut self, input: &[u8], deadline: Option<Instant>) -> std::io::Result<Pumped> {
        let Some(exited) = self.exited.as_ref() else {
            return Err(std::io::Error::other(
                "cannot watch the delegate (no pipe or thread)",
            ));
        };
        let mut stdin = self.child.stdin.take();
        let mut stdout = self.child.stdout.take();
        let mut stderr = self.child.stderr.take();
        for fd in [
            stdin.as_ref().map(|f| f.as_fd()),
            stdout.as_ref().map(|f| f.as_fd()),
            stderr.as_ref().map(|f| f.as_fd()),
        ]
        .into_iter()
        .flatten()
        {
            set_nonblocking(fd)?;
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut written = 0;
        if input.is_empty() {
            stdin = None;
        }
        let outcome = loop {
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Outcome::TimedOut;
                    }
                    poll_timeout(left)
                }
            };
            let (mut fds, mut slots) = (Vec::with_capacity(4), Vec::with_capacity(4));
            fds.push(PollFd::new(exited.as_fd(), PollFlags::POLLIN));
            slots.push(Slot::Exited);
            if let Some(f) = &stdin {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLOUT));
                slots.push(Slot::Stdin);
            }
            if let Some(f) = &stdout {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                slots.push(Slot::Stdout);
            }
            if let Some(f) = &stderr {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                slots.push(Slot::Stderr);
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready: Vec<Slot> = fds
                .iter()
                .zip(&slots)
                .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, s)| *s)
                .collect();
            drop(fds);
            let mut leader_gone = false;
            for slot in ready {
                match slot {
                    Slot::Exited => leader_gone = true,
                    Slot::Stdin => feed(&mut stdin, input, &mut written),
                    Slot::Stdout => drain(&mut stdout, &mut out),
                    Slot::Stderr => drain(&mut stderr, &mut err),
                }
            }
            if leader_gone {
                break Outcome::Exited;
            }
        };
        // Whatever is still in the group is killed now; what the leader wrote before it exited
        // is already in the pipes, and is read without waiting for EOF.
        self.kill();
        drop(stdin);
        drain(&mut stdout, &mut out);
        drain(&mut stderr, &mut err);
        Ok(Pumped {
            outcome,
            stdout: out,
            stderr: err,
        })
    }

    fn kill(&self) {
        // ESRCH: the group is already empty. EPERM cannot happen for our own children.
        let _ = killpg(self.pgid, Signal::SIGKILL);
    }

    /// Kills the group, reaps the leader and returns its status (`None` if it is stuck, which
    /// only a process in uninterruptible sleep can be after SIGKILL).
    fn finish(&mut self) -> Option<ExitStatus> {
        self.done = true;
        self.kill();
        let gone = match &self.exited {
            Some(exited) => wait_readable(exited, KILL_GRACE),
            // No waiter: SIGKILL is on its way, and `wait` returns when it lands.
            None => true,
        };
        let status = if gone { self.child.wait().ok() } else { None };
        // Deregister only once the leader is reaped: until then its ID cannot be reused. A stuck
        // leader stays registered, which keeps the watchdog's kill safe for the same reason.
        if let (Some(w), Some(_)) = (self.watchdog, status) {
            w.unregister(self.pgid);
        }
        if let Some(ExitWatch::Waiter { thread, .. }) = self.exited.take()
            && gone
        {
            let _ = thread.join();
        }
        status
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.finish();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Exited,
    Stdin,
    Stdout,
    Stderr,
}

fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Writes what the pipe takes; closes stdin when all is written or the delegate stopped reading
/// (EPIPE: a plugin may exit without reading stdin, which is not our error).
fn feed(stdin: &mut Option<std::process::ChildStdin>, input: &[u8], written: &mut usize) {
    let Some(pipe) = stdin else { return };
    while *written < input.len() {
        match pipe.write(&input[*written..]) {
            Ok(n) => *written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    *stdin = None;
}

/// Reads what is there without blocking; drops the pipe at EOF or on error.
fn drain<R: Read>(pipe: &mut Option<R>, buf: &mut Vec<u8>) {
    let Some(p) = pipe else { return };
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match p.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    *pipe = None;
}

/// Waits up to `limit` for `fd` to become readable (or hung up); true when it did.
fn wait_readable(fd: &impl AsFd, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout(left)) {
            Ok(n) => return n > 0,
            Err(Errno::EINTR) if !left.is_zero() => {}
            Err(_) => return false,
        }
    }
}

/// `left` as a poll timeout, rounded up so that a sub-millisecond rest does not spin.
fn poll_timeout(left: Duration) -> PollTimeout {
    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as u32;
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both watches: readable once the child has exited, not before, and the child is left
    /// unreaped (a zombie) for `wait` to collect.
    #[test]
    fn an_exit_watch_turns_readable_when_the_child_exits_without_reaping_it() {
        for pidfd in [true, false] {
            let mut child = Command::new("sh")
                .args(["-c", "read x; exit 0"])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            let pid = Pid::from_raw(child.id() as i32);
            let watch = ExitWatch::new(pid, pidfd).unwrap();
            // This kernel has pidfds (CI's too): the fast path is the one taken.
            assert_eq!(matches!(watch, ExitWatch::Pidfd(_)), pidfd);
            assert!(!wait_readable(&watch, Duration::from_millis(200)));
            drop(child.stdin.take());
            assert!(wait_readable(&watch, Duration::from_secs(30)));
            let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            assert!(status.contains(") Z "), "not a zombie: {status}");
            assert!(child.wait().unwrap().success());
            if let ExitWatch::Waiter { thread, .. } = watch {
                thread.join().unwrap();
            }
        }
    }
}
