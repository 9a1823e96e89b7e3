//! The cache decoder and what DEL/CHECK/GC do with a decoded entry (parse each attachment's
//! config and result): never panics on a corrupt or hostile file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cni::{CniResult, NetworkConfig};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = plexus_engine::cache::decode_entry(Path::new("/fuzz/c1.json"), "c1", data) else {
        return;
    };
    for att in &entry.attachments {
        let Ok(config) = NetworkConfig::from_slice(att.config.as_bytes()) else {
            continue;
        };
        let Ok(version) = config.effective_version() else {
            continue;
        };
        if let Some(result) = &att.result {
            let _ = CniResult::from_value(result, version);
        }
        for i in 0..config.plugins.len() {
            let _ = config.plugin_stdin(i, version, att.result.as_ref(), Some(&att.runtime_config));
        }
    }
});
