//! Root-only helpers for network namespaces and host links, shelling out to `ip` (iproute2) so
//! that what the tests set up and inspect is exactly what an operator would see. Everything is
//! removed on drop, including during a panic's unwinding.

use anyhow::{Context, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Linux interface and our netns names are limited to 15 bytes.
const MAX_NAME: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// A name of at most 15 characters, unique within this process (atomic counter) and across
/// concurrently running test processes (pid): `<prefix><pid36>-<counter36>`, with the prefix
/// shortened when needed (the unique suffix is never cut).
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!(
        "{}-{}",
        base36(u64::from(std::process::id())),
        base36(u64::from(n))
    );
    let keep = MAX_NAME.saturating_sub(suffix.len());
    let prefix: String = prefix.chars().take(keep).collect();
    format!("{prefix}{suffix}")
}

/// Panics unless running as root. Tests needing root must fail, not skip, in CI (DESIGN §6);
/// outside CI they fail too, with a message that says how to run them.
pub fn require_root() {
    if effective_uid() == Some(0) {
        return;
    }
    let ci = std::env::var_os("CI").is_some();
    panic!(
        "this test needs root (network namespaces, links, real CNI plugins){}; run it as root, e.g. `sudo -E cargo test -p plexus-e2e`",
        if ci {
            " and CI is set, so it fails instead of skipping"
        } else {
            ""
        }
    );
}

/// The effective UID from /proc (no libc needed).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Runs a command and returns its stdout, or an error carrying the command line and stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("spawn {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            if out.stdout.is_empty() {
                String::new()
            } else {
                format!("\nstdout: {}", String::from_utf8_lossy(&out.stdout).trim())
            }
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A locally administered unicast MAC derived from the link name.
fn bridge_mac(name: &str) -> String {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let b = h.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    /// Creates `<prefix>…` (see [`unique_name`]) with `lo` up, as a container runtime leaves it.
    pub fn new(prefix: &str) -> anyhow::Result<NetNs> {
        require_root();
        let name = unique_name(prefix);
        ip(&["netns", "add", &name])?;
        let ns = NetNs {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Names the network namespace of process `pid` (`ip netns attach`), e.g. the one a container
    /// runtime made for a pod sandbox. The name holds a reference: the namespace outlives the
    /// runtime's release of it until this is dropped, so a test can still look inside.
    pub fn attach(prefix: &str, pid: u32) -> anyhow::Result<NetNs> {
        require_root();
        let name = unique_name(prefix);
        ip(&["netns", "attach", &name, &pid.to_string()])?;
        Ok(NetNs {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`: what a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `args` inside the namespace (`ip netns exec`) and returns stdout.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// `ip -j <args>` inside the namespace, parsed.
    pub fn ip_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut full = vec!["ip", "-j"];
        full.extend_from_slice(args);
        let out = self.exec(&full)?;
        if out.trim().is_empty() {
            return Ok(Value::Array(Vec::new()));
        }
        serde_json::from_str(&out)
            .with_context(|| format!("`ip -j {}` output is not JSON: {out}", args.join(" ")))
    }

    fn must(&self, args: &[&str]) -> Value {
        self.ip_json(args)
            .unwrap_or_else(|e| panic!("in netns {}: {e:#}", self.name))
    }

    /// `ip -j link show` (panics if the namespace cannot be inspected).
    pub fn links(&self) -> Value {
        self.must(&["link", "show"])
    }

    /// `ip -j addr show`.
    pub fn addrs(&self) -> Value {
        self.must(&["addr", "show"])
    }

    /// `ip -j route show` (IPv4 main table).
    pub fn routes(&self) -> Value {
        self.must(&["route", "show"])
    }

    /// `ip -j -6 route show`.
    pub fn routes6(&self) -> Value {
        self.must(&["-6", "route", "show"])
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "delete", &self.name]) {
            // Never panic in drop (we may be unwinding already); say what was left behind.
            if self.path.exists() {
                eprintln!("warning: could not delete netns {}: {e:#}", self.name);
            }
        }
    }
}

/// A link created in the host namespace (a bridge, or a veth pair), deleted on drop.
#[derive(Debug)]
pub struct HostLink {
    name: String,
    peer: Option<String>,
}

impl HostLink {
    /// A veth pair `a` <-> `b`, both up. Dropping deletes both ends.
    pub fn veth_pair(a: &str, b: &str) -> anyhow::Result<HostLink> {
        require_root();
        ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
        let link = HostLink {
            name: a.to_owned(),
            peer: Some(b.to_owned()),
        };
        ip(&["link", "set", a, "up"])?;
        ip(&["link", "set", b, "up"])?;
        Ok(link)
    }

    /// A Linux bridge, up.
    pub fn bridge(name: &str) -> anyhow::Result<HostLink> {
        require_root();
        ip(&["link", "add", name, "type", "bridge"])?;
        let link = HostLink {
            name: name.to_owned(),
            peer: None,
        };
        // A bridge without an explicit address takes the lowest MAC of its ports, so it changes
        // as pods come and go, and the bridge plugin's CHECK (which compares it with the cached
        // result) fails spuriously. Real nodes pin it the same way.
        ip(&["link", "set", name, "address", &bridge_mac(name)])?;
        ip(&["link", "set", name, "up"])?;
        Ok(link)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The other end of a veth pair.
    pub fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        // Deleting one end of a veth deletes the pair; a peer moved into a netns that is already
        // gone has taken the pair with it, which is fine.
        let _ = ip(&["link", "delete", &self.name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_differ() {
        let a = unique_name("averyveryverylongprefix");
        let b = unique_name("averyveryverylongprefix");
        assert!(a.len() <= MAX_NAME && b.len() <= MAX_NAME, "{a} {b}");
        assert_ne!(a, b);
        assert!(unique_name("px").starts_with("px"));
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
