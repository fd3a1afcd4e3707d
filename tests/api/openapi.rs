//! The OpenAPI document: the committed copy follows the code, every route of the router is
//! documented and every documented operation is answered, and the document and the explorer
//! are served without authentication.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use reqwest::Method;

use crate::helpers::TestApp;

/// Routes that are not part of the API document: the explorer itself, the console's pages
/// (HTML for people), and the benchmark's floor route (served only with `--bench-floor`).
/// Paths outside the document: the explorer, the console, the benchmark's floor, and the
/// emulator's control API (only with `--simulate`; docs/emulator.md describes it).
const NOT_DOCUMENTED: [&str; 4] = [
    "/docs",
    "/console",
    "/v1/{project_id}/bench-floor",
    "/_litejobs",
];

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn document() -> serde_json::Value {
    serde_json::to_value(litejobs::http::openapi::document()).expect("the document is JSON")
}

/// `(path, method)` of every operation in the document.
fn documented_operations(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .filter(|m| METHODS.contains(&m.as_str()))
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect()
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let committed_path = root().join("docs/openapi.json");
    let generated = litejobs::http::openapi::document_json();
    if std::env::var_os("LITEJOBS_UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed_path, &generated).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the document the code generates (a route, a \
         parameter or a wire type changed); review the change and rewrite it with \
         `LITEJOBS_UPDATE_OPENAPI=1 cargo test --test api openapi::`"
    );
}

/// The source files whose routers make up the served API (the console's pages are not
/// part of it).
fn router_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            if !path.ends_with("console") {
                router_sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(path, method)` of every `.route("…", get(…).post(…)…)` in `text`.
fn routes_in(text: &str, file: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        // The call's text, up to its closing parenthesis.
        let mut depth = 1;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = i;
                break;
            }
        }
        let call = &rest[..end];
        let literal = call.trim_start().strip_prefix('"').unwrap_or_else(|| {
            panic!(
                "{}: a route's path must be a string literal: {call}",
                file.display()
            )
        });
        let path = &literal[..literal.find('"').expect("closing quote")];
        let handlers = &literal[path.len() + 1..];
        let mut any = false;
        for method in METHODS {
            let plain = format!("{method}(");
            let any_of = [
                format!(" {plain}"),
                format!(".{plain}"),
                format!("::{plain}"),
                format!("\n{plain}"),
                format!("({plain}"),
            ];
            if any_of.iter().any(|p| handlers.contains(p.as_str())) {
                found.push((path.to_string(), method.to_string()));
                any = true;
            }
        }
        assert!(any, "{}: no method found in route {path}", file.display());
    }
    found
}

fn is_documented_surface(path: &str) -> bool {
    !NOT_DOCUMENTED
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

#[test]
fn every_route_of_the_router_is_documented_and_every_operation_is_routed() {
    let mut files = Vec::new();
    router_sources(&root().join("src"), &mut files);
    let mut routed = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        routed.extend(
            routes_in(&text, file)
                .into_iter()
                .filter(|(path, _)| is_documented_surface(path)),
        );
    }
    // The scan must see the router: a scan that finds nothing proves nothing.
    assert!(routed.contains(&("/v1/{project_id}/dev-servers/jobs".into(), "get".into())));
    let documented = documented_operations(&document());
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document (annotate their handlers with \
         #[utoipa::path] and list them in src/http/openapi.rs): {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented operations no router serves: {unrouted:?}"
    );
}

#[test]
fn the_route_scan_reads_methods_and_refuses_computed_paths() {
    let text = r#"Router::new()
        .route("/a/{id}", get(x::list).post(x::create).delete(x::delete))
        .route(
            "/b",
            axum::routing::put(y::put),
        )"#;
    assert_eq!(
        routes_in(text, Path::new("t.rs")),
        [
            ("/a/{id}".into(), "get".into()),
            ("/a/{id}".into(), "post".into()),
            ("/a/{id}".into(), "delete".into()),
            ("/b".into(), "put".into()),
        ]
    );
    let computed = std::panic::catch_unwind(|| routes_in(".route(PATH, get(x))", Path::new("t")));
    assert!(computed.is_err());
}

/// A concrete path for a documented template.
fn concrete(template: &str, project_id: &str) -> String {
    template
        .replace("{project_id}", project_id)
        .replace("{server_id}", "probe-server")
        .replace("{task_id}", "probe-task")
        .replace("{id}", "probe-id")
}

#[tokio::test]
async fn the_server_answers_every_documented_operation_and_no_other_method() {
    let app = TestApp::sqlite().await;
    let doc = document();
    let documented = documented_operations(&doc);
    let paths: BTreeSet<&String> = documented.iter().map(|(p, _)| p).collect();
    for template in paths {
        let path = concrete(template, &app.project_id);
        for method in METHODS {
            let response = app
                .raw(
                    Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"),
                    &path,
                )
                .await;
            let status = response.status().as_u16();
            let body: serde_json::Value = if status == 404 {
                response.json().await.expect("a 404 is JSON")
            } else {
                serde_json::Value::Null
            };
            let no_such_api = status == 404 && body["error_code"] == "APIG.0101";
            let is_documented = documented.contains(&(template.clone(), method.to_string()));
            assert_eq!(
                !no_such_api, is_documented,
                "{method} {path}: answered {status} {body}, documented: {is_documented}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_document_and_the_explorer_are_served_without_authentication() {
    let app = TestApp::sqlite().await;

    let response = app.raw(Method::GET, "/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let served: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(served, document());
    assert_eq!(served["openapi"], "3.1.0");

    let response = app.raw(Method::GET, "/docs/").await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.expect("text");
    assert!(page.contains("swagger-ui"), "{page}");

    // The explorer's own files come from the binary, and load the served document.
    let initializer = app
        .raw(Method::GET, "/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .expect("text");
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    // Nothing from the internet: no validator badge (Swagger UI's default asks swagger.io).
    assert!(
        initializer.contains(r#""validatorUrl": "none""#),
        "{initializer}"
    );
    let bundle = app.raw(Method::GET, "/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.expect("bytes").len() > 100_000);
    for asset in [&page, &initializer] {
        assert!(
            !asset.contains("https://"),
            "the explorer fetches nothing: {asset}"
        );
    }

    let license = app.raw(Method::GET, "/docs/LICENSE").await;
    assert_eq!(license.status(), 200);
    let license = license.text().await.expect("text");
    assert!(license.contains("Apache License"));
    assert!(license.contains("SmartBear"));

    // A file the explorer does not have is an unknown path, in the error format.
    for missing in ["/docs/nope", "/docs/%2e%2e/Cargo.toml"] {
        let response = app.raw(Method::GET, missing).await;
        assert_eq!(response.status(), 404, "{missing}");
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["error_code"], "APIG.0101", "{missing}");
    }

    // `/docs` leads to the explorer.
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{}/docs", app.endpoint))
        .send()
        .await
        .expect("answer");
    assert!(redirect.status().is_redirection(), "{}", redirect.status());
    app.stop().await;
}
