//! Synchronous rtnetlink: the only module that knows `netlink-packet-*` types (pinned, 0.x and
//! breaking often). Sockets are blocking `netlink_sys::Socket`s; one socket serves one
//! namespace, the one it was created in (see [`crate::netns`]).

use crate::types::{Mac, VfLinkState, VfSetting, VfState, VlanProto};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage, LinkVfInfo, VfInfo, VfInfoLinkState,
    VfInfoMac, VfInfoRate, VfInfoSpoofCheck, VfInfoTrust, VfLinkState as NlVfLinkState, VfVlan,
    VfVlanInfo, VlanProtocol,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// What the plugin needs to know of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// ifindex in its namespace.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Hardware address.
    pub mac: Option<Mac>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// The VF table (PFs only, when asked for).
    pub vfs: Vec<(u32, VfState)>,
}

/// A blocking rtnetlink socket bound to the namespace it was created in.
#[derive(Debug)]
pub struct NlSocket {
    sock: Socket,
    seq: u32,
}

impl NlSocket {
    /// Opens a socket in the calling thread's namespace.
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { sock, seq: 0 })
    }

    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut offset = 0;
            while offset < data.len() {
                let bytes = &data[offset..];
                let len = NetlinkBuffer::new_checked(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                    .length() as usize;
                if len == 0 {
                    break;
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                offset += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    /// The link named `name`, with its VF table when `with_vfs`; `None` when there is none.
    pub fn link(&mut self, name: &str, with_vfs: bool) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        if with_vfs {
            msg.attributes
                .push(LinkAttribute::ExtMask(vec![LinkExtentMask::Vf]));
        }
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn link_index(&mut self, name: &str) -> io::Result<u32> {
        self.link(name, false)?.map(|l| l.index).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("link {name} not found"))
        })
    }

    fn set(&mut self, name: &str, attrs: Vec<LinkAttribute>, up: Option<bool>) -> io::Result<()> {
        let index = self.link_index(name)?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(up) = up {
            msg.header.change_mask = LinkFlags::Up;
            if up {
                msg.header.flags = LinkFlags::Up;
            }
        }
        msg.attributes = attrs;
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    /// Sets the link up or down.
    pub fn set_up(&mut self, name: &str, up: bool) -> io::Result<()> {
        self.set(name, Vec::new(), Some(up))
    }

    /// Sets the hardware address.
    pub fn set_mac(&mut self, name: &str, mac: Mac) -> io::Result<()> {
        self.set(name, vec![LinkAttribute::Address(mac.0.to_vec())], None)
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> io::Result<()> {
        self.set(name, vec![LinkAttribute::Mtu(mtu)], None)
    }

    /// Renames the link (it must be down).
    pub fn rename(&mut self, name: &str, new_name: &str) -> io::Result<()> {
        self.set(name, vec![LinkAttribute::IfName(new_name.to_owned())], None)
    }

    /// Moves the link into the namespace of `ns_fd`, named `new_name` there: one request, so the
    /// name never exists in this namespace and a failure changes nothing.
    pub fn move_to(&mut self, name: &str, ns_fd: &impl AsRawFd, new_name: &str) -> io::Result<()> {
        self.set(
            name,
            vec![
                LinkAttribute::NetNsFd(ns_fd.as_raw_fd()),
                LinkAttribute::IfName(new_name.to_owned()),
            ],
            None,
        )
    }

    /// Adds `addr/prefix` to the link.
    pub fn add_address(&mut self, name: &str, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let index = self.link_index(name)?;
        let mut msg = AddressMessage::default();
        msg.header.family = family(addr);
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr));
        msg.attributes.push(AddressAttribute::Address(addr));
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Adds a route to `dst/prefix` via `gw` (or on-link) out of the link, in the main table.
    pub fn add_route(
        &mut self,
        name: &str,
        dst: IpAddr,
        prefix: u8,
        gw: Option<IpAddr>,
    ) -> io::Result<()> {
        let index = self.link_index(name)?;
        let mut msg = RouteMessage::default();
        msg.header = RouteHeader {
            address_family: family(dst),
            destination_prefix_length: prefix,
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: if gw.is_some() {
                RouteScope::Universe
            } else {
                RouteScope::Link
            },
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        if prefix > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        }
        if let Some(gw) = gw {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(index));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// One PF-side setting of VF `vf` on PF `pf` (`IFLA_VFINFO_LIST` in `RTM_SETLINK`).
    pub fn set_vf(&mut self, pf: &str, vf: u32, setting: VfSetting) -> io::Result<()> {
        let info = match setting {
            VfSetting::Vlan { vlan, qos, proto } => {
                VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
                    vf,
                    vlan.into(),
                    qos.into(),
                    VlanProtocol::from(proto.ethertype()),
                ))])
            }
            VfSetting::Mac(mac) => VfInfo::Mac(VfInfoMac::new(vf, &mac.0)),
            VfSetting::Rate { min, max } => VfInfo::Rate(VfInfoRate::new(vf, min, max)),
            VfSetting::SpoofChk(on) => VfInfo::SpoofCheck(VfInfoSpoofCheck::new(vf, on)),
            VfSetting::Trust(on) => VfInfo::Trust(VfInfoTrust::new(vf, on)),
            VfSetting::LinkState(s) => VfInfo::LinkState(VfInfoLinkState::new(
                vf,
                match s {
                    VfLinkState::Auto => NlVfLinkState::Auto,
                    VfLinkState::Enable => NlVfLinkState::Enable,
                    VfLinkState::Disable => NlVfLinkState::Disable,
                },
            )),
        };
        self.set(
            pf,
            vec![LinkAttribute::VfInfoList(vec![LinkVfInfo(vec![info])])],
            None,
        )
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn to_link(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        vfs: Vec::new(),
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(a) => link.mac = Mac::from_bytes(&a),
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::VfInfoList(list) => {
                link.vfs = list.into_iter().filter_map(vf_state).collect();
            }
            _ => {}
        }
    }
    link
}

fn vf_state(info: LinkVfInfo) -> Option<(u32, VfState)> {
    let mut id = None;
    let mut st = VfState::default();
    for i in info.0 {
        match i {
            VfInfo::Mac(m) => {
                id = Some(m.vf_id);
                st.mac = Mac::from_bytes(&m.mac).unwrap_or_default();
            }
            VfInfo::Vlan(v) => {
                st.vlan = v.vlan_id as u16;
                st.qos = v.qos as u8;
            }
            VfInfo::VlanList(list) => {
                if let Some(VfVlan::Info(v)) = list.into_iter().next() {
                    st.vlan_proto =
                        VlanProto::from_ethertype(u16::from(v.protocol)).unwrap_or_default();
                }
            }
            VfInfo::Rate(r) => {
                st.min_tx_rate = r.min_tx_rate;
                st.max_tx_rate = r.max_tx_rate;
            }
            VfInfo::SpoofCheck(s) => st.spoofchk = s.enabled,
            VfInfo::Trust(t) => st.trust = t.enabled,
            VfInfo::LinkState(l) => {
                st.link_state = match l.state {
                    NlVfLinkState::Enable => VfLinkState::Enable,
                    NlVfLinkState::Disable => VfLinkState::Disable,
                    _ => VfLinkState::Auto,
                }
            }
            _ => {}
        }
    }
    id.map(|id| (id, st))
}
