//! Which VFs a pool takes: the reference's `netDevice` selectors, as a pure function of a
//! discovered [`Vf`]. Within one selector object every key that is set must match (an empty list
//! matches anything); a pool takes a VF when any of its selector objects does.

/// A discovered SR-IOV virtual function: everything the selectors, the kubelet and Allocate need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vf {
    /// Its PCI address (the device ID advertised to the kubelet).
    pub pci_address: String,
    /// PCI vendor ID, four lower-case hex digits (`8086`).
    pub vendor: String,
    /// PCI device ID, four lower-case hex digits (`154c`).
    pub device: String,
    /// The bound driver (`iavf`, `mlx5_core`, `vfio-pci`); `None` when unbound.
    pub driver: Option<String>,
    /// The PF's PCI address.
    pub pf_pci_address: String,
    /// The PF's network interface, when it has one.
    pub pf_name: Option<String>,
    /// The VF's index on its PF (`virtfn<N>`).
    pub index: u32,
    /// The VF's own network interface; `None` for a userspace-driver VF.
    pub netdev: Option<String>,
    /// Link type of the VF's interface (or the PF's when the VF has none): `ether`,
    /// `infiniband`...
    pub link_type: Option<String>,
    /// NUMA node; `None` when the platform reports none (-1).
    pub numa_node: Option<i64>,
    /// IOMMU group (for `/dev/vfio/<group>`).
    pub iommu_group: Option<String>,
    /// RDMA devices of the VF (`mlx5_3`).
    pub rdma: Vec<String>,
    /// Whether the PF's link is up: a VF behind a PF that is down cannot pass traffic, so it is
    /// reported Unhealthy.
    pub pf_link_up: bool,
}

impl Vf {
    /// Whether the VF is bound to vfio-pci (a userspace VF: Allocate hands out /dev/vfio).
    pub fn is_vfio(&self) -> bool {
        self.driver.as_deref() == Some("vfio-pci")
    }
}

/// Inclusive range of VF indices (`0-3` in `ens1f0#0-3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfRange {
    /// First index.
    pub first: u32,
    /// Last index (inclusive).
    pub last: u32,
}

/// A `pfNames` or `rootDevices` entry: a PF (by interface name or PCI address) and optionally
/// which of its VFs (`name#0-3,5`; no ranges: all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfSelector {
    /// The PF's interface name (pfNames) or PCI address (rootDevices).
    pub name: String,
    /// VF index ranges; empty means every VF.
    pub ranges: Vec<VfRange>,
}

impl VfSelector {
    fn matches(&self, pf: &str, index: u32) -> bool {
        self.name == pf
            && (self.ranges.is_empty()
                || self
                    .ranges
                    .iter()
                    .any(|r| (r.first..=r.last).contains(&index)))
    }
}

/// One selector object of a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSelector {
    /// `vendors` (normalised: four lower-case hex digits).
    pub vendors: Vec<String>,
    /// `devices` (normalised like vendors).
    pub devices: Vec<String>,
    /// `drivers`.
    pub drivers: Vec<String>,
    /// `pciAddresses` (lower case).
    pub pci_addresses: Vec<String>,
    /// `pfNames`.
    pub pf_names: Vec<VfSelector>,
    /// `rootDevices` (the PF's PCI address).
    pub root_devices: Vec<VfSelector>,
    /// `linkTypes` (compared case-insensitively).
    pub link_types: Vec<String>,
    /// `isRdma`: only VFs with an RDMA device.
    pub is_rdma: bool,
    /// `needVhostNet`: not a filter; Allocate also hands out /dev/vhost-net and /dev/net/tun.
    pub need_vhost_net: bool,
}

impl DeviceSelector {
    /// Whether `vf` passes every key that is set.
    pub fn matches(&self, vf: &Vf) -> bool {
        let any = |list: &[String], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
        };
        any(&self.vendors, Some(&vf.vendor))
            && any(&self.devices, Some(&vf.device))
            && any(&self.drivers, vf.driver.as_deref())
            && any(&self.pci_addresses, Some(&vf.pci_address))
            && (self.pf_names.is_empty()
                || vf
                    .pf_name
                    .as_deref()
                    .is_some_and(|pf| self.pf_names.iter().any(|s| s.matches(pf, vf.index))))
            && (self.root_devices.is_empty()
                || self
                    .root_devices
                    .iter()
                    .any(|s| s.matches(&vf.pf_pci_address, vf.index)))
            && (self.link_types.is_empty()
                || vf
                    .link_type
                    .as_deref()
                    .is_some_and(|t| self.link_types.iter().any(|x| x.eq_ignore_ascii_case(t))))
            && (!self.is_rdma || !vf.rdma.is_empty())
    }
}

/// The first of `selectors` that `vf` matches.
pub fn first_match<'a>(selectors: &'a [DeviceSelector], vf: &Vf) -> Option<&'a DeviceSelector> {
    selectors.iter().find(|s| s.matches(vf))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// VF `index` of PF `ens1f0` (0000:3b:00.0), Intel iavf, NUMA 0, with a netdev.
    pub(crate) fn vf(index: u32) -> Vf {
        Vf {
            pci_address: format!("0000:3b:02.{index}"),
            vendor: "8086".into(),
            device: "154c".into(),
            driver: Some("iavf".into()),
            pf_pci_address: "0000:3b:00.0".into(),
            pf_name: Some("ens1f0".into()),
            index,
            netdev: Some(format!("ens1f0v{index}")),
            link_type: Some("ether".into()),
            numa_node: Some(0),
            iommu_group: Some(format!("{}", 40 + index)),
            rdma: Vec::new(),
            pf_link_up: true,
        }
    }

    fn sel(f: impl FnOnce(&mut DeviceSelector)) -> DeviceSelector {
        let mut s = DeviceSelector::default();
        f(&mut s);
        s
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_empty_selector_matches_every_vf() {
        assert!(DeviceSelector::default().matches(&vf(0)));
    }

    #[test]
    fn vendors_devices_drivers_and_addresses() {
        let v = vf(1);
        assert!(sel(|s| s.vendors = strings(&["15b3", "8086"])).matches(&v));
        assert!(!sel(|s| s.vendors = strings(&["15b3"])).matches(&v));
        assert!(sel(|s| s.devices = strings(&["154c"])).matches(&v));
        assert!(!sel(|s| s.devices = strings(&["1889"])).matches(&v));
        assert!(sel(|s| s.drivers = strings(&["iavf"])).matches(&v));
        assert!(!sel(|s| s.drivers = strings(&["vfio-pci"])).matches(&v));
        let mut unbound = v.clone();
        unbound.driver = None;
        assert!(!sel(|s| s.drivers = strings(&["iavf"])).matches(&unbound));
        assert!(sel(|s| s.pci_addresses = strings(&["0000:3b:02.1"])).matches(&v));
        assert!(!sel(|s| s.pci_addresses = strings(&["0000:3b:02.2"])).matches(&v));
    }

    #[test]
    fn every_set_key_must_match() {
        let s = sel(|s| {
            s.vendors = strings(&["8086"]);
            s.drivers = strings(&["vfio-pci"]);
        });
        assert!(!s.matches(&vf(0)), "vendor matches but driver does not");
    }

    #[test]
    fn pf_names_with_and_without_vf_ranges() {
        let range = |s: &str| sel(|x| x.pf_names = vec![VfSelector::parse(s).unwrap()]);
        assert!(range("ens1f0").matches(&vf(7)));
        assert!(!range("ens1f1").matches(&vf(0)));
        let r = range("ens1f0#0-3,6");
        let taken: Vec<u32> = (0..8).filter(|i| r.matches(&vf(*i))).collect();
        assert_eq!(taken, [0, 1, 2, 3, 6]);
        let mut no_pf_netdev = vf(0);
        no_pf_netdev.pf_name = None;
        assert!(!range("ens1f0").matches(&no_pf_netdev));
    }

    #[test]
    fn root_devices_with_and_without_vf_ranges() {
        let root = |s: &str| sel(|x| x.root_devices = vec![VfSelector::parse(s).unwrap()]);
        assert!(root("0000:3b:00.0").matches(&vf(5)));
        assert!(!root("0000:3b:00.1").matches(&vf(5)));
        let r = root("0000:3b:00.0#1,4-5");
        let taken: Vec<u32> = (0..8).filter(|i| r.matches(&vf(*i))).collect();
        assert_eq!(taken, [1, 4, 5]);
    }

    #[test]
    fn link_types_case_insensitive() {
        assert!(sel(|s| s.link_types = strings(&["Ether"])).matches(&vf(0)));
        assert!(!sel(|s| s.link_types = strings(&["infiniband"])).matches(&vf(0)));
        let mut unknown = vf(0);
        unknown.link_type = None;
        assert!(!sel(|s| s.link_types = strings(&["ether"])).matches(&unknown));
    }

    #[test]
    fn is_rdma_takes_only_vfs_with_an_rdma_device() {
        let s = sel(|s| s.is_rdma = true);
        assert!(!s.matches(&vf(0)));
        let mut r = vf(0);
        r.rdma = vec!["mlx5_2".into()];
        assert!(s.matches(&r));
        assert!(
            DeviceSelector::default().matches(&r),
            "isRdma false does not exclude"
        );
    }

    #[test]
    fn need_vhost_net_does_not_filter() {
        assert!(sel(|s| s.need_vhost_net = true).matches(&vf(0)));
    }

    #[test]
    fn the_first_matching_selector_wins() {
        let list = vec![
            sel(|s| s.drivers = strings(&["vfio-pci"])),
            sel(|s| {
                s.vendors = strings(&["8086"]);
                s.need_vhost_net = true
            }),
            DeviceSelector::default(),
        ];
        assert!(std::ptr::eq(first_match(&list, &vf(0)).unwrap(), &list[1]));
        let mut vfio = vf(0);
        vfio.driver = Some("vfio-pci".into());
        assert!(vfio.is_vfio());
        assert!(std::ptr::eq(first_match(&list, &vfio).unwrap(), &list[0]));
        assert!(first_match(&list[..1], &vf(0)).is_none());
    }
}
