//! Every top-level configuration key Plexus knows, and what it does with each.
//!
//! A migrating operator's Multus config carries keys from Multus's configuration reference, from
//! its thick daemon's config (which Multus merges over the plugin config), and from the CNI spec.
//! None of them may be silently dropped (issue 14, issue 15 item 5): each key is either honoured
//! with its documented meaning, or answered with a warning that says why it has no effect here.
//! A key that is in no table but looks like a misspelling of one that is (`kubeConfig`) is a
//! configuration error naming both, because the misspelt key would otherwise be ignored and the
//! real one defaulted — the silent failure this module exists to prevent. Any other unknown key is
//! logged at warn.
//!
//! Keys added to `config.rs` must be added to [`KEYS`]; a unit test reads `config.rs` and fails
//! otherwise.

use crate::config::ConfigError;
use serde_json::{Map, Value};
use std::fmt;

/// Where a key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The CNI spec or its conventions (filled by the runtime or common to every plugin).
    Cni,
    /// Multus's plugin configuration reference (`NetConf`, the shim's keys).
    Multus,
    /// Multus's thick daemon config (`daemon-config.json`), which Multus merges over the plugin
    /// config, so a copied thick config carries them.
    MultusDaemon,
    /// Plexus's own.
    Plexus,
}

/// What Plexus does with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Read, with the meaning its origin documents (differences are in docs/migration.md).
    Honoured,
    /// Accepted and ignored; the text says why, and is logged at warn on every call.
    NoEffect(&'static str),
}

/// One known key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    pub key: &'static str,
    pub origin: Origin,
    pub treatment: Treatment,
}

const fn honoured(key: &'static str, origin: Origin) -> KeyInfo {
    KeyInfo {
        key,
        origin,
        treatment: Treatment::Honoured,
    }
}

const fn no_effect(key: &'static str, origin: Origin, why: &'static str) -> KeyInfo {
    KeyInfo {
        key,
        origin,
        treatment: Treatment::NoEffect(why),
    }
}

const DAEMON: &str = "it configures Multus's thick daemon; plexusd (Plexus's thick mode) takes its settings from its command line and from this same plugin config (docs/architecture.md)";
const GENERATOR: &str = "it configures Multus's config generator; plexus-install generates Plexus's config (docs/install.md)";

/// Every key Plexus recognises, in the order of docs/migration.md's table.
pub const KEYS: &[KeyInfo] = &[
    // CNI
    honoured("cniVersion", Origin::Cni),
    honoured("name", Origin::Cni),
    honoured("type", Origin::Cni),
    honoured("capabilities", Origin::Cni),
    honoured("runtimeConfig", Origin::Cni),
    honoured("args", Origin::Cni),
    honoured("cni.dev/valid-attachments", Origin::Cni),
    honoured("cni.dev/attachments", Origin::Cni),
    no_effect(
        "prevResult",
        Origin::Cni,
        "Plexus is not a chained plugin: a previous plugin's result is not passed to the networks it attaches",
    ),
    no_effect(
        "ipam",
        Origin::Cni,
        "Plexus allocates no addresses itself; put IPAM in the cluster network's or the NAD's config",
    ),
    no_effect(
        "dns",
        Origin::Cni,
        "Plexus returns the cluster network's result; put DNS settings in that network's config",
    ),
    // Multus NetConf
    honoured("clusterNetwork", Origin::Multus),
    honoured("defaultNetworks", Origin::Multus),
    honoured("delegates", Origin::Multus),
    honoured("systemNamespaces", Origin::Multus),
    honoured("multusNamespace", Origin::Multus),
    honoured("namespaceIsolation", Origin::Multus),
    honoured("globalNamespaces", Origin::Multus),
    honoured("readinessindicatorfile", Origin::Multus),
    honoured("confDir", Origin::Multus),
    honoured("cniDir", Origin::Multus),
    honoured("binDir", Origin::Multus),
    honoured("kubeconfig", Origin::Multus),
    honoured("logFile", Origin::Multus),
    honoured("logLevel", Origin::Multus),
    honoured("logToStderr", Origin::Multus),
    honoured("logOptions", Origin::Multus),
    // Implemented by the auxiliary-chain work (issue 15 item 4).
    honoured("auxiliaryCNIChainName", Origin::Multus),
    no_effect(
        "retryDeleteOnError",
        Origin::Multus,
        "Plexus always keeps a container's cache entry until every delegate's DEL has succeeded, which is what this key turns on in Multus",
    ),
    no_effect(
        "allowTryDeleteOnErr",
        Origin::Multus,
        "it appears in Multus's documentation example but Multus never reads it; Plexus keeps the cache entry until every DEL succeeded anyway",
    ),
    no_effect(
        "cniConf",
        Origin::Multus,
        "Multus's thin entrypoint writes it for --multus-cni-conf-dir but Multus never reads it; the directory key is confDir",
    ),
    no_effect(
        "daemonSocketDir",
        Origin::Multus,
        "it tells multus-shim where the thick daemon listens; plexus-shim reads daemonSocket (the socket's path) instead",
    ),
    // Multus thick daemon config, merged over the plugin config by Multus.
    no_effect("chrootDir", Origin::MultusDaemon, DAEMON),
    no_effect("socketDir", Origin::MultusDaemon, DAEMON),
    no_effect("metricsPort", Origin::MultusDaemon, DAEMON),
    no_effect("perNodeCertificate", Origin::MultusDaemon, DAEMON),
    no_effect("connectionLimit", Origin::MultusDaemon, DAEMON),
    no_effect("enablePprof", Origin::MultusDaemon, DAEMON),
    no_effect("cniConfigDir", Origin::MultusDaemon, GENERATOR),
    no_effect("multusAutoconfigDir", Origin::MultusDaemon, GENERATOR),
    no_effect("multusConfigFile", Origin::MultusDaemon, GENERATOR),
    no_effect("multusMasterCNI", Origin::MultusDaemon, GENERATOR),
    no_effect("forceCNIVersion", Origin::MultusDaemon, GENERATOR),
    no_effect("overrideNetworkName", Origin::MultusDaemon, GENERATOR),
    // Plexus
    honoured("apiTimeoutSeconds", Origin::Plexus),
    honoured("allowedDelegateTypes", Origin::Plexus),
    honoured("deniedDelegateTypes", Origin::Plexus),
    honoured("maxNetworksPerPod", Origin::Plexus),
    honoured("events", Origin::Plexus),
    honoured("strictSelection", Origin::Plexus),
    honoured("callTimeoutSeconds", Origin::Plexus),
    honoured("podResourcesSocket", Origin::Plexus),
    honoured("deviceCheckpointFile", Origin::Plexus),
    honoured("kubeletTimeoutSeconds", Origin::Plexus),
    honoured("deviceInfoDir", Origin::Plexus),
    // Read by plexus-shim (thick mode), not by the engine.
    honoured("daemonSocket", Origin::Plexus),
];

/// The table entry of `key` (exact, case-sensitive match).
pub fn lookup(key: &str) -> Option<&'static KeyInfo> {
    KEYS.iter().find(|k| k.key == key)
}

/// The known key that `key` most likely misspells: the same key in another case, or one a
/// couple of edits away (one for short keys, where two edits turn most words into others).
pub fn near_miss(key: &str) -> Option<&'static str> {
    if lookup(key).is_some() {
        return None;
    }
    if let Some(k) = KEYS.iter().find(|k| k.key.eq_ignore_ascii_case(key)) {
        return Some(k.key);
    }
    KEYS.iter()
        .map(|k| (strsim::levenshtein(key, k.key), k))
        .filter(|(d, k)| *d <= if k.key.len() <= 6 { 1 } else { 2 })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.key)
}

/// Something to tell the operator about a key that is accepted but does nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNote {
    pub key: String,
    /// `None` for a key in no table.
    pub why: Option<&'static str>,
}

impl fmt::Display for KeyNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.why {
            Some(why) => write!(
                f,
                "config key {:?} has no effect in Plexus: {why}",
                self.key
            ),
            None => write!(
                f,
                "config key {:?} is not a Plexus, Multus or CNI key and is ignored (docs/configuration.md lists the keys)",
                self.key
            ),
        }
    }
}

/// Checks every top-level key of `m`: a near miss of a known key is an error naming both; keys
/// that have no effect and unknown keys come back as notes to log.
pub fn check(m: &Map<String, Value>) -> Result<Vec<KeyNote>, ConfigError> {
    let mut notes = Vec::new();
    for (key, value) in m {
        match lookup(key) {
            Some(KeyInfo {
                treatment: Treatment::Honoured,
                ..
            }) => {}
            Some(KeyInfo {
                treatment: Treatment::NoEffect(why),
                ..
            }) => notes.push(KeyNote {
                key: key.clone(),
                why: Some(why),
            }),
            None => match near_miss(key) {
                Some(known) => {
                    return Err(ConfigError {
                        key: key.clone(),
                        value: value.to_string(),
                        reason: format!(
                            "unknown key {key:?}: did you mean {known:?}? (a misspelt key would be ignored and {known:?} left unset)"
                        ),
                    });
                }
                None => notes.push(KeyNote {
                    key: key.clone(),
                    why: None,
                }),
            },
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn case_and_small_typos_are_errors_naming_both_keys() {
        for (typo, known) in [
            ("kubeConfig", "kubeconfig"),
            ("KubeConfig", "kubeconfig"),
            ("clusterNetowrk", "clusterNetwork"),
            ("namespaceIsolaton", "namespaceIsolation"),
            ("readinessIndicatorFile", "readinessindicatorfile"),
            ("logfile", "logFile"),
            ("binDirs", "binDir"),
        ] {
            let e = check(&obj(json!({ typo: "x" }))).unwrap_err();
            assert_eq!(e.key, typo);
            assert!(
                e.reason.contains(&format!("did you mean {known:?}")),
                "{typo}: {e}"
            );
        }
    }

    #[test]
    fn unrelated_unknown_keys_and_no_effect_keys_are_notes() {
        let notes = check(&obj(json!({
            "clusterNetwork": "a", "retryDeleteOnError": true, "fooBarBaz": 1, "chrootDir": "/hostroot"
        })))
        .unwrap();
        let keys: Vec<&str> = notes.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, vec!["retryDeleteOnError", "fooBarBaz", "chrootDir"]);
        assert!(notes[0].to_string().contains("until every delegate's DEL"));
        assert!(
            notes[1]
                .to_string()
                .contains("not a Plexus, Multus or CNI key")
        );
        assert!(notes[2].to_string().contains("Multus's thick daemon"));
    }

    #[test]
    fn honoured_keys_are_silent() {
        let m: Map<String, Value> = KEYS
            .iter()
            .filter(|k| k.treatment == Treatment::Honoured)
            .map(|k| (k.key.to_owned(), Value::Null))
            .collect();
        assert_eq!(check(&m).unwrap(), vec![]);
    }

    #[test]
    fn short_keys_need_a_closer_match() {
        // Short words are few edits apart: "mode" is two from "name" and must stay unrelated.
        assert_eq!(near_miss("mode"), None);
        assert_eq!(near_miss("mtu"), None);
        assert_eq!(near_miss("tpye"), None, "a swap is two edits");
        assert_eq!(near_miss("nme"), Some("name"));
    }

    #[test]
    fn table_has_no_duplicates() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(
                KEYS[i + 1..].iter().all(|o| o.key != k.key),
                "{} twice",
                k.key
            );
            assert!(
                KEYS[i + 1..]
                    .iter()
                    .all(|o| !o.key.eq_ignore_ascii_case(k.key)),
                "{} differs from another key only in case",
                k.key
            );
        }
    }

    /// Every key `config.rs` reads is in the table, so that no key is both parsed and reported
    /// as unknown (run after adding a key to config.rs: this fails until the table has it).
    #[test]
    fn every_key_config_rs_reads_is_in_the_table() {
        let src = include_str!("config.rs");
        let mut missing = Vec::new();
        for (i, _) in src.match_indices('"') {
            // Keys appear as `m.get("key")`, `(m, "key")` and `m.contains_key("key")`.
            let before = &src[..i];
            let is_key_arg = ["m.get(", "(m, ", "contains_key("]
                .iter()
                .any(|p| before.ends_with(p));
            if !is_key_arg {
                continue;
            }
            let rest = &src[i + 1..];
            let key = &rest[..rest.find('"').unwrap()];
            if lookup(key).is_none() && !missing.contains(&key) {
                missing.push(key);
            }
        }
        assert!(
            missing.is_empty(),
            "config.rs reads keys missing from config_keys::KEYS: {missing:?}"
        );
    }
}
