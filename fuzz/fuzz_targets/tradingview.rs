//! Any bytes as a TradingView alert body (JSON or plain text, whatever it claims to be).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = klaxon_core::hooks::tradingview(data);
});
