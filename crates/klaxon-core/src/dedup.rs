//! Dedup decisions (PRODUCT.md §5, §7): which key and window a notification is deduplicated
//! on. Decided once, when the notification is planned, and stored with it; the store then
//! settles "is this a repeat?" atomically inside the insert transaction.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::model::Notification;

/// The window for a notification that gives a `dedup_key` but no window, and matched no route
/// with one: a key alone means "suppress repeats", so it must mean something.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// Prefix of keys Klaxon derives, so they cannot be mistaken for (or collide with) a sender's.
pub const AUTO_PREFIX: &str = "auto:";

#[derive(Debug, Clone, PartialEq)]
pub struct Dedup {
    pub key: String,
    /// A notification with the same key created less than this long before makes this one a
    /// repeat.
    pub window: Duration,
}

/// The effective key and window: the notification's own win; else the largest window among
/// the routes it matched (`route_windows`) with the derived key. A window of zero turns dedup
/// off for this notification.
pub fn effective(n: &Notification, route_windows: impl Iterator<Item = Duration>) -> Option<Dedup> {
    let window = match n.dedup_window_secs {
        Some(s) => Duration::from_secs(s),
        None => match route_windows.max() {
            Some(w) => w,
            None if n.dedup_key.is_some() => DEFAULT_WINDOW,
            None => return None,
        },
    };
    if window.is_zero() {
        return None;
    }
    let key = n.dedup_key.clone().unwrap_or_else(|| default_key(n));
    Some(Dedup { key, window })
}

/// A hash of what makes two notifications "the same alert": event type, source, the title as
/// rendered, the message and the data. Ids, times, tags and channels are left out: a repeat
/// differs in those.
pub fn default_key(n: &Notification) -> String {
    let mut h = Sha256::new();
    for part in [
        n.event_type.as_deref().unwrap_or(""),
        &n.source,
        &crate::render::title(n),
        &n.message,
    ] {
        h.update(part.as_bytes());
        // A separator no field can forge, so ("ab", "c") and ("a", "bc") differ.
        h.update([0x1f]);
    }
    h.update(
        serde_json::Value::Object(n.data.clone())
            .to_string()
            .as_bytes(),
    );
    let digest = h.finalize();
    let mut key = String::with_capacity(AUTO_PREFIX.len() + 32);
    key.push_str(AUTO_PREFIX);
    // 128 bits: collisions are out of reach, and the key stays short in indexes.
    for b in &digest[..16] {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn own_key_and_window_win() {
        let n = Notification::new("m").dedup_key("k").dedup_window(secs(30));
        let d = effective(&n, [secs(600)].into_iter()).unwrap();
        assert_eq!((d.key.as_str(), d.window), ("k", secs(30)));
    }

    #[test]
    fn table() {
        let base = Notification::new("m").event_type("signal.generated");
        let with = |key: Option<&str>, win: Option<u64>| {
            let mut n = base.clone();
            n.dedup_key = key.map(String::from);
            n.dedup_window_secs = win;
            n
        };
        let auto = default_key(&base);
        // (notification, route windows, expected key and window)
        type Row<'a> = (Notification, Vec<u64>, Option<(&'a str, u64)>);
        let rows: Vec<Row> = vec![
            (with(None, None), vec![], None),
            (with(None, None), vec![60, 300], Some((&auto, 300))),
            (with(Some("k"), None), vec![], Some(("k", 300))),
            (with(Some("k"), None), vec![60], Some(("k", 60))),
            (with(None, Some(10)), vec![], Some((&auto, 10))),
            (with(None, Some(0)), vec![300], None),
            (with(Some("k"), Some(0)), vec![], None),
        ];
        for (i, (n, routes, want)) in rows.into_iter().enumerate() {
            let got = effective(&n, routes.into_iter().map(secs));
            let got = got.as_ref().map(|d| (d.key.as_str(), d.window.as_secs()));
            assert_eq!(got, want, "row {i}");
        }
    }

    #[test]
    fn default_key_sees_content_not_identity() {
        let a = Notification::new("m").event_type("x").data("symbol", "MNQ");
        let b = Notification::new("m").event_type("x").data("symbol", "MNQ");
        assert_ne!(a.id, b.id);
        assert_eq!(default_key(&a), default_key(&b));
        assert!(default_key(&a).starts_with(AUTO_PREFIX));
        for other in [
            a.clone().data("symbol", "ES"),
            a.clone().source("other"),
            a.clone().title("t"),
            a.clone().event_type("y"),
            Notification::new("m2")
                .event_type("x")
                .data("symbol", "MNQ"),
        ] {
            assert_ne!(default_key(&a), default_key(&other));
        }
    }
}
