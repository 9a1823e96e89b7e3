//! Driving the real `plexus` binary the way a container runtime does, on a throw-away "node":
//! temporary config, cache and IPAM directories, a per-test bridge and veth pair for the cluster
//! and macvlan networks, and network namespaces as pods. Everything is removed on drop.

use crate::netns::{HostLink, NetNs, unique_name};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian's containernetworking-plugins put the delegates.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// The `plexus` binary of this workspace (built by `cargo build`/`cargo test` before the tests run).
pub fn plexus_bin() -> PathBuf {
    bin_path("plexus")
}

/// A binary of this workspace next to the test executable (`target/<profile>/<name>`).
pub fn bin_path(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!(
        "PLEXUS_BIN_{}",
        name.to_uppercase().replace('-', "_")
    )) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("executable path");
    // Tests live in target/<profile>/deps/, binaries (the bench driver) in target/<profile>/.
    let mut dir = exe.parent().expect("target dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target dir");
    }
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --workspace --bins` first (hack/test.sh does)",
        p.display()
    );
    p
}

/// What one plugin invocation printed and returned.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// stdout as JSON (panics with the whole outcome when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "plugin failed: {self:#?}");
        self
    }
    /// Asserts a CNI error with `code` and returns its `msg`.
    pub fn assert_error(&self, code: u64) -> String {
        assert_ne!(self.code, 0, "expected failure: {self:#?}");
        let v = self.json();
        assert_eq!(v["code"].as_u64(), Some(code), "wrong code: {self:#?}");
        v["msg"].as_str().unwrap_or_default().to_owned()
    }
}

/// One CNI call.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub args: String,
    pub config: &'a Value,
}

/// Execs `plexus` with the CNI environment and `config` on stdin, as containerd does.
pub fn exec_plexus(call: &Call<'_>) -> Result<Outcome> {
    exec_plexus_with_path(call, CNI_BIN_DIR)
}

/// [`exec_plexus`] with `CNI_PATH` set to `cni_path` (e.g. `/usr/lib/cni:<recorder dir>`).
pub fn exec_plexus_with_path(call: &Call<'_>, cni_path: &str) -> Result<Outcome> {
    let child = spawn_plexus_with_path(call, cni_path)?;
    let out = child.wait_with_output()?;
    Ok(Outcome::from(out))
}

/// Execs the plugin binary `bin` (e.g. the copy an installer put into a host's bin dir) as
/// [`exec_plexus_with_path`] does.
pub fn exec_plugin(bin: &Path, call: &Call<'_>, cni_path: &str) -> Result<Outcome> {
    let child = spawn_plugin(bin, call, cni_path)?;
    Ok(Outcome::from(child.wait_with_output()?))
}

impl From<std::process::Output> for Outcome {
    fn from(out: std::process::Output) -> Self {
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Starts `plexus` like [`exec_plexus_with_path`] (stdin written and closed) without waiting, so
/// that a test can kill it mid-command the way a runtime's timeout does.
pub fn spawn_plexus_with_path(call: &Call<'_>, cni_path: &str) -> Result<std::process::Child> {
    spawn_plugin(&plexus_bin(), call, cni_path)
}

/// [`spawn_plexus_with_path`] for the plugin binary `bin`.
pub fn spawn_plugin(bin: &Path, call: &Call<'_>, cni_path: &str) -> Result<std::process::Child> {
    spawn_plugin_env(bin, call, cni_path, &[])
}

/// [`spawn_plugin`] with extra environment variables (test hooks such as `PLEXUS_SYSFS_ROOT`,
/// which a meta plugin passes on to its delegates).
pub fn spawn_plugin_env(
    bin: &Path,
    call: &Call<'_>,
    cni_path: &str,
    env: &[(String, String)],
) -> Result<std::process::Child> {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", &call.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(ns) = call.netns {
        cmd.env("CNI_NETNS", ns);
    }
    let mut child = cmd.spawn().context("spawn plexus")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(call.config.to_string().as_bytes())?;
    Ok(child)
}

/// Makes `dir` hold a `cni-recorder` symlink to the workspace's recorder plugin and returns the
/// `CNI_PATH` to use: the Debian plugins, then `dir`.
pub fn recorder_cni_path(dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    let link = dir.join("cni-recorder");
    if !link.exists() {
        std::os::unix::fs::symlink(bin_path("cni-recorder"), &link)?;
    }
    Ok(format!("{CNI_BIN_DIR}:{}", dir.display()))
}

/// The invocations a `cni-recorder` wrote to `record_file`, in order (empty when none).
pub fn recorded(record_file: &Path) -> Vec<Value> {
    std::fs::read_to_string(record_file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("recorder lines are JSON"))
        .collect()
}

/// `CNI_ARGS` as kubelet builds them.
pub fn k8s_args(namespace: &str, pod: &str, uid: &str, container_id: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={uid}"
    )
}

/// A test node: directories, a bridge for the cluster network and a veth pair as macvlan master.
#[derive(Debug)]
pub struct Node {
    pub root: tempfile::TempDir,
    /// Plexus's `confDir` (configs for NADs without spec.config, and named cluster networks).
    pub conf_dir: PathBuf,
    /// Plexus's `cniDir` (its cache).
    pub cni_dir: PathBuf,
    /// host-local `dataDir`.
    pub ipam_dir: PathBuf,
    /// Linux bridge of the cluster network (its name is also the prefix of everything this node made).
    pub bridge: HostLink,
    /// Bridge for secondary "bridge" NADs.
    pub bridge2: HostLink,
    /// A veth pair; `macvlan_master` is one end.
    pub veth: HostLink,
    pub macvlan_master: String,
    pub id: String,
}

impl Node {
    pub fn new() -> Result<Self> {
        crate::netns::require_root();
        let id = unique_name("");
        let root = tempfile::tempdir()?;
        let conf_dir = root.path().join("net.d");
        let cni_dir = root.path().join("cache");
        let ipam_dir = root.path().join("ipam");
        for d in [&conf_dir, &ipam_dir] {
            std::fs::create_dir_all(d)?;
        }
        let bridge = HostLink::bridge(&short(&format!("pb{id}")))?;
        let bridge2 = HostLink::bridge(&short(&format!("pc{id}")))?;
        let (a, b) = (short(&format!("pv{id}a")), short(&format!("pv{id}b")));
        let veth = HostLink::veth_pair(&a, &b)?;
        Ok(Self {
            root,
            conf_dir,
            cni_dir,
            ipam_dir,
            bridge,
            bridge2,
            veth,
            macvlan_master: a,
            id,
        })
    }

    /// The cluster network: bridge + host-local on 10.77.0.0/16 (the bridge has no address, so
    /// nothing reaches the host's routing table).
    pub fn cluster_conflist(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "cluster",
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge.name(),
                "isGateway": false,
                "ipMasq": false,
                "ipam": {"type": "host-local", "dataDir": self.ipam_dir, "ranges": [[{"subnet": "10.77.0.0/16"}]]}
            }]
        })
    }

    /// A macvlan NAD config on this node's veth, with host-local on `subnet`.
    pub fn macvlan_config(&self, name: &str, subnet: &str) -> Value {
        json!({
            "cniVersion": "0.4.0",
            "name": name,
            "type": "macvlan",
            "master": self.macvlan_master,
            "mode": "bridge",
            "ipam": {"type": "host-local", "dataDir": self.ipam_dir, "ranges": [[{"subnet": subnet}]]}
        })
    }

    /// A bridge NAD config on this node's second bridge.
    pub fn bridge_config(&self, name: &str, subnet: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "bridge",
            "bridge": self.bridge2.name(),
            "ipam": {"type": "host-local", "dataDir": self.ipam_dir, "ranges": [[{"subnet": subnet}]]}
        })
    }

    /// The plexus config with `clusterNetwork` set to `cluster_network` and `extra` merged in.
    /// Events are off unless `extra` turns them on: tests and the benchmark count API requests
    /// against the ADD budget of DESIGN.md §3, which Events are not part of.
    pub fn plexus_config(
        &self,
        cluster_network: &str,
        kubeconfig: Option<&Path>,
        extra: Value,
    ) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": "plexus-network",
            "type": "plexus",
            "clusterNetwork": cluster_network,
            "confDir": self.conf_dir,
            "cniDir": self.cni_dir,
            "binDir": CNI_BIN_DIR,
            "logLevel": "debug",
            "events": false,
        });
        if let Some(k) = kubeconfig {
            c["kubeconfig"] = json!(k);
        }
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    }

    /// Writes the cluster conflist into a file of its own and returns its path.
    pub fn write_cluster_file(&self, version: &str) -> Result<PathBuf> {
        let dir = self.root.path().join("cluster.d");
        std::fs::create_dir_all(&dir)?;
        let p = dir.join("10-cluster.conflist");
        std::fs::write(&p, self.cluster_conflist(version).to_string())?;
        Ok(p)
    }

    /// host-local leases held in this node's IPAM dir, as `network/ip` strings.
    pub fn leases(&self) -> Vec<String> {
        let mut out = Vec::new();
        for net in std::fs::read_dir(&self.ipam_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                if name != "lock" && !name.starts_with("last_reserved_ip") {
                    out.push(format!("{}/{name}", net.file_name().to_string_lossy()));
                }
            }
        }
        out.sort();
        out
    }

    /// Container IDs with a plexus cache entry.
    pub fn cache_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.cni_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        v.sort();
        v
    }

    /// Asserts that no pod holds anything of this node any more: no host-local lease, no cache
    /// entry.
    pub fn assert_released(&self) {
        assert_eq!(
            self.leases(),
            Vec::<String>::new(),
            "host-local leases left"
        );
        assert_eq!(
            self.cache_entries(),
            Vec::<String>::new(),
            "cache entries left"
        );
    }
}

/// Interface names in a netns (`ip -j link`).
pub fn link_names(ns: &NetNs) -> Vec<String> {
    let mut v: Vec<String> = ns
        .links()
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect();
    v.sort();
    v
}

/// IPv4 addresses (`a.b.c.d/len`) of `ifname` in a netns.
pub fn ipv4_of(ns: &NetNs, ifname: &str) -> Vec<String> {
    ns.addrs()
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["ifname"] == ifname)
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["family"] == "inet")
        .map(|a| {
            format!(
                "{}/{}",
                a["local"].as_str().unwrap_or_default(),
                a["prefixlen"]
            )
        })
        .collect()
}

/// MAC address of `ifname` in a netns.
pub fn mac_of(ns: &NetNs, ifname: &str) -> Option<String> {
    ns.links()
        .as_array()?
        .iter()
        .find(|l| l["ifname"] == ifname)?["address"]
        .as_str()
        .map(str::to_owned)
}

/// The IPv4 default routes in a netns, as (device, gateway) pairs.
pub fn default_routes(ns: &NetNs) -> Vec<(String, String)> {
    ns.ip_json(&["route", "show", "default"])
        .expect("ip route show default")
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("dev"), s("gateway"))
        })
        .collect()
}

/// Pings `ip` from inside `ns` (3 packets, 1 s timeout each).
pub fn ping(ns: &NetNs, ip: &str) -> Result<()> {
    let out = ns.exec(&["ping", "-c", "2", "-W", "2", "-i", "0.2", ip]);
    match out {
        Ok(_) => Ok(()),
        Err(e) => bail!("ping {ip} from {} failed: {e}", ns.name()),
    }
}

fn short(s: &str) -> String {
    s.chars().take(15).collect()
}
