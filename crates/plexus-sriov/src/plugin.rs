//! The verbs: ADD, DEL, CHECK, STATUS and GC over the sysfs model and the three effect traits
//! (PF, links, IPAM). Nothing here touches the kernel directly.
//!
//! ADD: resolve the VF (sysfs) → lock it → read its original state → **write the record** →
//! PF-side settings (vlan/qos/proto, MAC, rate, spoofchk, trust, link_state) → kernel mode: move the
//! netdev into the pod under `CNI_IFNAME` in one netlink request, set the MAC, bring it up → IPAM
//! (addresses and routes applied in the pod in kernel mode) → result. Any failure runs the DEL
//! teardown of the record and leaves nothing behind.
//!
//! DEL (teardown): IPAM DEL → PF-side restore (vlan/qos/proto, spoofchk, MAC, trust, rate,
//! link_state: before the netdev is touched, because some drivers refuse a netdev MAC change while
//! trust is off) → kernel mode: in the pod, down, original MAC and MTU, back to the host under its
//! original name. Each step runs even if an earlier one failed; the record is removed only when
//! all succeeded, so the runtime's retry finishes the job.

use crate::config::SriovConf;
use crate::ipam::{Ipam, IpamEnv, IpamError};
use crate::link::LinkOps;
use crate::netns::Ns;
use crate::pf::{PfError, PfOps};
use crate::state::{Applied, RECORD_VERSION, Record, StateError, Store};
use crate::types::{Mac, VfSetting};
use plexus_cni::{CniEnv, CniError, CniResult, CniVersion, Interface, codes};
use plexus_sysfs::Sysfs;
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;

/// CHECK found the VF differing from its configuration (code 110; docs/sriov.md).
pub const CHECK_MISMATCH: u32 = 110;

/// The effects the verbs run against.
#[allow(missing_debug_implementations)]
pub struct Plugin<'a> {
    /// sysfs (PF/VF resolution, netdev, driver).
    pub sysfs: Sysfs,
    /// PF-side VF settings.
    pub pf: &'a dyn PfOps,
    /// Netdev operations.
    pub links: &'a dyn LinkOps,
    /// IPAM plugin execution.
    pub ipam: &'a dyn Ipam,
    /// Records, allocations and locks.
    pub store: Store,
    /// How long to wait for the PF to show a new admin MAC (the reference polls 20 × 100 ms).
    pub mac_poll: (u32, Duration),
}

/// The VF a config names, as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vf {
    pci: String,
    pf: String,
    index: u32,
    netdev: Option<String>,
    dpdk: bool,
}

fn io_err(ctx: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(codes::IO_FAILURE, format!("{ctx}: {e}"))
}

fn pf_err(ctx: &str, e: PfError) -> CniError {
    io_err(ctx, e)
}

fn state_err(ctx: &str, e: StateError) -> CniError {
    io_err(ctx, e)
}

fn ipam_err(ctx: &str, e: IpamError) -> CniError {
    let details = match &e {
        IpamError::Failed { code, .. } => format!("IPAM error code {code}"),
        _ => String::new(),
    };
    CniError::new(codes::IO_FAILURE, format!("{ctx}: {e}")).with_details(details)
}

/// "pod ns/name: network net: VF pci" — what every message starts with.
pub fn context(env: &CniEnv, network: &str, pci: &str) -> String {
    let mut parts = Vec::new();
    if let (Some(ns), Some(pod)) = (
        env.args.get("K8S_POD_NAMESPACE"),
        env.args.get("K8S_POD_NAME"),
    ) {
        parts.push(format!("pod {ns}/{pod}"));
    }
    if !network.is_empty() {
        parts.push(format!("network {network}"));
    }
    parts.push(format!("VF {pci}"));
    parts.join(": ")
}

fn ipam_env(env: &CniEnv, command: &str, container_id: &str, netns: &str, ifname: &str) -> IpamEnv {
    IpamEnv {
        command: command.to_owned(),
        container_id: container_id.to_owned(),
        netns: netns.to_owned(),
        ifname: ifname.to_owned(),
        args: env.args.to_env_string(),
        path: env
            .path
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":"),
    }
}

fn split_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = s.split_once('/')?;
    let addr: IpAddr = a.parse().ok()?;
    let prefix: u8 = p.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((addr, prefix))
}

impl Plugin<'_> {
    fn resolve(&self, conf: &SriovConf, ctx: &str) -> Result<Vf, CniError> {
        let bad = |e: plexus_sysfs::SysfsError| {
            CniError::new(
                codes::INVALID_CONFIG,
                format!("{ctx}: invalid deviceID: {e}"),
            )
        };
        let dev = self
            .sysfs
            .pci_device(conf.device_id.as_str())
            .map_err(bad)?;
        let (pf_dev, index) = dev.vf_of().map_err(bad)?;
        let pf = pf_dev
            .netdevs()
            .map_err(|e| io_err(ctx, e))?
            .into_iter()
            .next()
            .ok_or_else(|| {
                io_err(
                    ctx,
                    format!("its PF {} has no network interface", pf_dev.address()),
                )
            })?;
        let netdev = dev
            .netdevs()
            .map_err(|e| io_err(ctx, e))?
            .into_iter()
            .next();
        let driver = dev.driver_kind().map_err(|e| io_err(ctx, e))?;
        let dpdk = netdev.is_none() && driver.is_userspace();
        if netdev.is_none() && !dpdk {
            return Err(io_err(
                ctx,
                format!(
                    "the VF has no network interface in the host and is not bound to a user-space driver ({}); is it in use by another pod?",
                    crate::USERSPACE_DRIVERS_TEXT
                ),
            ));
        }
        Ok(Vf {
            pci: dev.address().to_string(),
            pf,
            index,
            netdev,
            dpdk,
        })
    }

    /// ADD. Returns the result in the config's version.
    pub fn add(&self, env: &CniEnv, conf: &SriovConf, stdin: &[u8]) -> Result<Value, CniError> {
        let ctx = context(env, &conf.name, conf.device_id.as_str());
        let netns = env
            .netns
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pod = Ns::Path(netns.clone().into());
        if !self.links.ns_exists(&pod) {
            return Err(CniError::new(
                codes::INVALID_ENVIRONMENT,
                format!("{ctx}: netns {netns} does not exist"),
            ));
        }
        let vf = self.resolve(conf, &ctx)?;
        let _lock = self
            .store
            .lock_vf(&vf.pci)
            .map_err(|e| state_err(&ctx, e))?;

        if let Some(owner) = self
            .store
            .allocation(&vf.pci)
            .map_err(|e| state_err(&ctx, e))?
        {
            if Ns::Path(owner.clone().into()).exists() && !owner.is_empty() {
                return Err(CniError::new(
                    codes::TRY_AGAIN_LATER,
                    format!("{ctx}: the VF is already allocated to netns {owner}"),
                ));
            }
            // Its owner is gone without a DEL: stale.
            self.store
                .release(&vf.pci)
                .map_err(|e| state_err(&ctx, e))?;
        }
        // A record without an allocation is an ADD that died half-way: undo it first.
        if let Some(old) = self
            .store
            .load(&env.container_id, &env.ifname)
            .map_err(|e| state_err(&ctx, e))?
        {
            let failures = self.teardown(&old, env, None);
            if !failures.is_empty() {
                return Err(io_err(
                    &ctx,
                    format!(
                        "an earlier ADD of this attachment left changes that cannot be undone: {}",
                        failures.join("; ")
                    ),
                ));
            }
            self.store
                .remove(&env.container_id, &env.ifname)
                .map_err(|e| state_err(&ctx, e))?;
        }

        let orig_vf = self.pf.vf(&vf.pf, vf.index).map_err(|e| pf_err(&ctx, e))?;
        let (orig_mac, orig_mtu) = match &vf.netdev {
            None => (None, None),
            Some(name) => {
                let link = self
                    .links
                    .link(&Ns::Host, name)
                    .map_err(|e| io_err(&ctx, format!("reading link {name}: {e}")))?
                    .ok_or_else(|| {
                        io_err(
                            &ctx,
                            format!("sysfs names netdev {name} but the host has no such link"),
                        )
                    })?;
                (link.mac, Some(link.mtu))
            }
        };
        let mut rec = Record {
            version: RECORD_VERSION,
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
            netns: netns.clone(),
            device_id: vf.pci.clone(),
            pf: vf.pf.clone(),
            vf_index: vf.index,
            dpdk: vf.dpdk,
            host_ifname: vf.netdev.clone(),
            orig_mac,
            orig_mtu,
            orig_vf,
            // Marked before the first change: restoring a setting that was never changed is a
            // no-op, forgetting one that was is a leak.
            applied: Applied {
                vlan: conf.vlan.is_some(),
                mac: conf.mac.is_some(),
                rate: conf.has_rate(),
                spoofchk: conf.spoofchk.is_some(),
                trust: conf.trust.is_some(),
                link_state: conf.link_state.is_some(),
            },
            moved: false,
            ipam: false,
            config: serde_json::from_slice(stdin).unwrap_or(Value::Null),
            args: env.args.to_env_string(),
        };
        self.store.save(&rec).map_err(|e| state_err(&ctx, e))?;

        let outcome = self
            .attach(&mut rec, &vf, env, conf, stdin, &ctx)
            .and_then(|r| {
                self.store
                    .allocate(&vf.pci, &netns)
                    .map_err(|e| state_err(&ctx, e))?;
                Ok(r)
            });
        match outcome {
            Ok(v) => Ok(v),
            Err(mut err) => {
                let failures = self.teardown(&rec, env, Some(stdin));
                if failures.is_empty() {
                    let _ = self.store.remove(&rec.container_id, &rec.ifname);
                    let _ = self.store.release(&vf.pci);
                } else {
                    err.msg = format!(
                        "{}; rollback incomplete, DEL will retry: {}",
                        err.msg,
                        failures.join("; ")
                    );
                }
                Err(err)
            }
        }
    }

    fn apply_pf(&self, vf: &Vf, conf: &SriovConf, ctx: &str) -> Result<(), CniError> {
        let set = |s: VfSetting| self.pf.set(&vf.pf, vf.index, s).map_err(|e| pf_err(ctx, e));
        if let Some(vlan) = conf.vlan {
            set(VfSetting::Vlan {
                vlan,
                qos: conf.vlan_qos.unwrap_or(0),
                proto: conf.vlan_proto.unwrap_or_default(),
            })?;
        }
        if let Some(mac) = conf.mac {
            set(VfSetting::Mac(mac))?;
            self.wait_admin_mac(vf, mac, ctx)?;
        }
        if conf.has_rate() {
            set(VfSetting::Rate {
                min: conf.min_tx_rate.unwrap_or(0),
                max: conf.max_tx_rate.unwrap_or(0),
            })?;
        }
        if let Some(on) = conf.spoofchk {
            set(VfSetting::SpoofChk(on))?;
        }
        if let Some(on) = conf.trust {
            set(VfSetting::Trust(on))?;
        }
        if let Some(s) = conf.link_state {
            set(VfSetting::LinkState(s))?;
        }
        Ok(())
    }

    /// Some drivers apply an admin MAC asynchronously: poll the VF table until it shows it.
    fn wait_admin_mac(&self, vf: &Vf, mac: Mac, ctx: &str) -> Result<(), CniError> {
        let (tries, pause) = self.mac_poll;
        let mut seen = Mac::default();
        for i in 0..tries.max(1) {
            seen = self
                .pf
                .vf(&vf.pf, vf.index)
                .map_err(|e| pf_err(ctx, e))?
                .mac;
            if seen == mac {
                return Ok(());
            }
            if i + 1 < tries {
                std::thread::sleep(pause);
            }
        }
        Err(io_err(
            ctx,
            format!(
                "PF {} VF {} still shows admin MAC {seen} after setting {mac}",
                vf.pf, vf.index
            ),
        ))
    }

    fn attach(
        &self,
        rec: &mut Record,
        vf: &Vf,
        env: &CniEnv,
        conf: &SriovConf,
        stdin: &[u8],
        ctx: &str,
    ) -> Result<Value, CniError> {
        self.apply_pf(vf, conf, ctx)?;
        let pod = Ns::Path(rec.netns.clone().into());
        let ifname = &env.ifname;
        let mut iface = Interface {
            name: ifname.clone(),
            sandbox: Some(rec.netns.clone()),
            pci_id: Some(vf.pci.clone()),
            ..Interface::default()
        };
        if let Some(netdev) = &vf.netdev {
            let link_err = |what: &str, e: std::io::Error| io_err(ctx, format!("{what}: {e}"));
            self.links
                .set_up(&Ns::Host, netdev, false)
                .map_err(|e| link_err(&format!("setting {netdev} down"), e))?;
            rec.moved = true;
            self.store.save(rec).map_err(|e| state_err(ctx, e))?;
            self.links
                .move_to(&Ns::Host, netdev, &pod, ifname)
                .map_err(|e| {
                    link_err(
                        &format!("moving {netdev} into {} as {ifname}", rec.netns),
                        e,
                    )
                })?;
            // Announce address changes to peers (best effort, as the reference).
            let _ = self
                .links
                .sysctl(&pod, &format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
            let _ = self
                .links
                .sysctl(&pod, &format!("net/ipv6/conf/{ifname}/ndisc_notify"), "1");
            if let Some(mac) = conf.mac {
                self.links
                    .set_mac(&pod, ifname, mac)
                    .map_err(|e| link_err(&format!("setting MAC {mac} on {ifname}"), e))?;
            }
            self.links
                .set_up(&pod, ifname, true)
                .map_err(|e| link_err(&format!("setting {ifname} up"), e))?;
            let link = self
                .links
                .link(&pod, ifname)
                .map_err(|e| link_err(&format!("reading {ifname}"), e))?
                .ok_or_else(|| io_err(ctx, format!("{ifname} vanished from the pod")))?;
            iface.mac = link.mac.map(|m| m.to_string());
            iface.mtu = Some(link.mtu);
        } else {
            // DPDK: the configured MAC, else the admin MAC when one is set.
            let admin = self
                .pf
                .vf(&vf.pf, vf.index)
                .map_err(|e| pf_err(ctx, e))?
                .mac;
            iface.mac = conf
                .mac
                .or((!admin.is_zero()).then_some(admin))
                .map(|m| m.to_string());
        }

        let mut result = CniResult {
            cni_version: Some(conf.version),
            interfaces: vec![iface],
            ..CniResult::default()
        };
        if let Some(plugin) = &conf.ipam_type {
            rec.ipam = true;
            self.store.save(rec).map_err(|e| state_err(ctx, e))?;
            let ienv = ipam_env(env, "ADD", &rec.container_id, &rec.netns, ifname);
            let out = match self.ipam.exec(plugin, &ienv, stdin) {
                Ok(out) => out,
                Err(e) => {
                    // A plugin that reports a failed ADD has cleaned up after itself (CNI spec);
                    // only one that never answered (we died meanwhile) needs the DEL.
                    if matches!(e, IpamError::Failed { .. }) {
                        rec.ipam = false;
                    }
                    return Err(ipam_err(ctx, e));
                }
            }
            .ok_or_else(|| io_err(ctx, format!("IPAM plugin {plugin} printed no result")))?;
            let ipam_result = CniResult::from_value(&out, conf.version)
                .map_err(|e| io_err(ctx, format!("IPAM plugin {plugin}: {e}")))?;
            if ipam_result.ips.is_empty() {
                return Err(io_err(ctx, "IPAM plugin returned missing IP config"));
            }
            result.ips = ipam_result.ips;
            for ip in &mut result.ips {
                ip.interface = Some(0);
            }
            result.routes = ipam_result.routes;
            result.dns = ipam_result.dns;
            if !rec.dpdk {
                self.configure_ips(&pod, ifname, &result, ctx)?;
            }
        }
        if result.dns.is_empty()
            && let Some(dns) = rec.config.get("dns")
        {
            result.dns = serde_json::from_value(dns.clone()).unwrap_or_default();
        }
        result
            .to_value(conf.version)
            .map_err(|e| CniError::new(codes::INCOMPATIBLE_VERSION, format!("{ctx}: {e}")))
    }

    /// Addresses and routes of the IPAM result on the VF in the pod (libcni's ConfigureIface: a
    /// route without a gateway uses the gateway of the first address of its family).
    fn configure_ips(
        &self,
        pod: &Ns,
        ifname: &str,
        result: &CniResult,
        ctx: &str,
    ) -> Result<(), CniError> {
        for ip in &result.ips {
            let (addr, prefix) = split_cidr(&ip.address).ok_or_else(|| {
                io_err(ctx, format!("IPAM address {:?} is not a CIDR", ip.address))
            })?;
            self.links
                .add_address(pod, ifname, addr, prefix)
                .map_err(|e| io_err(ctx, format!("adding {} to {ifname}: {e}", ip.address)))?;
        }
        for route in &result.routes {
            let (dst, prefix) = split_cidr(&route.dst)
                .ok_or_else(|| io_err(ctx, format!("IPAM route {:?} is not a CIDR", route.dst)))?;
            let gw = match &route.gw {
                Some(g) => Some(
                    g.parse()
                        .map_err(|_| io_err(ctx, format!("bad gateway {g:?}")))?,
                ),
                None => result
                    .ips
                    .iter()
                    .filter_map(|ip| ip.gateway.as_deref()?.parse::<IpAddr>().ok())
                    .find(|g| g.is_ipv4() == dst.is_ipv4()),
            };
            self.links
                .add_route(pod, ifname, dst, prefix, gw)
                .map_err(|e| io_err(ctx, format!("adding route {} on {ifname}: {e}", route.dst)))?;
        }
        Ok(())
    }

    /// Undoes what the record says ADD did; every step runs. Returns the failures.
    fn teardown(&self, rec: &Record, env: &CniEnv, stdin: Option<&[u8]>) -> Vec<String> {
        let mut failures = Vec::new();
        if rec.ipam {
            let plugin = rec
                .config
                .get("ipam")
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str);
            if let Some(plugin) = plugin {
                let config_bytes;
                let stdin = match stdin {
                    Some(s) => s,
                    None => {
                        config_bytes = rec.config.to_string().into_bytes();
                        &config_bytes
                    }
                };
                let ienv = ipam_env(env, "DEL", &rec.container_id, &rec.netns, &rec.ifname);
                if let Err(e) = self.ipam.exec(plugin, &ienv, stdin) {
                    failures.push(e.to_string());
                }
            }
        }
        failures.extend(self.restore_pf(rec));
        if rec.moved
            && !rec.dpdk
            && let Err(e) = self.release_netdev(rec)
        {
            failures.push(e);
        }
        failures
    }

    fn restore_pf(&self, rec: &Record) -> Vec<String> {
        let o = rec.orig_vf;
        let a = rec.applied;
        let steps = [
            (
                a.vlan,
                VfSetting::Vlan {
                    vlan: o.vlan,
                    qos: o.qos,
                    proto: o.vlan_proto,
                },
            ),
            (a.spoofchk, VfSetting::SpoofChk(o.spoofchk)),
            (a.mac, VfSetting::Mac(o.mac)),
            (a.trust, VfSetting::Trust(o.trust)),
            (
                a.rate,
                VfSetting::Rate {
                    min: o.min_tx_rate,
                    max: o.max_tx_rate,
                },
            ),
            (a.link_state, VfSetting::LinkState(o.link_state)),
        ];
        steps
            .into_iter()
            .filter(|(applied, _)| *applied)
            .filter_map(|(_, s)| self.pf.set(&rec.pf, rec.vf_index, s).err())
            .map(|e| e.to_string())
            .collect()
    }

    /// Brings the netdev back to the host under its original name with its original MAC and MTU.
    fn release_netdev(&self, rec: &Record) -> Result<(), String> {
        let Some(host_name) = rec.host_ifname.as_deref() else {
            return Ok(());
        };
        let pod = Ns::Path(rec.netns.clone().into());
        let e = |what: String| move |err: std::io::Error| format!("{what}: {err}");
        if self.links.ns_exists(&pod)
            && self
                .links
                .link(&pod, &rec.ifname)
                .map_err(e(format!("reading {} in {}", rec.ifname, rec.netns)))?
                .is_some()
        {
            let l = &rec.ifname;
            self.links
                .set_up(&pod, l, false)
                .map_err(e(format!("setting {l} down")))?;
            if let Some(mac) = rec.orig_mac {
                self.links
                    .set_mac(&pod, l, mac)
                    .map_err(e(format!("restoring MAC {mac} of {l}")))?;
            }
            if let Some(mtu) = rec.orig_mtu {
                self.links
                    .set_mtu(&pod, l, mtu)
                    .map_err(e(format!("restoring MTU {mtu} of {l}")))?;
            }
            return self
                .links
                .move_to(&pod, l, &Ns::Host, host_name)
                .map_err(e(format!("moving {l} back to the host as {host_name}")));
        }
        // Not in the pod: a previous DEL finished this, or the netns is gone and the kernel
        // returned the VF to the host under whatever name it had there.
        let current = if self
            .links
            .link(&Ns::Host, host_name)
            .map_err(e(format!("reading {host_name}")))?
            .is_some()
        {
            Some(host_name.to_owned())
        } else {
            self.sysfs
                .pci_device(&rec.device_id)
                .and_then(|d| d.netdevs())
                .map_err(|err| format!("finding the VF's netdev: {err}"))?
                .into_iter()
                .find(|n| self.links.link(&Ns::Host, n).ok().flatten().is_some())
        };
        let Some(current) = current else {
            // Nowhere to be found (its driver was unbound, or a stand-in link died with the
            // netns): nothing left to restore.
            return Ok(());
        };
        let link = self
            .links
            .link(&Ns::Host, &current)
            .map_err(e(format!("reading {current}")))?
            .ok_or_else(|| format!("{current} vanished"))?;
        let needs = current != host_name
            || rec.orig_mac.is_some_and(|m| link.mac != Some(m))
            || rec.orig_mtu.is_some_and(|m| link.mtu != m);
        if !needs {
            return Ok(());
        }
        self.links
            .set_up(&Ns::Host, &current, false)
            .map_err(e(format!("setting {current} down")))?;
        if current != host_name {
            self.links
                .rename(&Ns::Host, &current, host_name)
                .map_err(e(format!("renaming {current} back to {host_name}")))?;
        }
        if let Some(mac) = rec.orig_mac {
            self.links
                .set_mac(&Ns::Host, host_name, mac)
                .map_err(e(format!("restoring MAC of {host_name}")))?;
        }
        if let Some(mtu) = rec.orig_mtu {
            self.links
                .set_mtu(&Ns::Host, host_name, mtu)
                .map_err(e(format!("restoring MTU of {host_name}")))?;
        }
        Ok(())
    }

    /// DEL: idempotent; a missing record (never added, or already deleted) is success.
    pub fn del(&self, env: &CniEnv, conf: &SriovConf, stdin: &[u8]) -> Result<(), CniError> {
        let ctx = context(env, &conf.name, conf.device_id.as_str());
        let Some(rec) = self
            .store
            .load(&env.container_id, &env.ifname)
            .map_err(|e| state_err(&ctx, e))?
        else {
            // Nothing of ours to undo. IPAM DEL is idempotent, and a lease left by a crashed
            // plugin is released this way.
            if let Some(plugin) = &conf.ipam_type {
                let netns = env
                    .netns
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let ienv = ipam_env(env, "DEL", &env.container_id, &netns, &env.ifname);
                self.ipam
                    .exec(plugin, &ienv, stdin)
                    .map_err(|e| ipam_err(&ctx, e))?;
            }
            return Ok(());
        };
        let ctx = context(env, &conf.name, &rec.device_id);
        let _lock = self
            .store
            .lock_vf(&rec.device_id)
            .map_err(|e| state_err(&ctx, e))?;
        self.finish(&rec, env, Some(stdin), &ctx)
    }

    fn finish(
        &self,
        rec: &Record,
        env: &CniEnv,
        stdin: Option<&[u8]>,
        ctx: &str,
    ) -> Result<(), CniError> {
        let failures = self.teardown(rec, env, stdin);
        if !failures.is_empty() {
            return Err(io_err(
                ctx,
                format!("DEL incomplete (will retry): {}", failures.join("; ")),
            ));
        }
        if self
            .store
            .allocation(&rec.device_id)
            .map_err(|e| state_err(ctx, e))?
            .as_deref()
            == Some(rec.netns.as_str())
        {
            self.store
                .release(&rec.device_id)
                .map_err(|e| state_err(ctx, e))?;
        }
        self.store
            .remove(&rec.container_id, &rec.ifname)
            .map_err(|e| state_err(ctx, e))
    }

    /// CHECK: the VF is in the pod with the configured name and MAC, up, and its PF-side settings
    /// match the configuration.
    pub fn check(&self, env: &CniEnv, conf: &SriovConf) -> Result<(), CniError> {
        let ctx = context(env, &conf.name, conf.device_id.as_str());
        let rec = self
            .store
            .load(&env.container_id, &env.ifname)
            .map_err(|e| state_err(&ctx, e))?
            .ok_or_else(|| {
                CniError::new(
                    codes::UNKNOWN_CONTAINER,
                    format!(
                        "{ctx}: no attachment {} of container {} (never added, or deleted)",
                        env.ifname, env.container_id
                    ),
                )
            })?;
        let mut diffs = Vec::new();
        if rec.device_id != conf.device_id.as_str() {
            diffs.push(format!(
                "deviceID is {} but the attachment holds {}",
                conf.device_id, rec.device_id
            ));
        }
        let st = self
            .pf
            .vf(&rec.pf, rec.vf_index)
            .map_err(|e| pf_err(&ctx, e))?;
        let mut cmp = |field: &str, want: String, have: String| {
            if want != have {
                diffs.push(format!(
                    "{field}: configured {want}, PF {} VF {} has {have}",
                    rec.pf, rec.vf_index
                ));
            }
        };
        if let Some(v) = conf.vlan {
            cmp("vlan", v.to_string(), st.vlan.to_string());
            cmp(
                "vlanQoS",
                conf.vlan_qos.unwrap_or(0).to_string(),
                st.qos.to_string(),
            );
            cmp(
                "vlanProto",
                conf.vlan_proto.unwrap_or_default().to_string(),
                st.vlan_proto.to_string(),
            );
        }
        if let Some(m) = conf.mac {
            cmp("mac", m.to_string(), st.mac.to_string());
        }
        let onoff = |b: bool| if b { "on" } else { "off" }.to_owned();
        if let Some(s) = conf.spoofchk {
            cmp("spoofchk", onoff(s), onoff(st.spoofchk));
        }
        if let Some(t) = conf.trust {
            cmp("trust", onoff(t), onoff(st.trust));
        }
        if let Some(l) = conf.link_state {
            cmp(
                "link_state",
                l.as_str().into(),
                st.link_state.as_str().into(),
            );
        }
        if conf.has_rate() {
            cmp(
                "min_tx_rate",
                conf.min_tx_rate.unwrap_or(0).to_string(),
                st.min_tx_rate.to_string(),
            );
            cmp(
                "max_tx_rate",
                conf.max_tx_rate.unwrap_or(0).to_string(),
                st.max_tx_rate.to_string(),
            );
        }
        if !rec.dpdk {
            let pod = Ns::Path(rec.netns.clone().into());
            let link = if self.links.ns_exists(&pod) {
                self.links
                    .link(&pod, &env.ifname)
                    .map_err(|e| io_err(&ctx, e))?
            } else {
                None
            };
            match link {
                None => diffs.push(format!(
                    "interface {} is not in netns {}",
                    env.ifname, rec.netns
                )),
                Some(link) => {
                    if let Some(m) = conf.mac
                        && link.mac != Some(m)
                    {
                        diffs.push(format!(
                            "interface {} has MAC {}, configured {m}",
                            env.ifname,
                            link.mac.map(|m| m.to_string()).unwrap_or_default()
                        ));
                    }
                    if !link.up {
                        diffs.push(format!("interface {} is down", env.ifname));
                    }
                    if let Some(prev) = &conf.prev_result
                        && let Ok(prev) = CniResult::from_value(prev, conf.version)
                        && let Some(pi) = prev.interfaces.iter().find(|i| i.name == env.ifname)
                        && let (Some(want), Some(have)) =
                            (pi.mac.as_deref().and_then(Mac::parse), link.mac)
                        && want != have
                    {
                        diffs.push(format!(
                            "interface {} has MAC {have}, prevResult says {want}",
                            env.ifname
                        ));
                    }
                }
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                CHECK_MISMATCH,
                format!("{ctx}: {}", diffs.join("; ")),
            ))
        }
    }

    /// STATUS: ready when sysfs shows PCI devices (the plugin can resolve VFs).
    pub fn status(&self) -> Result<(), CniError> {
        let dir = self.sysfs.root().join("bus/pci/devices");
        if dir.is_dir() {
            Ok(())
        } else {
            Err(CniError::new(
                codes::PLUGIN_NOT_AVAILABLE,
                format!(
                    "sriov: {} is missing, so no VF can be resolved",
                    dir.display()
                ),
            ))
        }
    }

    /// GC: tears down every attachment of ours that `cni.dev/valid-attachments` does not list.
    pub fn gc(&self, env: &CniEnv, stdin: &[u8]) -> Result<(), CniError> {
        let conf: Value = serde_json::from_slice(stdin)
            .map_err(|e| CniError::new(codes::DECODING_FAILURE, format!("sriov GC: {e}")))?;
        let valid: Vec<(String, String)> = conf
            .get("cni.dev/valid-attachments")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| {
                        (
                            v["containerID"].as_str().unwrap_or_default().to_owned(),
                            v["ifname"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let name = conf["name"].as_str().unwrap_or_default();
        let records = self.store.all().map_err(|e| state_err("sriov GC", e))?;
        let mut failures = Vec::new();
        for rec in records {
            if valid
                .iter()
                .any(|(c, i)| *c == rec.container_id && *i == rec.ifname)
            {
                continue;
            }
            // Only this network's attachments: another network's records are its own GC's.
            if rec
                .config
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                != name
            {
                continue;
            }
            let ctx = format!(
                "network {name}: VF {} (container {}, {})",
                rec.device_id, rec.container_id, rec.ifname
            );
            let _lock = match self.store.lock_vf(&rec.device_id) {
                Ok(l) => l,
                Err(e) => {
                    failures.push(format!("{ctx}: {e}"));
                    continue;
                }
            };
            if let Err(e) = self.finish(&rec, env, None, &ctx) {
                failures.push(e.msg);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(io_err("sriov GC", failures.join("; ")))
        }
    }
}

/// The version check of STATUS and GC (1.1.0 verbs).
pub fn require_1_1(version: CniVersion, verb: &str) -> Result<(), CniError> {
    if version.supports_status_gc() {
        Ok(())
    } else {
        Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!("{verb} needs cniVersion 1.1.0 (the configuration says {version})"),
        ))
    }
}

/// The context of a message about a configuration that did not parse: pod and network if known.
pub fn context_without_vf(env: &CniEnv, stdin: &[u8]) -> String {
    let name = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut parts = vec!["sriov".to_owned()];
    if let (Some(ns), Some(pod)) = (
        env.args.get("K8S_POD_NAMESPACE"),
        env.args.get("K8S_POD_NAME"),
    ) {
        parts.push(format!("pod {ns}/{pod}"));
    }
    if !name.is_empty() {
        parts.push(format!("network {name}"));
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests;
