//! The error policy of the API, in one place.
//!
//! Every failure becomes an [`ApiError`], answered as `{"error_code", "error_msg",
//! "request_id"}` with `Content-Type: application/json` and the `X-Request-Id` of the
//! request. Authentication failures use the API gateway's codes, as the real cloud answers
//! them, and all look alike. Service errors use `ModelArts.*` codes. Unexpected failures are
//! logged with their cause and answered generically.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::domain::Invalid;
use crate::store::StoreError;
use crate::wire::ErrorBody;

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

/// The current request's id, or an empty string outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Seconds a client is asked to wait before trying again after a 503.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// The one message of every authentication failure.
pub const AUTH_FAILED_MSG: &str = "Incorrect IAM authentication information: verify aksk \
    signature fail, or the token is missing, expired or invalid";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `APIG.0301`: missing or bad signature, unknown key, stale date, bad token.
    #[error("{AUTH_FAILED_MSG}")]
    Unauthenticated,
    /// 404 `APIG.0101`: no such API (unknown path or method).
    #[error("The API does not exist or has not been published in the environment.")]
    NoSuchApi,
    /// 413 `APIG.0201`.
    #[error("Request entity too large: the body exceeds 12 MB.")]
    BodyTooLarge,
    /// 408 `APIG.0201`: the body did not arrive in time.
    #[error("Request timeout: the body did not arrive within {} s.", .0.as_secs())]
    BodyTimeout(std::time::Duration),
    /// 431 `APIG.0201`.
    #[error(
        "Request header fields too large: more than {} headers.",
        super::MAX_HEADERS
    )]
    TooManyHeaders,
    /// 431 `APIG.0201`.
    #[error(
        "Request header fields too large: the request head exceeds {} KB.",
        super::MAX_HEAD_BYTES / 1024
    )]
    HeadersTooLarge,
    /// 414 `APIG.0201`.
    #[error("Request-URI too large: the URI exceeds 32 KB.")]
    UriTooLong,
    /// 429 `APIG.0308` with `Retry-After`.
    #[error("The throttling threshold has been reached.")]
    Throttled { retry_after_secs: u64 },
    /// 403 `ModelArts.0105`.
    #[error("{0}")]
    Forbidden(String),
    /// 400 `ModelArts.0107`.
    #[error("{0}")]
    Invalid(String),
    /// 404 `ModelArts.0102`.
    #[error("{0}")]
    NotFound(String),
    /// 409 `ModelArts.0103`.
    #[error("{0}")]
    Conflict(String),
    /// 503 `ModelArts.0013` with `Retry-After`: the database cannot be reached right now,
    /// refuses work, or a transaction kept conflicting with concurrent ones.
    #[error("The service is temporarily unavailable.")]
    Unavailable(#[source] anyhow::Error),
    /// 503 `ModelArts.0013` with `Retry-After`: the server is at one of its limits (too
    /// many request bodies in flight); not logged one by one.
    #[error("The service is temporarily unavailable: {0}.")]
    Overloaded(&'static str),
    /// 503 `ModelArts.0013` from `/ready`: why this server is not ready.
    #[error("Not ready: {0}.")]
    NotReady(String),
    /// 500 `ModelArts.0010`.
    #[error("Internal error.")]
    Internal(#[source] anyhow::Error),
}

/// The `error_code` of an error answer, kept in its extensions for the access log, the
/// metrics and the audit trail.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, "APIG.0301"),
            Self::NoSuchApi => (StatusCode::NOT_FOUND, "APIG.0101"),
            Self::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "APIG.0201"),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "APIG.0201"),
            Self::UriTooLong => (StatusCode::URI_TOO_LONG, "APIG.0201"),
            Self::TooManyHeaders | Self::HeadersTooLarge => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "APIG.0201")
            }
            Self::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "APIG.0308"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "ModelArts.0105"),
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "ModelArts.0107"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "ModelArts.0102"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "ModelArts.0103"),
            Self::Unavailable(_) | Self::Overloaded(_) | Self::NotReady(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "ModelArts.0013")
            }
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "ModelArts.0010"),
        }
    }
}

impl ApiError {
    /// True for an answer sent with `Connection: close`: the rest of a body not read keeps
    /// the connection from serving another request.
    pub fn ends_connection(&self) -> bool {
        matches!(self, Self::BodyTimeout(_) | Self::BodyTooLarge)
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Self::Invalid(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownServers(_) => Self::Invalid(e.to_string()),
            StoreError::IdempotencyConflict | StoreError::Conflict(_) => {
                Self::Conflict(e.to_string())
            }
            StoreError::NotFound(_) => Self::NotFound(e.to_string()),
            StoreError::Unavailable(_) | StoreError::Transient(_) => Self::Unavailable(e.into()),
            StoreError::Internal(_) => Self::Internal(e.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) | Self::Unavailable(cause) = &self {
            let code = self.status_and_code().1;
            tracing::error!(error = %format_args!("{cause:#}"), error_code = code, "request failed");
        }
        self.into_unlogged_response()
    }
}

impl ApiError {
    /// The answer, without the error log line a failure of the service writes: for an
    /// answer that is not one (the emulator's injected faults).
    pub fn into_unlogged_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let request_id = current_request_id();
        let body = ErrorBody {
            error_code: code.to_string(),
            error_msg: self.to_string(),
            request_id,
        };
        let retry_after = match self {
            Self::Throttled { retry_after_secs } => Some(retry_after_secs.max(1)),
            Self::Unavailable(_) | Self::Overloaded(_) | Self::NotReady(_) => {
                Some(UNAVAILABLE_RETRY_AFTER_SECS)
            }
            _ => None,
        };
        let close = self.ends_connection();
        let mut response = (status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(code));
        if close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
