//! The body a `json://` / `jsons://` webhook receives (PRODUCT.md §7a), and Standard Webhooks
//! signing (PROVIDERS.md §5).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use super::{Content, Markup};
use crate::model::Notification;
use crate::secret::Secret;

pub fn body(n: &Notification, delivery_id: Uuid, attempt: u32) -> Value {
    body_content(n, &Content::plain(n, Markup::Plain), delivery_id, attempt)
}

/// The body with a template's title and message (plain text); the notification's own unless
/// the user configured a webhook template.
pub fn body_content(n: &Notification, content: &Content, delivery_id: Uuid, attempt: u32) -> Value {
    json!({
        "version": "1.0",
        "id": n.id,
        "delivery_id": delivery_id,
        "type": n.severity.as_str(),
        "severity": n.severity.as_str(),
        "priority": n.priority.as_str(),
        "title": content.title,
        "message": content.body,
        "event_type": n.event_type,
        "source": n.source,
        "user_id": n.user_id,
        "tags": n.tags,
        "data": n.data,
        "created_at": n.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "attempt": attempt,
    })
}

/// A `whsec_…` secret decoded to its key bytes; rejected when not base64 or under 24 bytes
/// (the spec's minimum), so a typo shows at start-up, not as signatures receivers refuse.
pub fn decode_secret(secret: &Secret) -> Result<Vec<u8>, String> {
    let raw = secret
        .expose()
        .strip_prefix("whsec_")
        .ok_or("must start with `whsec_`")?;
    let key = STANDARD
        .decode(raw)
        .map_err(|_| "the part after `whsec_` is not valid base64".to_string())?;
    if key.len() < 24 {
        return Err(format!(
            "key is {} bytes; Standard Webhooks needs at least 24",
            key.len()
        ));
    }
    Ok(key)
}

/// The `webhook-signature` header value: `v1,<base64 HMAC-SHA256("{id}.{ts}.{body}")>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_keeps_apprise_fields() {
        let n = Notification::new("Drawdown 5.2% > 5%").title("Risk breach");
        let d = crate::model::new_id();
        let b = body(&n, d, 2);
        for k in ["version", "title", "message", "type"] {
            assert!(b.get(k).is_some(), "{k}");
        }
        assert_eq!(b["delivery_id"], json!(d));
        assert_eq!(b["attempt"], json!(2));
    }

    #[test]
    fn signature_matches_spec_example() {
        // The example from the Standard Webhooks specification.
        let key = decode_secret(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn short_or_bad_secrets_rejected() {
        assert!(decode_secret(&Secret::new("nope")).is_err());
        assert!(decode_secret(&Secret::new("whsec_!!!")).is_err());
        assert!(decode_secret(&Secret::new("whsec_c2hvcnQ=")).is_err());
    }
}
