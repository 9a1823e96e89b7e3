//! The `sriov` plugin's configuration parser: stdin (after the first NUL byte, if any) with
//! CNI_ARGS (before it). Never panics; an accepted config satisfies every rule the plugin relies
//! on before touching a VF, and a refused one is code 1, 6 or 7.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_sriov::config::parse;
use plexus_sriov::types::{Mac, VlanProto};
use plexus_sysfs::PciAddress;

fuzz_target!(|data: &[u8]| {
    let (args, stdin) = match data.iter().position(|b| *b == 0) {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    match parse(stdin, args) {
        Err(e) => assert!(matches!(e.code(), 1 | 6 | 7), "{e:?}"),
        Ok(c) => {
            assert!(c.version.is_supported());
            assert_eq!(PciAddress::parse(c.device_id.as_str()).unwrap(), c.device_id);
            match c.vlan {
                None => assert!(c.vlan_qos.is_none() && c.vlan_proto.is_none()),
                Some(v) => {
                    assert!(v <= 4094);
                    let qos = c.vlan_qos.unwrap();
                    assert!(qos <= 7);
                    if v == 0 {
                        assert_eq!(qos, 0);
                        assert_ne!(c.vlan_proto, Some(VlanProto::Dot1Ad));
                    }
                }
            }
            if let Some(m) = c.mac {
                assert_eq!(Mac::parse(&m.to_string()), Some(m));
            }
            if let (Some(min), Some(max)) = (c.min_tx_rate, c.max_tx_rate) {
                assert!(max == 0 || min <= max);
            }
            if let Some(t) = &c.ipam_type {
                assert!(!t.is_empty() && !t.contains('/'));
            }
            assert!(c.ipam.is_some() || c.version >= plexus_cni::CniVersion::V0_3_0);
        }
    }
});
