//! Strict cloud mode (`serve --strict`): the API answers exactly what the cloud's does, so
//! code tested here cannot come to depend on litejobs' extensions.
//!
//! - the list's extension parameters (`limit`, `offset`, `sort_key`, `sort_dir`) are unknown
//!   parameters, ignored as the cloud ignores them (the list handler asks [`list_pairs`]);
//! - the create body's `visible` extension field changes nothing (jobs are visible);
//! - answers carry only the fields of the official SDK's response models (no `visible`,
//!   `is_reboot`, `server_online`);
//! - the extension routes (live watch, task output) are unknown paths: 404 `APIG.0101`.
//!   The agent protocol stays: it is how litejobs' own agents run real servers.

use axum::body::{to_bytes, Body};
use axum::response::Response;
use serde_json::Value;

/// The list parameters that are litejobs' extensions.
pub const LIST_EXTENSIONS: [&str; 4] = ["limit", "offset", "sort_key", "sort_dir"];

/// Fields of the SDK's `GetDevServerJobResponse` / `CreateDevServerJobResponse`.
const JOB_DETAIL: [&str; 12] = [
    "create_at",
    "update_at",
    "id",
    "name",
    "type",
    "status",
    "items",
    "tasks",
    "template_id",
    "user_name",
    "abnormal_count",
    "description",
];
/// Fields of the SDK's `DevServerTaskResponse`.
const TASK: [&str; 8] = [
    "id",
    "server_id",
    "server_name",
    "status",
    "cloud_server",
    "message",
    "create_at",
    "update_at",
];
/// Fields of the SDK's `DevServerJobListResponse`.
const LIST_ITEM: [&str; 9] = [
    "id",
    "name",
    "user_name",
    "description",
    "type",
    "status",
    "abnormal_count",
    "create_at",
    "update_at",
];

/// The query pairs the list reads: without the extensions in strict mode.
pub fn list_pairs(strict: bool, mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    if strict {
        pairs.retain(|(key, _)| !LIST_EXTENSIONS.contains(&key.as_str()));
    }
    pairs
}

/// True for the routes strict mode does not serve.
pub fn is_extension_route(route: &str) -> bool {
    const JOBS: &str = "/v1/{project_id}/dev-servers/jobs";
    matches!(
        route.strip_prefix(JOBS),
        Some("/events" | "/{id}/events" | "/{id}/tasks/{task_id}/output")
    ) || route == "/v1/{project_id}/bench-floor"
}

fn keep(value: &mut Value, fields: &[&str]) {
    if let Value::Object(map) = value {
        map.retain(|key, _| fields.contains(&key.as_str()));
    }
}

/// The answer of `operation` with only the fields the SDK's models have.
pub async fn trim_answer(operation: &str, response: Response) -> Response {
    let shape = match operation {
        "CreateDevServerJob" | "GetDevServerJob" => Shape::Detail,
        "ListDevServerJobs" | "DeleteDevServerJobs" => Shape::Page,
        _ => return response,
    };
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    match shape {
        Shape::Detail => {
            keep(&mut value, &JOB_DETAIL);
            if let Some(Value::Array(tasks)) = value.get_mut("tasks") {
                tasks.iter_mut().for_each(|t| keep(t, &TASK));
            }
        }
        Shape::Page => {
            if let Some(Value::Array(items)) = value.get_mut("data") {
                items.iter_mut().for_each(|i| keep(i, &LIST_ITEM));
            }
        }
    }
    let body = serde_json::to_vec(&value).unwrap_or_else(|_| bytes.to_vec());
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

enum Shape {
    Detail,
    Page,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_parameters_are_dropped_only_in_strict_mode() {
        let pairs = vec![
            ("limit".to_string(), "1".to_string()),
            ("status".to_string(), "FINISHED".to_string()),
            ("visible".to_string(), "false".to_string()),
        ];
        assert_eq!(list_pairs(false, pairs.clone()).len(), 3);
        assert_eq!(
            list_pairs(true, pairs),
            vec![
                ("status".to_string(), "FINISHED".to_string()),
                ("visible".to_string(), "false".to_string())
            ]
        );
    }

    #[test]
    fn extension_routes_are_known() {
        assert!(is_extension_route(
            "/v1/{project_id}/dev-servers/jobs/events"
        ));
        assert!(is_extension_route(
            "/v1/{project_id}/dev-servers/jobs/{id}/tasks/{task_id}/output"
        ));
        assert!(!is_extension_route(
            "/v1/{project_id}/dev-servers/jobs/{id}"
        ));
    }
}
