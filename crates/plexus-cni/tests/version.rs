//! Spec version parsing and ordering.

use plexus_cni::{CniVersion, SUPPORTED_VERSIONS, VersionError};
use rstest::rstest;

#[test]
fn every_supported_version_parses_round_trips_and_is_supported() {
    let parsed: Vec<CniVersion> = SUPPORTED_VERSIONS
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    for (s, v) in SUPPORTED_VERSIONS.iter().zip(&parsed) {
        assert_eq!(v.to_string(), *s);
        assert!(v.is_supported());
    }
    assert!(
        parsed.windows(2).all(|w| w[0] < w[1]),
        "SUPPORTED_VERSIONS is oldest first"
    );
    assert_eq!(parsed.last(), Some(&CniVersion::V1_1_0));
}

#[rstest]
#[case("0.5.0")]
#[case("1.2.0")]
#[case("2.0.0")]
#[case("0.3.2")]
fn well_formed_but_unsupported(#[case] s: &str) {
    let v: CniVersion = s.parse().unwrap();
    assert!(!v.is_supported());
}

#[rstest]
#[case("")]
#[case("1")]
#[case("1.0")]
#[case("1.0.0.0")]
#[case("1.0.")]
#[case(".1.0")]
#[case("v1.0.0")]
#[case("1.0.0 ")]
#[case("1.+0.0")]
#[case("1.-0.0")]
#[case("01.0.0")]
#[case("1.00.0")]
#[case("1.0.x")]
#[case("70000.0.0")]
fn malformed_versions(#[case] s: &str) {
    assert_eq!(
        s.parse::<CniVersion>(),
        Err(VersionError::Invalid(s.to_owned()))
    );
}

#[test]
fn ordering_is_numeric() {
    assert!("0.10.0".parse::<CniVersion>().unwrap() > CniVersion::V0_4_0);
    assert!(CniVersion::V0_3_1 > CniVersion::V0_3_0);
}

#[test]
fn feature_gates() {
    assert!(!CniVersion::V0_3_1.supports_check() && CniVersion::V0_4_0.supports_check());
    assert!(!CniVersion::V1_0_0.supports_status_gc() && CniVersion::V1_1_0.supports_status_gc());
    assert!(!CniVersion::V0_2_0.supports_chaining() && CniVersion::V0_3_0.supports_chaining());
}
