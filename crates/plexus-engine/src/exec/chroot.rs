//! Starting a process chrooted into another root (plexusd's `--chroot-dir`: delegates run in the
//! host's root, mounted into the daemon's container), in safe code and without an extra exec.
//!
//! The chroot must apply to the child alone. `std` runs code between fork and exec only through
//! `unsafe` `pre_exec`, so the spawning *thread* changes its own root just around the spawn
//! instead: a thread that has unshared its filesystem attributes (`unshare(CLONE_FS)`) has a root
//! and a working directory of its own, which no other thread sees; the child inherits them when it
//! is forked, and the thread goes back to the root it had (through a descriptor of it kept open:
//! `fchdir` to it, `chroot(".")`) before it returns. The earlier way, a copy of plexusd exec'd as
//! a trampoline that chrooted and then exec'd the delegate, cost one more exec of a 10 MB binary
//! per delegate (~1.5 ms, hack/bench.sh); this costs a few system calls.

use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, chroot, fchdir};
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command};

thread_local! {
    /// This thread's own root, once it has unshared its filesystem attributes.
    static OWN_ROOT: RefCell<Option<OwnedFd>> = const { RefCell::new(None) };
}

/// Where a bare program name is looked up inside the root when we have no `PATH` ourselves (a
/// `scratch` image sets none).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn dir_fd(path: &str) -> nix::Result<OwnedFd> {
    open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Spawns `cmd` with `root` as its root directory and `/` as its working directory; a program
/// path (or, for a bare name, `PATH`) is resolved inside `root`, and so is `/dev/null` when a
/// stream is `Stdio::null()` (std opens it while spawning). The calling thread's own root
/// and working directory are what they were when this returns, and no other thread's ever
/// change.
///
/// # Panics
/// When the thread cannot return to its own root after the spawn. That cannot happen to a root
/// process holding a descriptor of that root; if it ever did, every later file operation of the
/// thread would silently happen in the wrong tree, which is worse than stopping.
pub fn spawn_in(root: &Path, cmd: &mut Command) -> std::io::Result<Child> {
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", DEFAULT_PATH);
    }
    OWN_ROOT.with(|own| {
        let mut own = own.borrow_mut();
        if own.is_none() {
            unshare(CloneFlags::CLONE_FS)?;
            *own = Some(dir_fd("/")?);
        }
        let own_root = own.as_ref().expect("set above");
        let cwd = dir_fd(".")?;
        chroot(root)
            .map_err(|e| std::io::Error::other(format!("chroot into {}: {e}", root.display())))?;
        let spawned = chdir("/")
            .map_err(std::io::Error::from)
            .and_then(|()| cmd.spawn());
        fchdir(own_root)
            .and_then(|()| chroot("."))
            .and_then(|()| fchdir(&cwd))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot return to this thread's own root after chrooting into {}: {e}",
                    root.display()
                )
            });
        spawned
    })
}

/// A root to chroot into in tests.
#[cfg(test)]
pub(crate) mod testing {
    /// A root holding `/bin/sh` (Debian's dash and the two libraries it loads) and
    /// `/only-inside`, a script that exists only there and prints `inside <its directory>`.
    pub(crate) fn shell_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for file in [
            "/bin/sh",
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/ld-linux-x86-64.so.2",
        ] {
            let inside = root.path().join(file.trim_start_matches('/'));
            std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
            std::fs::copy(std::fs::canonicalize(file).unwrap(), &inside).unwrap();
        }
        let probe = root.path().join("only-inside");
        std::fs::write(&probe, "#!/bin/sh\necho \"inside $(pwd)\"\n").unwrap();
        std::fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        root
    }
}

#[cfg(test)]
mod tests {
    use super::testing::shell_root;
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_child_runs_in_the_root_and_the_thread_keeps_its_own() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "chroot needs root (the tests run as root)"
        );
        let root = shell_root();
        let here = std::env::current_dir().unwrap();
        assert!(!Path::new("/only-inside").exists());
        for _ in 0..2 {
            let child = spawn_in(
                root.path(),
                Command::new("/only-inside").stdout(std::process::Stdio::piped()),
            )
            .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "inside /\n");
            // Back in our own root and directory, on this thread.
            assert!(!Path::new("/only-inside").exists());
            assert!(Path::new(env!("CARGO_MANIFEST_DIR")).exists());
            assert_eq!(std::env::current_dir().unwrap(), here);
        }
        // A bare name is looked up inside the root too: `sh` is there, `true` is not.
        let out = spawn_in(root.path(), Command::new("sh").args(["-c", "echo ok"]))
            .unwrap()
            .wait_with_output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let err = spawn_in(root.path(), &mut Command::new("true")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
        assert!(Path::new("/usr/bin/true").exists(), "but it is here");
    }

    #[test]
    fn other_threads_never_see_the_root() {
        let root = shell_root();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let stop = stop.clone();
            let probe = PathBuf::from("/only-inside");
            std::thread::spawn(move || {
                let mut saw = false;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    saw |= probe.exists();
                }
                saw
            })
        };
        for _ in 0..50 {
            spawn_in(root.path(), &mut Command::new("/only-inside"))
                .unwrap()
                .wait()
                .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(
            !watcher.join().unwrap(),
            "another thread saw the chroot of the spawning one"
        );
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let err = spawn_in(
            Path::new("/nonexistent-plexus-root"),
            &mut Command::new("/bin/true"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-plexus-root"),
            "{err}"
        );
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).exists());
    }
}
