//! Plugin configs kept in a directory rather than inline, as libcni and Multus load them:
//!
//! - **Subdirectory chaining**: a `.conflist` file named by path also runs the plugin configs in
//!   `<its directory>/<network name>/*.conf` (lexical order) after its own plugins, unless it sets
//!   `loadOnlyInlinedPlugins` (libcni's `NetworkConfFromFile`). Operators drop a `tuning` conf there
//!   to adjust the cluster network without editing a file its operator regenerates.
//! - **The auxiliary chain** (`auxiliaryCNIChainName`): the plugin configs in
//!   `<directory of clusterNetwork>/<chain name>/*.conf` run as one extra chain for every pod,
//!   on the cluster network's interface, after every other attachment (see [`auxiliary_chain`]).
//!
//! The configs are read at ADD and cached with the attachment, so DEL undoes exactly what ran even
//! when the directory changed in between.

use crate::config::{ClusterNetwork, ConfigError, PlexusConfig};
use crate::error::EngineError;
use crate::resolve::Attachment;
use plexus_cni::{CniVersion, NetworkConfig};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The auxiliary chain's attachment for a pod whose cluster network is `cluster`, when
/// `auxiliaryCNIChainName` is set and its directory holds plugin configs. The directory sits next
/// to the configured `clusterNetwork` file (inside it when `clusterNetwork` names a directory),
/// even when the pod's `default-network` annotation replaced the cluster network, as in Multus.
/// A cluster network given by name or inline has no directory: the key is refused (code 7).
pub fn auxiliary_attachment(
    cfg: &PlexusConfig,
    cluster: &Attachment,
    pod: &str,
) -> Result<Option<Attachment>, EngineError> {
    let Some(chain) = &cfg.auxiliary_chain_name else {
        return Ok(None);
    };
    let ClusterNetwork::Path(path) = &cfg.cluster_network else {
        return Err(EngineError::Config(ConfigError {
            key: "auxiliaryCNIChainName".into(),
            value: Value::String(chain.clone()).to_string(),
            reason: "the auxiliary chain is found next to the clusterNetwork config file, so \
                     clusterNetwork must be a file or directory path, not a network name or \
                     an inline delegate"
                .into(),
        }));
    };
    let bad = |reason: String| EngineError::NetworkConfig {
        pod: pod.to_owned(),
        network: chain.clone(),
        reason,
    };
    let version = cluster
        .config
        .effective_version()
        .map_err(|e| bad(e.to_string()))?;
    let dir = if path.is_dir() {
        path.as_path()
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    let Some(config) = auxiliary_chain(chain, dir, version).map_err(bad)? else {
        return Ok(None);
    };
    Ok(Some(Attachment {
        network: chain.clone(),
        ifname: cluster.ifname.clone(),
        config,
        is_default: false,
        runtime_config: Map::new(),
        selection: None,
        cni_args: Vec::new(),
        auxiliary: true,
    }))
}

/// The plugin configs of `dir`: every `*.conf` file (libcni reads only this extension here), in
/// lexical order. A missing directory has none. A file that is not a plugin config object with a
/// `type` is an error naming it: running the chain without it would silently skip a plugin.
pub fn plugin_confs_in(dir: &Path) -> Result<Vec<Map<String, Value>>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    files.iter().map(|f| plugin_conf(f)).collect()
}

fn plugin_conf(file: &Path) -> Result<Map<String, Value>, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: invalid JSON: {e}", file.display()))?;
    match value {
        Value::Object(m)
            if m.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty()) =>
        {
            Ok(m)
        }
        _ => Err(format!(
            "{}: not a plugin config (an object with a \"type\")",
            file.display()
        )),
    }
}

/// Loads a config file named by path. A `.conflist` gets the plugins of its subdirectory
/// appended (libcni's rule); a `.conf`/`.json` is loaded as it is.
pub fn load_with_subdirectory(file: &Path) -> Result<NetworkConfig, String> {
    if file.extension().is_none_or(|e| e != "conflist") {
        return crate::resolve::load_conf_file(file);
    }
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: invalid JSON: {e}", file.display()))?;
    if let Some(list) = doc.as_object_mut()
        && !load_only_inlined(list)
        && let Some(Value::String(name)) = list.get("name")
        && is_plain_name(name)
    {
        let dir = file.parent().unwrap_or(Path::new(".")).join(name);
        let extra = plugin_confs_in(&dir)?;
        if !extra.is_empty() {
            tracing::debug!(network = %name, dir = %dir.display(), plugins = extra.len(), "appending subdirectory plugins");
            let plugins = list
                .entry("plugins")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(p) = plugins {
                p.extend(extra.into_iter().map(Value::Object));
            }
        }
    }
    let c = NetworkConfig::from_value(doc).map_err(|e| format!("{}: {e}", file.display()))?;
    c.effective_version()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(c)
}

/// `loadOnlyInlinedPlugins` (CNI 1.1): a bool, or the strings libcni also accepts.
fn load_only_inlined(list: &Map<String, Value>) -> bool {
    match list.get("loadOnlyInlinedPlugins") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// A network name that names a directory entry and nothing else (no `/`, not `.` or `..`).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// The auxiliary chain named `chain`: a conflist named `chain` whose plugins are the `*.conf`
/// files of `<dir>/<chain>/`, at the cluster network's version. `None` when the directory holds no plugin config (as Multus, which
/// adds the chain only when there is something to run).
///
/// Multus runs this chain with a leading `passthru` plugin (an empty prevResult) on an interface
/// named `net<N>`, which exists nowhere, so a chained plugin that touches its interface fails and
/// the documented example (`tuning` on the pod's interface) cannot work. Plexus runs it on the
/// cluster network's interface with the cluster network's result as prevResult instead: a chained
/// plugin sees exactly what it would see at the end of the cluster network's own chain.
pub fn auxiliary_chain(
    chain: &str,
    dir: &Path,
    version: CniVersion,
) -> Result<Option<NetworkConfig>, String> {
    let dir = dir.join(chain);
    let plugins = plugin_confs_in(&dir)?;
    if plugins.is_empty() {
        tracing::debug!(dir = %dir.display(), "auxiliary chain: no plugin configs, nothing to run");
        return Ok(None);
    }
    let doc = serde_json::json!({
        "cniVersion": version.to_string(),
        "name": chain,
        "plugins": plugins,
    });
    NetworkConfig::from_value(doc)
        .map(Some)
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// `auxiliaryCNIChainName` must name a directory entry.
pub fn check_chain_name(chain: &str) -> Result<(), String> {
    if is_plain_name(chain) {
        Ok(())
    } else {
        Err("must be a plain directory name (no '/', not \".\" or \"..\")".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(path: &Path, v: &Value) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, v.to_string()).unwrap();
    }

    fn types(c: &NetworkConfig) -> Vec<String> {
        c.plugin_types()
    }

    #[test]
    fn a_conflist_gets_its_subdirectory_plugins_in_lexical_order() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("10-kindnet.conflist");
        write(
            &file,
            &json!({"cniVersion": "1.0.0", "name": "kindnet", "plugins": [{"type": "ptp"}]}),
        );
        write(&d.path().join("kindnet/20-b.conf"), &json!({"type": "b"}));
        write(&d.path().join("kindnet/10-a.conf"), &json!({"type": "a"}));
        // Only `.conf` files count in a plugin directory.
        write(&d.path().join("kindnet/30-c.json"), &json!({"type": "c"}));
        write(
            &d.path().join("kindnet/40-d.conflist"),
            &json!({"type": "d"}),
        );
        let c = load_with_subdirectory(&file).unwrap();
        assert_eq!(types(&c), ["ptp", "a", "b"]);
        // The cached document holds the whole chain, so DEL runs what ADD ran.
        assert_eq!(c.to_value()["plugins"][2]["type"], "b");

        let mut only = json!({"cniVersion": "1.0.0", "name": "kindnet", "loadOnlyInlinedPlugins": true, "plugins": [{"type": "ptp"}]});
        write(&file, &only);
        assert_eq!(types(&load_with_subdirectory(&file).unwrap()), ["ptp"]);
        // A conflist may leave all of its plugins to the subdirectory.
        only["loadOnlyInlinedPlugins"] = json!(false);
        only["plugins"] = json!([]);
        write(&file, &only);
        assert_eq!(types(&load_with_subdirectory(&file).unwrap()), ["a", "b"]);
    }

    #[test]
    fn single_confs_and_missing_directories_are_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("10-x.conf");
        write(
            &conf,
            &json!({"cniVersion": "1.0.0", "name": "x", "type": "bridge"}),
        );
        write(&d.path().join("x/10-a.conf"), &json!({"type": "a"}));
        assert_eq!(types(&load_with_subdirectory(&conf).unwrap()), ["bridge"]);
        let list = d.path().join("10-y.conflist");
        write(
            &list,
            &json!({"cniVersion": "1.0.0", "name": "y", "plugins": [{"type": "ptp"}]}),
        );
        assert_eq!(types(&load_with_subdirectory(&list).unwrap()), ["ptp"]);
    }

    #[test]
    fn a_broken_plugin_file_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("10-k.conflist");
        write(
            &file,
            &json!({"cniVersion": "1.0.0", "name": "k", "plugins": [{"type": "ptp"}]}),
        );
        std::fs::create_dir_all(d.path().join("k")).unwrap();
        std::fs::write(d.path().join("k/10-bad.conf"), "{\"sysctl\": {}}").unwrap();
        let e = load_with_subdirectory(&file).unwrap_err();
        assert!(e.contains("10-bad.conf") && e.contains("\"type\""), "{e}");
    }

    #[test]
    fn the_auxiliary_chain_takes_the_cluster_version_and_needs_a_plugin() {
        let d = tempfile::tempdir().unwrap();
        let cluster = d.path();
        assert!(
            auxiliary_chain("vendor", cluster, CniVersion::V1_0_0)
                .unwrap()
                .is_none()
        );
        write(
            &d.path().join("vendor/10-t.conf"),
            &json!({"cniVersion": "0.3.1", "name": "sysctltwiddle", "type": "tuning"}),
        );
        let c = auxiliary_chain("vendor", cluster, CniVersion::V1_0_0)
            .unwrap()
            .unwrap();
        assert_eq!(c.name, "vendor");
        assert_eq!(c.effective_version().unwrap(), CniVersion::V1_0_0);
        assert_eq!(types(&c), ["tuning"]);
        assert!(check_chain_name("vendor-cni-chain").is_ok());
        assert!(check_chain_name("../etc").is_err());
        assert!(check_chain_name("").is_err());
    }
}
