//! A NAD's `spec.config` as the engine treats it: parsed, versioned, checked against the delegate
//! policy, and turned into each plugin's stdin. Never panics; the meta-plugin rule holds for any
//! config that names `plexus` as a plugin type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cni::NetworkConfig;
use plexus_engine::policy::{self, DelegatePolicy};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(mut c) = NetworkConfig::from_slice(data) else {
        return;
    };
    c.set_name_if_missing("nad");
    let verdict = policy::check(&DelegatePolicy::default(), &c, true, Some("plexus"));
    if c.plugin_types().iter().any(|t| policy::is_meta(t, None)) {
        assert!(verdict.is_err(), "a meta plugin passed the policy");
    }
    let Ok(version) = c.effective_version() else {
        return;
    };
    let runtime = Map::new();
    let prev = Value::Object(Map::new());
    for i in 0..c.plugins.len() {
        let _ = c.plugin_stdin(i, version, Some(&prev), Some(&runtime));
    }
    let _ = c.capabilities();
    let _ = c.to_value();
});
