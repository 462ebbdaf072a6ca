//! `GET /api/v1/events/stream`: the live event bus as server-sent events, for the dashboard.
//!
//! Each event's `event:` is its kind (`delivery`, `channel`, `accepted`) and its `data:` the
//! JSON of [`crate::events::Event`]. A client that falls more than [`crate::events::CAPACITY`]
//! events behind gets `event: lagged` with `{"missed": n}` and goes on from the newest: the
//! engine never waits for a reader. Comments keep idle connections (and proxies) alive.
//!
//! The route sits behind the same bearer-token check as the rest of `/api/`: the dashboard reads
//! it with `fetch` (which can send the header) rather than `EventSource` (which cannot), so the
//! token never goes into a URL or an access log.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use futures_util::StreamExt;

use crate::app::Shared;
use crate::events::Events;

/// How often an idle stream sends a comment, well under common proxy idle timeouts.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[utoipa::path(get, path = "/api/v1/events/stream", tag = "service",
    responses((status = 200, description = "Server-sent events: `hello`, then `delivery` (each attempt's outcome), `channel` (a channel's new state), `accepted`, and `lagged` when this reader fell behind", content_type = "text/event-stream"),
        (status = 401, description = "Missing or wrong token", body = super::doc::ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(s): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    Sse::new(stream(&s.events)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// A `hello` (so a client knows it is subscribed before anything happens), then every event
/// published from now on, until the bus closes.
fn stream(events: &Events) -> impl Stream<Item = Result<SseEvent, Infallible>> + use<> {
    let rx = events.subscribe();
    let closing = events.closing();
    let hello = futures_util::stream::once(async {
        Ok(SseEvent::default().event("hello").data(concat!(
            r#"{"version":""#,
            env!("CARGO_PKG_VERSION"),
            r#""}"#
        )))
    });
    let live = futures_util::stream::unfold((rx, closing), |(mut rx, closing)| async move {
        let next = tokio::select! {
            _ = closing.cancelled() => return None,
            r = rx.recv() => r,
        };
        let ev = match next {
            Ok(e) => SseEvent::default()
                .event(e.name())
                .json_data(&e)
                .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event")),
            Err(RecvError::Lagged(n)) => SseEvent::default()
                .event("lagged")
                .data(format!(r#"{{"missed":{n}}}"#)),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(ev), (rx, closing)))
    });
    hello.chain(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{AcceptedEvent, CAPACITY, Event};
    use axum::response::IntoResponse;

    fn accepted() -> Event {
        Event::Accepted(AcceptedEvent {
            notification_id: uuid::Uuid::nil(),
            deliveries: 1,
            at: chrono::Utc::now(),
        })
    }

    /// The wire form of the next `n` events.
    async fn wire(s: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> String {
        let body = Sse::new(s).into_response().into_body();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_told_how_much_it_missed_and_goes_on() {
        let bus = Events::new();
        let s = stream(&bus);
        // Publishing never waits for the reader: far more than the bus keeps, at once.
        for _ in 0..CAPACITY + 10 {
            bus.publish(accepted());
        }
        let text = wire(s.take(3)).await;
        let events: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(events, ["hello", "lagged", "accepted"], "{text}");
        assert!(text.contains(r#"data: {"missed":10}"#), "{text}");
    }

    #[tokio::test]
    async fn closing_the_bus_ends_the_stream() {
        let bus = Events::new();
        let s = stream(&bus);
        bus.close();
        let text = wire(s).await;
        assert!(text.starts_with("event: hello"), "{text}");
        assert_eq!(text.matches("event:").count(), 1, "{text}");
    }
}
