//! The `k8s.v1.cni.cncf.io/network-status` annotation (NPWG v1.3 §5), in the shape the
//! network-attachment-definition client writes it (and therefore what Multus users' tooling
//! reads): `gateway` rather than the spec's `default-route`, bare IPs without a prefix, `mtu`,
//! `default` omitted when false, `dns` always present (`{}` when the delegate returned none, as
//! Go writes a struct field), and one entry per sandbox interface of the result.

use plexus_cni::{CniResult, Dns, Interface};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

/// One entry of the network-status list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// `<namespace>/<nad>` for attachments, the config name for the cluster default network.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Bare addresses, no prefix length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// True only for the cluster default network's entry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
    /// The delegate result's `dns`. Always written, `{}` when empty: the NAD client's field is a
    /// struct, which Go's `omitempty` never omits, so every entry Multus writes has it.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub dns: Dns,
    /// Device-info-spec document for the attached device (SR-IOV, vDPA, …), kept opaque.
    /// Declared before `gateway` because serde writes fields in declaration order and the NAD
    /// client's struct has this order.
    #[serde(
        rename = "device-info",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<Value>,
    /// Default-route gateways. Reading also accepts the spec's `default-route` key, so statuses
    /// written by spec-following implementations other than the NAD client parse too.
    #[serde(
        default,
        alias = "default-route",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gateway: Vec<String>,
}

/// `"dns": null` (written by Go code with a pointer field) reads as no DNS, not as an error.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Dns, D::Error> {
    Ok(Option::<Dns>::deserialize(d)?.unwrap_or_default())
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Builds the status entries of one attachment from its ADD result.
///
/// One entry per interface with a non-empty `sandbox` (host-side veth ends are not the pod's),
/// carrying the IPs whose `interface` index points at it. A result without sandbox interfaces
/// (e.g. a bare IPAM result or a < 0.3.0 result) yields a single entry named `ifname` with the IPs
/// that reference no interface. `is_default`, `gateways` and `device_info` apply to every entry.
pub fn statuses_from_result(
    network_name: &str,
    ifname: &str,
    result: &CniResult,
    is_default: bool,
    gateways: &[String],
    device_info: Option<&Value>,
) -> Vec<NetworkStatus> {
    let template = NetworkStatus {
        name: network_name.to_string(),
        default: is_default,
        dns: result.dns.clone(),
        gateway: gateways.to_vec(),
        device_info: device_info.cloned(),
        ..NetworkStatus::default()
    };
    let sandboxed: Vec<(usize, &Interface)> = result
        .interfaces
        .iter()
        .enumerate()
        .filter(|(_, iface)| is_sandbox(iface))
        .collect();
    if sandboxed.is_empty() {
        return vec![NetworkStatus {
            interface: Some(ifname.to_string()),
            ips: ips_where(result, |index| index.is_none_or(|i| i < 0)),
            ..template
        }];
    }
    sandboxed
        .into_iter()
        .map(|(position, iface)| interface_status(&template, result, position, iface))
        .collect()
}

fn interface_status(
    template: &NetworkStatus,
    result: &CniResult,
    position: usize,
    iface: &Interface,
) -> NetworkStatus {
    let position = i64::try_from(position).ok();
    NetworkStatus {
        interface: Some(iface.name.clone()),
        ips: ips_where(result, |index| index.is_some() && index == position),
        mac: iface.mac.clone().filter(|mac| !mac.is_empty()),
        mtu: iface.mtu,
        ..template.clone()
    }
}

fn is_sandbox(iface: &Interface) -> bool {
    iface
        .sandbox
        .as_deref()
        .is_some_and(|sandbox| !sandbox.is_empty())
}

/// Addresses of the result's `ips[]` whose interface index satisfies `wanted`, as bare IPs.
fn ips_where(result: &CniResult, wanted: impl Fn(Option<i64>) -> bool) -> Vec<String> {
    result
        .ips
        .iter()
        .filter(|ip| wanted(ip.interface))
        .map(|ip| bare_ip(&ip.address))
        .collect()
}

/// Drops the prefix length and prints the address the way Go's `net.IP.String` does (canonical
/// IPv6, IPv4-mapped addresses as dotted quads), as the NAD client does.
/// An unparsable address is passed through (minus its prefix) rather than dropped.
fn bare_ip(address: &str) -> String {
    let ip = address.split_once('/').map_or(address, |(ip, _)| ip);
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        Ok(v4) => v4.to_string(),
        Err(_) => ip.to_string(),
    }
}

/// The annotation value, formatted as the NAD client's `SetNetworkStatus` does: each entry
/// indented with four spaces (Go's `json.MarshalIndent(status, "", "    ")`), the entries joined
/// with `,` inside `[` `]`. Matching the layout keeps annotation diffs quiet when a cluster moves
/// between Multus and Plexus; JSON readers do not care either way.
pub fn status_annotation_value(statuses: &[NetworkStatus]) -> String {
    let entries: Vec<String> = statuses.iter().map(indented_json).collect();
    format!("[{}]", entries.join(","))
}

fn indented_json(status: &NetworkStatus) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    status
        .serialize(&mut serializer)
        .expect("NetworkStatus serializes infallibly: string keys, no custom impls");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
