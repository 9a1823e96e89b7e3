//! What a delegate may be, checked while planning, before any delegate runs (docs/security.md).
//!
//! Two rules:
//! - **Meta plugins never run as delegates.** A NAD, an annotation or `defaultNetworks` naming
//!   `plexus`, `plexus-shim`, `plexusd`, `multus`, `multus-shim` or the running binary's own name would make Plexus (or a
//!   Multus left in the plugin directory) exec itself with a config written by whoever wrote the
//!   NAD, and that inner call would take `binDir`, `cniDir`, `logFile` and `kubeconfig` from it:
//!   root code execution for any NAD author. Every `"type"` anywhere in a config counts (a
//!   plugin's `ipam.type` is exec'd by the plugin from the same `CNI_PATH`; a nested `delegate`
//!   of a third-party meta plugin is exec'd too).
//! - **Operator allow and deny lists** (`allowedDelegateTypes`, `deniedDelegateTypes`) restrict
//!   the plugin and IPAM types that a NAD may run, e.g. to keep tenants from moving a node's
//!   uplink into a pod with `host-device`.
//!
//! A second line of defence sits in the binary: [`NESTED_ENV`] is set for every delegate, and
//! `plexus` refuses to run when it finds it (a renamed copy or a symlink in the plugin directory
//! escapes a name check).

use plexus_cni::NetworkConfig;
use serde_json::Value;
use std::collections::BTreeSet;

/// Plugin types that are meta plugins: they exec other plugins chosen by their own config.
pub const META_PLUGINS: &[&str] = &["plexus", "plexus-shim", "plexusd", "multus", "multus-shim"];

/// Set in the environment of every delegate. A `plexus` that starts with it set was exec'd by a
/// plexus (directly, or by a delegate such as a plugin's IPAM) and refuses to run.
pub const NESTED_ENV: &str = "PLEXUS_DELEGATE_OF";

/// The operator's lists of plugin types for NAD delegates. Both apply to every plugin of a
/// conflist and to each plugin's `ipam.type`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelegatePolicy {
    /// `allowedDelegateTypes`: when set, only these types may run; `None` allows every type.
    pub allowed: Option<BTreeSet<String>>,
    /// `deniedDelegateTypes`: these types never run.
    pub denied: BTreeSet<String>,
}

/// Which rule a delegate broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A meta plugin named as a delegate.
    MetaPlugin,
    /// In `deniedDelegateTypes`.
    Denied,
    /// `allowedDelegateTypes` is set and does not list it.
    NotAllowed,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rule::MetaPlugin => {
                "meta plugins (plexus, plexus-shim, plexusd, multus, multus-shim, or this binary's own name) never run as delegates"
            }
            Rule::Denied => "the type is listed in deniedDelegateTypes",
            Rule::NotAllowed => "allowedDelegateTypes is set and does not list the type",
        })
    }
}

/// A delegate the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin type {plugin:?} refused: {rule}")]
pub struct Violation {
    pub plugin: String,
    pub rule: Rule,
}

/// The file name of the running executable, which is a meta plugin under whatever name it was
/// installed (`None` when the kernel does not say).
pub fn own_binary_name() -> Option<String> {
    static NAME: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    })
    .clone()
}

/// True for a plugin type that is a meta plugin (`own_name` is the running binary's name).
pub fn is_meta(plugin: &str, own_name: Option<&str>) -> bool {
    META_PLUGINS.contains(&plugin) || own_name.is_some_and(|n| n == plugin)
}

/// Checks one attachment's config. `from_nad` is false only for configs the operator wrote
/// (the cluster network or `defaultNetworks` given as a path or inline): the meta-plugin rule
/// applies to every config, the allow and deny lists to NAD-sourced ones.
pub fn check(
    policy: &DelegatePolicy,
    config: &NetworkConfig,
    from_nad: bool,
    own_name: Option<&str>,
) -> Result<(), Violation> {
    let mut types = Vec::new();
    for p in &config.plugins {
        all_types_in(p, &mut types);
    }
    all_types_in(&config.raw, &mut types);
    if let Some(meta) = types.iter().find(|t| is_meta(t, own_name)) {
        return Err(Violation {
            plugin: (*meta).to_owned(),
            rule: Rule::MetaPlugin,
        });
    }
    if !from_nad {
        return Ok(());
    }
    for plugin in executed_types(config) {
        if policy.denied.contains(&plugin) {
            return Err(Violation {
                plugin,
                rule: Rule::Denied,
            });
        }
        if let Some(allowed) = &policy.allowed
            && !allowed.contains(&plugin)
        {
            return Err(Violation {
                plugin,
                rule: Rule::NotAllowed,
            });
        }
    }
    Ok(())
}

/// Every string value of a `"type"` key, at any depth.
fn all_types_in<'v>(m: &'v serde_json::Map<String, Value>, out: &mut Vec<&'v str>) {
    for (k, x) in m {
        if let ("type", Value::String(s)) = (k.as_str(), x) {
            out.push(s);
        }
        all_types(x, out);
    }
}

fn all_types<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::Object(m) => all_types_in(m, out),
        Value::Array(a) => a.iter().for_each(|x| all_types(x, out)),
        _ => {}
    }
}

/// The binaries a config makes run: each plugin's type and its IPAM's type.
fn executed_types(config: &NetworkConfig) -> Vec<String> {
    let mut out = Vec::new();
    for p in &config.plugins {
        if let Some(t) = p.get("type").and_then(Value::as_str) {
            out.push(t.to_owned());
        }
        if let Some(t) = p
            .get("ipam")
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
        {
            out.push(t.to_owned());
        }
    }
    out
}

/// [`check_private_dir`] of the config's `cniDir` as the CNI error every entry point answers
/// (code [`plexus_cni::codes::CACHE_ERROR`]).
pub fn check_cache_dir(config: &crate::PlexusConfig) -> Result<(), plexus_cni::CniError> {
    check_private_dir(&config.cni_dir).map_err(|reason| {
        plexus_cni::CniError::new(
            plexus_cni::codes::CACHE_ERROR,
            format!("unsafe cache directory (cniDir): {reason}"),
        )
    })
}

/// Checks that a pre-existing directory Plexus keeps private state in (`cniDir`: cache entries
/// and locks, which hold delegate configs) is a real directory owned by the effective user (root
/// on a node) and writable by nobody else. Another writer could plant entries that DEL would act
/// on, or symlinks that a write would follow. A missing directory is fine: it is created 0700.
pub fn check_private_dir(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: cannot stat: {e}", path.display())),
    };
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_dir() {
        return Err(format!(
            "{} is not a directory (a symlink is refused too)",
            path.display()
        ));
    }
    if meta.uid() != euid {
        return Err(format!(
            "{} is owned by uid {}, not by uid {euid} that plexus runs as",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} has mode {:o}: group or others may write to it (chmod 0700 it)",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> NetworkConfig {
        NetworkConfig::from_value(v).unwrap()
    }

    fn deny(types: &[&str]) -> DelegatePolicy {
        DelegatePolicy {
            allowed: None,
            denied: types.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn meta_plugins_are_refused_wherever_they_hide() {
        let p = DelegatePolicy::default();
        for c in [
            json!({"type": "plexus", "binDir": "/tmp/x"}),
            json!({"type": "multus"}),
            json!({"plugins": [{"type": "bridge"}, {"type": "multus-shim"}]}),
            json!({"type": "bridge", "ipam": {"type": "plexus"}}),
            json!({"type": "flannel", "delegate": {"type": "multus"}}),
        ] {
            let e = check(&p, &conf(c.clone()), true, None).unwrap_err();
            assert_eq!(e.rule, Rule::MetaPlugin, "{c}");
            // Operator-written configs get no exception either.
            assert!(check(&p, &conf(c), false, None).is_err());
        }
    }

    #[test]
    fn the_running_binary_counts_under_any_name() {
        let p = DelegatePolicy::default();
        let c = conf(json!({"type": "netmeta"}));
        assert!(check(&p, &c, true, None).is_ok());
        let e = check(&p, &c, true, Some("netmeta")).unwrap_err();
        assert_eq!(e.plugin, "netmeta");
        assert!(is_meta("plexus", Some("other")));
    }

    #[test]
    fn deny_list_covers_plugins_and_ipam_of_nads_only() {
        let p = deny(&["host-device", "dhcp"]);
        let e = check(
            &p,
            &conf(json!({"type": "host-device", "device": "eth0"})),
            true,
            None,
        )
        .unwrap_err();
        assert_eq!((e.plugin.as_str(), e.rule), ("host-device", Rule::Denied));
        let e = check(
            &p,
            &conf(json!({"type": "macvlan", "ipam": {"type": "dhcp"}})),
            true,
            None,
        )
        .unwrap_err();
        assert_eq!(e.plugin, "dhcp");
        // The operator's own cluster network is not subject to the lists.
        assert!(check(&p, &conf(json!({"type": "host-device"})), false, None).is_ok());
        assert!(check(&p, &conf(json!({"type": "macvlan"})), true, None).is_ok());
    }

    #[test]
    fn private_dir_must_be_ours_and_closed() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("cache");
        assert!(check_private_dir(&d).is_ok(), "missing is fine");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(check_private_dir(&d).is_ok());
        for mode in [0o770, 0o702, 0o777] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = check_private_dir(&d).unwrap_err();
            assert!(e.contains("may write"), "{e}");
        }
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(check_private_dir(&link).unwrap_err().contains("symlink"));
        if nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
            nix::unistd::chown(&d, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            assert!(
                check_private_dir(&d)
                    .unwrap_err()
                    .contains("owned by uid 65534")
            );
        }
    }

    #[test]
    fn allow_list_admits_only_what_it_names() {
        let p = DelegatePolicy {
            allowed: Some(["macvlan", "host-local"].map(str::to_owned).into()),
            denied: BTreeSet::new(),
        };
        assert!(
            check(
                &p,
                &conf(json!({"type": "macvlan", "ipam": {"type": "host-local"}})),
                true,
                None
            )
            .is_ok()
        );
        let e = check(
            &p,
            &conf(json!({"plugins": [{"type": "macvlan"}, {"type": "tuning"}]})),
            true,
            None,
        )
        .unwrap_err();
        assert_eq!((e.plugin.as_str(), e.rule), ("tuning", Rule::NotAllowed));
        assert!(e.to_string().contains("allowedDelegateTypes"), "{e}");
    }

    proptest::proptest! {
        /// Wherever a meta plugin's name hides in a config (any depth, any key path), the config
        /// is refused; configs without one are never refused by the meta rule.
        #[test]
        fn a_meta_type_at_any_depth_is_refused(
            path in proptest::collection::vec("[a-z]{1,6}", 0..4),
            meta in proptest::sample::select(META_PLUGINS.to_vec()),
            plain in "[a-z][a-z0-9-]{0,10}",
        ) {
            let mut inner = json!({"type": meta});
            for k in path.iter().rev() {
                inner = json!({ k.as_str(): inner });
            }
            let mut c = json!({"type": plain.clone(), "cniVersion": "1.0.0"});
            c["x"] = inner;
            let refused = check(&DelegatePolicy::default(), &conf(c), true, None).unwrap_err();
            proptest::prop_assert_eq!(refused.rule, Rule::MetaPlugin);
            let clean = json!({"type": plain.clone(), "ipam": {"type": "host-local"}});
            let verdict = check(&DelegatePolicy::default(), &conf(clean), true, None);
            proptest::prop_assert_eq!(verdict.is_ok(), !is_meta(&plain, None));
        }
    }
}
