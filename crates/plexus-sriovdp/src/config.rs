//! The resource config of the reference device plugin (`/etc/pcidp/config.json`), read unchanged:
//! `{"resourceList": [{"resourceName", "resourcePrefix", "deviceType", "excludeTopology",
//! "selectors", "additionalInfo"}]}`.
//!
//! Keys match case-insensitively, as the reference's Go decoder does (`isRdma`, `IsRdma`...).
//! Anything plexus-sriovdp cannot honour — an unknown key, a selector it does not implement
//! (`acpiIndexes`, `ddpProfiles`, `pKeys`, `vdpaType`, `auxTypes`), another `deviceType` — is an
//! error naming the entry and the key: silently advertising a wider pool than asked would hand
//! pods the wrong VFs.

use crate::selector::{DeviceSelector, VfRange, VfSelector};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The reference's default `--resource-prefix`.
pub const DEFAULT_PREFIX: &str = "intel.com";

/// Why the resource config cannot be used. Messages include their cause, so causes are fields,
/// not [`std::error::Error::source`]: a printed source chain would say them twice.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path}: not JSON: {cause}")]
    Json {
        /// The file.
        path: String,
        /// The parser's error.
        cause: serde_json::Error,
    },
    /// The document as a whole is wrong (no `resourceList`, not an object...).
    #[error("resource config: {0}")]
    Document(String),
    /// One `resourceList` entry cannot be honoured.
    #[error("resource config: resourceList[{index}] ({name}): key {key:?}: {reason}")]
    Entry {
        /// Position in `resourceList`.
        index: usize,
        /// `resourceName` when known, else `"unnamed"`.
        name: String,
        /// The key at fault (a path such as `selectors[0].pfNames`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// The whole config: one pool per `resourceList` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceConfig {
    /// The pools, in file order (a VF matching several goes to the first).
    pub pools: Vec<PoolConfig>,
}

/// One `resourceList` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// `resourceName`: `[A-Za-z0-9_]+`.
    pub name: String,
    /// `resourcePrefix`, when the entry overrides the global prefix.
    pub prefix: Option<String>,
    /// `excludeTopology`: do not report the VFs' NUMA node to the kubelet.
    pub exclude_topology: bool,
    /// `selectors`: a VF belongs to the pool when it matches any of them.
    pub selectors: Vec<DeviceSelector>,
    /// `additionalInfo`: `"*"` for every VF, or a PCI address; extra key/values reported in the
    /// `PCIDEVICE_<RESOURCE>_INFO` env of Allocate (per-address keys override `"*"`).
    pub additional_info: BTreeMap<String, BTreeMap<String, String>>,
}

impl PoolConfig {
    /// `<prefix>/<name>`, the extended resource the kubelet advertises.
    pub fn resource_name(&self, default_prefix: &str) -> String {
        format!(
            "{}/{}",
            self.prefix.as_deref().unwrap_or(default_prefix),
            self.name
        )
    }

    /// The extra info for `pci`: `"*"` overlaid with the address's own keys.
    pub fn additional_info_for(&self, pci: &str) -> BTreeMap<String, String> {
        let mut out = self.additional_info.get("*").cloned().unwrap_or_default();
        if let Some(own) = self.additional_info.get(pci) {
            out.extend(own.clone());
        }
        out
    }
}

impl ResourceConfig {
    /// Reads and validates the file at `path` (`default_prefix`: see [`Self::from_value`]).
    pub fn load(path: &Path, default_prefix: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Io {
            path: path.display().to_string(),
            cause,
        })?;
        let doc: Value = serde_json::from_str(&text).map_err(|cause| ConfigError::Json {
            path: path.display().to_string(),
            cause,
        })?;
        Self::from_value(&doc, default_prefix)
    }

    /// Validates a parsed document; `default_prefix` is the daemon's `--resource-prefix`, used to
    /// detect two entries advertising the same resource.
    pub fn from_value(doc: &Value, default_prefix: &str) -> Result<Self, ConfigError> {
        let obj = doc
            .as_object()
            .ok_or_else(|| ConfigError::Document("the document must be a JSON object".into()))?;
        let mut list = None;
        for (k, v) in obj {
            if k.eq_ignore_ascii_case("resourceList") {
                list = Some(v);
            } else {
                return Err(ConfigError::Document(format!(
                    "unknown top-level key {k:?} (expected resourceList)"
                )));
            }
        }
        let list = list
            .ok_or_else(|| ConfigError::Document("resourceList is missing".into()))?
            .as_array()
            .ok_or_else(|| ConfigError::Document("resourceList must be a list".into()))?;
        let mut pools: Vec<PoolConfig> = Vec::new();
        for (index, entry) in list.iter().enumerate() {
            let pool = parse_pool(index, entry)?;
            let full = pool.resource_name(default_prefix);
            if pools
                .iter()
                .any(|p| p.resource_name(default_prefix) == full)
            {
                return Err(ConfigError::Entry {
                    index,
                    name: pool.name.clone(),
                    key: "resourceName".into(),
                    reason: format!("{full} is already defined by an earlier entry"),
                });
            }
            pools.push(pool);
        }
        Ok(Self { pools })
    }
}

/// Errors of one entry carry its index and name.
struct EntryCtx {
    index: usize,
    name: String,
}

impl EntryCtx {
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Entry {
            index: self.index,
            name: self.name.clone(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Selector keys of the reference that plexus-sriovdp does not implement.
const UNSUPPORTED_SELECTORS: &[&str] = &[
    "acpiIndexes",
    "ddpProfiles",
    "pKeys",
    "vdpaType",
    "auxTypes",
];

fn parse_pool(index: usize, entry: &Value) -> Result<PoolConfig, ConfigError> {
    let mut ctx = EntryCtx {
        index,
        name: "unnamed".into(),
    };
    let obj = entry
        .as_object()
        .ok_or_else(|| ctx.err("", "the entry must be a JSON object"))?;
    // The name first, so that every later error names the entry.
    if let Some(s) = get_ci(obj, "resourceName").and_then(Value::as_str) {
        ctx.name = s.to_owned();
    }
    let mut pool = PoolConfig {
        name: String::new(),
        prefix: None,
        exclude_topology: false,
        selectors: Vec::new(),
        additional_info: BTreeMap::new(),
    };
    let mut selectors_seen = false;
    for (key, v) in obj {
        match key.to_ascii_lowercase().as_str() {
            "resourcename" => {
                let s = v.as_str().ok_or_else(|| ctx.err(key, "must be a string"))?;
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(ctx.err(
                        key,
                        format!("{s:?}: only letters, digits and '_' are allowed"),
                    ));
                }
                pool.name = s.to_owned();
            }
            "resourceprefix" => {
                let s = v.as_str().ok_or_else(|| ctx.err(key, "must be a string"))?;
                if s.is_empty()
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                {
                    return Err(ctx.err(key, format!("{s:?} is not a DNS name")));
                }
                pool.prefix = Some(s.to_owned());
            }
            "devicetype" => match v.as_str() {
                Some(t) if t.eq_ignore_ascii_case("netDevice") => {}
                Some(t) => {
                    return Err(ctx.err(
                        key,
                        format!(
                            "{t:?} is not supported by plexus-sriovdp (only netDevice: SR-IOV VFs)"
                        ),
                    ));
                }
                None => return Err(ctx.err(key, "must be a string")),
            },
            "excludetopology" => {
                pool.exclude_topology = v
                    .as_bool()
                    .ok_or_else(|| ctx.err(key, "must be true or false"))?;
            }
            "selectors" => {
                selectors_seen = true;
                let list: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    Value::Object(_) => vec![v],
                    _ => return Err(ctx.err(key, "must be an object or a list of objects")),
                };
                for (i, sel) in list.iter().enumerate() {
                    pool.selectors
                        .push(parse_selector(&ctx, &format!("selectors[{i}]"), sel)?);
                }
            }
            "additionalinfo" => pool.additional_info = parse_additional_info(&ctx, key, v)?,
            _ => return Err(ctx.err(key, "unknown key")),
        }
    }
    if pool.name.is_empty() {
        return Err(ctx.err("resourceName", "is required"));
    }
    if !selectors_seen || pool.selectors.is_empty() {
        // The reference would advertise every VF of the node here; a missing selector is far more
        // often a mistake than a wish.
        return Err(ctx.err("selectors", "is required (at least one selector object)"));
    }
    Ok(pool)
}

fn parse_additional_info(
    ctx: &EntryCtx,
    key: &str,
    v: &Value,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, ConfigError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ctx.err(key, "must be an object"))?;
    let mut out = BTreeMap::new();
    for (device, kv) in obj {
        let kv = kv
            .as_object()
            .ok_or_else(|| ctx.err(format!("{key}.{device}"), "must be an object of strings"))?;
        let mut m = BTreeMap::new();
        for (k, val) in kv {
            let s = val
                .as_str()
                .ok_or_else(|| ctx.err(format!("{key}.{device}.{k}"), "must be a string"))?;
            m.insert(k.clone(), s.to_owned());
        }
        out.insert(device.clone(), m);
    }
    Ok(out)
}

fn parse_selector(ctx: &EntryCtx, at: &str, v: &Value) -> Result<DeviceSelector, ConfigError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ctx.err(at, "a selector must be a JSON object"))?;
    let mut sel = DeviceSelector::default();
    for (key, val) in obj {
        let path = format!("{at}.{key}");
        let strings = || string_list(ctx, &path, val);
        match key.to_ascii_lowercase().as_str() {
            "vendors" => sel.vendors = hex_ids(ctx, &path, strings()?)?,
            "devices" => sel.devices = hex_ids(ctx, &path, strings()?)?,
            "drivers" => sel.drivers = strings()?,
            "pciaddresses" => {
                sel.pci_addresses = strings()?
                    .into_iter()
                    .map(|a| a.to_ascii_lowercase())
                    .collect()
            }
            "pfnames" => sel.pf_names = vf_selectors(ctx, &path, strings()?)?,
            "rootdevices" => {
                sel.root_devices = vf_selectors(ctx, &path, strings()?)?
                    .into_iter()
                    .map(|mut s| {
                        s.name = s.name.to_ascii_lowercase();
                        s
                    })
                    .collect()
            }
            "linktypes" => sel.link_types = strings()?,
            "isrdma" => {
                sel.is_rdma = val
                    .as_bool()
                    .ok_or_else(|| ctx.err(&path, "must be true or false"))?
            }
            "needvhostnet" => {
                sel.need_vhost_net = val
                    .as_bool()
                    .ok_or_else(|| ctx.err(&path, "must be true or false"))?
            }
            other => {
                return Err(
                    if let Some(known) = UNSUPPORTED_SELECTORS
                        .iter()
                        .find(|k| k.eq_ignore_ascii_case(other))
                    {
                        ctx.err(
                            &path,
                            format!("the {known} selector is not supported by plexus-sriovdp"),
                        )
                    } else {
                        ctx.err(&path, "unknown selector")
                    },
                );
            }
        }
    }
    Ok(sel)
}

fn string_list(ctx: &EntryCtx, path: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
    let arr = v
        .as_array()
        .ok_or_else(|| ctx.err(path, "must be a list of strings"))?;
    arr.iter()
        .map(|s| {
            s.as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ctx.err(path, format!("{s}: must be a non-empty string")))
        })
        .collect()
}

/// Vendor and device IDs: four hex digits as sysfs spells them without `0x` (`"8086"`); a `0x`
/// prefix and upper case are accepted.
fn hex_ids(ctx: &EntryCtx, path: &str, ids: Vec<String>) -> Result<Vec<String>, ConfigError> {
    ids.into_iter()
        .map(|id| {
            let bare = id
                .strip_prefix("0x")
                .or_else(|| id.strip_prefix("0X"))
                .unwrap_or(&id);
            if bare.is_empty() || bare.len() > 4 || !bare.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ctx.err(path, format!("{id:?} is not a PCI ID (hex, e.g. \"8086\")")));
            }
            Ok(format!("{:0>4}", bare.to_ascii_lowercase()))
        })
        .collect()
}

/// `pfNames`/`rootDevices` entries: `name` or `name#0-3,5`.
fn vf_selectors(
    ctx: &EntryCtx,
    path: &str,
    items: Vec<String>,
) -> Result<Vec<VfSelector>, ConfigError> {
    items
        .into_iter()
        .map(|item| VfSelector::parse(&item).map_err(|reason| ctx.err(path, reason)))
        .collect()
}

/// `obj[key]` with the key matched case-insensitively.
fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

impl VfSelector {
    /// Parses `ens1f0` or `ens1f0#0-3,5` (VF indices, inclusive ranges).
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some((name, ranges)) = s.split_once('#') else {
            return Ok(Self {
                name: s.to_owned(),
                ranges: Vec::new(),
            });
        };
        if name.is_empty() {
            return Err(format!("{s:?}: the name before '#' is empty"));
        }
        let mut out = Vec::new();
        for part in ranges.split(',') {
            let bad = || format!("{s:?}: {part:?} is not a VF index or a range such as 0-3");
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (lo.trim(), hi.trim()),
                None => (part.trim(), part.trim()),
            };
            let lo: u32 = lo.parse().map_err(|_| bad())?;
            let hi: u32 = hi.parse().map_err(|_| bad())?;
            if lo > hi {
                return Err(format!("{s:?}: range {part:?} runs backwards"));
            }
            out.push(VfRange {
                first: lo,
                last: hi,
            });
        }
        Ok(Self {
            name: name.to_owned(),
            ranges: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(doc: Value) -> Result<ResourceConfig, ConfigError> {
        ResourceConfig::from_value(&doc, DEFAULT_PREFIX)
    }

    fn err(doc: Value) -> String {
        parse(doc).unwrap_err().to_string()
    }

    #[test]
    fn the_reference_example_parses_unchanged() {
        let c = parse(json!({"resourceList": [
            {"resourceName": "intel_sriov_netdevice",
             "selectors": {"vendors": ["8086"], "devices": ["154c", "10ed"],
                           "drivers": ["i40evf", "iavf", "ixgbevf"], "pfNames": ["ens1f0#0-3", "ens1f1"]}},
            {"resourceName": "mlnx_sriov_rdma", "resourcePrefix": "mellanox.com",
             "selectors": [{"vendors": ["15b3"], "isRdma": true, "linkTypes": ["ether"]},
                           {"rootDevices": ["0000:86:00.0#2,4-5"], "needVhostNet": true}],
             "excludeTopology": true,
             "additionalInfo": {"*": {"k": "v"}, "0000:86:00.2": {"k": "own", "x": "y"}}}
        ]}))
        .unwrap();
        assert_eq!(c.pools.len(), 2);
        let a = &c.pools[0];
        assert_eq!(
            a.resource_name("intel.com"),
            "intel.com/intel_sriov_netdevice"
        );
        assert_eq!(a.selectors.len(), 1);
        assert_eq!(a.selectors[0].devices, ["154c", "10ed"]);
        assert_eq!(a.selectors[0].pf_names[0].name, "ens1f0");
        assert_eq!(
            a.selectors[0].pf_names[0].ranges,
            [VfRange { first: 0, last: 3 }]
        );
        assert!(a.selectors[0].pf_names[1].ranges.is_empty());
        let b = &c.pools[1];
        assert_eq!(b.resource_name("intel.com"), "mellanox.com/mlnx_sriov_rdma");
        assert!(b.exclude_topology);
        assert!(b.selectors[0].is_rdma);
        assert!(b.selectors[1].need_vhost_net);
        assert_eq!(
            b.selectors[1].root_devices[0].ranges,
            [VfRange { first: 2, last: 2 }, VfRange { first: 4, last: 5 }]
        );
        let info = b.additional_info_for("0000:86:00.2");
        assert_eq!(info["k"], "own");
        assert_eq!(info["x"], "y");
        assert_eq!(b.additional_info_for("0000:86:00.3")["k"], "v");
    }

    #[test]
    fn keys_match_case_insensitively_like_the_go_decoder() {
        let c = parse(json!({"ResourceList": [{"ResourceName": "a",
            "Selectors": [{"IsRdma": true, "PFNames": ["p0"], "vendors": ["0x15B3"]}]}]}))
        .unwrap();
        assert!(c.pools[0].selectors[0].is_rdma);
        assert_eq!(c.pools[0].selectors[0].pf_names[0].name, "p0");
        assert_eq!(c.pools[0].selectors[0].vendors, ["15b3"]);
    }

    #[test]
    fn unsupported_selectors_name_the_entry_and_the_key() {
        for key in UNSUPPORTED_SELECTORS {
            let msg = err(json!({"resourceList": [
                {"resourceName": "ok", "selectors": [{"pfNames": ["p0"]}]},
                {"resourceName": "bad", "selectors": [{"pfNames": ["p0"]}, {*key: ["x"]}]}
            ]}));
            assert!(
                msg.contains("resourceList[1] (bad)")
                    && msg.contains(&format!("selectors[1].{key}"))
                    && msg.contains("not supported"),
                "{msg}"
            );
        }
    }

    #[test]
    fn other_device_types_and_unknown_keys_are_errors() {
        let msg = err(
            json!({"resourceList": [{"resourceName": "acc", "deviceType": "accelerator",
            "selectors": {"vendors": ["8086"]}}]}),
        );
        assert!(
            msg.contains("(acc)") && msg.contains("deviceType") && msg.contains("accelerator"),
            "{msg}"
        );
        let msg = err(
            json!({"resourceList": [{"resourceName": "a", "selector": {"vendors": ["8086"]}}]}),
        );
        assert!(
            msg.contains("\"selector\"") && msg.contains("unknown key"),
            "{msg}"
        );
        let msg = err(
            json!({"resourceList": [{"resourceName": "a", "selectors": {"vendor": ["8086"]}}]}),
        );
        assert!(
            msg.contains("selectors[0].vendor") && msg.contains("unknown selector"),
            "{msg}"
        );
        assert!(
            parse(
                json!({"resourceList": [{"resourceName": "a", "deviceType": "netDevice",
            "selectors": {"vendors": ["8086"]}}]})
            )
            .is_ok()
        );
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        let cases = [
            (
                json!({"resourceName": "a-b", "selectors": {}}),
                "resourceName",
            ),
            (json!({"resourceName": "", "selectors": {}}), "resourceName"),
            (json!({"selectors": {"vendors": ["8086"]}}), "resourceName"),
            (json!({"resourceName": "a"}), "selectors"),
            (json!({"resourceName": "a", "selectors": []}), "selectors"),
            (
                json!({"resourceName": "a", "selectors": {"vendors": "8086"}}),
                "selectors[0].vendors",
            ),
            (
                json!({"resourceName": "a", "selectors": {"vendors": ["intel"]}}),
                "selectors[0].vendors",
            ),
            (
                json!({"resourceName": "a", "selectors": {"pfNames": ["p0#3-1"]}}),
                "selectors[0].pfNames",
            ),
            (
                json!({"resourceName": "a", "selectors": {"pfNames": ["p0#x"]}}),
                "selectors[0].pfNames",
            ),
            (
                json!({"resourceName": "a", "selectors": {"pfNames": ["#1"]}}),
                "selectors[0].pfNames",
            ),
            (
                json!({"resourceName": "a", "selectors": {"isRdma": "yes"}}),
                "selectors[0].isRdma",
            ),
            (
                json!({"resourceName": "a", "selectors": {"drivers": [""]}}),
                "selectors[0].drivers",
            ),
            (
                json!({"resourceName": "a", "resourcePrefix": "a/b", "selectors": {}}),
                "resourcePrefix",
            ),
            (
                json!({"resourceName": "a", "excludeTopology": 1, "selectors": {}}),
                "excludeTopology",
            ),
            (
                json!({"resourceName": "a", "selectors": {}, "additionalInfo": {"*": {"k": 1}}}),
                "additionalInfo.*.k",
            ),
        ];
        for (entry, key) in cases {
            let msg = err(json!({"resourceList": [entry]}));
            assert!(
                msg.contains("resourceList[0]") && msg.contains(&format!("{key:?}")),
                "{key}: {msg}"
            );
        }
        assert!(err(json!({"resourceList": {}})).contains("must be a list"));
        assert!(err(json!({"resources": []})).contains("unknown top-level key"));
        assert!(err(json!({})).contains("resourceList is missing"));
    }

    #[test]
    fn two_entries_with_the_same_resource_are_an_error() {
        let msg = err(json!({"resourceList": [
            {"resourceName": "a", "selectors": {"pfNames": ["p0"]}},
            {"resourceName": "a", "resourcePrefix": "intel.com", "selectors": {"pfNames": ["p1"]}}
        ]}));
        assert!(
            msg.contains("resourceList[1] (a)") && msg.contains("intel.com/a"),
            "{msg}"
        );
        // Same name under another prefix is another resource.
        assert!(parse(json!({"resourceList": [
            {"resourceName": "a", "selectors": {"pfNames": ["p0"]}},
            {"resourceName": "a", "resourcePrefix": "example.com", "selectors": {"pfNames": ["p1"]}}
        ]})).is_ok());
    }

    #[test]
    fn load_reports_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        assert!(
            ResourceConfig::load(&p, DEFAULT_PREFIX)
                .unwrap_err()
                .to_string()
                .contains("config.json")
        );
        std::fs::write(&p, "{").unwrap();
        assert!(
            ResourceConfig::load(&p, DEFAULT_PREFIX)
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
        std::fs::write(
            &p,
            r#"{"resourceList": [{"resourceName": "a", "selectors": {"pfNames": ["p0#0-1"]}}]}"#,
        )
        .unwrap();
        assert_eq!(
            ResourceConfig::load(&p, DEFAULT_PREFIX).unwrap().pools[0].name,
            "a"
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// JSON values built from the config's own vocabulary (keys in any case, plausible and
    /// implausible values), nested to the depth the format has.
    fn value() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "resourceList",
            "resourceName",
            "ResourceName",
            "resourcePrefix",
            "deviceType",
            "excludeTopology",
            "selectors",
            "additionalInfo",
            "vendors",
            "devices",
            "drivers",
            "pciAddresses",
            "pfNames",
            "rootDevices",
            "linkTypes",
            "isRdma",
            "IsRdma",
            "needVhostNet",
            "ddpProfiles",
            "*",
            "x",
        ])
        .prop_map(str::to_owned);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9_#,.:/ -]{0,12}".prop_map(Value::String),
            prop::sample::select(vec![
                "netDevice",
                "accelerator",
                "8086",
                "p0#0-3",
                "a#3-1",
                "ok_1"
            ])
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn vf_ranges_never_panic_and_round_trip(s in "[a-z0-9]{0,4}(#[0-9,-]{0,8})?") {
            if let Ok(sel) = VfSelector::parse(&s) {
                for r in &sel.ranges {
                    prop_assert!(r.first <= r.last);
                }
                if !sel.ranges.is_empty() {
                    let text: Vec<String> =
                        sel.ranges.iter().map(|r| format!("{}-{}", r.first, r.last)).collect();
                    let again = VfSelector::parse(&format!("{}#{}", sel.name, text.join(","))).unwrap();
                    prop_assert_eq!(again, sel);
                }
            }
        }

        #[test]
        fn any_document_is_accepted_only_when_valid(list in prop::collection::vec(value(), 0..4)) {
            let doc = serde_json::json!({"resourceList": list});
            match ResourceConfig::from_value(&doc, DEFAULT_PREFIX) {
                Err(ConfigError::Entry { index, .. }) => prop_assert!(index < list.len()),
                Err(e) => prop_assert!(matches!(e, ConfigError::Document(_)), "{e}"),
                Ok(c) => {
                    let mut names = std::collections::BTreeSet::new();
                    for p in &c.pools {
                        prop_assert!(!p.name.is_empty());
                        prop_assert!(!p.selectors.is_empty());
                        prop_assert!(names.insert(p.resource_name(DEFAULT_PREFIX)));
                    }
                }
            }
        }
    }
}
