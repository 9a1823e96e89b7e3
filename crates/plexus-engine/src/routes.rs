//! `default-route` (NPWG §4.1.2.1.9): the attachment that asks for it gets the default route of
//! each address family it names, every other interface of the pod (eth0 included) loses its
//! default route of that family, and families nobody asked for are left alone.
//!
//! The pure part ([`plan`], [`fix_results`]) is separate from the effect ([`NetnsRoutes`]) so that
//! the logic is unit-tested with a fake. The real implementation, [`IpRoutes`], runs iproute2 in
//! the pod's netns through `nsenter --net=<path>`: it needs three route operations, and a netlink
//! crate plus the `setns` dance on a thread (which needs care with `unsafe`-free crates) is a lot
//! of dependency for that. iproute2 and util-linux are present on every node a CNI plugin runs on.

use crate::resolve::Attachment;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }
    /// The default destination as CNI results write it.
    pub fn default_dst(&self) -> &'static str {
        match self {
            Self::V4 => "0.0.0.0/0",
            Self::V6 => "::/0",
        }
    }
    fn flag(&self) -> &'static str {
        match self {
            Self::V4 => "-4",
            Self::V6 => "-6",
        }
    }
}

/// A default route in the pod's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub ifname: String,
    pub gateway: Option<IpAddr>,
}

/// The route operations default-route needs, inside a network namespace.
pub trait NetnsRoutes: Send + Sync {
    fn default_routes(&self, netns: &Path, family: Family) -> Result<Vec<DefaultRoute>, String>;
    fn delete_default(
        &self,
        netns: &Path,
        family: Family,
        route: &DefaultRoute,
    ) -> Result<(), String>;
    fn replace_default(&self, netns: &Path, ifname: &str, gateway: IpAddr) -> Result<(), String>;
}

/// One family's default route, moved to one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMove {
    pub family: Family,
    /// Index into the attachment list.
    pub attachment: usize,
    pub gateway: IpAddr,
}

/// The moves the selections ask for. More than one gateway per family (across the pod, or within
/// one element) is an error, as ECMP cannot be expressed by "the" default route. An empty list
/// means "the default route via this delegate's own gateway(s)": it is resolved from `results`
/// (one per attachment, after ADD) and skipped while they are not known yet (`None`, the check
/// made before anything runs).
pub fn plan(atts: &[Attachment], results: Option<&[Value]>) -> Result<Vec<RouteMove>, String> {
    let mut moves: Vec<RouteMove> = Vec::new();
    for (i, att) in atts.iter().enumerate() {
        let Some(requested) = att
            .selection
            .as_ref()
            .and_then(|s| s.default_route.as_ref())
        else {
            continue;
        };
        let gws: Vec<IpAddr> = if requested.is_empty() {
            match results.and_then(|r| r.get(i)) {
                Some(r) => own_gateways(r),
                None => continue,
            }
        } else {
            requested
                .iter()
                .map(|gw| {
                    gw.parse()
                        .map_err(|_| format!("default-route gateway {gw:?} is not an IP address"))
                })
                .collect::<Result<_, _>>()?
        };
        for gateway in gws {
            let family = Family::of(&gateway);
            if let Some(other) = moves.iter().find(|m| m.family == family) {
                return Err(format!(
                    "more than one {} default-route requested ({} via {} and {} via {}); only one per address family is allowed",
                    if family == Family::V4 { "IPv4" } else { "IPv6" },
                    atts[other.attachment].network,
                    other.gateway,
                    att.network,
                    gateway
                ));
            }
            moves.push(RouteMove {
                family,
                attachment: i,
                gateway,
            });
        }
    }
    Ok(moves)
}

/// The first gateway of each family in a result's `ips` (0.3.0+) or `ip4`/`ip6` (0.1/0.2).
fn own_gateways(r: &Value) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let candidates = r["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .chain([&r["ip4"], &r["ip6"]]);
    for gw in candidates.filter_map(|ip| ip["gateway"].as_str()?.parse::<IpAddr>().ok()) {
        if !out.iter().any(|g| Family::of(g) == Family::of(&gw)) {
            out.push(gw);
        }
    }
    out
}

/// Makes the kernel match `moves`: for each family, every default route that is not the requested
/// one is deleted, then the requested one is set (replace, so a retry is idempotent).
pub fn apply(
    routes: &dyn NetnsRoutes,
    netns: &Path,
    atts: &[Attachment],
    moves: &[RouteMove],
) -> Result<(), String> {
    for m in moves {
        let ifname = &atts[m.attachment].ifname;
        for r in routes.default_routes(netns, m.family)? {
            if &r.ifname != ifname || r.gateway != Some(m.gateway) {
                routes.delete_default(netns, m.family, &r)?;
            }
        }
        routes.replace_default(netns, ifname, m.gateway)?;
    }
    Ok(())
}

/// Rewrites the cached results so that CHECK (which compares the kernel with `prevResult`)
/// agrees with what [`apply`] did: default routes of a moved family are removed from every result
/// and the requested one is added to its attachment's.
pub fn fix_results(results: &mut [Value], moves: &[RouteMove]) {
    for m in moves {
        let dst = m.family.default_dst();
        for r in results.iter_mut() {
            for routes in route_lists(r) {
                routes.retain(|rt| rt.get("dst").and_then(Value::as_str) != Some(dst));
            }
        }
        if let Some(r) = results.get_mut(m.attachment).and_then(Value::as_object_mut) {
            let entry = json!({"dst": dst, "gw": m.gateway.to_string()});
            match r.get_mut("routes") {
                Some(Value::Array(a)) => a.push(entry),
                _ => {
                    r.insert("routes".into(), json!([entry]));
                }
            }
        }
    }
}

/// The route arrays of a result: `routes` (0.3.0+) and `ip4.routes`/`ip6.routes` (0.1/0.2).
fn route_lists(r: &mut Value) -> Vec<&mut Vec<Value>> {
    let Some(obj) = r.as_object_mut() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in obj.iter_mut() {
        match (k.as_str(), v) {
            ("routes", Value::Array(a)) => out.push(a),
            ("ip4" | "ip6", Value::Object(o)) => {
                if let Some(Value::Array(a)) = o.get_mut("routes") {
                    out.push(a);
                }
            }
            _ => {}
        }
    }
    out
}

/// Gateways to report in network-status for attachment `index`.
pub fn gateways_of(moves: &[RouteMove], index: usize) -> Vec<String> {
    moves
        .iter()
        .filter(|m| m.attachment == index)
        .map(|m| m.gateway.to_string())
        .collect()
}

/// [`NetnsRoutes`] over `nsenter --net=<netns> ip ...` (see the module docs for why).
#[derive(Debug, Clone, Default)]
pub struct IpRoutes {
    /// Run `nsenter` chrooted into this root, as delegates are
    /// ([`crate::exec::ProcessExec::with_chroot`]); plexusd's image has no `nsenter` or `ip`.
    chroot: Option<PathBuf>,
}

impl IpRoutes {
    /// `nsenter` and `ip` of the host's root mounted at `root` (see
    /// [`crate::exec::chroot::spawn_in`]).
    pub fn chrooted(root: PathBuf) -> Self {
        Self { chroot: Some(root) }
    }

    fn ip(&self, netns: &Path, args: &[&str]) -> Result<String, String> {
        let mut net = std::ffi::OsString::from("--net=");
        net.push(netns);
        let mut cmd = Command::new("nsenter");
        cmd.arg(net)
            .arg("ip")
            .args(args)
            // Not `Stdio::null()`: std would open /dev/null inside the root while spawning.
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = match &self.chroot {
            None => cmd.spawn(),
            Some(root) => crate::exec::chroot::spawn_in(root, &mut cmd),
        }
        .and_then(std::process::Child::wait_with_output)
        .map_err(|e| format!("cannot run nsenter/ip: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`ip {}` in {} failed: {}",
                args.join(" "),
                netns.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl NetnsRoutes for IpRoutes {
    fn default_routes(&self, netns: &Path, family: Family) -> Result<Vec<DefaultRoute>, String> {
        let text = self.ip(netns, &["-j", family.flag(), "route", "show", "default"])?;
        let v: Value = serde_json::from_str(text.trim())
            .or_else(|_| {
                if text.trim().is_empty() {
                    Ok(json!([]))
                } else {
                    Err(())
                }
            })
            .map_err(|()| format!("unexpected `ip -j route` output: {text}"))?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|r| DefaultRoute {
                ifname: r["dev"].as_str().unwrap_or_default().to_owned(),
                gateway: r["gateway"].as_str().and_then(|g| g.parse().ok()),
            })
            .collect())
    }

    fn delete_default(
        &self,
        netns: &Path,
        family: Family,
        route: &DefaultRoute,
    ) -> Result<(), String> {
        let gw = route.gateway.map(|g| g.to_string());
        let mut args = vec![family.flag(), "route", "del", "default"];
        if let Some(gw) = gw.as_deref() {
            args.extend(["via", gw]);
        }
        args.extend(["dev", route.ifname.as_str()]);
        self.ip(netns, &args).map(drop)
    }

    fn replace_default(&self, netns: &Path, ifname: &str, gateway: IpAddr) -> Result<(), String> {
        let gw = gateway.to_string();
        let family = Family::of(&gateway);
        self.ip(
            netns,
            &[
                family.flag(),
                "route",
                "replace",
                "default",
                "via",
                &gw,
                "dev",
                ifname,
            ],
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_cni::NetworkConfig;
    use std::sync::Mutex;

    #[test]
    fn chrooted_routes_run_the_roots_nsenter() {
        use std::os::unix::fs::PermissionsExt;
        let root = crate::exec::chroot::testing::shell_root();
        let bin = root.path().join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        // Stands in for the host's nsenter: records what it was asked to run, answers like `ip -j`.
        std::fs::write(
            bin.join("nsenter"),
            "#!/bin/sh\necho \"$*\" > /args\necho '[]'\n",
        )
        .unwrap();
        std::fs::set_permissions(bin.join("nsenter"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let routes = IpRoutes::chrooted(root.path().into());
        let got = routes
            .default_routes(Path::new("/run/netns/pod"), Family::V4)
            .unwrap();
        assert!(got.is_empty());
        assert_eq!(
            std::fs::read_to_string(root.path().join("args"))
                .unwrap()
                .trim(),
            "--net=/run/netns/pod ip -j -4 route show default"
        );
    }

    fn att(network: &str, ifname: &str, default_route: Option<Vec<&str>>) -> Attachment {
        let selection = default_route.map(|gws| plexus_netattach::NetworkSelectionElement {
            name: network.into(),
            default_route: Some(gws.into_iter().map(str::to_owned).collect()),
            ..Default::default()
        });
        Attachment {
            network: network.into(),
            ifname: ifname.into(),
            config: NetworkConfig::from_value(
                json!({"cniVersion": "1.0.0", "name": "x", "type": "t"}),
            )
            .unwrap(),
            is_default: ifname == "eth0",
            runtime_config: Default::default(),
            selection,
            resource_name: None,
            device: None,
            cni_args: Vec::new(),
            auxiliary: false,
        }
    }

    #[derive(Default)]
    struct FakeRoutes {
        table: Mutex<Vec<(Family, DefaultRoute)>>,
        log: Mutex<Vec<String>>,
    }

    impl NetnsRoutes for FakeRoutes {
        fn default_routes(&self, _: &Path, family: Family) -> Result<Vec<DefaultRoute>, String> {
            Ok(self
                .table
                .lock()
                .unwrap()
                .iter()
                .filter(|(f, _)| *f == family)
                .map(|(_, r)| r.clone())
                .collect())
        }
        fn delete_default(
            &self,
            _: &Path,
            family: Family,
            route: &DefaultRoute,
        ) -> Result<(), String> {
            self.log
                .lock()
                .unwrap()
                .push(format!("del {family:?} {}", route.ifname));
            self.table
                .lock()
                .unwrap()
                .retain(|(f, r)| !(*f == family && r == route));
            Ok(())
        }
        fn replace_default(&self, _: &Path, ifname: &str, gw: IpAddr) -> Result<(), String> {
            self.log
                .lock()
                .unwrap()
                .push(format!("replace {ifname} via {gw}"));
            let family = Family::of(&gw);
            let mut t = self.table.lock().unwrap();
            t.retain(|(f, _)| *f != family);
            t.push((
                family,
                DefaultRoute {
                    ifname: ifname.into(),
                    gateway: Some(gw),
                },
            ));
            Ok(())
        }
    }

    #[test]
    fn one_request_per_family() {
        let atts = [
            att("cluster", "eth0", None),
            att("blue/a", "net1", Some(vec!["10.1.0.1", "fd00::1"])),
            att("blue/b", "net2", Some(vec!["10.2.0.1"])),
        ];
        let e = plan(&atts, None).unwrap_err();
        assert!(
            e.contains("blue/a via 10.1.0.1") && e.contains("blue/b via 10.2.0.1"),
            "{e}"
        );
        let e = plan(
            &[att("blue/a", "net1", Some(vec!["10.1.0.1", "10.1.0.2"]))],
            None,
        )
        .unwrap_err();
        assert!(e.contains("more than one IPv4"), "{e}");
        let ok = plan(&atts[..2], None).unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn an_empty_list_uses_the_delegates_own_gateway() {
        let atts = [
            att("cluster", "eth0", None),
            att("blue/a", "net1", Some(vec![])),
        ];
        assert!(plan(&atts, None).unwrap().is_empty(), "unknown before ADD");
        let results = [
            json!({"ips": [{"address": "10.77.0.5/16", "gateway": "10.77.0.1"}]}),
            json!({"ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}, {"address": "10.1.1.5/24", "gateway": "10.1.1.1"}, {"address": "fd00::5/64", "gateway": "fd00::1"}]}),
        ];
        let moves = plan(&atts, Some(&results)).unwrap();
        assert_eq!(
            moves
                .iter()
                .map(|m| m.gateway.to_string())
                .collect::<Vec<_>>(),
            vec!["10.1.0.1", "fd00::1"]
        );
    }

    #[test]
    fn moves_only_the_requested_family() {
        let atts = [
            att("cluster", "eth0", None),
            att("blue/a", "net1", Some(vec!["10.1.0.1"])),
        ];
        let fake = FakeRoutes::default();
        let v6 = DefaultRoute {
            ifname: "eth0".into(),
            gateway: Some("fd00::1".parse().unwrap()),
        };
        fake.table.lock().unwrap().extend([
            (
                Family::V4,
                DefaultRoute {
                    ifname: "eth0".into(),
                    gateway: Some("10.77.0.1".parse().unwrap()),
                },
            ),
            (Family::V6, v6.clone()),
        ]);
        let moves = plan(&atts, None).unwrap();
        apply(&fake, Path::new("/x"), &atts, &moves).unwrap();
        assert_eq!(
            *fake.log.lock().unwrap(),
            vec!["del V4 eth0", "replace net1 via 10.1.0.1"]
        );
        let t = fake.table.lock().unwrap();
        assert!(t.contains(&(Family::V6, v6)), "IPv6 default untouched");
        assert!(t.contains(&(
            Family::V4,
            DefaultRoute {
                ifname: "net1".into(),
                gateway: Some("10.1.0.1".parse().unwrap())
            }
        )));
    }

    #[test]
    fn cached_results_follow_the_move() {
        let moves = vec![RouteMove {
            family: Family::V4,
            attachment: 1,
            gateway: "10.1.0.1".parse().unwrap(),
        }];
        let mut results = vec![
            json!({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}, {"dst": "::/0", "gw": "fd00::1"}, {"dst": "10.96.0.0/12"}]}),
            json!({"cniVersion": "1.0.0", "ips": []}),
        ];
        fix_results(&mut results, &moves);
        assert_eq!(
            results[0]["routes"],
            json!([{"dst": "::/0", "gw": "fd00::1"}, {"dst": "10.96.0.0/12"}])
        );
        assert_eq!(
            results[1]["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}])
        );
        assert_eq!(gateways_of(&moves, 1), vec!["10.1.0.1"]);
        assert!(gateways_of(&moves, 0).is_empty());
    }
}
