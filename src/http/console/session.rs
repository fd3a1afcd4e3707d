//! Signing in and out of the console, the session every page takes ([`Session`]), switching
//! projects, and the forms' CSRF tokens.

use axum::body::Body;
use axum::extract::{FromRequestParts, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::page::{self, Section};
use super::ConsoleError;
use crate::http::auth::{peer_ip, token_caller, Caller};
use crate::http::error::ApiError;
use crate::http::extract::{form_query_pairs, read_body};
use crate::http::iam::{end_token, granted_project, new_token, password_user};
use crate::http::AppState;
use crate::store::UserRecord;

/// The cookie that holds the session's token.
pub const SESSION_COOKIE: &str = "litejobs_session";
/// The cookie that binds the sign-in form to the browser that asked for it.
pub const LOGIN_COOKIE: &str = "litejobs_login";

/// A signed-in person: the API's caller for their token, and what the pages need of it.
pub struct Session {
    pub caller: Caller,
    /// The session's token, from its cookie.
    token: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// The projects (id, name) the user holds a grant in.
    pub projects: Vec<(String, String)>,
}

impl Session {
    pub fn project_name(&self) -> &str {
        let id = self.caller.project.as_str();
        self.projects
            .iter()
            .find(|(p, _)| p == id)
            .map_or(id, |(_, name)| name.as_str())
    }

    /// Fails with 403 unless `form` carries this session's CSRF token.
    pub fn check_csrf(&self, form: &Form) -> Result<(), ConsoleError> {
        let sent = form.get("csrf").unwrap_or("");
        if bool::from(sent.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(forged())
        }
    }

    /// `result` answered, with who asked it, for the audit trail.
    pub fn answer(&self, result: Result<Response, ConsoleError>) -> Response {
        let mut response = result.unwrap_or_else(IntoResponse::into_response);
        if response
            .extensions()
            .get::<crate::audit::Identity>()
            .is_some()
        {
            return response;
        }
        response.extensions_mut().insert(crate::audit::Identity {
            user_id: Some(self.caller.user_id.clone()),
            user_name: Some(self.caller.user_name.clone()),
            project_id: Some(self.caller.project.to_string()),
            access_key: None,
        });
        response
    }

    /// True when the caller's grants allow `action`.
    pub fn may(&self, action: crate::domain::Action) -> bool {
        self.caller.require(action).is_ok()
    }
}

fn forged() -> ConsoleError {
    ConsoleError::Forbidden(
        "This form was not sent from a page of your session (its security token is missing \
         or wrong). Reload the page and try again."
            .into(),
    )
}

/// The CSRF token of the session holding `token`: derived from it, so it needs no storage
/// and cannot be made without the token, which the browser keeps from scripts.
pub fn csrf_token(token: &str) -> String {
    crate::sign::sha256_hex(format!("litejobs console form\n{token}").as_bytes())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value of the console: only for `/console`, never for scripts, never sent
/// along by another site, and only over TLS when the server speaks it.
fn set_cookie(state: &AppState, name: &str, value: &str, max_age_secs: u64) -> HeaderValue {
    let secure = if state.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ConsoleError> {
        let reading = parts.method == Method::GET || parts.method == Method::HEAD;
        let signed_out = || {
            if reading {
                let next = parts
                    .uri
                    .path_and_query()
                    .map_or("/console/jobs", |p| p.as_str());
                ConsoleError::SignIn {
                    next: next.to_string(),
                }
            } else {
                ConsoleError::Forbidden(
                    "You are not signed in, or your session has ended: sign in again.".into(),
                )
            }
        };
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(signed_out)?;
        let caller = match token_caller(state, &token, peer_ip(parts)).await {
            Ok(caller) => caller,
            Err(ApiError::Unauthenticated) => return Err(signed_out()),
            // The user no longer holds a grant in the session's project: the session (whose
            // token is of that project alone) is over. Ended, so that signing in again, in
            // a project the user still holds, is the way on.
            Err(ApiError::Forbidden(_)) => {
                end_token(state, &token).await?;
                return Err(signed_out());
            }
            Err(e) => return Err(e.into()),
        };
        let projects = granted_projects(state, &caller.user_id).await?;
        Ok(Session {
            csrf: csrf_token(&token),
            caller,
            token,
            projects,
        })
    }
}

/// The projects (id, name) the user holds a grant in, by name.
async fn granted_projects(
    state: &AppState,
    user_id: &str,
) -> Result<Vec<(String, String)>, ConsoleError> {
    let mut ids: Vec<String> = state
        .store
        .list_grants(user_id)
        .await?
        .into_iter()
        .map(|(project, _)| project)
        .collect();
    ids.sort();
    ids.dedup();
    let mut projects = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(p) = state.store.find_project(&id).await? {
            projects.push((p.id, p.name));
        }
    }
    projects.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    Ok(projects)
}

/// A form's fields, in order (a name may repeat, as checkboxes do).
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Reads a form body within the API's body limits.
    pub async fn read(state: &AppState, body: Body) -> Result<Self, ConsoleError> {
        let (bytes, _budget) = read_body(body, &state.bodies).await?;
        Ok(Self(
            form_urlencoded::parse(&bytes)
                .into_owned()
                .collect::<Vec<_>>(),
        ))
    }
}

/// Where to go after signing in: a console page, never another site nor, through dot
/// segments (which browsers resolve, `%2e` included), another path of this one; and only a
/// value the `Location` header can carry as it is.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if is_console_page(n) => n.to_string(),
        _ => "/console/jobs".to_string(),
    }
}

fn is_console_page(next: &str) -> bool {
    let Ok(uri) = next.parse::<axum::http::uri::PathAndQuery>() else {
        return false;
    };
    let dot_segment = |segment: &str| {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        decoded == "." || decoded == ".."
    };
    uri.path().starts_with("/console/")
        && !next.contains(['\\', '#'])
        && HeaderValue::from_str(next).is_ok()
        && !uri.path().split('/').any(dot_segment)
}

/// What the sign-in form shows again after a failed attempt.
#[derive(Default)]
struct LoginView {
    user: String,
    project: String,
    next: String,
    error: Option<String>,
    notice: Option<String>,
}

fn login_form(view: &LoginView, csrf: &str) -> Html<String> {
    page::shell(
        "Sign in",
        None,
        Section::None,
        html! {
            section.login aria-labelledby="login-title" {
                h1 id="login-title" { "Sign in" }
                @if let Some(notice) = &view.notice {
                    p.notice role="status" { (notice) }
                }
                @if let Some(error) = &view.error {
                    p.error id="login-error" role="alert" { (error) }
                }
                form method="post" action="/console/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="next" value=(view.next);
                    label for="user" { "User name" }
                    input id="user" name="user" type="text" autocomplete="username" required
                        value=(view.user) autofocus;
                    label for="password" { "Password" }
                    input id="password" name="password" type="password"
                        autocomplete="current-password" required;
                    label for="project" { "Project " span.hint { "(optional: id or name)" } }
                    input id="project" name="project" type="text" value=(view.project)
                        aria-describedby="project-hint";
                    p.hint id="project-hint" {
                        "Leave empty to open the first project you hold a grant in."
                    }
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// A sign-in page whose form token is the browser's sign-in cookie (`held`, when it has a
/// well-formed one, so that two open sign-in pages both work), else a new one.
fn login_response(
    state: &AppState,
    held: Option<String>,
    status: StatusCode,
    view: &LoginView,
) -> Response {
    let csrf = held
        .filter(|c| c.len() == 48 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| {
            let mut raw = [0u8; 24];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            hex::encode(raw)
        });
    let mut response = (status, login_form(view, &csrf)).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, LOGIN_COOKIE, &csrf, 3600),
    );
    response
}

/// `GET /console/login`: the sign-in form.
pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = form_query_pairs(raw.as_deref()).unwrap_or_default();
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let view = LoginView {
        next: safe_next(get("next")),
        notice: (get("signed_out") == Some("1")).then(|| "You are signed out.".to_string()),
        ..LoginView::default()
    };
    login_response(
        &state,
        cookie(&headers, LOGIN_COOKIE),
        StatusCode::OK,
        &view,
    )
}

/// `POST /console/login`: checks the password as `POST /v3/auth/tokens` does, picks the
/// project, and starts the session.
pub async fn login(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let form = match Form::read(&state, body).await {
        Ok(form) => form,
        Err(e) => return e.into_response(),
    };
    let expected = cookie(&parts.headers, LOGIN_COOKIE).unwrap_or_default();
    let sent = form.get("csrf").unwrap_or("");
    let mut view = LoginView {
        user: form.get("user").unwrap_or("").trim().to_string(),
        project: form.get("project").unwrap_or("").trim().to_string(),
        next: safe_next(form.get("next")),
        ..LoginView::default()
    };
    if expected.is_empty() || !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        // Not this browser's form (a forged one), or one whose token was spent: another tab
        // signed in meanwhile. Nothing is signed in; the form is given again, fresh.
        view.error = Some(
            "This sign-in form is no longer valid (another tab may have signed in): sign in \
             again."
                .into(),
        );
        return login_response(&state, None, StatusCode::FORBIDDEN, &view);
    }
    let password = form.get("password").unwrap_or("");
    let user = match password_user(&state, &view.user, password, peer_ip(&parts)).await {
        Ok(user) => user,
        Err(ApiError::Unauthenticated) => {
            view.error = Some(
                "The user name or password is wrong (or too many attempts failed: wait a few \
                 minutes)."
                    .into(),
            );
            return login_response(&state, Some(expected), StatusCode::UNAUTHORIZED, &view);
        }
        Err(e) => return ConsoleError::from(e).into_response(),
    };
    let project = match choose_project(&state, &user, &view.project).await {
        Ok(project) => project,
        Err(ConsoleError::Forbidden(message)) => {
            view.error = Some(message);
            return login_response(&state, Some(expected), StatusCode::FORBIDDEN, &view);
        }
        Err(e) => return e.into_response(),
    };
    let grounds = match crate::http::iam::password_grounds(&user) {
        Ok(grounds) => grounds,
        Err(e) => return ConsoleError::from(e).into_response(),
    };
    match start(&state, (&user, &project), grounds, &view.next).await {
        Ok(mut response) => {
            response
                .headers_mut()
                .append(header::SET_COOKIE, set_cookie(&state, LOGIN_COOKIE, "", 0));
            response
        }
        Err(e) => e.into_response(),
    }
}

/// The project named in the form, or else the first (by name) the user holds a grant in.
async fn choose_project(
    state: &AppState,
    user: &UserRecord,
    asked: &str,
) -> Result<crate::store::ProjectRecord, ConsoleError> {
    if !asked.is_empty() {
        return Ok(granted_project(state, user, asked).await?);
    }
    let first = granted_projects(state, &user.id).await?.into_iter().next();
    let Some((id, _)) = first else {
        return Err(ConsoleError::Forbidden(
            "Your user holds no grant in any project; ask an administrator for one.".into(),
        ));
    };
    Ok(granted_project(state, user, &id).await?)
}

/// A new session of `user` in `project`: its cookie, and the way to `next`.
async fn start(
    state: &AppState,
    (user, project): (&UserRecord, &crate::store::ProjectRecord),
    grounds: crate::store::TokenGrounds<'_>,
    next: &str,
) -> Result<Response, ConsoleError> {
    let (token, _, _) = new_token(state, user, project, grounds).await?;
    let ttl = state.config.token_ttl.as_secs();
    let mut response = Redirect::to(next).into_response();
    response.extensions_mut().insert(crate::audit::Identity {
        user_id: Some(user.id.clone()),
        user_name: Some(user.name.clone()),
        project_id: Some(project.id.clone()),
        access_key: None,
    });
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, SESSION_COOKIE, &token, ttl),
    );
    Ok(response)
}

/// `POST /console/logout`: revokes the session's token and forgets its cookie.
pub async fn logout(State(state): State<AppState>, session: Session, body: Body) -> Response {
    let result = sign_out(&state, &session, body).await;
    session.answer(result)
}

async fn sign_out(
    state: &AppState,
    session: &Session,
    body: Body,
) -> Result<Response, ConsoleError> {
    let form = Form::read(state, body).await?;
    session.check_csrf(&form)?;
    end_token(state, &session.token).await?;
    let mut response = Redirect::to("/console/login?signed_out=1").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(state, SESSION_COOKIE, "", 0));
    Ok(response)
}

/// `POST /console/project`: a new session in another project the user holds a grant in.
pub async fn switch_project(
    State(state): State<AppState>,
    session: Session,
    body: Body,
) -> Response {
    let result = switch(&state, &session, body).await;
    session.answer(result)
}

async fn switch(state: &AppState, session: &Session, body: Body) -> Result<Response, ConsoleError> {
    let form = Form::read(state, body).await?;
    session.check_csrf(&form)?;
    let asked = form.get("project").unwrap_or("");
    let user = state
        .store
        .find_user(&session.caller.user_id)
        .await?
        .ok_or_else(|| ConsoleError::Forbidden("Your user no longer exists.".into()))?;
    let project = granted_project(state, &user, asked).await?;
    // Issued while the session's token is live: a revocation of the user's tokens (as by a
    // new password) made meanwhile refuses it, or ends it too.
    let session_hash = crate::http::auth::token_hash(&session.token);
    let grounds = crate::store::TokenGrounds::Token(&session_hash);
    let mut response = start(state, (&user, &project), grounds, "/console/jobs").await?;
    end_token(state, &session.token).await?;
    // The request's own record is the new token's issue; the old one's end is recorded too,
    // as a sign-out's is.
    response.extensions_mut().insert(crate::audit::AlsoDone {
        action: "token.revoke",
        project_id: Some(session.caller.project.as_str().to_string()),
    });
    Ok(response)
}

/// The query pairs of a request with a value, for the pages' GET forms (none, when the
/// query cannot be decoded: a page's links never make such a query).
pub fn given_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_query_pairs(raw)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_goes_on_only_to_console_pages() {
        assert_eq!(safe_next(Some("/console/servers")), "/console/servers");
        assert_eq!(
            safe_next(Some("/console/jobs?status=FINISHED")),
            "/console/jobs?status=FINISHED"
        );
        assert_eq!(
            safe_next(Some("/console/jobs/a%2Fb?name=..")),
            "/console/jobs/a%2Fb?name=.."
        );
        for elsewhere in [
            None,
            Some(""),
            Some("//evil.example/console/"),
            Some("https://evil.example/console/"),
            Some("/v1/p/dev-servers/jobs"),
            Some("/console/\\\\evil.example"),
            Some("/console/jobs\u{1}"),
            Some("/console/jobs\r\nSet-Cookie: a=b"),
            Some("/console/jobs x"),
            Some("/console/../openapi.json"),
            Some("/console/%2e%2E/openapi.json"),
            Some("/console/./../x"),
            Some("/console/jobs/.."),
            Some("/console/jobs#x"),
        ] {
            assert_eq!(safe_next(elsewhere), "/console/jobs", "{elsewhere:?}");
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name_in_every_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; litejobs_sessionx=no"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("litejobs_session=yes; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("yes"));
        assert_eq!(cookie(&headers, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("litejobs_session="),
        );
        assert_eq!(
            cookie(&headers, SESSION_COOKIE),
            None,
            "an emptied cookie is none"
        );
    }

    #[test]
    fn the_form_token_is_the_sessions_own_and_reveals_nothing_of_it() {
        let one = csrf_token("MIIljtoken-one");
        assert_eq!(one, csrf_token("MIIljtoken-one"), "stable for a session");
        assert_ne!(one, csrf_token("MIIljtoken-two"));
        assert!(!one.contains("token-one"));
        assert_eq!(one.len(), 64);
    }
}
