//! Fallback chains (PRODUCT.md §7): which channel a failed delivery's notification goes to
//! next. Pure, so every chain is a table test; the engine does the reading and writing.
//!
//! The list that counts is the *first* channel's: `telegram.fallback = ["email", "sms"]` means
//! Telegram → email → SMS, whatever email's own list says. A channel that already carries the
//! notification (routed there too, or another chat of the same Telegram channel fell back
//! first) covers it: nothing new is sent. One that already failed it is skipped.

use klaxon_core::model::{Delivery, DeliveryStatus};

/// Where the chain goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send to this channel.
    New(String),
    /// This channel already has the notification, delivered or on its way.
    Covered(String),
}

/// The next channel for `failed`'s notification, if any. `siblings` are all deliveries of the
/// notification (including `failed`); `list` gives a channel's configured fallback list and
/// `usable` says whether a channel can send at all (configured and enabled).
pub fn next_channel<'a>(
    failed: &Delivery,
    siblings: &[Delivery],
    list: impl Fn(&str) -> &'a [String],
    usable: impl Fn(&str) -> bool,
) -> Option<Next> {
    // Walk back to the delivery that started the chain. Bounded: ids cannot repeat in a real
    // chain, but a corrupt row must not loop forever.
    let mut root = failed;
    for _ in 0..siblings.len() {
        let Some(parent) = root
            .fallback_of
            .and_then(|p| siblings.iter().find(|s| s.id == p))
        else {
            break;
        };
        root = parent;
    }
    let chain = list(&root.channel);
    let start = if root.id == failed.id {
        0
    } else {
        chain
            .iter()
            .position(|c| *c == failed.channel)
            .map_or(0, |i| i + 1)
    };
    for c in &chain[start..] {
        if !usable(c) {
            continue;
        }
        let mut there = siblings
            .iter()
            .filter(|s| s.channel == *c && s.id != failed.id);
        let failed_there =
            |s: &&Delivery| matches!(s.status, DeliveryStatus::Dead | DeliveryStatus::Expired);
        match there.next() {
            None => return Some(Next::New(c.clone())),
            Some(first) => {
                if !failed_there(&first) || there.any(|s| !failed_there(&s)) {
                    return Some(Next::Covered(c.clone()));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::Utc;
    use klaxon_core::model::{DeliveryStatus, new_id};
    use uuid::Uuid;

    use super::*;

    fn d(channel: &str, fallback_of: Option<Uuid>) -> Delivery {
        let now = Utc::now();
        Delivery {
            id: new_id(),
            notification_id: Uuid::nil(),
            channel: channel.into(),
            target: None,
            status: DeliveryStatus::Dead,
            attempts: 1,
            throttled: 0,
            not_before: now,
            last_error: None,
            provider_id: None,
            created_at: now,
            updated_at: now,
            delivered_at: None,
            fallback_of,
            fell_back_to: None,
            aggregated_into: None,
            budget_from: 0,
        }
    }

    fn lists() -> HashMap<&'static str, Vec<String>> {
        HashMap::from([
            ("telegram", vec!["email".to_string(), "sms".to_string()]),
            ("email", vec!["discord".to_string()]),
            ("discord", vec![]),
            ("sms", vec![]),
        ])
    }

    fn next(failed: &Delivery, siblings: &[Delivery], down: &[&str]) -> Option<String> {
        match next_full(failed, siblings, down)? {
            Next::New(c) => Some(c),
            Next::Covered(c) => Some(format!("covered:{c}")),
        }
    }

    fn next_full(failed: &Delivery, siblings: &[Delivery], down: &[&str]) -> Option<Next> {
        let l = lists();
        let empty: &[String] = &[];
        next_channel(
            failed,
            siblings,
            |c| l.get(c).map_or(empty, |v| v.as_slice()),
            |c| l.contains_key(c) && !down.contains(&c),
        )
    }

    #[test]
    fn the_first_channels_list_is_the_chain() {
        let tg = d("telegram", None);
        assert_eq!(
            next(&tg, std::slice::from_ref(&tg), &[]).as_deref(),
            Some("email")
        );
        // email failed in turn: the chain goes on to SMS, not to email's own list.
        let email = d("email", Some(tg.id));
        let all = [tg.clone(), email.clone()];
        assert_eq!(next(&email, &all, &[]).as_deref(), Some("sms"));
        let sms = d("sms", Some(email.id));
        let all = [tg.clone(), email, sms.clone()];
        assert_eq!(next(&sms, &all, &[]), None, "the chain is over");
    }

    #[test]
    fn channels_that_have_it_or_cannot_send_are_skipped() {
        let tg = d("telegram", None);
        let routed_email = d("email", None);
        assert_eq!(
            next(&tg, &[tg.clone(), routed_email.clone()], &[]).as_deref(),
            Some("sms"),
            "email already carries this notification"
        );
        assert_eq!(
            next(&tg, std::slice::from_ref(&tg), &["email"]).as_deref(),
            Some("sms")
        );
        assert_eq!(
            next(&tg, std::slice::from_ref(&tg), &["email", "sms"]),
            None
        );
        // Email as a primary has its own list.
        assert_eq!(
            next(&routed_email, std::slice::from_ref(&routed_email), &[]).as_deref(),
            Some("discord")
        );
    }

    #[test]
    fn a_channel_that_carries_it_already_covers_it() {
        // Two chats of one Telegram channel fail: the first hands over to email, the second
        // finds email on its way and sends nothing more.
        let chat1 = d("telegram", None);
        let chat2 = d("telegram", None);
        let mut email = d("email", Some(chat1.id));
        email.status = DeliveryStatus::Pending;
        let all = [chat1, chat2.clone(), email];
        assert_eq!(next(&chat2, &all, &[]).as_deref(), Some("covered:email"));
    }

    #[test]
    fn a_channel_without_a_list_has_no_fallback() {
        let x = d("discord", None);
        assert_eq!(next(&x, std::slice::from_ref(&x), &[]), None);
        let unknown = d("gone", None);
        assert_eq!(next(&unknown, std::slice::from_ref(&unknown), &[]), None);
    }
}
