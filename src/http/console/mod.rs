//! The web console at `/console`: server-rendered pages over the same store, permissions and
//! checks as the API, for people with an IAM user name and password.
//!
//! Security, in one place:
//! - the session is an IAM token (as `POST /v3/auth/tokens` issues) in an `HttpOnly`,
//!   `SameSite=Strict` cookie scoped to `/console`; signing out revokes it;
//! - every page is checked as an `X-Auth-Token` request would be ([`Session`]), and every
//!   action asks the caller's grants as the API handler does;
//! - every form that changes something carries a token derived from the session
//!   ([`session::csrf_token`]) and is refused with 403 without it; the sign-in form carries
//!   one bound to a cookie of its own;
//! - every answer carries a strict Content-Security-Policy: scripts and styles only from
//!   `/console/static/`, nothing inline, no frames.

mod create;
mod fleet;
mod job;
mod jobs;
mod page;
mod session;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::error::ApiError;
use super::AppState;
pub use session::Session;

/// The console's Content-Security-Policy: nothing but this server's own files, no inline
/// script or style, no frames, forms only to this server.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// The console's routes, under `/console`.
pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/jobs") }))
        .route("/console/", get(|| async { Redirect::to("/console/jobs") }))
        .route(
            "/console/login",
            get(session::login_page).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/project", post(session::switch_project))
        .route("/console/jobs", get(jobs::list_page).post(create::create))
        .route("/console/jobs/new", get(create::form_page))
        .route("/console/jobs/{id}", get(job::job_page))
        .route("/console/jobs/{id}/live", get(job::live_fragment))
        .route("/console/jobs/{id}/events", get(job::events))
        .route(
            "/console/jobs/{id}/delete",
            get(job::confirm_delete).post(job::delete),
        )
        .route("/console/jobs/{id}/tasks/{task_id}", get(job::task_page))
        .route("/console/servers", get(fleet::servers_page))
        .route("/console/templates", get(fleet::templates_page))
        .route("/console/static/console.css", get(css))
        .route("/console/static/console.js", get(js))
        .route("/console/static/icon.svg", get(icon))
        .route("/console/{*rest}", get(not_found))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            error_pages_in_session,
        ))
        .layer(middleware::from_fn(security_headers))
}

/// What an error page says, kept with its answer so that it can be drawn again in the
/// browser's session.
#[derive(Debug, Clone)]
struct ErrorPage {
    title: String,
    message: String,
}

/// Draws an error page again in the browser's session, when it has one: with the
/// navigation, the project switch and the sign-out, so that a page the user may not see
/// (a project whose jobs they may not list) is no dead end. The session is looked up only
/// for an error page.
async fn error_pages_in_session(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let saved = session::cookie(&parts.headers, session::SESSION_COOKIE)
        .is_some()
        .then(|| parts.clone());
    let mut response = next.run(Request::from_parts(parts, body)).await;
    let (Some(mut parts), Some(error)) = (saved, response.extensions().get::<ErrorPage>().cloned())
    else {
        return response;
    };
    if let Ok(session) = Session::from_request_parts(&mut parts, &state).await {
        let page = page::error_page(&error.title, &error.message, Some(&session));
        *response.body_mut() = axum::body::Body::from(page.0);
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    response
}

async fn css() -> Response {
    static_file("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    static_file("text/javascript; charset=utf-8", JS)
}

/// The pages' icon: a browser asks for one on every page (else `/favicon.ico`, unknown).
async fn icon() -> Response {
    static_file("image/svg+xml", ICON)
}

const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
    <rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#2f6f4f\"/>\
    <path d=\"M5 3v10h6\" stroke=\"#fff\" stroke-width=\"2\" fill=\"none\"/></svg>";

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> ConsoleError {
    ConsoleError::NotFound("There is no such page.".into())
}

/// Sets the console's security headers on every answer; pages are not cached.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "same-origin");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// What a console page answers when it cannot show what was asked: an HTML page with the
/// status the API would answer, or the way to sign in.
#[derive(Debug)]
pub enum ConsoleError {
    /// No session, or it ended: sign in, then come back to `next`.
    SignIn {
        next: String,
    },
    /// 403: the caller may not do this, or the form was not sent by this console.
    Forbidden(String),
    NotFound(String),
    /// The API's answer to a request it refused.
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Forbidden(message) => Self::Forbidden(message),
            ApiError::NotFound(message) => Self::NotFound(message),
            other => Self::Api(other),
        }
    }
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<crate::domain::Invalid> for ConsoleError {
    fn from(e: crate::domain::Invalid) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Self::SignIn { next } => {
                let target = format!("/console/login?next={}", page::encode(&next));
                return Redirect::to(&target).into_response();
            }
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, "Not allowed", message),
            Self::NotFound(message) => (StatusCode::NOT_FOUND, "Not found", message),
            Self::Api(e) => {
                let (status, _) = e.status_and_code();
                let said = match &e {
                    ApiError::Invalid(m) | ApiError::Conflict(m) => Some(m.clone()),
                    _ => None,
                };
                // The API's own answer logs what is worth logging and sets its headers.
                let api = e.into_response();
                let message = match status {
                    _ if said.is_some() => said.unwrap_or_default(),
                    StatusCode::INTERNAL_SERVER_ERROR => "Something went wrong.".to_string(),
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                        "The service is busy; try again in a moment.".to_string()
                    }
                    _ => status.canonical_reason().unwrap_or("Error").to_string(),
                };
                let mut response = error_answer(status, status.as_str(), message);
                if let Some(retry) = api.headers().get(header::RETRY_AFTER) {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, retry.clone());
                }
                return response;
            }
        };
        error_answer(status, title, message)
    }
}

/// An error page, and what it says for [`error_pages_in_session`].
fn error_answer(status: StatusCode, title: &str, message: String) -> Response {
    let mut response = (status, page::error_page(title, &message, None)).into_response();
    response.extensions_mut().insert(ErrorPage {
        title: title.to_string(),
        message,
    });
    response
}
