//! The plugin's configuration: every key of the reference `sriov` plugin (spec/sriov.md §1.1),
//! validated completely before anything is touched. An invalid value is code 7 naming the key.

use crate::types::{Mac, VfLinkState, VlanProto};
use plexus_cni::{CniArgs, CniVersion, codes};
use plexus_sysfs::PciAddress;
use serde_json::{Map, Value};

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or not an object.
    #[error("cannot decode network configuration: {0}")]
    Decode(String),
    /// A `cniVersion` this plugin does not speak.
    #[error("unsupported cniVersion {0:?} (supported: 0.1.0 0.2.0 0.3.0 0.3.1 0.4.0 1.0.0 1.1.0)")]
    Version(String),
    /// A key with an invalid value (or a required key missing).
    #[error("invalid {field}: {reason}")]
    Field {
        /// The key, as spelled in the config (`vlanQoS`, `runtimeConfig.mac`).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// The CNI error code: 6 decode, 1 version, 7 invalid field.
    pub fn code(&self) -> u32 {
        match self {
            ConfigError::Decode(_) => codes::DECODING_FAILURE,
            ConfigError::Version(_) => codes::INCOMPATIBLE_VERSION,
            ConfigError::Field { .. } => codes::INVALID_CONFIG,
        }
    }

    fn field(field: &str, reason: impl Into<String>) -> Self {
        ConfigError::Field {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SriovConf {
    /// `cniVersion` as given (0.1.0 when absent, as libcni's skel decides).
    pub cni_version: String,
    /// The parsed version.
    pub version: CniVersion,
    /// `name`.
    pub name: String,
    /// `deviceID`: the VF.
    pub device_id: PciAddress,
    /// `vlan`.
    pub vlan: Option<u16>,
    /// `vlanQoS` (0 when `vlan` is set without it).
    pub vlan_qos: Option<u8>,
    /// `vlanProto` (802.1Q when `vlan` is set without it).
    pub vlan_proto: Option<VlanProto>,
    /// The MAC to give the VF: `runtimeConfig.mac`, else CNI_ARGS `MAC`, else `mac`.
    pub mac: Option<Mac>,
    /// `spoofchk`.
    pub spoofchk: Option<bool>,
    /// `trust`.
    pub trust: Option<bool>,
    /// `link_state`.
    pub link_state: Option<VfLinkState>,
    /// `min_tx_rate`, Mbps.
    pub min_tx_rate: Option<u32>,
    /// `max_tx_rate`, Mbps.
    pub max_tx_rate: Option<u32>,
    /// `ipam` (an object with a `type`).
    pub ipam: Option<Map<String, Value>>,
    /// `ipam.type`.
    pub ipam_type: Option<String>,
    /// `logLevel` (unknown levels mean `info`, as the reference).
    pub log_level: String,
    /// `logFile` (empty: stderr).
    pub log_file: Option<String>,
    /// `prevResult`, when present (CHECK, chained DEL).
    pub prev_result: Option<Value>,
}

impl SriovConf {
    /// Whether any rate is configured (then both are sent, an unset one as 0).
    pub fn has_rate(&self) -> bool {
        self.min_tx_rate.is_some() || self.max_tx_rate.is_some()
    }
}

fn int_field(
    obj: &Map<String, Value>,
    key: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = v
                .as_i64()
                .ok_or_else(|| ConfigError::field(key, format!("expected an integer, got {v}")))?;
            if n < min || n > max {
                return Err(ConfigError::field(
                    key,
                    format!("{n} is outside {min}-{max}"),
                ));
            }
            Ok(Some(n))
        }
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(ConfigError::field(
            key,
            format!("expected a string, got {v}"),
        )),
    }
}

/// `"on"`/`"off"`; the reference treats anything but `"on"` as off, which turns a typo into a
/// silent security setting, so anything else is refused.
fn on_off(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ConfigError> {
    match str_field(obj, key)? {
        None => Ok(None),
        Some("on") => Ok(Some(true)),
        Some("off") => Ok(Some(false)),
        Some(s) => Err(ConfigError::field(
            key,
            format!("{s:?} is neither \"on\" nor \"off\""),
        )),
    }
}

fn mac_value(field: &str, s: &str) -> Result<Mac, ConfigError> {
    Mac::parse(s).ok_or_else(|| ConfigError::field(field, format!("{s:?} is not a MAC address")))
}

/// Parses and validates stdin. `cni_args` is `CNI_ARGS` (its `MAC` key overrides `mac`).
pub fn parse(stdin: &[u8], cni_args: Option<&str>) -> Result<SriovConf, ConfigError> {
    let value: Value =
        serde_json::from_slice(stdin).map_err(|e| ConfigError::Decode(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(ConfigError::Decode(
            "the configuration is not a JSON object".into(),
        ));
    };
    let cni_version = match obj.get("cniVersion") {
        None | Some(Value::Null) => "0.1.0".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "0.1.0".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(ConfigError::Version(v.to_string())),
    };
    let version: CniVersion = cni_version
        .parse()
        .ok()
        .filter(CniVersion::is_supported)
        .ok_or_else(|| ConfigError::Version(cni_version.clone()))?;
    let name = str_field(&obj, "name")?.unwrap_or_default().to_owned();
    str_field(&obj, "type")?;

    let device_id = match str_field(&obj, "deviceID")? {
        None | Some("") => {
            return Err(ConfigError::field(
                "deviceID",
                "VF pci addr is required (the meta plugin passes the device the kubelet allocated)",
            ));
        }
        Some(s) => PciAddress::parse(s)
            .map_err(|_| ConfigError::field("deviceID", format!("{s:?} is not a PCI address")))?,
    };
    // pciBusID is what the meta plugin also injects; unused here, but it must be a string.
    str_field(&obj, "pciBusID")?;

    let vlan = int_field(&obj, "vlan", 0, 4094)?.map(|v| v as u16);
    let vlan_qos = int_field(&obj, "vlanQoS", 0, 7)?.map(|v| v as u8);
    let vlan_proto = match str_field(&obj, "vlanProto")? {
        None => None,
        Some(s) => Some(match s.to_ascii_lowercase().as_str() {
            "802.1q" => VlanProto::Dot1Q,
            "802.1ad" => VlanProto::Dot1Ad,
            _ => {
                return Err(ConfigError::field(
                    "vlanProto",
                    format!("{s:?} is neither \"802.1q\" nor \"802.1ad\""),
                ));
            }
        }),
    };
    let (vlan_qos, vlan_proto) = match vlan {
        None => {
            if vlan_qos.is_some() {
                return Err(ConfigError::field("vlanQoS", "requires vlan"));
            }
            if vlan_proto.is_some() {
                return Err(ConfigError::field("vlanProto", "requires vlan"));
            }
            (None, None)
        }
        Some(v) => {
            let qos = vlan_qos.unwrap_or(0);
            let proto = vlan_proto.unwrap_or_default();
            if v == 0 && qos != 0 {
                return Err(ConfigError::field(
                    "vlanQoS",
                    "a non-zero QoS requires a non-zero vlan",
                ));
            }
            if v == 0 && proto == VlanProto::Dot1Ad {
                return Err(ConfigError::field(
                    "vlanProto",
                    "802.1ad requires a non-zero vlan",
                ));
            }
            (Some(qos), Some(proto))
        }
    };

    let mut mac = match str_field(&obj, "mac")? {
        None | Some("") => None,
        Some(s) => Some(mac_value("mac", s)?),
    };
    if let Some(args) = cni_args.filter(|a| !a.is_empty()) {
        let args =
            CniArgs::parse(args).map_err(|e| ConfigError::field("CNI_ARGS", e.to_string()))?;
        if let Some(s) = args.get("MAC").filter(|s| !s.is_empty()) {
            mac = Some(mac_value("CNI_ARGS MAC", s)?);
        }
    }
    let runtime = match obj.get("runtimeConfig") {
        None | Some(Value::Null) => None,
        Some(Value::Object(rc)) => Some(rc),
        Some(v) => {
            return Err(ConfigError::field(
                "runtimeConfig",
                format!("expected an object, got {v}"),
            ));
        }
    };
    if let Some(rc) = runtime {
        match rc.get("mac") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => mac = Some(mac_value("runtimeConfig.mac", s)?),
            Some(v) => {
                return Err(ConfigError::field(
                    "runtimeConfig.mac",
                    format!("expected a string, got {v}"),
                ));
            }
        }
    }

    let spoofchk = on_off(&obj, "spoofchk")?;
    let trust = on_off(&obj, "trust")?;
    let link_state = match str_field(&obj, "link_state")? {
        None => None,
        Some("auto") => Some(VfLinkState::Auto),
        Some("enable") => Some(VfLinkState::Enable),
        Some("disable") => Some(VfLinkState::Disable),
        Some(s) => {
            return Err(ConfigError::field(
                "link_state",
                format!("{s:?} is not one of \"auto\", \"enable\", \"disable\""),
            ));
        }
    };
    let min_tx_rate = int_field(&obj, "min_tx_rate", 0, u32::MAX.into())?.map(|v| v as u32);
    let max_tx_rate = int_field(&obj, "max_tx_rate", 0, u32::MAX.into())?.map(|v| v as u32);
    if let (Some(min), Some(max)) = (min_tx_rate, max_tx_rate)
        && max != 0
        && min > max
    {
        return Err(ConfigError::field(
            "min_tx_rate",
            format!("{min} is above max_tx_rate {max}"),
        ));
    }

    let (ipam, ipam_type) = match obj.get("ipam") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Object(ipam)) if ipam.is_empty() => (None, None),
        Some(Value::Object(ipam)) => match ipam.get("type") {
            Some(Value::String(t)) if valid_plugin_name(t) => (Some(ipam.clone()), Some(t.clone())),
            Some(t) => {
                return Err(ConfigError::field(
                    "ipam.type",
                    format!("{t} is not a plugin name"),
                ));
            }
            None => return Err(ConfigError::field("ipam.type", "missing")),
        },
        Some(v) => {
            return Err(ConfigError::field(
                "ipam",
                format!("expected an object, got {v}"),
            ));
        }
    };

    // 0.1.0/0.2.0 results are only IPs (ip4/ip6): without IPAM there is nothing to report, and
    // the reference fails only after configuring the VF. Refuse up front.
    if ipam.is_none() && version < CniVersion::V0_3_0 {
        return Err(ConfigError::field(
            "ipam",
            format!(
                "cniVersion {cni_version} results carry only IP addresses: configure ipam, or use 0.3.0 or later"
            ),
        ));
    }

    let log_level = match str_field(&obj, "logLevel")? {
        Some(l @ ("panic" | "error" | "warning" | "info" | "debug" | "verbose")) => l.to_owned(),
        _ => "info".to_owned(),
    };
    let log_file = str_field(&obj, "logFile")?
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let prev_result = obj.get("prevResult").filter(|v| !v.is_null()).cloned();

    Ok(SriovConf {
        cni_version,
        version,
        name,
        device_id,
        vlan,
        vlan_qos,
        vlan_proto,
        mac,
        spoofchk,
        trust,
        link_state,
        min_tx_rate,
        max_tx_rate,
        ipam,
        ipam_type,
        log_level,
        log_file,
        prev_result,
    })
}

/// A plugin name is a file name in CNI_PATH: no path separators, nothing hidden.
fn valid_plugin_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains('/') && !s.contains('\0')
}

#[cfg(test)]
mod tests;
