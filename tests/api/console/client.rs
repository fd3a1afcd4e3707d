//! A browser without JavaScript, for the console's HTTP tests: follows no redirects, keeps
//! the console's cookies, reads hidden form fields.

use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::StatusCode;

use crate::helpers::{user_with_policy, TestApp};

/// The password `user_with_policy` gives its users.
pub const PASSWORD: &str = "pw-of-the-user";

/// A browser without JavaScript: follows no redirects, keeps the console's cookies.
pub struct Browser {
    endpoint: String,
    http: reqwest::Client,
    pub cookies: Vec<(String, String)>,
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        Self {
            endpoint: app.endpoint.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: Vec::new(),
        }
    }

    fn keep_cookies(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().expect("ascii cookie");
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').expect("name=value");
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_string(), value.to_string()));
            }
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn get(&mut self, path: &str) -> reqwest::Response {
        let response = self
            .http
            .get(format!("{}{path}", self.endpoint))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("GET reaches the server");
        self.keep_cookies(&response);
        response
    }

    pub async fn page(&mut self, path: &str) -> (StatusCode, String) {
        let response = self.get(path).await;
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let response = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .expect("POST reaches the server");
        self.keep_cookies(&response);
        response
    }

    /// Signs in through the form; answers the response to the form's post.
    pub async fn sign_in(&mut self, user: &str, password: &str) -> reqwest::Response {
        let (_, form) = self.page("/console/login").await;
        let csrf = hidden(&form, "csrf");
        self.post(
            "/console/login",
            &[
                ("csrf", &csrf),
                ("user", user),
                ("password", password),
                ("project", ""),
                ("next", "/console/jobs"),
            ],
        )
        .await
    }

    /// The form token of the session, read from a page.
    pub async fn csrf(&mut self) -> String {
        let (_, page) = self.page("/console/jobs").await;
        hidden(&page, "csrf")
    }
}

/// The value of the first hidden input `name` of a page.
pub fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).expect("the page holds the field") + marker.len();
    let end = page[start..].find('"').expect("a closed value");
    page[start..start + end].to_string()
}

pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

pub async fn signed_in(app: &TestApp, name: &str, policy: &str) -> Browser {
    user_with_policy(app, name, &app.project_id, policy).await;
    let mut browser = Browser::new(app);
    let response = browser.sign_in(name, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "signed in");
    browser
}
