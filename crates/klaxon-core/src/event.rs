//! Known event types (PRODUCT.md §3): their default severity and the built-in title and summary
//! line. Anything else gets the generic form, and every renderer shows all of `data` as fields.
//! (The templates issue replaces these with user-editable templates.)

use serde_json::{Map, Value};

use crate::model::Severity;
use crate::render::display_value;

pub fn default_severity(event_type: &str) -> Severity {
    match event_type {
        "risk.breach" => Severity::Critical,
        "order.error" => Severity::Error,
        "auth.failure" | "system.health" => Severity::Warning,
        _ => Severity::Info,
    }
}

/// Title and one-line message for an event.
pub fn summarise(event_type: &str, data: &Map<String, Value>) -> (String, String) {
    let s = |k: &str| data.get(k).filter(|v| !v.is_null()).map(display_value);
    let first = |keys: &[&str]| keys.iter().find_map(|k| s(k));
    let join =
        |parts: Vec<Option<String>>| parts.into_iter().flatten().collect::<Vec<_>>().join(" ");
    let at_price = || s("price").map(|p| format!("@ {p}"));
    let note = first(&[
        "message",
        "alert_message",
        "comment",
        "reason",
        "error",
        "description",
    ]);
    let title = match event_type {
        "signal.generated" => join(vec![s("action"), s("symbol"), at_price()]),
        "webhook.signal" => {
            let head = join(vec![s("action"), s("symbol"), at_price()]);
            match s("webhook_name") {
                Some(w) => format!("{w}: {head}"),
                None => head,
            }
        }
        "trade.executed" => format!(
            "Trade executed: {}",
            join(vec![
                first(&["side", "action"]),
                first(&["quantity", "qty"]),
                s("symbol"),
                at_price()
            ])
        ),
        "order.error" => format!(
            "Order error{}",
            s("symbol").map(|x| format!(": {x}")).unwrap_or_default()
        ),
        "risk.breach" => format!(
            "Risk breach{}",
            first(&["rule", "metric"])
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        ),
        "auth.failure" => "Authentication failure".to_string(),
        "system.health" => join(vec![
            Some("System health:".into()),
            s("component"),
            s("status"),
        ]),
        "price.alert" => format!("Price alert: {}", join(vec![s("symbol"), s("price")])),
        "tradingview.alert" => format!(
            "TradingView: {}",
            join(vec![s("action"), first(&["ticker", "symbol"]), at_price()])
        ),
        other => other.to_string(),
    };
    let title = if title.trim().is_empty() {
        event_type.to_string()
    } else {
        title.trim().to_string()
    };
    let message = note.unwrap_or_else(|| match s("strategy_name") {
        Some(st) => format!("Strategy {st}"),
        None => format!(
            "{event_type} from {}",
            s("source").unwrap_or_else(|| "event".into())
        ),
    });
    (title, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_and_generic() {
        let d = json!({"action": "SELL", "symbol": "ES", "price": 5012.25, "strategy_name": "x"});
        let (t, m) = summarise("signal.generated", d.as_object().unwrap());
        assert_eq!(
            (t.as_str(), m.as_str()),
            ("SELL ES @ 5,012.25", "Strategy x")
        );
        let d = json!({"foo": 1});
        assert_eq!(
            summarise("custom.thing", d.as_object().unwrap()).0,
            "custom.thing"
        );
        assert_eq!(default_severity("risk.breach"), Severity::Critical);
    }
}
