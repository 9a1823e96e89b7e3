//! The plugin's own small types: MAC addresses, VLAN protocols, VF link states and the PF-side
//! settings of one VF. Netlink types never leave `netlink.rs`; these are what the rest speaks.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let parts: Vec<&str> = s.split(sep).collect();
        if parts.len() != 6 {
            return None;
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return None;
            }
            *o = u8::from_str_radix(p, 16).ok()?;
        }
        Some(Self(out))
    }

    /// From the first six bytes of a netlink address attribute.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        b.get(..6).map(|b| {
            let mut out = [0u8; 6];
            out.copy_from_slice(b);
            Self(out)
        })
    }

    /// All zeros (an unset admin MAC).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Mac::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid MAC {s:?}")))
    }
}

/// The VLAN protocol of a VF's port VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum VlanProto {
    /// 802.1Q (0x8100), the default.
    #[default]
    #[serde(rename = "802.1q")]
    Dot1Q,
    /// 802.1ad (0x88a8), QinQ.
    #[serde(rename = "802.1ad")]
    Dot1Ad,
}

impl VlanProto {
    /// The EtherType.
    pub fn ethertype(self) -> u16 {
        match self {
            VlanProto::Dot1Q => 0x8100,
            VlanProto::Dot1Ad => 0x88a8,
        }
    }

    /// From an EtherType; 0 (what some drivers report for an unset VLAN) is 802.1Q, as in the
    /// reference plugin's restore.
    pub fn from_ethertype(t: u16) -> Option<Self> {
        match t {
            0 | 0x8100 => Some(VlanProto::Dot1Q),
            0x88a8 => Some(VlanProto::Dot1Ad),
            _ => None,
        }
    }
}

impl fmt::Display for VlanProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VlanProto::Dot1Q => "802.1q",
            VlanProto::Dot1Ad => "802.1ad",
        })
    }
}

/// `IFLA_VF_LINK_STATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VfLinkState {
    /// Follows the PF's link (0).
    #[default]
    Auto,
    /// Always up (1).
    Enable,
    /// Always down (2).
    Disable,
}

impl VfLinkState {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VfLinkState::Auto => "auto",
            VfLinkState::Enable => "enable",
            VfLinkState::Disable => "disable",
        }
    }
}

/// The PF-side settings of one VF (one entry of the PF's `IFLA_VFINFO_LIST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VfState {
    /// Administrative MAC (all zeros: not set).
    pub mac: Mac,
    /// Port VLAN (0: none).
    pub vlan: u16,
    /// VLAN QoS (priority).
    pub qos: u8,
    /// VLAN protocol.
    pub vlan_proto: VlanProto,
    /// MAC anti-spoofing.
    pub spoofchk: bool,
    /// Trusted VF.
    pub trust: bool,
    /// Link state.
    pub link_state: VfLinkState,
    /// Minimum TX rate, Mbps (0: none).
    pub min_tx_rate: u32,
    /// Maximum TX rate, Mbps (0: none).
    pub max_tx_rate: u32,
}

/// One PF-side VF setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VfSetting {
    /// Port VLAN, QoS and protocol (`IFLA_VF_VLAN_LIST`).
    Vlan {
        /// VLAN ID.
        vlan: u16,
        /// QoS.
        qos: u8,
        /// Protocol.
        proto: VlanProto,
    },
    /// Administrative MAC (`IFLA_VF_MAC`).
    Mac(Mac),
    /// TX rates, Mbps (`IFLA_VF_RATE`).
    Rate {
        /// Minimum.
        min: u32,
        /// Maximum.
        max: u32,
    },
    /// Spoof checking (`IFLA_VF_SPOOFCHK`).
    SpoofChk(bool),
    /// Trust (`IFLA_VF_TRUST`).
    Trust(bool),
    /// Link state (`IFLA_VF_LINK_STATE`).
    LinkState(VfLinkState),
}

impl fmt::Display for VfSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VfSetting::Vlan { vlan, qos, proto } => {
                write!(f, "vlan {vlan} qos {qos} proto {proto}")
            }
            VfSetting::Mac(m) => write!(f, "mac {m}"),
            VfSetting::Rate { min, max } => write!(f, "rate min {min} max {max}"),
            VfSetting::SpoofChk(on) => write!(f, "spoofchk {}", if *on { "on" } else { "off" }),
            VfSetting::Trust(on) => write!(f, "trust {}", if *on { "on" } else { "off" }),
            VfSetting::LinkState(s) => write!(f, "link_state {}", s.as_str()),
        }
    }
}

impl VfState {
    /// The state after `s` is applied (what a PF reports after a successful set).
    pub fn with(mut self, s: VfSetting) -> Self {
        match s {
            VfSetting::Vlan { vlan, qos, proto } => {
                self.vlan = vlan;
                self.qos = qos;
                self.vlan_proto = proto;
            }
            VfSetting::Mac(m) => self.mac = m,
            VfSetting::Rate { min, max } => {
                self.min_tx_rate = min;
                self.max_tx_rate = max;
            }
            VfSetting::SpoofChk(on) => self.spoofchk = on,
            VfSetting::Trust(on) => self.trust = on,
            VfSetting::LinkState(l) => self.link_state = l,
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip_and_rejects() {
        let m = Mac::parse("AA-bb-CC-00-11-22").unwrap();
        assert_eq!(m.to_string(), "aa:bb:cc:00:11:22");
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:fg",
            "a:b:c:d:e:f",
        ] {
            assert!(Mac::parse(bad).is_none(), "{bad}");
        }
        assert!(Mac::default().is_zero());
    }
}
