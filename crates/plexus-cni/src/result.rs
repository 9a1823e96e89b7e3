//! ADD results of every spec version, held in one canonical (1.1.0-shaped) form, and the
//! conversions between versions that libcni's `convert` package defines (spec/cni-and-npwg.md §1.4).

use crate::version::CniVersion;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResultError {
    #[error("result is not valid JSON for CNI {version}: {reason}")]
    Decode { version: String, reason: String },
    #[error("unsupported CNI result version {0:?}")]
    UnsupportedVersion(String),
    /// 0.1.0/0.2.0 results need an IP (libcni: "cannot convert: no valid IP addresses").
    #[error("cannot convert result to CNI {0}: no valid IP addresses")]
    NoIpForLegacy(String),
}

/// A result in canonical form. Unknown keys are dropped: libcni's typed results drop them too, so no
/// plugin can rely on them surviving a hop through a runtime.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CniResult {
    /// The version the result was parsed from.
    pub cni_version: Option<CniVersion>,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 1.1.0 only; dropped when converting to < 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path; `None`/empty means a host interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR notation, e.g. `10.1.0.5/16`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`; `None` for IPAM results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub search: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// Parses a result of any supported version. The version is the value's `cniVersion`, or
    /// `default_version` when it has none (libcni's `ParsePrevResult` rule).
    pub fn from_value(value: &Value, default_version: CniVersion) -> Result<Self, ResultError> {
        let obj = value
            .as_object()
            .ok_or_else(|| decode(default_version, "a result must be a JSON object"))?;
        let version = result_version(obj, default_version)?;
        let mut result = if is_legacy(version) {
            parse_legacy(obj, version)?
        } else {
            parse_current(obj, version)?
        };
        result.dns.domain = result.dns.domain.filter(|d| !d.is_empty());
        result.cni_version = Some(version);
        Ok(result)
    }

    /// Parses result bytes (a delegate's stdout).
    pub fn from_slice(bytes: &[u8], default_version: CniVersion) -> Result<Self, ResultError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| decode(default_version, e))?;
        Self::from_value(&value, default_version)
    }

    /// Writes the result in the shape of `version` (with `cniVersion` set), applying libcni's
    /// conversion rules: `ips[].version` for 0.3.x/0.4.0, `ip4`/`ip6` for 0.1.0/0.2.0 (first address
    /// of each family, error when there is none), 1.1.0-only interface fields dropped below 1.0.0.
    /// Route `mtu/advmss/priority/table/scope` are 1.1.0 additions and are written only for 1.1.0.
    pub fn to_value(&self, version: CniVersion) -> Result<Value, ResultError> {
        if !version.is_supported() {
            return Err(ResultError::UnsupportedVersion(version.to_string()));
        }
        let mut out = Map::new();
        out.insert("cniVersion".into(), Value::String(version.to_string()));
        if is_legacy(version) {
            self.write_legacy(&mut out, version)?;
        } else {
            self.write_current(&mut out, version);
        }
        if !self.dns.is_empty() {
            out.insert("dns".into(), to_json(&self.dns));
        }
        Ok(Value::Object(out))
    }

    /// Index of the first interface with a non-empty sandbox.
    pub fn first_sandbox_interface(&self) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
    }

    /// 0.3.0+ shape. Below 1.0.0 every IP carries its family and interfaces lose the 1.1.0 fields.
    fn write_current(&self, out: &mut Map<String, Value>, version: CniVersion) {
        let pre_1_0 = version < CniVersion::V1_0_0;
        if !self.interfaces.is_empty() {
            let ifaces = self
                .interfaces
                .iter()
                .map(|i| interface_value(i, !pre_1_0))
                .collect();
            out.insert("interfaces".into(), Value::Array(ifaces));
        }
        if !self.ips.is_empty() {
            out.insert(
                "ips".into(),
                Value::Array(self.ips.iter().map(|ip| ip_value(ip, pre_1_0)).collect()),
            );
        }
        if !self.routes.is_empty() {
            let with_attrs = version >= CniVersion::V1_1_0;
            out.insert(
                "routes".into(),
                Value::Array(
                    self.routes
                        .iter()
                        .map(|r| route_value(r, with_attrs))
                        .collect(),
                ),
            );
        }
    }

    /// 0.1.0/0.2.0 shape: one address per family, routes filed under the family of their `dst`
    /// (and dropped when that family has no address), interfaces dropped.
    fn write_legacy(
        &self,
        out: &mut Map<String, Value>,
        version: CniVersion,
    ) -> Result<(), ResultError> {
        let first_of = |fam| self.ips.iter().find(|ip| family(&ip.address) == fam);
        let (v4, v6) = (first_of(Family::V4), first_of(Family::V6));
        if v4.is_none() && v6.is_none() {
            return Err(ResultError::NoIpForLegacy(version.to_string()));
        }
        for (key, ip, fam) in [("ip4", v4, Family::V4), ("ip6", v6, Family::V6)] {
            if let Some(ip) = ip {
                let routes = self.routes.iter().filter(|r| family(&r.dst) == fam);
                out.insert(key.into(), legacy_ip_value(ip, routes));
            }
        }
        Ok(())
    }
}

/// Converts a result JSON value of any version to `to`.
pub fn convert(
    value: &Value,
    default_version: CniVersion,
    to: CniVersion,
) -> Result<Value, ResultError> {
    CniResult::from_value(value, default_version)?.to_value(to)
}

/// 0.1.0 and 0.2.0 use the `ip4`/`ip6` shape.
fn is_legacy(version: CniVersion) -> bool {
    version < CniVersion::V0_3_0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// Family of an address or CIDR. Like Go's `To4()`, an IPv4-mapped IPv6 address counts as IPv4.
/// Text that is not an address is judged by whether it has a `:`, so conversion never fails on it.
fn family(addr: &str) -> Family {
    let host = addr.split('/').next().unwrap_or_default();
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => Family::V4,
        Ok(IpAddr::V6(a)) if a.to_ipv4_mapped().is_some() => Family::V4,
        Ok(IpAddr::V6(_)) => Family::V6,
        Err(_) if host.contains(':') => Family::V6,
        Err(_) => Family::V4,
    }
}

fn decode(version: impl ToString, reason: impl ToString) -> ResultError {
    ResultError::Decode {
        version: version.to_string(),
        reason: reason.to_string(),
    }
}

/// An absent, null or empty `cniVersion` means `default`; anything else must be a supported version.
fn result_version(
    obj: &Map<String, Value>,
    default: CniVersion,
) -> Result<CniVersion, ResultError> {
    let version = match obj.get("cniVersion") {
        None | Some(Value::Null) => default,
        Some(Value::String(s)) if s.is_empty() => default,
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| ResultError::UnsupportedVersion(s.clone()))?,
        Some(other) => {
            return Err(decode(
                default,
                format!("cniVersion must be a string, got {other}"),
            ));
        }
    };
    if version.is_supported() {
        Ok(version)
    } else {
        Err(ResultError::UnsupportedVersion(version.to_string()))
    }
}

/// A top-level key, with absent and `null` both meaning the default (as Go's decoder treats them).
fn field<T: DeserializeOwned + Default>(
    obj: &Map<String, Value>,
    key: &str,
    version: CniVersion,
) -> Result<T, ResultError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => T::deserialize(v).map_err(|e| decode(version, format!("{key}: {e}"))),
    }
}

fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn parse_current(obj: &Map<String, Value>, version: CniVersion) -> Result<CniResult, ResultError> {
    Ok(CniResult {
        cni_version: None,
        interfaces: field(obj, "interfaces", version)?,
        ips: field(obj, "ips", version)?,
        routes: field(obj, "routes", version)?,
        dns: field(obj, "dns", version)?,
    })
}

/// `ip4`/`ip6` of a 0.1.0/0.2.0 result.
#[derive(Debug, Default, Deserialize)]
struct LegacyIp {
    ip: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    routes: Vec<Route>,
}

/// The addresses become `ips` (no interface index) and their routes are appended to `routes`,
/// IPv4 first, as libcni's `convertFrom02x` does.
fn parse_legacy(obj: &Map<String, Value>, version: CniVersion) -> Result<CniResult, ResultError> {
    let mut result = CniResult {
        dns: field(obj, "dns", version)?,
        ..CniResult::default()
    };
    for key in ["ip4", "ip6"] {
        if let Some(ip) = field::<Option<LegacyIp>>(obj, key, version)? {
            result.ips.push(IpConfig {
                address: ip.ip,
                gateway: ip.gateway,
                interface: None,
            });
            result.routes.extend(ip.routes);
        }
    }
    Ok(result)
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("plain result data always serializes")
}

fn interface_value(iface: &Interface, with_1_1_fields: bool) -> Value {
    if with_1_1_fields {
        return to_json(iface);
    }
    to_json(&Interface {
        mtu: None,
        socket_path: None,
        pci_id: None,
        ..iface.clone()
    })
}

/// 0.3.x/0.4.0 put `version` first, as the spec's examples do.
fn ip_value(ip: &IpConfig, with_version: bool) -> Value {
    let mut m = Map::new();
    if with_version {
        let v = if family(&ip.address) == Family::V4 {
            "4"
        } else {
            "6"
        };
        m.insert("version".into(), Value::String(v.into()));
    }
    m.insert("address".into(), Value::String(ip.address.clone()));
    if let Some(gw) = &ip.gateway {
        m.insert("gateway".into(), Value::String(gw.clone()));
    }
    if let Some(i) = ip.interface {
        m.insert("interface".into(), Value::from(i));
    }
    Value::Object(m)
}

fn route_value(route: &Route, with_attrs: bool) -> Value {
    if with_attrs {
        return to_json(route);
    }
    to_json(&Route {
        dst: route.dst.clone(),
        gw: route.gw.clone(),
        ..Route::default()
    })
}

fn legacy_ip_value<'a>(ip: &IpConfig, routes: impl Iterator<Item = &'a Route>) -> Value {
    let mut m = Map::new();
    m.insert("ip".into(), Value::String(ip.address.clone()));
    if let Some(gw) = &ip.gateway {
        m.insert("gateway".into(), Value::String(gw.clone()));
    }
    let routes: Vec<Value> = routes.map(|r| route_value(r, false)).collect();
    if !routes.is_empty() {
        m.insert("routes".into(), Value::Array(routes));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_of_addresses_and_non_addresses() {
        for (text, expected) in [
            ("10.0.0.1/24", Family::V4),
            ("10.0.0.1", Family::V4),
            ("fd00::1/64", Family::V6),
            ("::/0", Family::V6),
            ("::ffff:10.0.0.1/120", Family::V4),
            ("fe80::1%eth0", Family::V6),
            ("not-an-ip", Family::V4),
            ("", Family::V4),
        ] {
            assert_eq!(family(text), expected, "{text}");
        }
    }
}
