//! The benchmark's floor: `GET /v1/{project_id}/bench-floor?bytes=N` answers `N` fixed bytes
//! after the same middleware, authentication and `list` permission check as the job list,
//! without asking the database (the authentication cache answers once warm). What a query
//! costs above it is the cost of the query itself. With `ping=true` the answer waits for one
//! `SELECT 1` on the database first: the least any query costs. Served only with
//! `serve --bench-floor`.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::query_pairs;
use super::{ApiConfig, AppState};
use crate::domain::Action;

/// Largest answer of the floor route.
pub const MAX_FLOOR_BYTES: usize = 4 * 1024 * 1024;
/// Answer size when the request names none: about a page of 50 jobs.
const DEFAULT_FLOOR_BYTES: usize = 16 * 1024;

/// Spaces followed by `{}`: every suffix of two bytes or more is a valid JSON document.
fn padding() -> &'static Bytes {
    static PADDING: OnceLock<Bytes> = OnceLock::new();
    PADDING.get_or_init(|| {
        let mut body = vec![b' '; MAX_FLOOR_BYTES];
        body[MAX_FLOOR_BYTES - 2..].copy_from_slice(b"{}");
        Bytes::from(body)
    })
}

/// The floor route when `config` asks for it; otherwise no route.
pub fn routes(config: &ApiConfig) -> Router<AppState> {
    if config.bench_floor {
        Router::new().route("/v1/{project_id}/bench-floor", get(answer))
    } else {
        Router::new()
    }
}

/// Fixed bytes (`bytes`, default about one page) to an authenticated caller who may list jobs,
/// after a `SELECT 1` on the database when `ping` is `true`.
async fn answer(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Action::ListJobs)?;
    let pairs = query_pairs(raw.as_deref())?;
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let wanted = param("bytes")
        .map(|v| v.parse::<usize>())
        .transpose()
        .map_err(|_| ApiError::Invalid("bytes must be a non-negative integer".into()))?
        .unwrap_or(DEFAULT_FLOOR_BYTES)
        .clamp(2, MAX_FLOOR_BYTES);
    match param("ping").as_deref() {
        None | Some("false") => {}
        Some("true") => state.store.ping().await?,
        Some(_) => return Err(ApiError::Invalid("ping must be true or false".into())),
    }
    let body = padding().slice(MAX_FLOOR_BYTES - wanted..);
    Ok(([(CONTENT_TYPE, "application/json")], body))
}
