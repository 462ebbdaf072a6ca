//! Inputs from other systems' webhooks, turned into notifications: TradingView alerts
//! (PROVIDERS.md §6) and Prometheus Alertmanager (§7). Pure: the HTTP layer authenticates and
//! hands the body over.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::input::InputError;
use crate::model::{Notification, Severity};

/// TradingView's documented webhook source addresses (the `"tradingview"` preset).
pub const TRADINGVIEW_IPS: [&str; 4] = [
    "52.89.214.238",
    "34.212.75.30",
    "54.218.53.128",
    "52.32.178.7",
];

/// The longest text kept from a plain-text alert.
const TEXT_MAX: usize = 4000;

/// A TradingView alert body — JSON or plain text, whatever the `Content-Type` says (an empty
/// numeric placeholder makes otherwise-JSON text invalid; it is then kept as text) — as a
/// `tradingview.alert` notification with `ticker`, `action`, `price`, `position` and `message`
/// normalised from TradingView's placeholder names.
pub fn tradingview(body: &[u8]) -> Result<Notification, InputError> {
    // A NUL means nothing in an alert, and no store can keep one in a title or message: it is
    // dropped (TradingView does not resend a refused alert), here and in the text made below.
    let text = String::from_utf8_lossy(body).replace('\0', "");
    let text = text.trim();
    if text.is_empty() {
        return Err(InputError::new(
            "body",
            "invalid_field",
            "the alert message is empty: put text or JSON in the TradingView alert's Message",
        ));
    }
    let mut data = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o,
        _ => {
            let mut o = Map::new();
            o.insert(
                "message".into(),
                Value::String(crate::render::truncate_chars(text, TEXT_MAX)),
            );
            o
        }
    };
    normalise(&mut data, "ticker", &["symbol", "tickerid"]);
    normalise(
        &mut data,
        "action",
        &["strategy.order.action", "side", "order_action"],
    );
    normalise(
        &mut data,
        "price",
        &["strategy.order.price", "close", "order_price"],
    );
    normalise(
        &mut data,
        "position",
        &[
            "strategy.market_position",
            "market_position",
            "position_size",
        ],
    );
    normalise(
        &mut data,
        "message",
        &["strategy.order.alert_message", "alert_message", "comment"],
    );
    if let Some(Value::String(a)) = data.get_mut("action") {
        *a = a.trim().to_ascii_uppercase();
    }
    // Numbers arrive as strings from placeholders inside quotes: show them as numbers.
    if let Some(Value::String(p)) = data.get("price")
        && let Ok(f) = p.trim().parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        data.insert("price".into(), Value::Number(n));
    }
    let severity = data
        .get("severity")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Severity>().ok())
        .unwrap_or(Severity::Info);
    let (title, message) = crate::event::summarise("tradingview.alert", &data);
    let mut n = Notification::new(message.replace('\0', ""))
        .title(title.replace('\0', ""))
        .severity(severity)
        .source("tradingview")
        .event_type("tradingview.alert");
    n.priority = severity.default_priority();
    n.data = data;
    Ok(n)
}

/// Copies the first present alias into `key` when `key` itself is absent.
fn normalise(data: &mut Map<String, Value>, key: &str, aliases: &[&str]) {
    if data.get(key).is_some_and(|v| !v.is_null()) {
        return;
    }
    if let Some(v) = aliases
        .iter()
        .find_map(|a| data.get(*a).filter(|v| !v.is_null()).cloned())
    {
        data.insert(key.into(), v);
    }
}

/// Alertmanager's webhook payload, version 4. Fields Klaxon does not read are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AlertmanagerPayload {
    /// `"4"`, the only version there is.
    #[schema(pattern = "^4$")]
    pub version: String,
    #[serde(default)]
    pub receiver: String,
    pub alerts: Vec<AmAlert>,
    #[serde(default, rename = "externalURL")]
    pub external_url: Option<String>,
    #[serde(default, rename = "groupKey")]
    pub group_key: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AmAlert {
    /// `firing` or `resolved`.
    #[schema(pattern = "^(firing|resolved)$")]
    pub status: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub labels: Map<String, Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub annotations: Map<String, Value>,
    #[serde(default, rename = "startsAt")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "endsAt")]
    pub ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// One notification per alert: firing ones at the severity their `severity` label names
/// (default warning), resolved ones as info; labels and annotations become fields.
pub fn alertmanager(payload: AlertmanagerPayload) -> Result<Vec<Notification>, InputError> {
    if payload.version != "4" {
        return Err(InputError::new(
            "version",
            "invalid_field",
            format!(
                "Alertmanager webhook version `{}` is not supported (expected \"4\")",
                payload.version
            ),
        ));
    }
    let mut out = Vec::with_capacity(payload.alerts.len());
    for (i, a) in payload.alerts.into_iter().enumerate() {
        let firing = match a.status.as_str() {
            "firing" => true,
            "resolved" => false,
            other => {
                return Err(InputError::new(
                    format!("alerts[{i}].status"),
                    "invalid_field",
                    format!("`{other}` is not firing or resolved"),
                ));
            }
        };
        let label = |k: &str| a.labels.get(k).and_then(Value::as_str).map(str::to_string);
        let note = |k: &str| {
            a.annotations
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let name = label("alertname").unwrap_or_else(|| "alert".into());
        let severity = if !firing {
            Severity::Info
        } else {
            match label("severity")
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("critical" | "page" | "emergency" | "fatal") => Severity::Critical,
                Some("error" | "high" | "major") => Severity::Error,
                Some("info" | "informational" | "low" | "none") => Severity::Info,
                _ => Severity::Warning,
            }
        };
        let title = format!(
            "[{}] {name}{}",
            if firing { "FIRING" } else { "RESOLVED" },
            label("instance")
                .map(|i| format!(" on {i}"))
                .unwrap_or_default()
        );
        let message = note("summary")
            .or_else(|| note("description"))
            .or_else(|| note("message"))
            .unwrap_or_else(|| name.clone());
        let mut data = Map::new();
        for (k, v) in a.labels.iter().chain(a.annotations.iter()) {
            data.insert(k.clone(), v.clone());
        }
        data.insert("status".into(), Value::String(a.status.clone()));
        if let Some(u) = &a.generator_url {
            data.insert("generator_url".into(), Value::String(u.clone()));
        }
        if let Some(f) = &a.fingerprint {
            data.insert("fingerprint".into(), Value::String(f.clone()));
        }
        if !payload.receiver.is_empty() {
            data.insert("receiver".into(), Value::String(payload.receiver.clone()));
        }
        // As for TradingView: a NUL in a label means nothing, and cannot be stored in a title
        // or message; Alertmanager does not resend a refused alert.
        let mut n = Notification::new(message.replace('\0', ""))
            .title(title.replace('\0', ""))
            .severity(severity)
            .source("alertmanager")
            .event_type("alertmanager.alert");
        n.priority = severity.default_priority();
        n.tags = vec!["alertmanager".into(), name];
        n.data = data;
        out.push(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_nul_in_an_alert_is_dropped_not_refused() {
        // The exact body schemathesis sent (a NUL amid bytes that are not UTF-8).
        let n = tradingview(b"\xf2\xb6\xa5\x84a\xc3\xab@\t\xc3\xafh\xc2\xb3?\xc2\x85\x00\xc2\x89|")
            .unwrap();
        assert!(!n.message.contains('\0'), "{:?}", n.message);
        let n = tradingview(br#"{"ticker": "NQ\u0000", "action": "buy"}"#).unwrap();
        assert!(!n.title.as_deref().unwrap_or_default().contains('\0'));
        assert!(crate::input::check_nul(&n, "").is_ok());
        assert!(
            tradingview(b"\0 \0").is_err(),
            "nothing but NULs is an empty alert"
        );
        let am: AlertmanagerPayload = serde_json::from_value(json!({"version": "4", "alerts": [
            {"status": "firing", "labels": {"alertname": "a\0"}, "annotations": {"summary": "s\0"}}
        ]}))
        .unwrap();
        let n = alertmanager(am).unwrap().remove(0);
        assert!(crate::input::check_nul(&n, "").is_ok(), "{n:?}");
    }

    #[test]
    fn tradingview_json_text_and_placeholders() {
        let n = tradingview(
            br#"{"ticker": "NQ1!", "strategy.order.action": "buy", "close": "21340.25", "strategy.market_position": "long", "comment": "breakout"}"#,
        )
        .unwrap();
        assert_eq!(n.event_type.as_deref(), Some("tradingview.alert"));
        assert_eq!(n.source, "tradingview");
        assert_eq!(n.data["action"], "BUY");
        assert_eq!(n.data["price"], json!(21340.25));
        assert_eq!(n.data["position"], "long");
        assert_eq!(
            n.title.as_deref(),
            Some("TradingView: BUY NQ1! @ 21,340.25")
        );
        assert_eq!(n.message, "breakout");

        // An empty numeric placeholder breaks the JSON: kept as text, not refused.
        let n = tradingview(br#"{"ticker": "ES1!", "price": }"#).unwrap();
        assert_eq!(n.message, r#"{"ticker": "ES1!", "price": }"#);
        let n = tradingview(b"  ES crossed VWAP  ").unwrap();
        assert_eq!(n.message, "ES crossed VWAP");
        assert!(tradingview(b"   ").unwrap_err().field == "body");
        let n = tradingview(br#"{"message": "x", "severity": "critical"}"#).unwrap();
        assert_eq!(n.severity, Severity::Critical);
    }

    #[test]
    fn alertmanager_v4() {
        let p: AlertmanagerPayload = serde_json::from_value(json!({
            "version": "4", "receiver": "klaxon", "status": "firing",
            "alerts": [
                {"status": "firing", "labels": {"alertname": "BotDown", "severity": "critical", "instance": "bot-1"},
                 "annotations": {"summary": "Trading bot bot-1 is down"}, "startsAt": "2026-12-01T10:00:00Z",
                 "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph", "fingerprint": "abc"},
                {"status": "resolved", "labels": {"alertname": "HighLatency"}, "annotations": {}}
            ],
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "groupKey": "{}:{}", "truncatedAlerts": 0
        }))
        .unwrap();
        let ns = alertmanager(p).unwrap();
        assert_eq!(ns.len(), 2);
        assert_eq!(ns[0].title.as_deref(), Some("[FIRING] BotDown on bot-1"));
        assert_eq!(ns[0].severity, Severity::Critical);
        assert_eq!(ns[0].message, "Trading bot bot-1 is down");
        assert_eq!(ns[0].data["fingerprint"], "abc");
        assert_eq!(ns[1].title.as_deref(), Some("[RESOLVED] HighLatency"));
        assert_eq!(ns[1].severity, Severity::Info);
        let bad: AlertmanagerPayload =
            serde_json::from_value(json!({"version": "3", "alerts": []})).unwrap();
        assert_eq!(alertmanager(bad).unwrap_err().field, "version");
    }
}
