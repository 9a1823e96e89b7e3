//! What a selection element asks of its delegate: capability arguments (`runtimeConfig`) and
//! `cni-args`. A request that no plugin of the delegate can honour fails the attachment (NPWG
//! §4.1.2.1.3–10) instead of being dropped silently — except `ips` and `mac`, which reach a
//! delegate that does not declare them through `CNI_ARGS` (`IP=`, `MAC=`), as Multus passes them:
//! the static IPAM plugin, host-local, tuning, macvlan and sriov read them there.

use crate::config::PlexusConfig;
use crate::error::EngineError;
use crate::resolve::Attachment;
use plexus_cni::NetworkConfig;
use plexus_netattach::{NetworkSelectionElement, SelectionError, UnknownKeys};
use serde_json::{Map, Value, json};

/// Reason of the Warning event that names selection keys Plexus skipped.
pub const IGNORED_KEYS_REASON: &str = "IgnoredSelectionKeys";

/// Parses the selection annotation `annotation` (its key, for messages) with the unknown-key
/// policy of `strictSelection`. Returns the elements and one warning per skipped key, naming the
/// annotation, the element and the key.
pub fn parse_annotation(
    cfg: &PlexusConfig,
    annotation: &str,
    text: &str,
    namespace: &str,
) -> Result<(Vec<NetworkSelectionElement>, Vec<String>), SelectionError> {
    let unknown = if cfg.strict_selection {
        UnknownKeys::Reject
    } else {
        UnknownKeys::Ignore
    };
    let parsed = plexus_netattach::parse_selection(text, namespace, unknown)?;
    let warnings = parsed
        .ignored
        .iter()
        .map(|i| format!("{annotation}: {i}"))
        .collect();
    Ok((parsed.elements, warnings))
}

/// The Warning event text for skipped keys: what was skipped, why, and how to refuse instead.
pub fn ignored_keys_message(warnings: &[String]) -> String {
    format!(
        "{} (Multus ignores unknown selection keys; set \"strictSelection\": true to reject them)",
        warnings.join("; ")
    )
}

/// Fills `runtime_config` from the selection and merges `cni-args` into every plugin's
/// `args.cni` (the pod's values win over the NAD's).
pub fn apply_selection(mut att: Attachment, pod: &str) -> Result<Attachment, EngineError> {
    let Some(sel) = att.selection.clone() else {
        return Ok(att);
    };
    let mut rc = Map::new();
    if !sel.ips.is_empty() {
        rc.insert("ips".into(), json!(sel.ips));
    }
    if let Some(mac) = &sel.mac {
        rc.insert("mac".into(), json!(mac));
    }
    if let Some(guid) = &sel.infiniband_guid {
        rc.insert("infinibandGUID".into(), json!(guid));
    }
    if !sel.port_mappings.is_empty() {
        let pm: Vec<Value> = sel
            .port_mappings
            .iter()
            .map(|p| {
                let mut m = json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol.to_ascii_lowercase()});
                if let Some(ip) = &p.host_ip {
                    m["hostIP"] = json!(ip);
                }
                m
            })
            .collect();
        rc.insert("portMappings".into(), Value::Array(pm));
    }
    if let Some(bw) = &sel.bandwidth {
        rc.insert(
            "bandwidth".into(),
            serde_json::to_value(bw).unwrap_or_default(),
        );
    }
    if let Some(dev) = &sel.device_id {
        rc.insert("deviceID".into(), json!(dev));
    }
    let caps = att.config.capabilities();
    for (key, arg) in [("ips", "IP"), ("mac", "MAC")] {
        if caps.contains(key) {
            continue;
        }
        match rc.remove(key) {
            Some(Value::Array(ips)) => {
                let ips: Vec<&str> = ips.iter().filter_map(Value::as_str).collect();
                att.cni_args.push((arg.to_owned(), ips.join(",")));
            }
            Some(Value::String(mac)) => att.cni_args.push((arg.to_owned(), mac)),
            _ => {}
        }
    }
    if let Some(missing) = rc.keys().find(|k| !caps.contains(*k)) {
        return Err(EngineError::NetworkConfig {
            pod: pod.to_owned(),
            network: att.network.clone(),
            reason: format!(
                "the pod requests capability {missing:?} but no plugin of this network declares it (declared: {})",
                if caps.is_empty() {
                    "none".to_owned()
                } else {
                    caps.into_iter().collect::<Vec<_>>().join(", ")
                }
            ),
        });
    }
    // The cluster network may also carry the runtime's runtimeConfig; the pod's request wins.
    att.runtime_config.extend(rc);
    // NPWG v1.3 defines no runtimeConfig key for an IPAMClaim; IPAM plugins that support claims
    // read it from `args.cni`, next to the other per-pod arguments (the pod's cni-args win).
    let mut cni_args = Map::new();
    if let Some(claim) = &sel.ipam_claim_reference {
        cni_args.insert("ipam-claim-reference".into(), json!(claim));
    }
    cni_args.extend(sel.cni_args.clone().unwrap_or_default());
    if !cni_args.is_empty() {
        att.config = merge_cni_args(&att.config, &cni_args);
    }
    Ok(att)
}

/// `CNI_ARGS` for the delegates of `att`: `base` (the runtime's, with `IgnoreUnknown`) with the
/// attachment's own pairs set over it.
pub fn delegate_args(base: &str, att: &Attachment) -> String {
    if att.cni_args.is_empty() {
        return base.to_owned();
    }
    let mut args = plexus_cni::CniArgs::parse(base).unwrap_or_default();
    for (k, v) in &att.cni_args {
        args.set(k, v.clone());
    }
    args.to_env_string()
}

/// A copy of `config` whose every plugin has `args.cni` ⊇ `cni_args`.
fn merge_cni_args(config: &NetworkConfig, cni_args: &Map<String, Value>) -> NetworkConfig {
    let mut doc = config.raw.clone();
    let merge = |plugin: &mut Map<String, Value>| {
        let args = plugin.entry("args").or_insert_with(|| json!({}));
        if !args.is_object() {
            *args = json!({});
        }
        let cni = args
            .as_object_mut()
            .expect("object")
            .entry("cni")
            .or_insert_with(|| json!({}));
        if !cni.is_object() {
            *cni = json!({});
        }
        let cni = cni.as_object_mut().expect("object");
        for (k, v) in cni_args {
            cni.insert(k.clone(), v.clone());
        }
    };
    if config.is_list {
        if let Some(Value::Array(plugins)) = doc.get_mut("plugins") {
            for p in plugins.iter_mut().filter_map(Value::as_object_mut) {
                merge(p);
            }
        }
    } else {
        merge(&mut doc);
    }
    NetworkConfig::from_value(Value::Object(doc)).unwrap_or_else(|_| config.clone())
}
