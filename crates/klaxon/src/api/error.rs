//! API errors: `{"error": {"code", "message", "field"}}` with a 4xx that says what was wrong,
//! or 503 when the store cannot keep what it is given.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use klaxon_core::input::InputError;
use serde_json::json;

use crate::ingest::IngestError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message, "field": self.field}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        let status = match e.code {
            "unknown_channel" => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            code: e.code,
            message: e.message,
            field: (!e.field.is_empty()).then_some(e.field),
        }
    }
}

impl From<klaxon_store::StoreError> for ApiError {
    fn from(e: klaxon_store::StoreError) -> Self {
        tracing::error!(error = %e, "store error answering a request");
        // Not accepted: say so, so the sender keeps it and tries again. The database's own
        // words stay in the log (they can name hosts and paths); the cause is said plainly.
        let message = match e {
            klaxon_store::StoreError::Full(_) => {
                "the store's disk is full; nothing was accepted, retry once space is freed"
            }
            _ => "the store cannot accept writes right now; nothing was accepted, retry later",
        };
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
        )
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Input(i) => i.into(),
            IngestError::Store(s) => s.into(),
        }
    }
}

impl From<crate::control::ControlError> for ApiError {
    fn from(e: crate::control::ControlError) -> Self {
        use crate::control::ControlError as C;
        match e {
            C::NoChannel(_) => ApiError::not_found(e.to_string()),
            C::Disabled(_) => {
                ApiError::new(StatusCode::CONFLICT, "channel_disabled", e.to_string())
            }
            C::Store(s) => s.into(),
            C::Ingest(i) => i.into(),
        }
    }
}
