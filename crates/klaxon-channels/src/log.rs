//! The built-in `log` channel: writes the rendered notification to the service log, so a
//! fresh start with no credentials shows the whole pipeline working.

use async_trait::async_trait;
use klaxon_core::limit::LimitKey;
use klaxon_core::render::{fields, style};
use klaxon_core::template::Markup;
use klaxon_core::{Notification, Secret};

use crate::{Channel, SendContext, SendReport, http};

pub struct Log {
    name: String,
    /// Templates for the title and body.
    words: crate::Words,
}

impl Log {
    pub fn new(name: &str) -> Self {
        Log {
            name: name.to_string(),
            words: crate::Words::defaults(name),
        }
    }

    /// Words messages with these templates (the built-in ones otherwise).
    pub fn words(mut self, words: crate::Words) -> Self {
        self.words = words;
        self
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
        let (content, note) = self.words.content(n, "log", Markup::Plain);
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
            content.title,
            content.body
        );
        SendReport::from(http::delivered(None)).also(note)
    }

    fn secrets(&self) -> Vec<&Secret> {
        Vec::new()
    }
}
