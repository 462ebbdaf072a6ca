//! Any text as a channel URL (config, `--to`, PATCH): an error message or a provider, never a
//! panic, and the error never repeats a secret-looking part of the input verbatim is checked by
//! the unit tests; here only robustness.
#![no_main]

use klaxon_core::channel_url::{ApiBases, Options, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = parse(text, &Options::default(), &ApiBases::default()) {
        let _ = klaxon_core::channel_url::describe(&p);
    }
});
