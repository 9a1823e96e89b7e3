//! Best-effort removal of what a containerd instance leaves on the host when it is killed rather
//! than asked to clean up: container processes, shims and their sockets, mounts (snapshots, netns
//! bind mounts, shm) and cgroups. Each step reports what it could not undo on stderr and never
//! panics: it runs from `Drop`, possibly while a failed test unwinds.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Kills and deletes every container runc knows under `runc_root` (one subdirectory per
/// containerd namespace).
pub fn delete_runc_containers(runc_root: &Path) {
    for ns_dir in std::fs::read_dir(runc_root).into_iter().flatten().flatten() {
        let root = ns_dir.path();
        let out = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["list", "--quiet"])
            .output();
        let Ok(out) = out else { continue };
        for id in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
        {
            let status = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", id])
                .output();
            if !status.is_ok_and(|s| s.status.success()) {
                eprintln!(
                    "warning: could not delete runc container {id} under {}",
                    root.display()
                );
            }
        }
    }
}

/// PIDs of the processes whose command line has `flag` immediately followed by `value`
/// (e.g. the shims started with `-address <our socket>`).
pub fn processes_with_arg(flag: &str, value: &OsStr) -> Vec<Pid> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args
            .windows(2)
            .any(|w| w[0] == flag.as_bytes() && w[1] == value.as_bytes())
        {
            pids.push(Pid::from_raw(pid));
        }
    }
    pids
}

/// SIGKILLs `pids` and waits (bounded) until they are gone.
pub fn kill_all(pids: &[Pid]) {
    for pid in pids {
        let _ = kill(*pid, Signal::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        if std::time::Instant::now() > deadline {
            eprintln!("warning: processes {pids:?} still exist after SIGKILL");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The shim sockets recorded in the task bundles under `state` (`<bundle>/address` holds
/// `unix:///run/containerd/s/<hash>`): containerd 1.6 places them outside its state dir.
pub fn shim_sockets(state: &Path) -> Vec<PathBuf> {
    let tasks = state.join("io.containerd.runtime.v2.task");
    let mut out = Vec::new();
    for ns in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        for bundle in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            if let Ok(a) = std::fs::read_to_string(bundle.path().join("address")) {
                out.push(PathBuf::from(a.trim().trim_start_matches("unix://")));
            }
        }
    }
    out
}

/// Mount points at or below `prefix`, deepest first (so they can be unmounted in order).
pub fn mounts_under(prefix: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(prefix))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v.dedup();
    v
}

/// Detaches every mount at or below `prefix`.
pub fn unmount_all_under(prefix: &Path) {
    for m in mounts_under(prefix) {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("warning: could not unmount {}: {e}", m.display());
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes the cgroup subtree `/<name>` in every mounted hierarchy (v1 controllers and the
/// unified one), deepest first; a cgroup with processes left in it stays and is reported.
pub fn remove_cgroups(name: &str) {
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let top = hierarchy.path().join(name);
        if top.is_dir() {
            rmdir_tree(&top);
        }
    }
    let top = Path::new("/sys/fs/cgroup").join(name);
    if top.is_dir() {
        rmdir_tree(&top);
    }
}

fn rmdir_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&e.path());
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("warning: could not remove cgroup {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }
}
