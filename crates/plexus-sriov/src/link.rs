//! Operations on the VF's netdev in a namespace: the host's or the pod's. [`NetlinkLinks`] is
//! the kernel (a netlink socket opened inside the namespace by a short-lived thread, driven from
//! the calling thread); the recording fake is in [`crate::testing`].

use crate::netlink::{Link, NlSocket};
use crate::netns::Ns;
use crate::types::Mac;
use std::io;
use std::net::IpAddr;

/// Link operations, each in a given namespace.
pub trait LinkOps {
    /// Whether the namespace exists.
    fn ns_exists(&self, ns: &Ns) -> bool;
    /// The link `name` in `ns`, `None` when there is none.
    fn link(&self, ns: &Ns, name: &str) -> io::Result<Option<Link>>;
    /// Sets it up or down.
    fn set_up(&self, ns: &Ns, name: &str, up: bool) -> io::Result<()>;
    /// Sets its hardware address.
    fn set_mac(&self, ns: &Ns, name: &str, mac: Mac) -> io::Result<()>;
    /// Sets its MTU.
    fn set_mtu(&self, ns: &Ns, name: &str, mtu: u32) -> io::Result<()>;
    /// Renames it within `ns` (it must be down).
    fn rename(&self, ns: &Ns, name: &str, new_name: &str) -> io::Result<()>;
    /// Moves it from `from` into `to`, named `new_name` there, in one step.
    fn move_to(&self, from: &Ns, name: &str, to: &Ns, new_name: &str) -> io::Result<()>;
    /// Adds an address.
    fn add_address(&self, ns: &Ns, name: &str, addr: IpAddr, prefix: u8) -> io::Result<()>;
    /// Adds a route out of the link.
    fn add_route(
        &self,
        ns: &Ns,
        name: &str,
        dst: IpAddr,
        prefix: u8,
        gw: Option<IpAddr>,
    ) -> io::Result<()>;
    /// Writes a sysctl under `/proc/sys/` (e.g. `net/ipv4/conf/net1/arp_notify`) in `ns`.
    fn sysctl(&self, ns: &Ns, key: &str, value: &str) -> io::Result<()>;
}

/// The kernel.
#[derive(Debug, Default)]
pub struct NetlinkLinks;

fn socket(ns: &Ns) -> io::Result<NlSocket> {
    ns.run(NlSocket::open)
}

impl LinkOps for NetlinkLinks {
    fn ns_exists(&self, ns: &Ns) -> bool {
        ns.exists()
    }

    fn link(&self, ns: &Ns, name: &str) -> io::Result<Option<Link>> {
        socket(ns)?.link(name, false)
    }

    fn set_up(&self, ns: &Ns, name: &str, up: bool) -> io::Result<()> {
        socket(ns)?.set_up(name, up)
    }

    fn set_mac(&self, ns: &Ns, name: &str, mac: Mac) -> io::Result<()> {
        socket(ns)?.set_mac(name, mac)
    }

    fn set_mtu(&self, ns: &Ns, name: &str, mtu: u32) -> io::Result<()> {
        socket(ns)?.set_mtu(name, mtu)
    }

    fn rename(&self, ns: &Ns, name: &str, new_name: &str) -> io::Result<()> {
        socket(ns)?.rename(name, new_name)
    }

    fn move_to(&self, from: &Ns, name: &str, to: &Ns, new_name: &str) -> io::Result<()> {
        let target = to.open()?;
        socket(from)?.move_to(name, &target, new_name)
    }

    fn add_address(&self, ns: &Ns, name: &str, addr: IpAddr, prefix: u8) -> io::Result<()> {
        socket(ns)?.add_address(name, addr, prefix)
    }

    fn add_route(
        &self,
        ns: &Ns,
        name: &str,
        dst: IpAddr,
        prefix: u8,
        gw: Option<IpAddr>,
    ) -> io::Result<()> {
        socket(ns)?.add_route(name, dst, prefix, gw)
    }

    fn sysctl(&self, ns: &Ns, key: &str, value: &str) -> io::Result<()> {
        if key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad sysctl key",
            ));
        }
        let path = format!("/proc/sys/{key}");
        let value = value.to_owned();
        // /proc/sys/net shows the namespace of the thread that opens it.
        ns.run(move || std::fs::write(path, value))
    }
}
