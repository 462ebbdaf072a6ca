//! The operator dashboard (PRODUCT.md §9) at `/`: three static files compiled into the binary,
//! no build step, nothing loaded from elsewhere. The page talks to the same JSON API as the CLI
//! and follows the live stream (`/api/v1/events/stream`) with `fetch`, sending the token as a
//! header; the files themselves are public, as they hold no data.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// A strict policy: only this origin's scripts, styles and API, so nothing can leak the token.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, description = "The dashboard page", content_type = "text/html")))]
pub async fn index() -> impl IntoResponse {
    file("text/html; charset=utf-8", INDEX)
}

#[utoipa::path(get, path = "/dashboard/app.js", tag = "dashboard",
    responses((status = 200, description = "The dashboard's script", content_type = "text/javascript")))]
pub async fn app_js() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", APP_JS)
}

#[utoipa::path(get, path = "/dashboard/app.css", tag = "dashboard",
    responses((status = 200, description = "The dashboard's styles", content_type = "text/css")))]
pub async fn app_css() -> impl IntoResponse {
    file("text/css; charset=utf-8", APP_CSS)
}

fn file(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}
