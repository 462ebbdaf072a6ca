//! `multipart/form-data` bodies as the fakes see them: text fields and file parts, read whole.
//!
//! Both Telegram (uploads) and Discord (`payload_json` + `files[n]`) take multipart; reading it
//! once here keeps the two fakes' parsing identical. The router's `DefaultBodyLimit` bounds
//! what is read, so an over-sized upload is a clean 413 rather than memory exhaustion.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use http::StatusCode;

/// One file part: a field that carries a `filename` in its `Content-Disposition`.
#[derive(Clone, Debug)]
pub(crate) struct FilePart {
    pub(crate) filename: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) bytes: Bytes,
}

/// A parsed body, fields in the order they came.
#[derive(Debug, Default)]
pub(crate) struct FormData {
    pub(crate) text: Vec<(String, String)>,
    pub(crate) files: Vec<(String, FilePart)>,
}

/// Why a multipart body could not be read.
#[derive(Debug)]
pub(crate) enum FormError {
    /// Over the router's body limit.
    TooLarge,
    /// Not valid multipart (no boundary, a broken part, a text field that is not UTF-8).
    Malformed(String),
}

/// Reads every field of a `multipart/form-data` request.
pub(crate) async fn read(req: Request) -> Result<FormData, FormError> {
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| FormError::Malformed(e.body_text()))?;
    let mut form = FormData::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => return Ok(form),
            Err(e) => return Err(failure(&e)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(str::to_owned);
        let bytes = field.bytes().await.map_err(|e| failure(&e))?;
        if filename.is_some() {
            form.files.push((
                name,
                FilePart {
                    filename,
                    content_type,
                    bytes,
                },
            ));
        } else {
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| FormError::Malformed(format!("field {name} is not UTF-8")))?;
            form.text.push((name, text));
        }
    }
}

fn failure(e: &axum::extract::multipart::MultipartError) -> FormError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        FormError::TooLarge
    } else {
        FormError::Malformed(e.body_text())
    }
}
