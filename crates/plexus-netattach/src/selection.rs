//! The `k8s.v1.cni.cncf.io/networks` selection annotation (NPWG v1.3 §4.1) in both of its forms:
//! the comma form `[ns/]name[@ifname],…` and the JSON list of selection elements.
//!
//! Everything is validated up front so that a bad annotation fails the pod with a message that
//! quotes the offending value, instead of surfacing later as an obscure delegate error. Duplicate
//! interface names are *not* checked here: the engine does that once generated names are known.
//!
//! Unknown keys without a '.' (e.g. the pre-NPWG `gateway` of Multus's own examples) are either
//! rejected ([`UnknownKeys::Reject`], the spec's reading) or reported and skipped
//! ([`UnknownKeys::Ignore`], what Multus does, so annotations written for it keep working).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// Longest Linux interface name (IFNAMSIZ − 1).
const MAX_IFNAME_LEN: usize = 15;
/// Longest DNS-1123 label.
const MAX_LABEL_LEN: usize = 63;

/// Keys of a JSON selection element that this crate understands. Every other key without a '.'
/// is reserved by the spec (rejected or ignored, see [`UnknownKeys`]); keys with a '.' are
/// reverse-DNS extensions.
const KNOWN_KEYS: &[&str] = &[
    "name",
    "namespace",
    "interface",
    "interfaceRequest",
    "ips",
    "mac",
    "infiniband-guid",
    "portMappings",
    "bandwidth",
    "cni-args",
    "default-route",
    "deviceID",
    "ipam-claim-reference",
];

/// One requested attachment, validated, with the namespace resolved.
///
/// The serde impls use the spec's JSON key names so an element can be written back (e.g. into a
/// cache). Deserializing does *not* validate; annotation input must go through [`parse_networks`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSelectionElement {
    /// NAD name (a DNS-1123 label).
    pub name: String,
    /// NAD namespace; the pod's namespace when the annotation did not give one.
    #[serde(default)]
    pub namespace: String,
    /// Requested `CNI_IFNAME` (`interface`, or its deprecated alias `interfaceRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Static IPs, each an address with an optional `/prefix`; becomes `runtimeConfig.ips`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Requested MAC; becomes `runtimeConfig.mac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Requested InfiniBand GUID; becomes `runtimeConfig.infinibandGUID`.
    #[serde(
        rename = "infiniband-guid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub infiniband_guid: Option<String>,
    /// Becomes `runtimeConfig.portMappings`.
    #[serde(
        rename = "portMappings",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub port_mappings: Vec<PortMapping>,
    /// Becomes `runtimeConfig.bandwidth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// Merged into the delegate config's `args` (Multus: `args.cni`).
    #[serde(rename = "cni-args", default, skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<Map<String, Value>>,
    /// Gateways for the default route. `Some(vec![])` is meaningful: this attachment takes the
    /// default route but keeps the delegate's own gateway.
    #[serde(
        rename = "default-route",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub default_route: Option<Vec<String>>,
    /// Device ID (Multus extension); used only when no device plugin resource provides one.
    #[serde(rename = "deviceID", default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Name of an `IPAMClaim` (v1.3); mutually exclusive with `ips`.
    #[serde(
        rename = "ipam-claim-reference",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_claim_reference: Option<String>,
    /// Reverse-DNS extension keys (those containing a '.'), kept verbatim for other components.
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl NetworkSelectionElement {
    /// An element that only names a network, as the comma form produces.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            ..Self::default()
        }
    }

    /// `<namespace>/<name>`: the name network-status entries use.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// True when the element carries nothing beyond namespace, name and interface, i.e. when the
    /// comma form can express it.
    fn is_plain(&self) -> bool {
        self.ips.is_empty()
            && self.mac.is_none()
            && self.infiniband_guid.is_none()
            && self.port_mappings.is_empty()
            && self.bandwidth.is_none()
            && self.cni_args.is_none()
            && self.default_route.is_none()
            && self.device_id.is_none()
            && self.ipam_claim_reference.is_none()
            && self.extensions.is_empty()
    }
}

/// One `portMappings` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    /// `TCP`, `UDP` or `SCTP`, upper-cased by the parser because the portmap plugin compares it
    /// case-sensitively.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

fn default_protocol() -> String {
    "TCP".to_string()
}

/// The `bandwidth` request; rates in bits per second, bursts in bits, as the bandwidth plugin reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    #[serde(
        rename = "ingressRate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ingress_rate: Option<u64>,
    #[serde(
        rename = "ingressBurst",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ingress_burst: Option<u64>,
    #[serde(
        rename = "egressRate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_rate: Option<u64>,
    #[serde(
        rename = "egressBurst",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_burst: Option<u64>,
}

/// Why the selection annotation was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("network selection annotation is not valid JSON: {0}")]
    InvalidJson(String),
    /// The JSON form must be a list, even for a single network.
    #[error(
        "network selection annotation in JSON form must be a list of selection elements, found {0}"
    )]
    NotAList(&'static str),
    /// One element is wrong. `index` is 1-based; `name` is `ns/name` (or just the name) when it
    /// was already known to be valid.
    #[error("network selection element {index}{}: {problem}", name_suffix(.name))]
    Element {
        index: usize,
        name: Option<String>,
        problem: ElementError,
    },
}

fn name_suffix(name: &Option<String>) -> String {
    name.as_ref()
        .map(|n| format!(" ({n:?})"))
        .unwrap_or_default()
}

/// What is wrong with one selection element. Every message quotes the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElementError {
    #[error("empty element (stray ',' in the annotation?)")]
    Empty,
    #[error("{value:?} is not of the form [namespace/]name[@interface]: {reason}")]
    ShortForm { value: String, reason: &'static str },
    #[error("must be a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("missing required key \"name\"")]
    MissingName,
    #[error("{key:?} must be {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("invalid network name {value:?}: must be a DNS-1123 label")]
    InvalidName { value: String },
    #[error("invalid namespace {value:?}: must be a DNS-1123 label")]
    InvalidNamespace { value: String },
    #[error("invalid interface name {value:?}: {reason}")]
    InvalidInterface { value: String, reason: &'static str },
    #[error(
        "\"interface\" {interface:?} and its deprecated alias \"interfaceRequest\" {interface_request:?} differ"
    )]
    InterfaceConflict {
        interface: String,
        interface_request: String,
    },
    #[error("ips entry {value:?} is not an IPv4/IPv6 address with optional /prefix")]
    InvalidIp { value: String },
    #[error("ips entry {value:?} has an invalid prefix length: must be 0-{max}")]
    InvalidPrefix { value: String, max: u8 },
    #[error("mac {value:?} is not a 6-byte MAC address")]
    InvalidMac { value: String },
    #[error("infiniband-guid {value:?} is not an 8-byte GUID")]
    InvalidGuid { value: String },
    #[error("portMappings entry {entry}: missing {field:?}")]
    PortMissing { entry: usize, field: &'static str },
    #[error("portMappings entry {entry}: {field} {value} is not a port number 1-65535")]
    InvalidPort {
        entry: usize,
        field: &'static str,
        value: String,
    },
    #[error("portMappings entry {entry}: protocol {value:?} is not TCP, UDP or SCTP")]
    InvalidProtocol { entry: usize, value: String },
    #[error("portMappings entry {entry}: hostIP {value:?} is not an IP address")]
    InvalidHostIp { entry: usize, value: String },
    #[error("bandwidth {field} {value} must be a positive integer")]
    InvalidBandwidth { field: &'static str, value: String },
    #[error("bandwidth {burst} is set but {rate} is not: a burst requires its rate")]
    BurstWithoutRate {
        burst: &'static str,
        rate: &'static str,
    },
    #[error("default-route entry {value:?} is not an IP address")]
    InvalidDefaultRoute { value: String },
    #[error("ipam-claim-reference {claim:?} cannot be combined with \"ips\"")]
    IpamClaimWithIps { claim: String },
    #[error("{context}: unknown key {key:?}")]
    UnknownNestedKey { context: String, key: String },
    #[error(
        "unknown key {key:?}: keys without a '.' are reserved by the NPWG spec; extensions must use reverse-DNS keys"
    )]
    ReservedKey { key: String },
    /// Go's JSON decoder (Multus) would read the key as `known`; ignoring it would attach the pod
    /// differently from Multus, so it is refused.
    #[error("key {key:?} differs from the known key {known:?} only in case: write it as {known:?}")]
    CaseVariantKey { key: String, known: &'static str },
}

/// An element-level failure before the element index is attached: the name known so far, and
/// the problem.
type ElementFailure = (Option<String>, ElementError);

/// What to do with an unknown key without a '.' in a JSON selection element. A key that differs
/// from a known key only in case, or a known key with a value of the wrong type, is an error
/// either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnknownKeys {
    /// Skip it and report it in [`Selection::ignored`] (Multus's behaviour).
    #[default]
    Ignore,
    /// Fail the element with [`ElementError::ReservedKey`] (the NPWG spec's reading).
    Reject,
}

/// A parsed selection annotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub elements: Vec<NetworkSelectionElement>,
    /// Unknown keys skipped under [`UnknownKeys::Ignore`], in annotation order.
    pub ignored: Vec<IgnoredKey>,
}

/// An unknown key that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredKey {
    /// 1-based position of the element in the annotation.
    pub index: usize,
    /// `<namespace>/<name>` of the element.
    pub network: String,
    pub key: String,
}

impl std::fmt::Display for IgnoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "network selection element {} ({:?}): unknown key {:?} ignored",
            self.index, self.network, self.key
        )
    }
}

/// Parses the `k8s.v1.cni.cncf.io/networks` annotation value, rejecting unknown keys.
///
/// Empty or blank means "no extra networks". The value is JSON when it contains `[`, `{` or `"`
/// (the rule Multus and the NAD client use), otherwise the comma form. Unqualified names resolve
/// in `pod_namespace`.
pub fn parse_networks(
    annotation: &str,
    pod_namespace: &str,
) -> Result<Vec<NetworkSelectionElement>, SelectionError> {
    parse_selection(annotation, pod_namespace, UnknownKeys::Reject).map(|s| s.elements)
}

/// [`parse_networks`] with a choice of what to do with unknown keys.
pub fn parse_selection(
    annotation: &str,
    pod_namespace: &str,
    unknown: UnknownKeys,
) -> Result<Selection, SelectionError> {
    if annotation.trim().is_empty() {
        return Ok(Selection::default());
    }
    if annotation.contains(JSON_MARKERS) {
        parse_json_form(annotation, pod_namespace, unknown)
    } else {
        parse_short_form(annotation, pod_namespace).map(|elements| Selection {
            elements,
            ignored: Vec::new(),
        })
    }
}

/// Characters whose presence makes an annotation value JSON rather than the comma form.
const JSON_MARKERS: [char; 3] = ['[', '{', '"'];

/// Formats elements in the comma form (`ns/name[@ifname]`, joined with `,`), or `None` when an
/// element has fields the comma form cannot express. Parsing the result gives the elements back.
pub fn to_short_form(elements: &[NetworkSelectionElement]) -> Option<String> {
    let items: Option<Vec<String>> = elements.iter().map(element_short_form).collect();
    items.map(|items| items.join(","))
}

fn element_short_form(element: &NetworkSelectionElement) -> Option<String> {
    if !element.is_plain()
        || !is_dns1123_label(&element.name)
        || !is_dns1123_label(&element.namespace)
    {
        return None;
    }
    match &element.interface {
        None => Some(element.qualified_name()),
        // An interface name holding a JSON marker would make the printed text parse as JSON
        // (found by fuzz/fuzz_targets/networks_annotation.rs).
        Some(ifname)
            if ifname_problem(ifname).is_none()
                && !ifname.contains([',', '@'])
                && !ifname.contains(JSON_MARKERS) =>
        {
            Some(format!("{}@{ifname}", element.qualified_name()))
        }
        Some(_) => None,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 bytes: the syntax of NAD and namespace names.
pub fn is_dns1123_label(value: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            bytes.len() <= MAX_LABEL_LEN
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|&b| alnum(b) || b == b'-')
        }
        _ => false,
    }
}

/// The kernel's `dev_valid_name` rules. Kept private (rather than calling plexus-cni) so this
/// crate's messages stay specific to the annotation.
fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Some("must be at most 15 bytes")
    } else if name == "." || name == ".." {
        Some("must not be \".\" or \"..\"")
    } else if name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace()) {
        Some("must not contain '/', ':' or whitespace")
    } else {
        None
    }
}

fn check_ifname(value: &str) -> Result<(), ElementError> {
    match ifname_problem(value) {
        Some(reason) => Err(ElementError::InvalidInterface {
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn attach_index(index: usize) -> impl FnOnce(ElementFailure) -> SelectionError {
    move |(name, problem)| SelectionError::Element {
        index: index + 1,
        name,
        problem,
    }
}

// ---------------------------------------------------------------------------------------------
// Comma form

fn parse_short_form(
    annotation: &str,
    pod_namespace: &str,
) -> Result<Vec<NetworkSelectionElement>, SelectionError> {
    annotation
        .split(',')
        .enumerate()
        .map(|(index, item)| {
            parse_short_item(item.trim(), pod_namespace).map_err(attach_index(index))
        })
        .collect()
}

fn parse_short_item(
    item: &str,
    pod_namespace: &str,
) -> Result<NetworkSelectionElement, ElementFailure> {
    let short_form_error = |reason| {
        (
            None,
            ElementError::ShortForm {
                value: item.to_string(),
                reason,
            },
        )
    };
    if item.is_empty() {
        return Err((None, ElementError::Empty));
    }
    let (network, ifname) = match item.split_once('@') {
        Some((network, ifname)) => (network, Some(ifname)),
        None => (item, None),
    };
    if ifname.is_some_and(|i| i.contains('@')) {
        return Err(short_form_error("more than one '@'"));
    }
    let (namespace, name) = match network.split_once('/') {
        Some((namespace, name)) => (Some(namespace), name),
        None => (None, network),
    };
    if name.contains('/') {
        return Err(short_form_error("more than one '/'"));
    }
    check_name(name).map_err(|e| (None, e))?;
    let namespace = match namespace {
        Some(ns) => check_namespace(ns)
            .map(|()| ns)
            .map_err(|e| (Some(name.to_string()), e))?,
        None => pod_namespace,
    };
    let mut element = NetworkSelectionElement::new(namespace, name);
    if let Some(ifname) = ifname {
        check_ifname(ifname).map_err(|e| (Some(element.qualified_name()), e))?;
        element.interface = Some(ifname.to_string());
    }
    Ok(element)
}

fn check_name(value: &str) -> Result<(), ElementError> {
    if is_dns1123_label(value) {
        Ok(())
    } else {
        Err(ElementError::InvalidName {
            value: value.to_string(),
        })
    }
}

fn check_namespace(value: &str) -> Result<(), ElementError> {
    if is_dns1123_label(value) {
        Ok(())
    } else {
        Err(ElementError::InvalidNamespace {
            value: value.to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// JSON form

fn parse_json_form(
    annotation: &str,
    pod_namespace: &str,
    unknown: UnknownKeys,
) -> Result<Selection, SelectionError> {
    let value: Value =
        serde_json::from_str(annotation).map_err(|e| SelectionError::InvalidJson(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(SelectionError::NotAList(json_kind(&value)));
    };
    let mut selection = Selection::default();
    for (index, item) in items.iter().enumerate() {
        let mut ignored = Vec::new();
        let element = parse_json_element(item, pod_namespace, unknown, &mut ignored)
            .map_err(attach_index(index))?;
        selection
            .ignored
            .extend(ignored.into_iter().map(|key| IgnoredKey {
                index: index + 1,
                network: element.qualified_name(),
                key,
            }));
        selection.elements.push(element);
    }
    Ok(selection)
}

fn parse_json_element(
    item: &Value,
    pod_namespace: &str,
    unknown: UnknownKeys,
    ignored: &mut Vec<String>,
) -> Result<NetworkSelectionElement, ElementFailure> {
    let object = item.as_object().ok_or((
        None,
        ElementError::NotAnObject {
            found: json_kind(item),
        },
    ))?;
    // Unlike optional keys, an empty name is reported as an invalid name, not as missing.
    let name = match object.get("name") {
        None | Some(Value::Null) => return Err((None, ElementError::MissingName)),
        Some(value) => expect_str("name", value).map_err(|e| (None, e))?,
    };
    check_name(name).map_err(|e| (None, e))?;
    let namespace =
        match optional_str(object, "namespace").map_err(|e| (Some(name.to_string()), e))? {
            Some(ns) => check_namespace(ns)
                .map(|()| ns)
                .map_err(|e| (Some(name.to_string()), e))?,
            None => pod_namespace,
        };
    let mut element = NetworkSelectionElement::new(namespace, name);
    fill_fields(&mut element, object, unknown, ignored)
        .map_err(|e| (Some(element.qualified_name()), e))?;
    Ok(element)
}

/// Reads every key except `name`/`namespace` into `element`, then applies the cross-field rules.
/// Unknown keys go to `ignored` or fail, as `unknown` says.
fn fill_fields(
    element: &mut NetworkSelectionElement,
    object: &Map<String, Value>,
    unknown: UnknownKeys,
    ignored: &mut Vec<String>,
) -> Result<(), ElementError> {
    let mut interface_request = None;
    for (key, value) in object {
        if is_absent(key, value) {
            continue;
        }
        match key.as_str() {
            "name" | "namespace" => {}
            "interface" => element.interface = Some(parse_interface(key, value)?),
            "interfaceRequest" => interface_request = Some(parse_interface(key, value)?),
            "ips" => element.ips = parse_ips(value)?,
            "mac" => element.mac = Some(parse_hex_id(key, value, 6)?),
            "infiniband-guid" => element.infiniband_guid = Some(parse_hex_id(key, value, 8)?),
            "portMappings" => element.port_mappings = parse_port_mappings(value)?,
            "bandwidth" => element.bandwidth = Some(parse_bandwidth(value)?),
            "cni-args" => element.cni_args = Some(expect_object(key, value)?.clone()),
            "default-route" => element.default_route = Some(parse_default_route(value)?),
            "deviceID" => element.device_id = Some(expect_str(key, value)?.to_string()),
            "ipam-claim-reference" => {
                element.ipam_claim_reference = Some(expect_str(key, value)?.to_string())
            }
            _ if key.contains('.') => {
                element.extensions.insert(key.clone(), value.clone());
            }
            _ => {
                if let Some(known) = KNOWN_KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                    return Err(ElementError::CaseVariantKey {
                        key: key.clone(),
                        known,
                    });
                }
                match unknown {
                    UnknownKeys::Reject => {
                        return Err(ElementError::ReservedKey { key: key.clone() });
                    }
                    UnknownKeys::Ignore => ignored.push(key.clone()),
                }
            }
        }
    }
    element.interface = merge_interface(element.interface.take(), interface_request)?;
    check_ipam_claim(element)
}

/// `null` and `""` for a known key mean "not set", as they do for Go's `omitempty` decoding in
/// Multus (e.g. `"interface": ""` requests no name). Extension keys are kept as written.
fn is_absent(key: &str, value: &Value) -> bool {
    KNOWN_KEYS.contains(&key) && (value.is_null() || value.as_str() == Some(""))
}

fn optional_str<'a>(
    object: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, ElementError> {
    match object.get(key) {
        Some(value) if !is_absent(key, value) => expect_str(key, value).map(Some),
        _ => Ok(None),
    }
}

fn merge_interface(
    interface: Option<String>,
    request: Option<String>,
) -> Result<Option<String>, ElementError> {
    match (interface, request) {
        (Some(interface), Some(interface_request)) if interface != interface_request => {
            Err(ElementError::InterfaceConflict {
                interface,
                interface_request,
            })
        }
        (interface, request) => Ok(interface.or(request)),
    }
}

fn check_ipam_claim(element: &NetworkSelectionElement) -> Result<(), ElementError> {
    match &element.ipam_claim_reference {
        Some(claim) if !element.ips.is_empty() => Err(ElementError::IpamClaimWithIps {
            claim: claim.clone(),
        }),
        _ => Ok(()),
    }
}

fn parse_interface(key: &str, value: &Value) -> Result<String, ElementError> {
    let ifname = expect_str(key, value)?;
    check_ifname(ifname)?;
    Ok(ifname.to_string())
}

fn parse_ips(value: &Value) -> Result<Vec<String>, ElementError> {
    string_list("ips", value)?
        .into_iter()
        .map(|ip| check_ip_or_cidr(ip).map(|()| ip.to_string()))
        .collect()
}

fn check_ip_or_cidr(value: &str) -> Result<(), ElementError> {
    let (address, prefix) = match value.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (value, None),
    };
    let Ok(address) = address.parse::<IpAddr>() else {
        return Err(ElementError::InvalidIp {
            value: value.to_string(),
        });
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    match prefix {
        Some(prefix) if !is_prefix_len(prefix, max) => Err(ElementError::InvalidPrefix {
            value: value.to_string(),
            max,
        }),
        _ => Ok(()),
    }
}

/// Digits only (Rust's integer parser would also take a leading '+'), at most `max`.
fn is_prefix_len(prefix: &str, max: u8) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 3
        && prefix.bytes().all(|b| b.is_ascii_digit())
        && prefix.parse::<u8>().is_ok_and(|len| len <= max)
}

/// A MAC (`bytes` = 6) or InfiniBand GUID (`bytes` = 8): hex octets separated uniformly by ':'
/// or '-', the separators Go's `net.ParseMAC` accepts for these lengths and delegates use.
fn parse_hex_id(key: &str, value: &Value, bytes: usize) -> Result<String, ElementError> {
    let text = expect_str(key, value)?;
    if is_hex_octets(text, bytes) {
        return Ok(text.to_string());
    }
    let value = text.to_string();
    Err(if bytes == 6 {
        ElementError::InvalidMac { value }
    } else {
        ElementError::InvalidGuid { value }
    })
}

fn is_hex_octets(text: &str, count: usize) -> bool {
    [':', '-'].into_iter().any(|separator| {
        let groups: Vec<&str> = text.split(separator).collect();
        groups.len() == count
            && groups
                .iter()
                .all(|g| g.len() == 2 && g.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

fn parse_default_route(value: &Value) -> Result<Vec<String>, ElementError> {
    string_list("default-route", value)?
        .into_iter()
        .map(|gw| match gw.parse::<IpAddr>() {
            Ok(_) => Ok(gw.to_string()),
            Err(_) => Err(ElementError::InvalidDefaultRoute {
                value: gw.to_string(),
            }),
        })
        .collect()
}

fn parse_port_mappings(value: &Value) -> Result<Vec<PortMapping>, ElementError> {
    let Value::Array(entries) = value else {
        return Err(wrong_type("portMappings", "a list", value));
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| parse_port_mapping(i + 1, entry))
        .collect()
}

fn parse_port_mapping(entry: usize, value: &Value) -> Result<PortMapping, ElementError> {
    let context = format!("portMappings entry {entry}");
    let object = value
        .as_object()
        .ok_or_else(|| wrong_type(&context, "an object", value))?;
    reject_unknown_keys(
        &context,
        object,
        &["hostPort", "containerPort", "protocol", "hostIP"],
    )?;
    Ok(PortMapping {
        host_port: parse_port(entry, object, "hostPort")?,
        container_port: parse_port(entry, object, "containerPort")?,
        protocol: parse_protocol(entry, object)?,
        host_ip: parse_host_ip(entry, object)?,
    })
}

fn parse_port(
    entry: usize,
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<u16, ElementError> {
    let value = object
        .get(field)
        .filter(|v| !v.is_null())
        .ok_or(ElementError::PortMissing { entry, field })?;
    value
        .as_u64()
        .and_then(|port| u16::try_from(port).ok())
        .filter(|&port| port != 0)
        .ok_or_else(|| ElementError::InvalidPort {
            entry,
            field,
            value: show(value),
        })
}

fn parse_protocol(entry: usize, object: &Map<String, Value>) -> Result<String, ElementError> {
    let protocol = match object.get("protocol") {
        None | Some(Value::Null) => return Ok(default_protocol()),
        Some(value) => expect_str(&format!("portMappings entry {entry} protocol"), value)?,
    };
    if protocol.is_empty() {
        return Ok(default_protocol());
    }
    let upper = protocol.to_ascii_uppercase();
    match upper.as_str() {
        "TCP" | "UDP" | "SCTP" => Ok(upper),
        _ => Err(ElementError::InvalidProtocol {
            entry,
            value: protocol.to_string(),
        }),
    }
}

fn parse_host_ip(
    entry: usize,
    object: &Map<String, Value>,
) -> Result<Option<String>, ElementError> {
    let host_ip = match object.get("hostIP") {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => expect_str(&format!("portMappings entry {entry} hostIP"), value)?,
    };
    match host_ip {
        "" => Ok(None),
        ip if ip.parse::<IpAddr>().is_ok() => Ok(Some(ip.to_string())),
        ip => Err(ElementError::InvalidHostIp {
            entry,
            value: ip.to_string(),
        }),
    }
}

const BANDWIDTH_KEYS: [&str; 4] = ["ingressRate", "ingressBurst", "egressRate", "egressBurst"];

fn parse_bandwidth(value: &Value) -> Result<Bandwidth, ElementError> {
    let object = expect_object("bandwidth", value)?;
    reject_unknown_keys("bandwidth", object, &BANDWIDTH_KEYS)?;
    let [ingress_rate, ingress_burst, egress_rate, egress_burst] = BANDWIDTH_KEYS;
    let bandwidth = Bandwidth {
        ingress_rate: bandwidth_value(object, ingress_rate)?,
        ingress_burst: bandwidth_value(object, ingress_burst)?,
        egress_rate: bandwidth_value(object, egress_rate)?,
        egress_burst: bandwidth_value(object, egress_burst)?,
    };
    check_burst(
        bandwidth.ingress_burst,
        bandwidth.ingress_rate,
        ingress_burst,
        ingress_rate,
    )?;
    check_burst(
        bandwidth.egress_burst,
        bandwidth.egress_rate,
        egress_burst,
        egress_rate,
    )?;
    Ok(bandwidth)
}

fn bandwidth_value(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<u64>, ElementError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(ElementError::InvalidBandwidth {
                field,
                value: show(value),
            }),
        },
    }
}

fn check_burst(
    burst: Option<u64>,
    rate: Option<u64>,
    burst_key: &'static str,
    rate_key: &'static str,
) -> Result<(), ElementError> {
    if burst.is_some() && rate.is_none() {
        return Err(ElementError::BurstWithoutRate {
            burst: burst_key,
            rate: rate_key,
        });
    }
    Ok(())
}

/// Nested objects have no extension mechanism, so an unknown key there is almost always a typo
/// (Go's case-insensitive decoding would hide `hostport`; we would rather say so).
fn reject_unknown_keys(
    context: &str,
    object: &Map<String, Value>,
    known: &[&str],
) -> Result<(), ElementError> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(ElementError::UnknownNestedKey {
            context: context.to_string(),
            key: key.clone(),
        }),
        None => Ok(()),
    }
}

fn string_list<'a>(key: &str, value: &'a Value) -> Result<Vec<&'a str>, ElementError> {
    let Value::Array(items) = value else {
        return Err(wrong_type(key, "a list of strings", value));
    };
    items
        .iter()
        .map(|item| {
            item.as_str()
                .ok_or_else(|| wrong_type(key, "a list of strings", item))
        })
        .collect()
}

fn expect_str<'a>(key: &str, value: &'a Value) -> Result<&'a str, ElementError> {
    value
        .as_str()
        .ok_or_else(|| wrong_type(key, "a string", value))
}

fn expect_object<'a>(key: &str, value: &'a Value) -> Result<&'a Map<String, Value>, ElementError> {
    value
        .as_object()
        .ok_or_else(|| wrong_type(key, "an object", value))
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> ElementError {
    ElementError::WrongType {
        key: key.to_string(),
        expected,
        found: show(found),
    }
}

/// Compact JSON of a value for messages, shortened so a huge value cannot flood a pod event.
fn show(value: &Value) -> String {
    const MAX: usize = 64;
    let text = value.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[path = "selection_tests.rs"]
mod tests;
