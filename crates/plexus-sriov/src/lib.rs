//! The SR-IOV CNI plugin (`sriov`): takes the VF the kubelet allocated (`deviceID`), configures
//! it through its PF (VLAN, QoS, VLAN protocol, MAC, spoof check, trust, link state, TX rates),
//! moves its netdev into the pod under `CNI_IFNAME`, runs IPAM, and on DEL restores every setting
//! and moves the netdev back. Its configuration is the reference plugin's (spec/sriov.md §1.1).
//!
//! Layout: [`config`] (parsing, pure), [`plugin`] (the verbs over the effect traits),
//! [`pf::PfOps`] (PF side: netlink, or the [`pf::SimulatedPf`] test stand-in), [`link::LinkOps`]
//! (netdev in a namespace), [`ipam::Ipam`], [`state`] (records for DEL). All netlink types live in
//! [`netlink`]; namespace entry in [`netns`].

pub mod config;
pub mod ipam;
pub mod link;
pub mod netlink;
pub mod netns;
pub mod pf;
pub mod plugin;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod types;

/// The user-space drivers that mean DPDK mode, for messages.
pub(crate) const USERSPACE_DRIVERS_TEXT: &str = "vfio-pci, uio_pci_generic, igb_uio";
