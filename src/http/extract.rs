//! What handlers take from a request, answered in the API's error format when it is not
//! right: the query's pairs, JSON bodies, path parameters, bodies read within their limit.

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;

use super::error::ApiError;

/// Largest request body accepted (the real gateway's limit for signed bodies).
pub const MAX_BODY_BYTES: usize = 12 * 1024 * 1024;

/// Decodes a query string into pairs (`+` is a space, as in any form encoding).
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Parses a JSON body, answering a client's mistake as a 400 that says what is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Invalid("the request body is empty".into()));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::Invalid(format!("invalid request body: {e}")))
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        Self::Invalid(format!("invalid path: {}", e.body_text()))
    }
}

/// `axum::extract::Path` whose failures are answered in the API's error format.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Reads a body, refusing more than [`MAX_BODY_BYTES`].
pub async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    match http_body_util::Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge),
        Err(_) => Err(ApiError::Invalid(
            "the request body could not be read".into(),
        )),
    }
}
