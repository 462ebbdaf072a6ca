//! Webhooks of other systems, in: TradingView alerts (`POST /hooks/tradingview/{secret}`) and
//! Prometheus Alertmanager (`POST /hooks/alertmanager`). Each answers only after the store has
//! committed what it turned into — TradingView cancels a request after 3 s, and a commit takes
//! milliseconds.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use klaxon_core::config::TradingViewConfig;
use klaxon_core::hooks::{self, AlertmanagerPayload};
use klaxon_core::input::from_json;
use serde_json::json;

use super::{ApiError, accepted, doc};
use crate::app::Shared;

/// The address the request came from: the trusted proxy's header when one is configured and
/// present (its last `X-Forwarded-For` entry: the one the proxy itself added), else the peer.
fn client_ip(
    cfg: &TradingViewConfig,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Option<IpAddr> {
    if let Some(h) = &cfg.trusted_proxy_header
        && let Some(v) = headers.get(h.as_str()).and_then(|v| v.to_str().ok())
    {
        return v.rsplit(',').next().and_then(|ip| ip.trim().parse().ok());
    }
    peer.map(|p| p.ip().to_canonical())
}

fn same_secret(given: &str, want: &str) -> bool {
    given.len() == want.len()
        && given
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[utoipa::path(post, path = "/hooks/tradingview/{secret}", tag = "hooks",
    params(("secret" = String, Path, description = "The configured `tradingview.secret`")),
    request_body(content = doc::AlertText, content_type = "text/plain",
        description = "The alert message: JSON (`ticker`, `action`, `price`, `position`, `message`, or TradingView's placeholder names) or plain text, whatever the Content-Type says"),
    responses((status = 202, description = "Committed as a `tradingview.alert` notification", body = doc::Accepted),
        (status = 400, description = "Empty alert", body = doc::ErrorBody),
        (status = 403, description = "Source address not in `tradingview.allow_ips`", body = doc::ErrorBody),
        (status = 404, description = "Unknown secret, or TradingView input not configured", body = doc::ErrorBody),
        (status = 503, description = "The store cannot accept writes", body = doc::ErrorBody)))]
pub async fn tradingview(
    State(s): State<Arc<Shared>>,
    Path(secret): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    // Unknown and unconfigured look the same: the path does not reveal whether it exists.
    let not_found = || ApiError::not_found("no such route; see PRODUCT.md §4 for the API");
    let Some(cfg) = &s.config.tradingview else {
        return Err(not_found());
    };
    if !same_secret(&secret, cfg.secret.expose()) {
        return Err(not_found());
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if !cfg.allow_ips.is_empty() {
        let ip = client_ip(cfg, req.headers(), peer);
        if !ip.is_some_and(|ip| cfg.allow_ips.contains(&ip)) {
            tracing::warn!(source = ?ip, "TradingView hook called from an address not in tradingview.allow_ips");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this source address is not in tradingview.allow_ips",
            ));
        }
    }
    let body = axum::body::to_bytes(req.into_body(), s.config.server.body_limit)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the alert is over the configured limit (server.body_limit)",
            )
        })?;
    let n = hooks::tradingview(&body)?;
    let r = s.ingest.submit(n).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted(&r))).into_response())
}

#[utoipa::path(post, path = "/hooks/alertmanager", tag = "hooks",
    request_body(content = AlertmanagerPayload, description = "Alertmanager's webhook payload, version 4"),
    responses((status = 202, description = "One notification per alert, committed together", body = doc::AlertsAccepted),
        (status = 400, description = "Not a version 4 payload; `error.field` names what", body = doc::ErrorBody),
        (status = 401, description = "Missing or wrong token (Alertmanager's `http_config.authorization`)", body = doc::ErrorBody),
        (status = 503, description = "The store cannot accept writes (Alertmanager retries)", body = doc::ErrorBody)),
    security(("bearer" = [])))]
pub async fn alertmanager(
    State(s): State<Arc<Shared>>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let v = super::json_body(body)?;
    let payload = from_json::<AlertmanagerPayload>(v, "")?;
    let notifications = hooks::alertmanager(payload)?;
    let mut entries = Vec::with_capacity(notifications.len());
    for (i, n) in notifications.into_iter().enumerate() {
        entries.push(s.ingest.plan(n, &format!("alerts[{i}]"))?);
    }
    let done = if entries.is_empty() {
        Vec::new()
    } else {
        s.ingest.commit(entries).await?
    };
    let ids: Vec<_> = done.iter().map(|r| r.notification_id).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"status": "accepted", "notifications": ids})),
    )
        .into_response())
}
