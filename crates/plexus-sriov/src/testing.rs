//! Fakes of the effect traits for unit tests: [`FakeLinks`] (namespaces of links in memory,
//! every call logged) and [`FakeIpam`] (a canned result, every call logged). The PF side uses the
//! real [`crate::pf::SimulatedPf`] in a temporary directory.

use crate::ipam::{Ipam, IpamEnv, IpamError};
use crate::link::LinkOps;
use crate::netlink::Link;
use crate::netns::Ns;
use crate::types::Mac;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

/// Links by namespace, in memory.
#[derive(Debug, Default)]
pub struct FakeLinks {
    state: RefCell<FakeLinksState>,
}

#[derive(Debug, Default)]
struct FakeLinksState {
    links: BTreeMap<(String, String), Link>,
    addrs: BTreeMap<(String, String), BTreeSet<String>>,
    routes: BTreeMap<(String, String), BTreeSet<String>>,
    namespaces: BTreeSet<String>,
    calls: Vec<String>,
    fail: BTreeSet<String>,
}

fn key(ns: &Ns) -> String {
    match ns {
        Ns::Host => "host".into(),
        Ns::Path(p) => p.to_string_lossy().into_owned(),
    }
}

fn enoent(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("link {name} not found"))
}

impl FakeLinks {
    /// A host with no links.
    pub fn new() -> Self {
        let f = Self::default();
        f.state.borrow_mut().namespaces.insert("host".into());
        f
    }

    /// Adds a namespace (a pod's).
    pub fn add_ns(&self, path: &str) {
        self.state.borrow_mut().namespaces.insert(path.into());
    }

    /// Removes a namespace and everything in it (as a pod's netns deletion does to virtual links).
    pub fn remove_ns(&self, path: &str) {
        let mut s = self.state.borrow_mut();
        s.namespaces.remove(path);
        s.links.retain(|(ns, _), _| ns != path);
    }

    /// Adds a link.
    pub fn add_link(&self, ns: &Ns, name: &str, mac: Mac, mtu: u32) {
        let mut s = self.state.borrow_mut();
        let index = s.links.len() as u32 + 2;
        s.links.insert(
            (key(ns), name.into()),
            Link {
                index,
                name: name.into(),
                mac: Some(mac),
                mtu,
                up: false,
                vfs: Vec::new(),
            },
        );
    }

    /// The link, if any.
    pub fn get(&self, ns: &Ns, name: &str) -> Option<Link> {
        self.state
            .borrow()
            .links
            .get(&(key(ns), name.into()))
            .cloned()
    }

    /// Names of the links in a namespace.
    pub fn names(&self, ns: &Ns) -> Vec<String> {
        let k = key(ns);
        self.state
            .borrow()
            .links
            .keys()
            .filter(|(n, _)| *n == k)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Addresses added to a link.
    pub fn addrs(&self, ns: &Ns, name: &str) -> Vec<String> {
        self.state
            .borrow()
            .addrs
            .get(&(key(ns), name.into()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Routes added on a link (`dst via gw`).
    pub fn routes(&self, ns: &Ns, name: &str) -> Vec<String> {
        self.state
            .borrow()
            .routes
            .get(&(key(ns), name.into()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every mutating call, in order (`move host eth5 -> /ns net1`, …).
    pub fn calls(&self) -> Vec<String> {
        self.state.borrow().calls.clone()
    }

    /// Makes the op (`set_up`, `set_mac`, `set_mtu`, `rename`, `move_to`, `add_address`,
    /// `add_route`) fail from now on.
    pub fn fail(&self, op: &str) {
        self.state.borrow_mut().fail.insert(op.into());
    }

    fn op(&self, op: &str, line: String) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        s.calls.push(line);
        if s.fail.contains(op) {
            return Err(io::Error::from_raw_os_error(nix::libc::EIO));
        }
        Ok(())
    }

    fn with_link<T>(&self, ns: &Ns, name: &str, f: impl FnOnce(&mut Link) -> T) -> io::Result<T> {
        let mut s = self.state.borrow_mut();
        let l = s
            .links
            .get_mut(&(key(ns), name.into()))
            .ok_or_else(|| enoent(name))?;
        Ok(f(l))
    }
}

impl LinkOps for FakeLinks {
    fn ns_exists(&self, ns: &Ns) -> bool {
        self.state.borrow().namespaces.contains(&key(ns))
    }

    fn link(&self, ns: &Ns, name: &str) -> io::Result<Option<Link>> {
        Ok(self.get(ns, name))
    }

    fn set_up(&self, ns: &Ns, name: &str, up: bool) -> io::Result<()> {
        self.op(
            "set_up",
            format!(
                "{} {} {name} {}",
                if up { "up" } else { "down" },
                key(ns),
                ""
            ),
        )?;
        self.with_link(ns, name, |l| l.up = up)
    }

    fn set_mac(&self, ns: &Ns, name: &str, mac: Mac) -> io::Result<()> {
        self.op("set_mac", format!("mac {} {name} {mac}", key(ns)))?;
        self.with_link(ns, name, |l| l.mac = Some(mac))
    }

    fn set_mtu(&self, ns: &Ns, name: &str, mtu: u32) -> io::Result<()> {
        self.op("set_mtu", format!("mtu {} {name} {mtu}", key(ns)))?;
        self.with_link(ns, name, |l| l.mtu = mtu)
    }

    fn rename(&self, ns: &Ns, name: &str, new_name: &str) -> io::Result<()> {
        self.op("rename", format!("rename {} {name} -> {new_name}", key(ns)))?;
        let mut s = self.state.borrow_mut();
        if s.links.contains_key(&(key(ns), new_name.into())) {
            return Err(io::Error::from_raw_os_error(nix::libc::EEXIST));
        }
        let mut l = s
            .links
            .remove(&(key(ns), name.into()))
            .ok_or_else(|| enoent(name))?;
        l.name = new_name.into();
        s.links.insert((key(ns), new_name.into()), l);
        Ok(())
    }

    fn move_to(&self, from: &Ns, name: &str, to: &Ns, new_name: &str) -> io::Result<()> {
        self.op(
            "move_to",
            format!("move {} {name} -> {} {new_name}", key(from), key(to)),
        )?;
        let mut s = self.state.borrow_mut();
        if !s.namespaces.contains(&key(to)) {
            return Err(io::Error::from_raw_os_error(nix::libc::ENOENT));
        }
        if s.links.contains_key(&(key(to), new_name.into())) {
            return Err(io::Error::from_raw_os_error(nix::libc::EEXIST));
        }
        let mut l = s
            .links
            .remove(&(key(from), name.into()))
            .ok_or_else(|| enoent(name))?;
        // Addresses do not survive a namespace move.
        s.addrs.remove(&(key(from), name.into()));
        s.routes.remove(&(key(from), name.into()));
        l.name = new_name.into();
        l.up = false;
        s.links.insert((key(to), new_name.into()), l);
        Ok(())
    }

    fn add_address(&self, ns: &Ns, name: &str, addr: IpAddr, prefix: u8) -> io::Result<()> {
        self.op(
            "add_address",
            format!("addr {} {name} {addr}/{prefix}", key(ns)),
        )?;
        self.with_link(ns, name, |_| ())?;
        self.state
            .borrow_mut()
            .addrs
            .entry((key(ns), name.into()))
            .or_default()
            .insert(format!("{addr}/{prefix}"));
        Ok(())
    }

    fn add_route(
        &self,
        ns: &Ns,
        name: &str,
        dst: IpAddr,
        prefix: u8,
        gw: Option<IpAddr>,
    ) -> io::Result<()> {
        let r = match gw {
            Some(g) => format!("{dst}/{prefix} via {g}"),
            None => format!("{dst}/{prefix}"),
        };
        self.op("add_route", format!("route {} {name} {r}", key(ns)))?;
        self.with_link(ns, name, |_| ())?;
        self.state
            .borrow_mut()
            .routes
            .entry((key(ns), name.into()))
            .or_default()
            .insert(r);
        Ok(())
    }

    fn sysctl(&self, ns: &Ns, key_: &str, value: &str) -> io::Result<()> {
        self.op("sysctl", format!("sysctl {} {key_}={value}", key(ns)))
    }
}

/// An IPAM plugin that answers ADD with a canned result.
#[derive(Debug, Default)]
pub struct FakeIpam {
    /// The ADD result.
    pub result: Option<Value>,
    /// Fail this command (`ADD`/`DEL`).
    pub fail: Option<String>,
    calls: RefCell<Vec<(String, IpamEnv, Value)>>,
}

impl FakeIpam {
    /// One that returns `result` on ADD.
    pub fn returning(result: Value) -> Self {
        Self {
            result: Some(result),
            ..Self::default()
        }
    }

    /// `(plugin, env, stdin)` of every call.
    pub fn calls(&self) -> Vec<(String, IpamEnv, Value)> {
        self.calls.borrow().clone()
    }

    /// The commands called, in order.
    pub fn commands(&self) -> Vec<String> {
        self.calls
            .borrow()
            .iter()
            .map(|(_, e, _)| e.command.clone())
            .collect()
    }
}

impl Ipam for FakeIpam {
    fn exec(&self, plugin: &str, env: &IpamEnv, stdin: &[u8]) -> Result<Option<Value>, IpamError> {
        self.calls.borrow_mut().push((
            plugin.into(),
            env.clone(),
            serde_json::from_slice(stdin).unwrap_or(Value::Null),
        ));
        if self.fail.as_deref() == Some(env.command.as_str()) {
            return Err(IpamError::Failed {
                plugin: plugin.into(),
                command: env.command.clone(),
                code: 11,
                msg: "no addresses left".into(),
            });
        }
        Ok(match env.command.as_str() {
            "ADD" => self.result.clone(),
            _ => None,
        })
    }
}
