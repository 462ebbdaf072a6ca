//! The built-in `log` channel: writes the rendered notification to the service log, so a
//! fresh start with no credentials shows the whole pipeline working.

use async_trait::async_trait;
use klaxon_core::limit::LimitKey;
use klaxon_core::render::{fields, style, title};
use klaxon_core::{Notification, Secret};

use crate::{Channel, SendContext, SendReport, http};

pub struct Log {
    name: String,
}

impl Log {
    pub fn new(name: &str) -> Self {
        Log {
            name: name.to_string(),
        }
    }
}

#[async_trait]
impl Channel for Log {
    fn kind(&self) -> &'static str {
        "log"
    }

    fn limits(&self, _target: Option<&str>) -> Vec<LimitKey> {
        Vec::new()
    }

    async fn check(&self) -> crate::Health {
        crate::Health::ok("writes to the service log")
    }

    async fn send(&self, n: &Notification, cx: &SendContext) -> SendReport {
        let f: Vec<String> = fields(n)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        tracing::info!(
            target: "klaxon::channel::log",
            channel = %self.name,
            delivery = %cx.delivery_id,
            severity = %n.severity,
            fields = %f.join(" "),
            "{} {}: {}",
            style(n).emoji,
            title(n),
            n.message
        );
        http::delivered(None).into()
    }

    fn secrets(&self) -> Vec<&Secret> {
        Vec::new()
    }
}
