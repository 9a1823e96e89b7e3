//! Property tests of CNI results (run in CI; the fuzz targets in fuzz/ go further): parsing any
//! input in any version never panics, and a result printed in a current version parses back to
//! itself (parse ∘ print = identity).

use plexus_cni::{CniResult, CniVersion, Dns, Interface, IpConfig, Route, SUPPORTED_VERSIONS};
use proptest::prelude::*;

fn versions() -> Vec<CniVersion> {
    SUPPORTED_VERSIONS
        .iter()
        .map(|v| v.parse().unwrap())
        .collect()
}

fn ipv4() -> impl Strategy<Value = String> {
    (any::<[u8; 4]>(), 0u8..=32)
        .prop_map(|(o, p)| format!("{}.{}.{}.{}/{p}", o[0], o[1], o[2], o[3]))
}

fn word() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,8}"
}

fn result() -> impl Strategy<Value = CniResult> {
    let iface = (
        word(),
        proptest::option::of("[0-9a-f]{2}(:[0-9a-f]{2}){5}"),
        proptest::option::of(word()),
    )
        .prop_map(|(name, mac, sandbox)| Interface {
            name,
            mac,
            sandbox,
            ..Interface::default()
        });
    let ip = (ipv4(), proptest::option::of(0i64..3)).prop_map(|(address, interface)| IpConfig {
        address,
        gateway: None,
        interface,
    });
    let route = (ipv4(), proptest::option::of(1u32..9000)).prop_map(|(dst, mtu)| Route {
        dst,
        mtu,
        ..Route::default()
    });
    let dns = proptest::collection::vec(word(), 0..3).prop_map(|nameservers| Dns {
        nameservers,
        ..Dns::default()
    });
    (
        proptest::collection::vec(iface, 0..3),
        proptest::collection::vec(ip, 0..3),
        proptest::collection::vec(route, 0..3),
        dns,
    )
        .prop_map(|(interfaces, ips, routes, dns)| CniResult {
            cni_version: Some(CniVersion::V1_1_0),
            interfaces,
            ips,
            routes,
            dns,
        })
}

proptest! {
    #[test]
    fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), v in 0usize..7) {
        let _ = CniResult::from_slice(&bytes, versions()[v]);
    }

    #[test]
    fn parsing_jsonish_text_never_panics(text in r#"[\[\]{}",:0-9a-z./ -]{0,80}"#, v in 0usize..7) {
        if let Ok(r) = CniResult::from_slice(text.as_bytes(), versions()[v]) {
            for to in versions() {
                let _ = r.to_value(to);
            }
        }
    }

    #[test]
    fn print_then_parse_is_identity(r in result()) {
        // Route `mtu` (and the other route extras) exist only from 1.1.0 on.
        let mut r_1_0 = r.clone();
        r_1_0.routes.iter_mut().for_each(|route| route.mtu = None);
        for (v, r) in [(CniVersion::V1_0_0, r_1_0), (CniVersion::V1_1_0, r)] {
            let printed = r.to_value(v).unwrap();
            let back = CniResult::from_value(&printed, v).unwrap();
            prop_assert_eq!(CniResult { cni_version: r.cni_version, ..back.clone() }, r.clone());
            prop_assert_eq!(back.to_value(v).unwrap(), printed);
        }
    }
}
