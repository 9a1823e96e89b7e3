//! The `k8s.v1.cni.cncf.io/networks` (and `default-network`) annotation parser: never panics, and
//! whatever it accepts in the short form prints back to text that parses to the same elements.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_netattach::parse_networks;
use plexus_netattach::selection::to_short_form;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(elements) = parse_networks(text, "pod-ns") else {
        return;
    };
    if let Some(printed) = to_short_form(&elements) {
        let again = parse_networks(&printed, "pod-ns").expect("printed short form parses");
        assert_eq!(again, elements, "parse(print(x)) != x for {printed:?}");
    }
    // The JSON form round-trips through serde too.
    let json = serde_json::to_string(&elements).expect("elements serialize");
    let again = parse_networks(&json, "pod-ns").expect("printed JSON form parses");
    assert_eq!(again, elements, "JSON round trip of {json}");
});
