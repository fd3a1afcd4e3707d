//! The error policy over HTTP: codes, statuses and `X-Request-Id` for every failure.

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{job_request, TestApp};

async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status);
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .expect("x-request-id header");
    assert_eq!(
        response.headers()["content-type"].to_str().ok(),
        Some("application/json")
    );
    let body: serde_json::Value = response.json().await.expect("json body");
    assert_eq!(body["error_code"], code, "{body}");
    assert!(body["error_msg"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(body["request_id"].as_str(), Some(request_id.as_str()));
    body
}

#[tokio::test]
async fn unknown_paths_and_methods_are_no_such_api() {
    let app = TestApp::sqlite().await;
    assert_error(
        app.raw(Method::GET, "/nothing/here").await,
        404,
        "APIG.0101",
    )
    .await;
    assert_error(
        app.raw(Method::GET, "/v1/p/dev-servers/other").await,
        404,
        "APIG.0101",
    )
    .await;
    assert_error(app.raw(Method::PUT, "/health").await, 404, "APIG.0101").await;
    let r = app
        .admin_send(Method::PUT, "/dev-servers/jobs", &[], None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error_code"], "APIG.0101");
}

#[tokio::test]
async fn unsigned_requests_are_refused_alike() {
    let app = TestApp::sqlite().await;
    let path = format!("/v1/{}/dev-servers/jobs", app.project_id);
    let a = assert_error(app.raw(Method::GET, &path).await, 401, "APIG.0301").await;
    let b = reqwest::Client::new()
        .get(format!("{}{path}", app.endpoint))
        .header(
            "Authorization",
            "SDK-HMAC-SHA256 Access=NOPE, SignedHeaders=host;x-sdk-date, Signature=00",
        )
        .send()
        .await
        .expect("sent");
    let b = assert_error(b, 401, "APIG.0301").await;
    assert_eq!(a["error_msg"], b["error_msg"]);
}

#[tokio::test]
async fn oversized_bodies_and_uris_are_refused() {
    let app = TestApp::sqlite().await;
    let path = app.admin.project_path("/dev-servers/jobs");
    let big = vec![b' '; 12 * 1024 * 1024 + 1];
    let r = app
        .admin
        .send(Method::POST, &path, &[], Some(big), &[])
        .await
        .expect("sent");
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error_code"], "APIG.0201");
    // Below the limit, however large, a body is the handler's to judge, in the API's format.
    let r = app
        .admin
        .send(
            Method::POST,
            &path,
            &[],
            Some(vec![b' '; 3 * 1024 * 1024]),
            &[],
        )
        .await
        .expect("sent");
    assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.headers["content-type"].to_str().ok(),
        Some("application/json")
    );
    assert_eq!(r.json()["error_code"], "ModelArts.0107");
    let long = "a".repeat(33 * 1024);
    let r = app
        .raw(
            Method::GET,
            &format!("/v1/{}/dev-servers/jobs?name={long}", app.project_id),
        )
        .await;
    assert_error(r, 414, "APIG.0201").await;
    assert_eq!(app.admin.list_jobs(&[]).await.expect("list").total, 0);
}

#[tokio::test]
async fn health_answers_and_every_response_has_a_request_id() {
    let app = TestApp::sqlite().await;
    let r = app.raw(Method::GET, "/health").await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body, json!({"status": "ok", "backend": "sqlite"}));
    let ok = app
        .admin_send(Method::GET, "/dev-servers/jobs", &[], None)
        .await;
    assert!(ok.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn malformed_project_ids_are_invalid() {
    let app = TestApp::sqlite().await;
    let other = app.admin.for_project("bad_project");
    let path = other.project_path("/dev-servers/jobs");
    let r = other
        .send(Method::GET, &path, &[], None, &[])
        .await
        .expect("sent");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error_code"], "ModelArts.0107");
}

#[tokio::test]
async fn undecodable_path_parameters_are_invalid_in_the_api_format() {
    let app = TestApp::sqlite().await;
    let path = app.admin.project_path("/dev-servers/jobs/%FF%FE");
    let r = app
        .admin
        .send(Method::GET, &path, &[], None, &[])
        .await
        .expect("sent");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error_code"], "ModelArts.0107");
    // An id with an encoded slash, space and non-ASCII letter is one path parameter.
    let r = app
        .admin_send(Method::GET, "/dev-servers/jobs/job%201%2F%C3%BC", &[], None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error_code"], "ModelArts.0102");
    assert!(r.json()["error_msg"]
        .as_str()
        .is_some_and(|m| m.contains("job 1/ü")));
}

/// A GET of `path?query` signed by the administrator, the query sent as it is.
async fn signed_get(app: &TestApp, path: &str, query: &str) -> (u16, serde_json::Value) {
    let mut headers = vec![("Host".to_string(), app.addr.to_string())];
    let credentials = litejobs::sign::Credentials {
        access_key: app.credentials.access_key.clone(),
        secret_key: app.credentials.secret_key.clone(),
    };
    let auth = litejobs::sign::sign(
        "GET",
        path,
        query,
        &mut headers,
        b"",
        &credentials,
        chrono::Utc::now(),
    );
    let mut request = reqwest::Client::new().get(format!("{}{path}?{query}", app.endpoint));
    for (n, v) in &headers {
        request = request.header(n.as_str(), v.as_str());
    }
    let r = request
        .header("Authorization", auth)
        .send()
        .await
        .expect("sent");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON"))
}

#[tokio::test]
async fn undecodable_query_values_are_invalid_in_the_api_format() {
    let app = TestApp::sqlite().await;
    let path = app.admin.project_path("/dev-servers/jobs");
    for query in ["name=%FF", "id=%C3", "%FE=1", "name=ok&status=%FF"] {
        let (status, body) = signed_get(&app, &path, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error_code"], "ModelArts.0107", "{query}");
    }
    // U+FFFD itself, sent as UTF-8, is a value like any other.
    let (status, body) = signed_get(&app, &path, "name=%EF%BF%BD").await;
    assert_eq!(
        (status, &body["total"]),
        (200, &serde_json::json!(0)),
        "{body}"
    );
}

/// Control characters, U+0000 among them (which PostgreSQL's text cannot hold), behave the
/// same on both backends: a value looked up (an id, a filter, a user name) matches nothing,
/// a value that would be stored (a server id) is refused with 400; nothing changes.
async fn control_characters_match_nothing_and_are_never_stored(app: TestApp) {
    let job = app.create_job("kept", &["sim-server-01"]).await;
    let r = app
        .admin_send(Method::GET, "/dev-servers/jobs/a%00b", &[], None)
        .await;
    assert_eq!(r.status, 404, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error_code"], "ModelArts.0102");
    for path in [
        format!("/dev-servers/jobs/{}/tasks/a%00b/output", job.id),
        "/dev-servers/jobs/a%00b/tasks/x/output".to_string(),
    ] {
        let r = app.admin_send(Method::GET, &path, &[], None).await;
        assert_eq!(
            r.status,
            404,
            "{path}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["error_code"], "ModelArts.0102");
    }
    for (key, value) in [
        ("id", "a\0b"),
        ("name", "\0abc"),
        ("name", "ab\tcd"),
        ("name", "\0"),
    ] {
        let r = app
            .admin_send(Method::GET, "/dev-servers/jobs", &[(key, value)], None)
            .await;
        assert_eq!(
            r.status,
            200,
            "{key}={value:?}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.json(),
            json!({"current": 1, "data": [], "pages": 0, "size": 0, "total": 0}),
            "{key}={value:?}"
        );
    }
    let r = app
        .admin_send(
            Method::DELETE,
            "/dev-servers/jobs",
            &[],
            Some(json!({"job_ids": ["x\u{0}", "\u{0}"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["total"], 0);
    let r = app
        .admin_send(
            Method::GET,
            "/dev-servers/jobs/templates",
            &[("name", "\0")],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["total"], 0);
    // Values that would be stored.
    let mut create = serde_json::to_value(job_request("nul", &["sim-server-01"])).expect("json");
    create["server_ids"] = json!(["sim-server-01", "\u{0}"]);
    let r = app
        .admin_send(Method::POST, "/dev-servers/jobs", &[], Some(create))
        .await;
    assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error_code"], "ModelArts.0107");
    let r = app
        .admin_send(
            Method::PUT,
            "/agent/servers/a%00b",
            &[],
            Some(json!({"name": "n"})),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(&r.body));
    let r = app
        .admin_send(
            Method::PUT,
            "/agent/servers/node-1",
            &[],
            Some(json!({"name": "a\tb"})),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(&r.body));
    // A user name holding U+0000 is no user's.
    let r = reqwest::Client::new()
        .post(format!("{}/v3/auth/tokens", app.endpoint))
        .json(&json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "ad\u{0}min", "password": "x"}}}, "scope": {"project": {"id": app.project_id}}}}))
        .send()
        .await
        .expect("sent");
    assert_error(r, 401, "APIG.0301").await;
    let list = app.admin.list_jobs(&[]).await.expect("list");
    assert_eq!(list.total, 1);
    // The one job, not deleted (its simulated task may have ended meanwhile).
    assert_eq!(list.data[0].id, job.id);
    assert_ne!(list.data[0].status, "DELETED");
    let servers = app
        .store
        .list_servers(&litejobs::domain::ProjectId::parse(&app.project_id).expect("project"))
        .await
        .expect("servers");
    assert!(servers
        .iter()
        .all(|s| s.id != "node-1" && !s.id.contains('\0')));
}

backend_tests!(control_characters_match_nothing_and_are_never_stored);
