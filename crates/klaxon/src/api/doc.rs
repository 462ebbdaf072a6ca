//! The OpenAPI document (`GET /api/openapi.json`). Paths come from the handlers' own
//! `#[utoipa::path]` annotations, registered with the router by `utoipa_axum::routes!`, so a
//! route cannot exist without being described. The body types below describe the JSON the
//! handlers build; `tests/openapi.rs` checks real answers against them.

// The body types exist to be described (their fields are read by the `ToSchema` derive only).
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

use klaxon_core::input::{Envelope, NotificationRequest};
use klaxon_core::model::{Delivery, Notification, Severity};
use klaxon_store::DeliverySummary;
use serde_json::{Map, Value};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, Object, Ref, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

use crate::deliver::registry::ChannelView;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Klaxon",
        description = "Notifications for trading systems: notifications and events in; history, channels, dead letters, status and metrics out. Every `/api/v1` route takes `Authorization: Bearer <api_token>` when the server has one.",
    ),
    modifiers(&Bearer),
    // Referenced only from schemas that `views` derives.
    components(schemas(klaxon_core::model::Attempt)),
    tags(
        (name = "notifications", description = "Submit and look up notifications"),
        (name = "channels", description = "Channels: state, switches, mutes, test sends"),
        (name = "dead-letters", description = "Deliveries that ended dead, and their retry"),
        (name = "service", description = "Health, readiness, status, metrics, the live event stream"),
        (name = "dashboard", description = "The operator page and its files"),
        (name = "hooks", description = "Other systems' webhooks in: TradingView, Alertmanager"),
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The two views of a stored notification, derived from the model's schemas so they cannot
/// drift from it: the detail view's deliveries carry their attempts where the model has their
/// count, and the history list's attachments leave out `content_base64`. Run on the whole
/// document, once every route has registered its schemas.
pub fn views(doc: &mut utoipa::openapi::OpenApi) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let schemas = &mut components.schemas;
    derive(schemas, "Delivery", "DeliveryWithAttempts", |o| {
        let attempts = ArrayBuilder::new()
            .items(Ref::from_schema_name("Attempt"))
            .description(Some("Every attempt, oldest first"));
        o.properties.insert("attempts".into(), attempts.into());
    });
    derive(schemas, "Attachment", "AttachmentListed", |o| {
        o.properties.remove("content_base64");
        o.required.retain(|r| r != "content_base64");
    });
    derive(schemas, "Notification", "NotificationListed", |o| {
        let listed = ArrayBuilder::new().items(Ref::from_schema_name("AttachmentListed"));
        o.properties.insert("attachments".into(), listed.into());
    });
}

/// Schema `to` as a changed copy of schema `from` (both objects).
fn derive(
    schemas: &mut BTreeMap<String, RefOr<Schema>>,
    from: &str,
    to: &str,
    change: impl FnOnce(&mut Object),
) {
    if let Some(RefOr::T(Schema::Object(o))) = schemas.get(from) {
        let mut o = o.clone();
        change(&mut o);
        schemas.insert(to.into(), RefOr::T(Schema::Object(o)));
    }
}

/// A TradingView alert's text: anything but blank (a character that is neither white space as
/// Rust trims it nor a NUL, which is dropped).
#[derive(ToSchema)]
#[schema(
    pattern = "[^\\x00\\t-\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]"
)]
pub struct AlertText(pub String);

/// `{"error": {"code", "message", "field"}}`.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `invalid_field`, `unknown_field`, `not_found`, `store_unavailable`, …
    pub code: String,
    pub message: String,
    /// The field at fault (`severity`, `[3].title`), when there is one.
    pub field: Option<String>,
}

/// A notification accepted (`202`) or recognised by its idempotency key (`200`, `duplicate`).
#[derive(ToSchema)]
pub struct Accepted {
    pub id: Uuid,
    /// `accepted`; `duplicate` (a repeat of an idempotency key: nothing new stored);
    /// `suppressed` (stored, but its deliveries are `suppressed`: a repeat of a dedup key inside
    /// its window, or its source is switched off).
    pub status: String,
    /// The original notification this one repeats (dedup), when it is one.
    pub duplicate_of: Option<Uuid>,
    pub deliveries: Vec<DeliverySummary>,
}

/// A batch's outcome, one result per item in order: accepted ones like [`Accepted`] with their
/// `index`, rejected ones `{index, error}`.
#[derive(ToSchema)]
pub struct BatchResult {
    pub accepted: usize,
    pub rejected: usize,
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
}

/// `POST /api/v1/notifications/batch`: 1 to 1,000 notifications.
#[derive(ToSchema)]
#[schema(min_items = 1, max_items = 1000)]
pub struct NotificationBatch(pub Vec<NotificationRequest>);

/// `POST /api/v1/events`: one envelope, or an array of 1 to 1,000.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum EventsBody {
    One(Envelope),
    Many(EnvelopeBatch),
}

#[derive(ToSchema)]
#[schema(min_items = 1, max_items = 1000)]
pub struct EnvelopeBatch(pub Vec<Envelope>);

/// What `POST /api/v1/events` accepted: one envelope like a notification, an array like a
/// batch.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum EventsAccepted {
    One(Accepted),
    Many(BatchResult),
}

/// A rejected batch: the body as a whole (not JSON, not an array), or every item (per item).
#[derive(ToSchema)]
#[serde(untagged)]
pub enum BatchRejected {
    Body(ErrorBody),
    Items(BatchResult),
}

/// A delivery in the detail view: `attempts` is the list of attempts instead of their count.
/// (Its schema is [`Delivery`]'s with that one property changed, made by [`views`].)
#[derive(ToSchema)]
pub struct DeliveryWithAttempts;

/// A notification as the history list shows it: attachments without `content_base64`.
/// (Its schema is [`Notification`]'s with that one property changed, made by [`views`].)
#[derive(ToSchema)]
pub struct NotificationListed;

/// A notification as stored, with its deliveries and every attempt (the detail view).
#[derive(ToSchema)]
pub struct NotificationRecord {
    #[serde(flatten)]
    pub notification: Notification,
    pub deliveries: Vec<DeliveryWithAttempts>,
    /// The original this one repeats (dedup); its deliveries are `suppressed`.
    pub duplicate_of: Option<Uuid>,
    /// How many repeats of this notification were suppressed.
    pub repeats: u64,
}

/// A notification in the history list: deliveries with their attempt counts, attachments by
/// name.
#[derive(ToSchema)]
pub struct NotificationListItem {
    #[serde(flatten)]
    pub notification: NotificationListed,
    pub deliveries: Vec<Delivery>,
    pub duplicate_of: Option<Uuid>,
    pub repeats: u64,
}

#[derive(ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationListItem>,
    /// Pass as `cursor` for the next (older) page; `null` on the last.
    pub next_cursor: Option<Uuid>,
}

/// A channel with its queue: `backlog` (deliveries not final) and `dead`.
#[derive(ToSchema)]
pub struct ChannelEntry {
    #[serde(flatten)]
    pub view: ChannelView,
    pub backlog: i64,
    pub dead: i64,
}

#[derive(ToSchema)]
pub struct ChannelList {
    pub channels: Vec<ChannelEntry>,
}

/// What `PATCH /api/v1/channels/{name}` changes; absent fields stay as they are.
#[derive(ToSchema)]
pub struct ChannelPatch {
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
    /// Until then non-critical deliveries wait; `null` unmutes.
    pub muted_until: Option<DateTime<Utc>>,
}

#[derive(ToSchema)]
pub struct TestResult {
    /// `delivered`, `failed`, or `pending` when the provider had not answered in time.
    pub outcome: String,
    pub error: Option<String>,
    pub notification: NotificationRecord,
}

/// The notification a dead letter carried, in short.
#[derive(ToSchema)]
pub struct NotificationSummary {
    pub id: Uuid,
    pub title: Option<String>,
    pub message: String,
    pub severity: Severity,
    pub event_type: Option<String>,
    pub source: String,
    pub created_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct DeadLetter {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub notification: NotificationSummary,
}

#[derive(ToSchema)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetter>,
    pub next_cursor: Option<Uuid>,
}

/// An Alertmanager payload taken: one notification per alert.
#[derive(ToSchema)]
pub struct AlertsAccepted {
    /// `accepted`.
    pub status: String,
    pub notifications: Vec<Uuid>,
}

#[derive(ToSchema)]
pub struct Requeued {
    pub requeued: Vec<Uuid>,
}

#[derive(ToSchema)]
pub struct HealthBody {
    /// `ok`, `ready` or `not_ready`.
    pub status: String,
    /// The store's state, on `/ready`.
    pub store: Option<String>,
    /// The Redis subscriber, on `/ready` when `[redis]` is configured (not ready while off).
    pub redis: Option<crate::sources::SubscriberState>,
    /// The Redis Streams consumer, on `/ready` when `[redis] stream` is configured.
    pub redis_stream: Option<crate::sources::SubscriberState>,
}

#[derive(ToSchema)]
pub struct StoreState {
    pub kind: String,
    pub ok: bool,
}

#[derive(ToSchema)]
pub struct Status {
    pub version: String,
    pub uptime_secs: i64,
    pub store: StoreState,
    /// Deliveries per status.
    #[schema(value_type = Object)]
    pub queue: Map<String, Value>,
    pub in_flight: usize,
    pub channels: Vec<ChannelEntry>,
}
