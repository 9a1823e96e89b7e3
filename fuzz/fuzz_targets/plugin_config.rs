//! The plexus config loader (the runtime's stdin): never panics, whatever the keys hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_engine::PlexusConfig;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    if let Ok(c) = PlexusConfig::from_map(&m) {
        assert!(c.api_timeout_secs >= 1 && c.api_timeout_secs <= 600);
        assert!(c.max_networks_per_pod >= 1);
        let _ = c.isolation_allows("a", "b");
    }
});
