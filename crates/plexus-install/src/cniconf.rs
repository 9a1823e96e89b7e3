//! The primary network's config and the Plexus conflist generated from it.
//!
//! The primary is what the runtime would use if we were not there: the lexically first
//! `*.conf`/`*.conflist` in the config dir. Ours is named to sort first (`00-plexus.conflist`), so
//! the runtime picks ours, and ours points at the primary by path (`clusterNetwork`).

use crate::atomic::TEMP_PREFIX;
use serde_json::{Map, Value, json};
use std::path::Path;

/// The runtime capability through which containerd/CRI-O pass pod annotations, saving the pod GET.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// Name of the generated conflist (and the network name the runtime reports).
pub const NETWORK_NAME: &str = "plexus-cni-network";

/// Where `plexusd` listens by default (the `daemonSocket` of a thick-mode config).
pub const DEFAULT_DAEMON_SOCKET: &str = "/run/plexus/plexusd.sock";

/// Which Plexus plugin the runtime calls: the whole engine in one process per call, or the shim
/// that forwards each call to the node daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginMode {
    /// `type: plexus`: the thin plugin does all the work itself.
    Thin,
    /// `type: plexus-shim`, forwarding to `plexusd` on `daemon_socket` (a host path). Every other
    /// key is the thin plugin's: the shim needs `cniDir`/`binDir` for its local DEL when the
    /// daemon is down, and the daemon reads the same file as its own config.
    Thick { daemon_socket: std::path::PathBuf },
}

impl PluginMode {
    /// The plugin `type` the config names, which is also the binary's file name in the bin dir.
    pub fn plugin_type(&self) -> &'static str {
        match self {
            PluginMode::Thin => "plexus",
            PluginMode::Thick { .. } => "plexus-shim",
        }
    }
}

/// Our plugin types, in either mode: never a primary, and what `uninstall` removes.
pub const OWN_PLUGIN_TYPES: [&str; 2] = ["plexus", "plexus-shim"];

/// What the config dir holds, as far as the primary is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum PrimaryState {
    /// No candidate file yet.
    Absent,
    /// The first candidate exists but cannot be used yet (being written, or broken); we wait for it
    /// to become valid rather than pick the next file, which the runtime would not pick either.
    Invalid { file_name: String, reason: String },
    /// The primary: its file name in the config dir and its parsed content.
    Found {
        file_name: String,
        config: Map<String, Value>,
    },
}

/// The config dir as the runtime sees it: the primary, and the config files that sort before ours.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// The primary network's config.
    pub primary: PrimaryState,
    /// Config files (other than ours) whose names sort before ours, in order. The runtime loads
    /// the lexically first config file, so while this is not empty it never calls Plexus.
    pub ahead_of_ours: Vec<String>,
}

/// File name endings the runtimes load as CNI configs (libcni's `ConfFiles` extensions).
const CONFIG_EXTENSIONS: [&str; 3] = [".conf", ".conflist", ".json"];

/// Plugin types that are themselves meta plugins: using one as the cluster network would make
/// Plexus call another multiplexer (or itself) for every pod.
pub const META_PLUGIN_TYPES: [&str; 6] = [
    "multus",
    "multus-shim",
    "plexus",
    "plexus-shim",
    "genie",
    "danm",
];

/// Looks for the primary config in `dir` (the host's net.d as seen by the installer). `own_name`
/// (our conflist) and any config whose plugin type is `plexus` or `plexus-shim` (ours under
/// another name, e.g. left by an older install) are never the primary.
pub fn find_primary(dir: &Path, own_name: &str) -> std::io::Result<PrimaryState> {
    scan(dir, own_name).map(|s| s.primary)
}

/// Reads `dir` as the runtime would: see [`Scan`].
pub fn scan(dir: &Path, own_name: &str) -> std::io::Result<Scan> {
    let mut names: Vec<String> = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Scan {
                primary: PrimaryState::Absent,
                ahead_of_ours: Vec::new(),
            });
        }
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == own_name
            || name.starts_with('.')
            || name.starts_with(TEMP_PREFIX)
            || !CONFIG_EXTENSIONS.iter().any(|x| name.ends_with(x))
            || !e.path().is_file()
        {
            continue;
        }
        names.push(name);
    }
    names.sort();
    let ahead_of_ours = names
        .iter()
        .filter(|n| n.as_str() < own_name)
        .cloned()
        .collect();
    Ok(Scan {
        primary: primary_of(dir, names)?,
        ahead_of_ours,
    })
}

fn primary_of(dir: &Path, names: Vec<String>) -> std::io::Result<PrimaryState> {
    for name in names {
        let path = dir.join(&name);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            // Removed between the listing and now: look at the next one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let config = match serde_json::from_slice::<Value>(&text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Ok(PrimaryState::Invalid {
                    file_name: name,
                    reason: "not a JSON object".into(),
                });
            }
            Err(e) => {
                return Ok(PrimaryState::Invalid {
                    file_name: name,
                    reason: format!("not valid JSON: {e}"),
                });
            }
        };
        if is_plexus(&config) {
            continue;
        }
        return Ok(PrimaryState::Found {
            file_name: name,
            config,
        });
    }
    Ok(PrimaryState::Absent)
}

/// The type of the first meta plugin (see [`META_PLUGIN_TYPES`]) in a conf or conflist, if any.
pub fn meta_plugin_type(c: &Map<String, Value>) -> Option<&str> {
    std::iter::once(c)
        .chain(plugins(c))
        .filter_map(|p| p.get("type").and_then(Value::as_str))
        .find(|t| META_PLUGIN_TYPES.contains(t))
}

/// True for a config (conf or conflist) whose plugin is ours (`plexus` or `plexus-shim`).
fn is_plexus(c: &Map<String, Value>) -> bool {
    let ours = |m: &Map<String, Value>| {
        m.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| OWN_PLUGIN_TYPES.contains(&t))
    };
    ours(c) || plugins(c).any(ours)
}

fn plugins(c: &Map<String, Value>) -> impl Iterator<Item = &Map<String, Value>> {
    c.get("plugins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// The capabilities the primary declares: a `.conf`'s own, or the union over a conflist's plugins
/// (the runtime passes each plugin only what it declared; we pass them on to the primary).
pub fn primary_capabilities(c: &Map<String, Value>) -> Map<String, Value> {
    let mut caps = Map::new();
    let own = c.get("capabilities").and_then(Value::as_object);
    for m in own
        .into_iter()
        .chain(plugins(c).filter_map(|p| p.get("capabilities").and_then(Value::as_object)))
    {
        for (k, v) in m {
            if v.as_bool() == Some(true) {
                caps.insert(k.clone(), Value::Bool(true));
            }
        }
    }
    caps
}

/// Everything the generated conflist depends on.
#[derive(Debug, Clone)]
pub struct ConfigInputs<'a> {
    /// The primary's path on the host (what the plugin will open).
    pub primary_path: &'a Path,
    pub primary: &'a Map<String, Value>,
    /// The kubeconfig's path on the host.
    pub kubeconfig: &'a Path,
    /// The host's CNI bin dir (the plugin's `binDir`, where it finds delegates).
    pub bin_dir: &'a Path,
    /// The host path of the readiness indicator, when one is configured.
    pub readiness_indicator_file: Option<&'a Path>,
    /// Keys from the user's template file (lower precedence than flags).
    pub template: &'a Map<String, Value>,
    /// Keys set by flags (highest precedence).
    pub options: &'a Map<String, Value>,
    /// Thin or thick: the plugin `type`, and the daemon's socket in thick mode.
    pub mode: &'a PluginMode,
}

/// Renders our conflist. Precedence, lowest first: generated values (`clusterNetwork`,
/// `kubeconfig`, capabilities), the template, flags. `type` is always the mode's (`plexus` or
/// `plexus-shim`) and `daemonSocket` is the thick mode's socket (absent in thin mode), whatever
/// the template says, so the file always names a plugin we installed; capabilities are
/// merged (primary ∪ template ∪ pod annotations) rather than replaced, so a template can never drop
/// a capability the primary needs. `name` and `cniVersion` given in a template or flag name the
/// conflist (the runtime copies them into the plugin object).
pub fn render(inputs: &ConfigInputs<'_>) -> Value {
    let mut plugin = Map::new();
    plugin.insert("type".into(), json!(inputs.mode.plugin_type()));
    if let PluginMode::Thick { daemon_socket } = inputs.mode {
        plugin.insert("daemonSocket".into(), json!(daemon_socket));
    }
    plugin.insert("clusterNetwork".into(), json!(inputs.primary_path));
    plugin.insert("kubeconfig".into(), json!(inputs.kubeconfig));
    plugin.insert("binDir".into(), json!(inputs.bin_dir));
    if let Some(r) = inputs.readiness_indicator_file {
        plugin.insert("readinessindicatorfile".into(), json!(r));
    }
    let mut caps = primary_capabilities(inputs.primary);
    let mut name = json!(NETWORK_NAME);
    let mut version = inputs
        .primary
        .get("cniVersion")
        .cloned()
        .unwrap_or_else(|| json!("1.0.0"));
    for layer in [inputs.template, inputs.options] {
        for (k, v) in layer {
            match k.as_str() {
                "type" | "daemonSocket" => {}
                "name" => name = v.clone(),
                "cniVersion" => version = v.clone(),
                "capabilities" => {
                    for (c, on) in v.as_object().into_iter().flatten() {
                        caps.insert(c.clone(), on.clone());
                    }
                }
                _ => {
                    plugin.insert(k.clone(), v.clone());
                }
            }
        }
    }
    caps.insert(POD_ANNOTATIONS_CAPABILITY.into(), Value::Bool(true));
    plugin.insert("capabilities".into(), Value::Object(caps));
    json!({"cniVersion": version, "name": name, "plugins": [plugin]})
}

/// The bytes written to disk (pretty, newline-terminated: operators `cat` this file).
pub fn to_bytes(v: &Value) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn primary_is_lexically_first_foreign_config() {
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str, v: Value| std::fs::write(d.path().join(n), v.to_string()).unwrap();
        assert_eq!(
            find_primary(d.path(), "00-plexus.conflist").unwrap(),
            PrimaryState::Absent
        );
        w(
            "00-plexus.conflist",
            json!({"cniVersion":"1.0.0","name":"x","plugins":[{"type":"plexus"}]}),
        );
        w(
            "05-old.conf",
            json!({"cniVersion":"1.0.0","name":"x","type":"plexus"}),
        );
        w(
            "20-b.conflist",
            json!({"cniVersion":"0.4.0","name":"b","plugins":[]}),
        );
        w(
            "10-a.conf",
            json!({"cniVersion":"0.3.1","name":"a","type":"bridge"}),
        );
        w("01-notes.txt", json!({}));
        w(".hidden.conf", json!({}));
        match find_primary(d.path(), "00-plexus.conflist").unwrap() {
            PrimaryState::Found { file_name, .. } => assert_eq!(file_name, "10-a.conf"),
            other => panic!("{other:?}"),
        }
        std::fs::write(d.path().join("09-partial.conf"), "{\"cniVer").unwrap();
        assert!(matches!(
            find_primary(d.path(), "00-plexus.conflist").unwrap(),
            PrimaryState::Invalid { file_name, .. } if file_name == "09-partial.conf"
        ));
    }

    #[test]
    fn scan_lists_configs_ahead_of_ours_and_detects_meta_plugins() {
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str, v: Value| std::fs::write(d.path().join(n), v.to_string()).unwrap();
        w(
            "00-multus.conf",
            json!({"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus"}),
        );
        w(
            "10-flannel.conflist",
            json!({"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel"},{"type":"portmap"}]}),
        );
        w(
            "00-aaa.json",
            json!({"cniVersion":"0.3.1","name":"j","type":"ptp"}),
        );
        let s = scan(d.path(), "00-plexus.conflist").unwrap();
        assert_eq!(s.ahead_of_ours, vec!["00-aaa.json", "00-multus.conf"]);
        let PrimaryState::Found { file_name, config } = s.primary else {
            panic!("{:?}", s.primary)
        };
        assert_eq!(file_name, "00-aaa.json");
        assert_eq!(meta_plugin_type(&config), None);
        let multus: Map<String, Value> = serde_json::from_str(
            &std::fs::read_to_string(d.path().join("00-multus.conf")).unwrap(),
        )
        .unwrap();
        assert_eq!(meta_plugin_type(&multus), Some("multus"));
        let thick =
            obj(json!({"cniVersion":"1.0.0","name":"m","plugins":[{"type":"multus-shim"}]}));
        assert_eq!(meta_plugin_type(&thick), Some("multus-shim"));
        assert!(
            scan(&d.path().join("missing"), "00-plexus.conflist")
                .unwrap()
                .ahead_of_ours
                .is_empty()
        );
    }

    #[test]
    fn render_merges_capabilities_and_layers() {
        let primary = obj(json!({"cniVersion":"0.4.0","name":"flannel","plugins":[
            {"type":"flannel","capabilities":{"portMappings":false}},
            {"type":"portmap","capabilities":{"portMappings":true}},
            {"type":"bandwidth","capabilities":{"bandwidth":true}}]}));
        let template = obj(
            json!({"logLevel":"info","namespaceIsolation":true,"capabilities":{"ips":true},"type":"evil"}),
        );
        let options = obj(json!({"logLevel":"debug","cniVersion":"1.0.0"}));
        let v = render(&ConfigInputs {
            primary_path: Path::new("/etc/cni/net.d/10-flannel.conflist"),
            primary: &primary,
            kubeconfig: Path::new("/etc/cni/net.d/plexus.d/plexus.kubeconfig"),
            bin_dir: Path::new("/opt/cni/bin"),
            readiness_indicator_file: None,
            template: &template,
            options: &options,
            mode: &PluginMode::Thin,
        });
        assert_eq!(
            v,
            json!({"cniVersion":"1.0.0","name":"plexus-cni-network","plugins":[{
                "type":"plexus",
                "clusterNetwork":"/etc/cni/net.d/10-flannel.conflist",
                "kubeconfig":"/etc/cni/net.d/plexus.d/plexus.kubeconfig",
                "binDir":"/opt/cni/bin",
                "logLevel":"debug",
                "namespaceIsolation":true,
                "capabilities":{"portMappings":true,"bandwidth":true,"ips":true,
                    "io.kubernetes.cri.pod-annotations":true}
            }]})
        );
    }

    #[test]
    fn thick_mode_names_the_shim_and_its_socket_whatever_the_template_says() {
        let primary = obj(json!({"cniVersion":"1.0.0","name":"cbr0","type":"bridge"}));
        let template =
            obj(json!({"type":"plexus","daemonSocket":"/tmp/evil.sock","logLevel":"info"}));
        let options = obj(json!({"cniDir":"/var/lib/cni/plexus"}));
        let render_mode = |mode: &PluginMode| {
            render(&ConfigInputs {
                primary_path: Path::new("/etc/cni/net.d/10-bridge.conf"),
                primary: &primary,
                kubeconfig: Path::new("/etc/cni/net.d/plexus.d/plexus.kubeconfig"),
                bin_dir: Path::new("/opt/cni/bin"),
                readiness_indicator_file: None,
                template: &template,
                options: &options,
                mode,
            })
        };
        let thick = render_mode(&PluginMode::Thick {
            daemon_socket: "/run/plexus/plexusd.sock".into(),
        });
        assert_eq!(
            thick,
            json!({"cniVersion":"1.0.0","name":"plexus-cni-network","plugins":[{
                "type":"plexus-shim",
                "daemonSocket":"/run/plexus/plexusd.sock",
                "clusterNetwork":"/etc/cni/net.d/10-bridge.conf",
                "kubeconfig":"/etc/cni/net.d/plexus.d/plexus.kubeconfig",
                "binDir":"/opt/cni/bin",
                "logLevel":"info",
                "cniDir":"/var/lib/cni/plexus",
                "capabilities":{"io.kubernetes.cri.pod-annotations":true}
            }]})
        );
        // Thin mode: the same keys, the thin plugin, and no socket (a template's is dropped).
        let mut thin = render_mode(&PluginMode::Thin);
        assert_eq!(thin["plugins"][0]["type"], "plexus");
        assert!(thin["plugins"][0].get("daemonSocket").is_none(), "{thin}");
        let mut expected = thick.clone();
        expected["plugins"][0]
            .as_object_mut()
            .unwrap()
            .remove("daemonSocket");
        expected["plugins"][0]["type"] = json!("x");
        thin["plugins"][0]["type"] = json!("x");
        assert_eq!(thin, expected);
    }

    #[test]
    fn a_shim_config_is_ours_never_the_primary() {
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str, v: Value| std::fs::write(d.path().join(n), v.to_string()).unwrap();
        w(
            "05-plexus-old.conflist",
            json!({"cniVersion":"1.0.0","name":"x","plugins":[{"type":"plexus-shim"}]}),
        );
        w(
            "10-a.conf",
            json!({"cniVersion":"0.3.1","name":"a","type":"bridge"}),
        );
        match find_primary(d.path(), "00-plexus.conflist").unwrap() {
            PrimaryState::Found { file_name, .. } => assert_eq!(file_name, "10-a.conf"),
            other => panic!("{other:?}"),
        }
    }
}
