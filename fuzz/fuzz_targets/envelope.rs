//! Any bytes as a request body of `POST /api/v1/events` or `/notifications`: parsing either
//! fails with an error naming a field, or yields a notification every renderer can render.
#![no_main]

use klaxon_core::input::{Envelope, NotificationRequest, from_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(env) = from_json::<Envelope>(value.clone(), "") {
        if let Ok(n) = env.into_notification("fuzz", "") {
            klaxon_fuzz_render(&n);
        }
    }
    if let Ok(req) = from_json::<NotificationRequest>(value, "") {
        if let Ok(n) = req.into_notification("fuzz", "") {
            klaxon_fuzz_render(&n);
        }
    }
});

fn klaxon_fuzz_render(n: &klaxon_core::model::Notification) {
    use klaxon_core::render;
    let _ = render::title(n);
    let _ = render::fields(n);
    let _ = render::style(n);
}
