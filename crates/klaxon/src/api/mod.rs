//! The HTTP API (PRODUCT.md §4): notifications and events in; history, status, health and
//! metrics out. Handlers parse and validate at the edge and hand typed values to `ingest`.

mod dashboard;
mod doc;
mod error;
mod hooks;
mod stream;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use klaxon_core::input::{Envelope, InputError, NotificationRequest, from_json};
use klaxon_core::model::{DeliveryStatus, Notification, Severity};
use klaxon_store::{DepthScope, Inserted, ListFilter, NotificationRecord};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub use self::error::ApiError;
use crate::app::Shared;

/// Most items in one batch (PRODUCT.md §4).
pub const BATCH_MAX: usize = 1000;

/// The API routes, each registered together with its OpenAPI description: `protected` take
/// the bearer token, `public` do not.
fn routes() -> (OpenApiRouter<Arc<Shared>>, OpenApiRouter<Arc<Shared>>) {
    let protected = OpenApiRouter::new()
        .routes(routes!(post_notification, list_notifications))
        .routes(routes!(post_batch))
        .routes(routes!(get_notification))
        .routes(routes!(post_events))
        .routes(routes!(list_channels))
        .routes(routes!(get_channel, patch_channel))
        .routes(routes!(test_channel))
        .routes(routes!(list_dead_letters))
        .routes(routes!(retry_all_dead))
        .routes(routes!(retry_dead))
        .routes(routes!(stream::events))
        .routes(routes!(hooks::alertmanager));
    let public = OpenApiRouter::with_openapi(doc::ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(status))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(hooks::tradingview))
        .routes(routes!(dashboard::index))
        .routes(routes!(dashboard::app_js))
        .routes(routes!(dashboard::app_css));
    (protected, public)
}

/// The whole API description, as served at `/api/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (protected, public) = routes();
    let mut doc = public.merge(protected).into_openapi();
    doc::views(&mut doc);
    doc
}

pub fn router(shared: Arc<Shared>) -> Router {
    let (protected, public) = routes();
    let protected = protected.route_layer(middleware::from_fn_with_state(
        shared.clone(),
        require_token,
    ));
    let (router, _) = public.merge(protected).split_for_parts();
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(shared.config.server.body_limit))
        .with_state(shared)
}

/// What a worker replica serves (`serve --role worker`): liveness, readiness and metrics for
/// its orchestrator and Prometheus, and no API.
pub fn probe_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", axum::routing::get(health))
        .route("/ready", axum::routing::get(ready))
        .route("/metrics", axum::routing::get(metrics))
        .fallback(not_found)
        .with_state(shared)
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "service",
    responses((status = 200, description = "This document (OpenAPI 3.1)")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see PRODUCT.md §4 for the API")
}

/// Bearer-token check for `/api/`, in constant time.
async fn require_token(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.config.server.api_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong `Authorization: Bearer` token",
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body as JSON, with errors a person can act on (413 over the limit, 400 with position).
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|r| {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "payload_too_large",
                "the request body is over the configured limit (server.body_limit)",
            )
        } else {
            ApiError::new(status, "bad_body", r.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })
}

fn accepted(r: &Inserted) -> Value {
    let all_suppressed = !r.deliveries.is_empty()
        && r.deliveries
            .iter()
            .all(|d| d.status == klaxon_core::model::DeliveryStatus::Suppressed);
    let status = if r.duplicate {
        "duplicate"
    } else if r.duplicate_of.is_some() || all_suppressed {
        "suppressed"
    } else {
        "accepted"
    };
    json!({
        "id": r.notification_id,
        "status": status,
        "duplicate_of": r.duplicate_of,
        "deliveries": r.deliveries,
    })
}

#[utoipa::path(post, path = "/api/v1/notifications", tag = "notifications",
    request_body = klaxon_core::input::NotificationRequest,
    responses((status = 202, description = "Committed to the store", body = doc::Accepted),
        (status = 200, description = "A repeat of an idempotency key: the first notification", body = doc::Accepted),
        (status = 400, description = "Invalid input; `error.field` names it", body = doc::ErrorBody), (status = 401, description = "Missing or wrong token", body = doc::ErrorBody), (status = 413, description = "Body over `server.body_limit`", body = doc::ErrorBody),
        (status = 422, description = "Names a channel that does not exist", body = doc::ErrorBody),
        (status = 503, description = "The store cannot accept writes; nothing was accepted", body = doc::ErrorBody)),
    security(("bearer" = [])))]
async fn post_notification(
    State(s): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let v = json_body(body)?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "expected a JSON object (for many, use /api/v1/notifications/batch)",
        ));
    }
    let n = from_json::<NotificationRequest>(v, "")?.into_notification("api", "")?;
    let r = s.ingest.submit(n).await?;
    let code = if r.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(accepted(&r))).into_response())
}

/// Validates each item, commits the valid ones in one transaction, answers per item.
async fn accept_many(
    s: &Shared,
    items: Vec<Result<Notification, InputError>>,
) -> Result<Response, ApiError> {
    let mut planned = Vec::new();
    let mut results: Vec<Value> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item.and_then(|n| s.ingest.plan(n, &format!("[{i}]"))) {
            Ok(entry) => {
                planned.push((i, entry));
                results.push(Value::Null);
            }
            Err(e) => results.push(json!({"index": i, "error": ApiError::from(e).body()["error"]})),
        }
    }
    let accepted_count = planned.len();
    if accepted_count > 0 {
        let (idx, entries): (Vec<usize>, Vec<_>) = planned.into_iter().unzip();
        let done = s.ingest.commit(entries).await?;
        for (i, r) in idx.into_iter().zip(done) {
            let mut v = accepted(&r);
            v["index"] = json!(i);
            results[i] = v;
        }
    }
    let rejected = results.len() - accepted_count;
    let code = if accepted_count > 0 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((
        code,
        Json(json!({"accepted": accepted_count, "rejected": rejected, "results": results})),
    )
        .into_response())
}

fn array_of(v: Value, what: &str) -> Result<Vec<Value>, ApiError> {
    match v {
        Value::Array(a) if a.is_empty() => Err(ApiError::bad_request(
            "invalid_json",
            format!("the array of {what} is empty"),
        )),
        Value::Array(a) if a.len() > BATCH_MAX => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("{} {what}; at most {BATCH_MAX} per request", a.len()),
        )),
        Value::Array(a) => Ok(a),
        _ => Err(ApiError::bad_request(
            "invalid_json",
            format!("expected a JSON array of {what}"),
        )),
    }
}

#[utoipa::path(post, path = "/api/v1/notifications/batch", tag = "notifications",
    request_body = doc::NotificationBatch,
    responses((status = 202, description = "The valid items were committed in one transaction", body = doc::BatchResult),
        (status = 400, description = "No item was valid (per-item errors), or the body is not a JSON array", body = doc::BatchRejected),
        (status = 401, description = "Missing or wrong token", body = doc::ErrorBody),
        (status = 413, description = "More than 1,000 items", body = doc::ErrorBody),
        (status = 503, description = "The store cannot accept writes", body = doc::ErrorBody)),
    security(("bearer" = [])))]
async fn post_batch(
    State(s): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let items = array_of(json_body(body)?, "notifications")?;
    let parsed = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let p = format!("[{i}]");
            from_json::<NotificationRequest>(v, &p)?.into_notification("api", &p)
        })
        .collect();
    accept_many(&s, parsed).await
}

#[utoipa::path(post, path = "/api/v1/events", tag = "notifications",
    request_body(content = doc::EventsBody, description = "One event envelope (PRODUCT.md §3), or an array of up to 1,000"),
    responses((status = 202, description = "Committed: one envelope like a notification, an array like a batch (the valid items)", body = doc::EventsAccepted),
        (status = 200, description = "A repeat of an idempotency key (one envelope)", body = doc::Accepted),
        (status = 400, description = "Invalid input; `error.field` names it (an array: per item, as a batch)", body = doc::BatchRejected), (status = 401, description = "Missing or wrong token", body = doc::ErrorBody),
        (status = 413, description = "More than 1,000 envelopes, or a body over `server.body_limit`", body = doc::ErrorBody),
        (status = 422, description = "Names a channel that does not exist", body = doc::ErrorBody),
        (status = 503, description = "The store cannot accept writes", body = doc::ErrorBody)),
    security(("bearer" = [])))]
async fn post_events(
    State(s): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let v = json_body(body)?;
    if v.is_object() {
        let n = from_json::<Envelope>(v, "")?.into_notification("api", "")?;
        let r = s.ingest.submit(n).await?;
        let code = if r.duplicate {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        return Ok((code, Json(accepted(&r))).into_response());
    }
    let items = array_of(v, "events")?;
    let parsed = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let p = format!("[{i}]");
            from_json::<Envelope>(v, &p)?.into_notification("api", &p)
        })
        .collect();
    accept_many(&s, parsed).await
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError::bad_request("invalid_field", format!("`{id}` is not a notification id"))
            .field("id")
    })
}

fn record_json(r: &NotificationRecord, with_attempts: bool) -> Value {
    let mut v = serde_json::to_value(&r.notification).unwrap_or_default();
    // Attachments can be large; the history shows their names, the detail view everything.
    if !with_attempts && let Some(a) = v.get_mut("attachments").and_then(Value::as_array_mut) {
        for item in a {
            if let Some(o) = item.as_object_mut() {
                o.remove("content_base64");
            }
        }
    }
    let deliveries: Vec<Value> = r
        .deliveries
        .iter()
        .map(|d| {
            let mut dv = serde_json::to_value(&d.delivery).unwrap_or_default();
            if with_attempts {
                dv["attempts"] = serde_json::to_value(&d.attempts).unwrap_or_default();
            }
            dv
        })
        .collect();
    v["deliveries"] = Value::Array(deliveries);
    v["duplicate_of"] = json!(r.duplicate_of);
    v["repeats"] = json!(r.repeats);
    v
}

#[utoipa::path(get, path = "/api/v1/notifications/{id}", tag = "notifications",
    params(("id" = Uuid, Path, description = "Notification id")),
    responses((status = 200, description = "The notification, its deliveries and every attempt", body = doc::NotificationRecord),
        (status = 400, description = "Invalid input; `error.field` names it", body = doc::ErrorBody), (status = 401, description = "Missing or wrong token", body = doc::ErrorBody), (status = 404, description = "No such notification", body = doc::ErrorBody)),
    security(("bearer" = [])))]
async fn get_notification(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let r = s
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no notification {id}")))?;
    Ok(Json(record_json(&r, true)))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    channel: Option<String>,
    severity: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    q: Option<String>,
}

/// A query string as `T`, or a 400 saying what is wrong with it.
fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// `cursor`: the last id of the previous page.
fn parse_cursor(c: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    c.map(parse_id).transpose().map_err(|e| e.field("cursor"))
}

/// `limit`: 1–1000, default 50.
fn parse_limit(v: Option<String>) -> Result<usize, ApiError> {
    match v {
        None => Ok(50),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => {
                Err(ApiError::bad_request("invalid_field", "`limit` must be 1–1000").field("limit"))
            }
        },
    }
}

/// Whether a text filter can match anything: no stored text holds a NUL (U+0000), so a filter
/// with one matches nothing — and is not sent to PostgreSQL, which refuses it (a 503 once).
fn can_match(filter: Option<&String>) -> bool {
    filter.is_none_or(|t| !t.contains('\0'))
}

/// A page with nothing on it.
fn empty_page() -> Json<Value> {
    Json(json!({"items": [], "next_cursor": null}))
}

fn query_time(v: Option<String>, field: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.map(|t| {
        DateTime::parse_from_rfc3339(&t)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::bad_request("invalid_field", format!("`{t}` is not an RFC 3339 time"))
                    .field(field)
            })
    })
    .transpose()
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications",
    params(("status" = Option<DeliveryStatus>, Query, description = "Only notifications with a delivery in this status"),
        ("channel" = Option<String>, Query, description = "Only notifications with a delivery on this channel"),
        ("severity" = Option<Severity>, Query, description = "debug | info | warning | error | critical"),
        ("since" = Option<DateTime<Utc>>, Query, description = "RFC 3339"),
        ("until" = Option<DateTime<Utc>>, Query, description = "RFC 3339"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1–1000, default 50"),
        ("cursor" = Option<Uuid>, Query, description = "`next_cursor` of the previous page"),
        ("q" = Option<String>, Query, max_length = 200, description = "Text in the title or message (case-insensitive), at most 200 characters")),
    responses((status = 200, description = "Newest first", body = doc::NotificationPage), (status = 400, description = "Invalid input; `error.field` names it", body = doc::ErrorBody), (status = 401, description = "Missing or wrong token", body = doc::ErrorBody)),
    security(("bearer" = [])))]
async fn list_notifications(
    State(s): State<Arc<Shared>>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let status = q
        .status
        .map(|v| {
            v.parse::<DeliveryStatus>()
                .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()).field("status"))
        })
        .transpose()?;
    let severity = q
        .severity
        .map(|v| {
            v.parse::<Severity>().map_err(|e| {
                ApiError::bad_request("invalid_field", e.to_string()).field("severity")
            })
        })
        .transpose()?;
    let limit = parse_limit(q.limit)?;
    let cursor = parse_cursor(q.cursor.as_deref())?;
    let filter = ListFilter {
        status,
        channel: q.channel,
        severity,
        since: query_time(q.since, "since")?,
        until: query_time(q.until, "until")?,
        limit,
        cursor,
        text: match q.q {
            Some(t) if t.chars().count() > 200 => {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    "`q` is at most 200 characters",
                )
                .field("q"));
            }
            other => other,
        },
    };
    if !can_match(filter.channel.as_ref()) || !can_match(filter.text.as_ref()) {
        return Ok(empty_page());
    }
    let items = s.store.list(filter).await?;
    let next = (items.len() == limit)
        .then(|| items.last().map(|r| r.notification.id))
        .flatten();
    Ok(Json(json!({
        "items": items.iter().map(|r| record_json(r, false)).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// Channels as the API shows them, with backlog and dead counts from `depth`.
fn channel_views(s: &Shared, depth: &[klaxon_store::DepthRow]) -> Vec<Value> {
    let now = Utc::now();
    s.registry
        .all()
        .map(|rt| {
            let mut v = serde_json::to_value(rt.view(now)).unwrap_or_default();
            let backlog: i64 = depth
                .iter()
                .filter(|r| r.channel == rt.spec.name && !r.status.is_final())
                .map(|r| r.count)
                .sum();
            let dead: i64 = depth
                .iter()
                .filter(|r| r.channel == rt.spec.name && r.status == DeliveryStatus::Dead)
                .map(|r| r.count)
                .sum();
            v["backlog"] = json!(backlog);
            v["dead"] = json!(dead);
            v
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/channels", tag = "channels",
    responses((status = 200, description = "Every configured channel", body = doc::ChannelList),
        (status = 401, description = "Missing or wrong token", body = doc::ErrorBody)),
    security(("bearer" = [])))]
async fn list_channels(State(s): State<Arc<Shared>>) -> Json<Value> {
    let depth = s.store.depth(DepthScope::Open).await.unwrap_or_default();
    Json(json!({"channels": channel_views(&s, &depth)}))
}

#[utoipa::path(get, path = "/api/v1/channels/{name}", tag = "channels",
    params(("name" = String, Path, description = "Channel name")),
    responses((status = 200, description = "The channel", body = doc::ChannelEntry),
        (status = 400, description = "Invalid input; `error.field` names it", body = doc::ErrorBody), (status = 401, description = "Missing or wrong token", body = doc::ErrorBody), (status = 404, description = "No such channel", body = doc::ErrorBody)),
    security(("bearer" = [])))]
async fn get_channel(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let depth = s.store.depth(DepthScope::Open).await.unwrap_or_default();
    channel_views(&s, &depth)
        .into_iter()
        .find(|v| v["name"] == json!(name))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no channel named `{name}`")))
}

/// `PATCH /api/v1/channels/{name}`: `{"enabled": bool, "muted_until": RFC 3339 | null}`.
#[utoipa::path(patch, path = "/api/v1/channels/{name}", tag = "channels",
    params(("name" = String, Path, description = "Channel name")),
    request_body = doc::ChannelPatch,
    responses((status = 200, description = "Changed and persisted; the channel as it is now", body = doc::ChannelEntry),
        (status = 400, description = "Invalid input; `error.field` names it", body = doc::ErrorBody), (status = 401, description = "Missing or wrong token", body = doc::ErrorBody), (status = 404, description = "No such channel", body = doc::ErrorBody)),
    security(("bearer" = [])))]
async fn patch_channel(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let v = json_body(body)?;
    let Value::Object(map) = v else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "expected an object like {\"enabled\": false}",
        ));
    };
    let mut change = crate::control::ChannelChange::default();
    for (k, v) in map {
        match (k.as_str(), v) {
            ("enabled", Value::Bool(b)) => change.enabled = Some(b),
            ("enabled", _) => {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    "`enabled` must be true or false",
                )
                .field("enabled"));
            }
            ("muted_until", Value::Null) => change.muted_until = Some(None),
            ("muted_until", Value::String(t)) => {
                change.muted_until = Some(query_time(Some(t), "muted_until")?);
            }
            ("muted_until", _) => {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    "`muted_until` must be an RFC 3339 time or null",
                )
                .field("muted_until"));
            }
            (other, _) => {
                return Err(ApiError::bad_request(
                    "unknown_field",
                    format!("unknown field `{other}` (expected `enabled`, `muted_until`)"),
                )
                .field(other));
            }
        }
    }
    crate::control::change_channel(&s, &name, change).await?;
    get_channel(State(s), Path(name)).await
}

/// `POST /api/v1/channels/{name}/test`: sends a test through the channel and answers with the
/// outcome (or what is known when the channel's timeout has passed).
#[utoipa::path(post, path = "/api/v1/channels/{name}/test", tag = "channels",
    params(("name" = String, Path, description = "Channel name")),
    responses((status = 200, description = "The test message's outcome", body = doc::TestResult),
        (status = 202, description = "Sent, but no final answer within the channel's timeout", body = doc::TestResult),
        (status = 400, description = "Invalid input; `error.field` names it", body = doc::ErrorBody), (status = 401, description = "Missing or wrong token", body = doc::ErrorBody), (status = 404, description = "No such channel", body = doc::ErrorBody),
        (status = 409, description = "The channel is disabled", body = doc::ErrorBody)),
    security(("bearer" = [])))]
async fn test_channel(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let wait = s
        .registry
        .get(&name)
        .map(|rt| rt.spec.timeout + std::time::Duration::from_secs(5))
        .unwrap_or_default();
    let out = crate::control::test_channel(&s, &name, wait).await?;
    let errors: Vec<&str> = out
        .record
        .deliveries
        .iter()
        .filter_map(|d| d.delivery.last_error.as_deref())
        .collect();
    let outcome = match (out.finished, out.delivered) {
        (true, true) => "delivered",
        (true, false) => "failed",
        (false, _) => "pending",
    };
    let code = if out.finished {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        code,
        Json(json!({
            "outcome": outcome,
            "error": errors.first(),
            "notification": record_json(&out.record, true),
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
struct DeadQuery {
    channel: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/v1/dead-letters`: deliveries that ended `dead`, newest notification first, each
/// with the notification it carried.
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "dead-letters",
    params(("channel" = Option<String>, Query, description = "Only this channel"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Notifications per page, 1–1000, default 50"),
        ("cursor" = Option<Uuid>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "Dead deliveries, newest notification first", body = doc::DeadLetterPage), (status = 400, description = "Invalid input; `error.field` names it", body = doc::ErrorBody), (status = 401, description = "Missing or wrong token", body = doc::ErrorBody)),
    security(("bearer" = [])))]
async fn list_dead_letters(
    State(s): State<Arc<Shared>>,
    q: Result<Query<DeadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let limit = parse_limit(q.limit)?;
    let cursor = parse_cursor(q.cursor.as_deref())?;
    if !can_match(q.channel.as_ref()) {
        return Ok(empty_page());
    }
    let records = s
        .store
        .list(ListFilter {
            status: Some(DeliveryStatus::Dead),
            channel: q.channel.clone(),
            limit,
            cursor,
            ..ListFilter::default()
        })
        .await?;
    let mut items = Vec::new();
    for r in &records {
        let n = &r.notification;
        for d in &r.deliveries {
            let dead = d.delivery.status == DeliveryStatus::Dead
                && q.channel.as_ref().is_none_or(|c| *c == d.delivery.channel);
            if !dead {
                continue;
            }
            // `attempts` is the count; the notification's detail view has each attempt.
            let mut v = serde_json::to_value(&d.delivery).unwrap_or_default();
            v["notification"] = json!({
                "id": n.id,
                "title": n.title,
                "message": n.message,
                "severity": n.severity,
                "event_type": n.event_type,
                "source": n.source,
                "created_at": n.created_at,
            });
            items.push(v);
        }
    }
    let next = (records.len() == limit)
        .then(|| records.last().map(|r| r.notification.id))
        .flatten();
    Ok(Json(json!({"items": items, "next_cursor": next})))
}

/// `POST /api/v1/dead-letters/{id}/retry`: the delivery goes back in the queue.
#[utoipa::path(post, path = "/api/v1/dead-letters/{id}/retry", tag = "dead-letters",
    params(("id" = Uuid, Path, description = "Delivery id")),
    responses((status = 200, description = "Back in the queue with a fresh retry budget", body = doc::Requeued),
        (status = 400, description = "Invalid input; `error.field` names it", body = doc::ErrorBody), (status = 401, description = "Missing or wrong token", body = doc::ErrorBody), (status = 404, description = "No dead delivery with this id", body = doc::ErrorBody)),
    security(("bearer" = [])))]
async fn retry_dead(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| {
        ApiError::bad_request("invalid_field", format!("`{id}` is not a delivery id")).field("id")
    })?;
    let done = crate::control::retry_dead(&s, Some(vec![id])).await?;
    if done.is_empty() {
        return Err(ApiError::not_found(format!("no dead delivery {id}")));
    }
    Ok(Json(json!({"requeued": done})))
}

#[derive(Deserialize)]
struct AllQuery {
    all: Option<String>,
}

/// `POST /api/v1/dead-letters/retry?all=true`: every dead delivery goes back in the queue.
#[utoipa::path(post, path = "/api/v1/dead-letters/retry", tag = "dead-letters",
    params(("all" = String, Query, pattern = "^true$", description = "Must be `true`")),
    responses((status = 200, description = "Every dead delivery back in the queue", body = doc::Requeued), (status = 400, description = "Invalid input; `error.field` names it", body = doc::ErrorBody), (status = 401, description = "Missing or wrong token", body = doc::ErrorBody)),
    security(("bearer" = [])))]
async fn retry_all_dead(
    State(s): State<Arc<Shared>>,
    q: Result<Query<AllQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    if q.all.as_deref() != Some("true") {
        return Err(ApiError::bad_request(
            "invalid_field",
            "say `?all=true` to retry every dead delivery, or POST /api/v1/dead-letters/{id}/retry",
        )
        .field("all"));
    }
    let done = crate::control::retry_dead(&s, None).await?;
    Ok(Json(json!({"requeued": done})))
}

#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "The process is up", body = doc::HealthBody)))]
async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/ready", tag = "service",
    responses((status = 200, description = "The store answers", body = doc::HealthBody),
        (status = 503, description = "The store does not answer", body = doc::HealthBody)))]
async fn ready(State(s): State<Arc<Shared>>) -> Response {
    let store = s.store.ping().await;
    let redis = s.redis.as_ref().map(|r| r.state());
    let stream = s.redis_stream.as_ref().map(|r| r.state());
    let ready = store.is_ok()
        && redis.as_ref().is_none_or(|r| r.connected)
        && stream.as_ref().is_none_or(|r| r.connected);
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": match &store {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        },
        "redis": redis,
        "redis_stream": stream,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

#[utoipa::path(get, path = "/status", tag = "service",
    responses((status = 200, description = "Version, queue, channels (no secrets)", body = doc::Status)))]
async fn status(State(s): State<Arc<Shared>>) -> Json<Value> {
    let store_ok = s.store.ping().await.is_ok();
    let depth = s.store.depth(DepthScope::All).await.unwrap_or_default();
    let mut queue = serde_json::Map::new();
    for st in DeliveryStatus::ALL {
        let n: i64 = depth
            .iter()
            .filter(|r| r.status == st)
            .map(|r| r.count)
            .sum();
        queue.insert(st.as_str().into(), json!(n));
    }
    let kind = s.config.store.url.split(':').next().unwrap_or("");
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": (Utc::now() - s.started_at).num_seconds(),
        "store": {"kind": kind, "ok": store_ok},
        "queue": queue,
        "in_flight": s.engine.in_flight(),
        "channels": channel_views(&s, &depth),
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8"
            .parse()
            .expect("static header"),
    );
    (headers, s.metrics.render())
}
