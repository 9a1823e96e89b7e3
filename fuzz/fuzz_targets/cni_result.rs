//! CNI results of every version: parsing never panics, and a parsed result converts to every
//! version without panicking; whatever is printed in a version parses back and prints to the same
//! JSON again (print ∘ parse is the identity on printed results, as the property test
//! `to_value_never_panics_and_reparses` in crates/plexus-cni/tests/result.rs checks on generated
//! results).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cni::{CniResult, CniVersion, SUPPORTED_VERSIONS};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let versions: Vec<CniVersion> = SUPPORTED_VERSIONS
        .iter()
        .map(|v| v.parse().expect("supported versions parse"))
        .collect();
    let version = versions[usize::from(selector) % versions.len()];
    let Ok(result) = CniResult::from_slice(body, version) else {
        return;
    };
    for v in &versions {
        // An error here is a legitimate refusal (no IP for a 0.1.0/0.2.0 result).
        let Ok(printed) = result.to_value(*v) else {
            continue;
        };
        // The default version must not matter: the printed result names its own.
        let reparsed = CniResult::from_value(&printed, CniVersion::V0_1_0)
            .unwrap_or_else(|e| panic!("{v} result {printed} does not parse back: {e}"));
        assert_eq!(reparsed.cni_version, Some(*v), "{printed}");
        let again = reparsed
            .to_value(*v)
            .unwrap_or_else(|e| panic!("{v} result {printed} parsed back does not print: {e}"));
        assert_eq!(again, printed, "{v}: print ∘ parse changed the result");
    }
});
