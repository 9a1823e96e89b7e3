//! Stopping delegates when `plexus` itself is killed — without tearing an attachment in half.
//!
//! When the kubelet gives up on a CRI call, the runtime SIGKILLs `plexus`; nothing in `plexus`
//! runs after that, and its delegates, each leading a process group of its own, would keep
//! running. `PR_SET_PDEATHSIG` cannot be set without `unsafe` (it must be called between `fork`
//! and `exec`), and even then it reaches only the delegate, not the processes the delegate
//! started. So the process groups are handed to a watchdog instead: a second process (a copy of
//! the `plexus` binary started with [`WATCHDOG_ENV`] set, see [`serve`]) that reads registrations
//! from us on a `SOCK_SEQPACKET` socket. The kernel closes that socket when we die, however we
//! die.
//!
//! Killing the delegates the instant we die is not enough: a delegate killed half-way through its
//! ADD leaves what its own DEL cannot find (hack/soak.sh caught a `bridge` ADD killed between
//! creating a veth pair and finishing with it: the veth stayed in the pod), and the runtime's DEL,
//! which follows the kill at once, would race the still-dying delegate. So every registration
//! carries the container lock the delegate runs under, as a file descriptor (`SCM_RIGHTS`): a
//! `flock` belongs to the open file, so the lock stays held for as long as the watchdog keeps its
//! copy. When we die, the watchdog gives the registered delegates [`GRACE`] to finish, SIGKILLs
//! whatever still runs, and only then exits and lets the lock go: the runtime's DEL waits for
//! the delegate and tears down a whole attachment. While we live, a group's lock copy is dropped
//! as soon as the group is deregistered, so the watchdog never holds a lock we released.
//!
//! A group is deregistered only after its leader was reaped, and killed before that, so a
//! registered ID is never free for reuse while we live. After we die, our unreaped children are
//! reaped by init; the watchdog acts within [`GRACE`] of the socket closing, long before the
//! kernel hands the same ID out again as a group leader.

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType, recvmsg, sendmsg, socketpair,
};
use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Environment variable that turns a `plexus` process into the watchdog (any value).
pub const WATCHDOG_ENV: &str = "PLEXUS_WATCHDOG";

/// How long delegates may go on after `plexus` died before they are killed. Delegates finish
/// their work in milliseconds; this bounds only a hanging one, and it is the longest a runtime's
/// DEL after the kill waits for the lock.
pub const GRACE: Duration = Duration::from_secs(3);

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
        socket: OwnedFd,
    },
    /// It could not be started or its socket broke; delegates still run, unguarded.
    Failed,
}

impl Watchdog {
    /// A watchdog that runs `program` (the `plexus` binary, which must call [`serve_stdin`] when
    /// it finds [`WATCHDOG_ENV`] set) when the first group is registered.
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

    /// Have `pgid` killed if this process dies before [`Watchdog::unregister`], and keep `lock`
    /// (the container lock the delegate runs under) held until the group is gone.
    pub(crate) fn register(&self, pgid: Pid, lock: Option<BorrowedFd<'_>>) {
        self.send(&format!("+{pgid}"), lock);
    }

    /// `pgid` is dead and reaped.
    pub(crate) fn unregister(&self, pgid: Pid) {
        self.send(&format!("-{pgid}"), None);
    }

    fn send(&self, msg: &str, fd: Option<BorrowedFd<'_>>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, State::Idle) {
            *state = match self.start() {
                Ok((child, socket)) => State::Running { child, socket },
                Err(e) => {
                    tracing::warn!(program = %self.program.display(), "cannot start the delegate watchdog: {e}; delegates will outlive a killed plexus");
                    State::Failed
                }
            };
        }
        if let State::Running { socket, .. } = &*state
            && let Err(e) = send_message(socket.as_fd(), msg.as_bytes(), fd)
        {
            tracing::warn!(
                "the delegate watchdog is gone: {e}; delegates will outlive a killed plexus"
            );
            *state = State::Failed;
        }
    }

    fn start(&self) -> std::io::Result<(Child, OwnedFd)> {
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let child = Command::new(&self.program)
            .env(WATCHDOG_ENV, "1")
            .stdin(Stdio::from(theirs))
            // Never hold the runtime's pipes: it reads our stdout until EOF.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in our group, so that a signal to our group does not take it down with us.
            .process_group(0)
            .spawn()?;
        Ok((child, ours))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let state = std::mem::take(self.state.get_mut().unwrap_or_else(|p| p.into_inner()));
        if let State::Running { mut child, socket } = state {
            // EOF with nothing registered: it exits at once; reaping it keeps no zombie around.
            drop(socket);
            let _ = child.wait();
        }
    }
}

/// One record on the socket, with at most one file descriptor attached.
fn send_message(
    socket: BorrowedFd<'_>,
    msg: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = fd.map(|f| [f]);
    if let Some(fds) = &fds {
        control.push(SendAncillaryMessage::ScmRights(fds));
    }
    // NOSIGNAL: a dead watchdog is an error to log, not a SIGPIPE.
    sendmsg(
        socket,
        &[IoSlice::new(msg)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// What the watchdog knows: the registered groups and the locks they run under.
#[derive(Debug, Default)]
pub struct Registry {
    groups: BTreeMap<i32, Vec<OwnedFd>>,
}

impl Registry {
    /// Applies one record (`+<pgid>` with the fds that came with it, or `-<pgid>`); anything
    /// else is ignored, its fds dropped.
    pub fn apply(&mut self, msg: &[u8], fds: Vec<OwnedFd>) {
        let msg = String::from_utf8_lossy(msg);
        let (op, id) = msg.split_at(msg.len().min(1));
        let Ok(id) = id.trim().parse::<i32>() else {
            return;
        };
        // 0, 1 and negative IDs would address our own group, init or every process.
        if id <= 1 {
            return;
        }
        match op {
            "+" => self.groups.entry(id).or_default().extend(fds),
            // Dropping the fds lets the lock go: the delegate is gone.
            "-" => drop(self.groups.remove(&id)),
            _ => {}
        }
    }

    /// The registered groups.
    pub fn groups(&self) -> impl Iterator<Item = i32> + '_ {
        self.groups.keys().copied()
    }

    /// After `plexus` died: waits up to `grace` for every registered group to end, SIGKILLs
    /// those still running, waits (briefly) for them to go, then drops the locks. Returns how
    /// many groups it had to kill.
    pub fn finish(self, grace: Duration) -> usize {
        let live = |ids: &[i32]| -> Vec<i32> {
            ids.iter()
                .copied()
                // ESRCH: no process is left in the group.
                .filter(|id| killpg(Pid::from_raw(*id), None) != Err(Errno::ESRCH))
                .collect()
        };
        let ids: Vec<i32> = self.groups().collect();
        let running = wait_until_empty(&ids, grace, live);
        let killed = running
            .iter()
            .filter(|id| killpg(Pid::from_raw(**id), Signal::SIGKILL).is_ok())
            .count();
        // SIGKILL lands asynchronously; the lock must not go while a member still runs.
        wait_until_empty(&running, Duration::from_secs(1), live);
        drop(self);
        killed
    }
}

/// Polls `live(ids)` until it is empty or `limit` passed; returns what is still live.
fn wait_until_empty(ids: &[i32], limit: Duration, live: impl Fn(&[i32]) -> Vec<i32>) -> Vec<i32> {
    let end = Instant::now() + limit;
    let mut left = live(ids);
    while !left.is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
        left = live(&left);
    }
    left
}

/// The watchdog process: reads registrations from `socket` until EOF, then [`Registry::finish`]es
/// with [`GRACE`]. Returns how many groups it killed (for tests and the log).
pub fn serve(socket: BorrowedFd<'_>, grace: Duration) -> usize {
    let mut registry = Registry::default();
    let mut buf = [0u8; 64];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        );
        let n = match got {
            Ok(m) => m.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        };
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = m {
                fds.extend(received);
            }
        }
        // A zero-length record never comes from us: this is EOF, the other end is gone.
        if n == 0 {
            break;
        }
        registry.apply(&buf[..n], fds);
    }
    registry.finish(grace)
}

/// [`serve`] on this process's stdin (the entry point of the watchdog process).
pub fn serve_stdin() {
    let stdin = std::io::stdin();
    serve(stdin.as_fd(), GRACE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{FlockOperation, flock};
    use std::os::unix::process::ExitStatusExt;

    /// A file locked the way `plexus` locks a container. Dropping the `File` closes it without
    /// an unlock, as the kernel does for a SIGKILLed process.
    fn locked(path: &std::path::Path) -> std::fs::File {
        let f = std::fs::File::create(path).unwrap();
        flock(&f, FlockOperation::LockExclusive).unwrap();
        f
    }

    fn is_free(path: &std::path::Path) -> bool {
        let f = std::fs::File::create(path).unwrap();
        flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok()
    }

    fn sleeper(secs: &str) -> Child {
        Command::new("sleep")
            .arg(secs)
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    #[test]
    fn registered_groups_are_killed_after_the_grace_and_deregistered_ones_are_not() {
        let (mut a, mut b) = (sleeper("3600"), sleeper("3600"));
        let (ours, theirs) = pair();
        for msg in [
            format!("+{}", a.id()),
            format!("+{}", b.id()),
            format!("-{}", b.id()),
        ] {
            send_message(ours.as_fd(), msg.as_bytes(), None).unwrap();
        }
        drop(ours);
        assert_eq!(serve(theirs.as_fd(), Duration::from_millis(100)), 1);
        assert_eq!(a.wait().unwrap().signal(), Some(Signal::SIGKILL as i32));
        assert_eq!(b.try_wait().unwrap(), None, "deregistered group left alone");
        b.kill().unwrap();
        b.wait().unwrap();
    }

    #[test]
    fn a_delegate_that_finishes_within_the_grace_is_not_killed() {
        let mut quick = sleeper("0.3");
        let (ours, theirs) = pair();
        send_message(ours.as_fd(), format!("+{}", quick.id()).as_bytes(), None).unwrap();
        drop(ours);
        // Reap it as init would once its parent is gone, so that its group empties.
        let reaper = std::thread::spawn(move || quick.wait().unwrap());
        assert_eq!(serve(theirs.as_fd(), Duration::from_secs(30)), 0);
        assert!(reaper.join().unwrap().success(), "it ran to the end");
    }

    #[test]
    fn the_lock_sent_with_a_group_is_held_until_the_group_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.lock");
        let lock = locked(&path);
        let mut delegate = sleeper("3600");
        let (ours, theirs) = pair();
        let pgid = delegate.id();
        send_message(
            ours.as_fd(),
            format!("+{pgid}").as_bytes(),
            Some(lock.as_fd()),
        )
        .unwrap();
        // plexus is SIGKILLed: its descriptors close, the lock is not unlocked.
        drop(lock);
        drop(ours);
        let watchdog =
            std::thread::spawn(move || serve(theirs.as_fd(), Duration::from_millis(300)));
        // The watchdog's copy still holds it.
        std::thread::sleep(Duration::from_millis(100));
        assert!(!is_free(&path), "the lock was free while the delegate ran");
        // A waiter (the runtime's DEL) gets it only once the delegate is dead.
        let waited = locked(&path);
        assert_eq!(
            delegate.try_wait().unwrap().and_then(|s| s.signal()),
            Some(Signal::SIGKILL as i32),
            "the lock went before the delegate was killed"
        );
        assert_eq!(watchdog.join().unwrap(), 1);
        drop(waited);
    }

    #[test]
    fn deregistering_drops_the_lock_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.lock");
        let lock = locked(&path);
        let mut reg = Registry::default();
        reg.apply(b"+4242", vec![lock.as_fd().try_clone_to_owned().unwrap()]);
        drop(lock);
        assert!(!is_free(&path), "the registered copy holds the lock");
        reg.apply(b"-4242", Vec::new());
        assert!(
            is_free(&path),
            "the watchdog kept a lock after the group was deregistered"
        );
        assert_eq!(reg.groups().count(), 0);
    }

    #[test]
    fn garbage_and_dangerous_ids_are_ignored() {
        let mut reg = Registry::default();
        for msg in ["+0", "+1", "+-5", "hello", "+", ""] {
            reg.apply(msg.as_bytes(), Vec::new());
        }
        assert_eq!(reg.groups().count(), 0);
        assert_eq!(reg.finish(Duration::ZERO), 0);
    }
}
