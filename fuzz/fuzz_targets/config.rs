//! Any text as `klaxon.toml`: a list of errors naming keys, or a configuration — never a panic
//! (durations, rates, globs, routes, `${VAR}` expansion included).
#![no_main]

use std::collections::BTreeMap;

use klaxon_core::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: BTreeMap<String, String> =
        BTreeMap::from([("TOKEN".to_string(), "123456:ABCDEF".to_string())]);
    if let Err(e) = Config::load(Some(text), &env) {
        let _ = e.to_string();
    }
});
