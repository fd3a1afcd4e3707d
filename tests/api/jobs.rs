//! The job API end to end: list filters and paging, create, show, delete, the simulated
//! lifecycle and idempotency, on both backends.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use litejobs::domain::ProjectId;
use litejobs::store::NewServer;
use litejobs::wire::JobListItem;
use reqwest::Method;
use serde_json::{json, Value};

use crate::backend_tests;
use crate::helpers::{job_request, TestApp};

const WAIT: Duration = Duration::from_secs(10);

/// Registers a server that only a node agent would run tasks on, so its jobs stay running.
async fn add_agent_server(app: &TestApp, id: &str) {
    app.store
        .upsert_server(
            &ProjectId::parse(&app.project_id).expect("project id"),
            NewServer {
                id: id.to_string(),
                name: format!("{id}-name"),
                kind: "agent".to_string(),
                sim_outcome: None,
                cloud_server: BTreeMap::from([("type".to_string(), "BMS".to_string())]),
                now_ms: litejobs::domain::now_ms(),
            },
        )
        .await
        .expect("server registered");
}

/// Four jobs: two finished (one hidden), one running, one deleted. Answers their ids.
async fn seed(app: &TestApp) -> [String; 4] {
    add_agent_server(app, "node-a").await;
    let mut finished = job_request("alpha-common", &["sim-server-01"]);
    finished.description = Some("POC".to_string());
    let a = app.admin.create_job(&finished, None).await.expect("a");
    let mut hidden = job_request("beta-Log", &["sim-server-01", "sim-server-02"]);
    hidden.job_type = "LOG_COLLECT".to_string();
    hidden.visible = Some(false);
    let b = app.admin.create_job(&hidden, None).await.expect("b");
    let c = app.create_job("gamma-common", &["node-a"]).await;
    let mut diag = job_request("delta-diag", &["sim-server-03"]);
    diag.job_type = "ASCEND_DIAGNOSIS".to_string();
    let d = app.admin.create_job(&diag, None).await.expect("d");
    app.wait_for_status(&a.id, "FINISHED", WAIT).await;
    app.wait_for_status(&b.id, "FINISHED", WAIT).await;
    app.admin
        .delete_jobs(std::slice::from_ref(&d.id))
        .await
        .expect("deleted");
    [a.id, b.id, c.id, d.id]
}

async fn list_ids(app: &TestApp, query: &[(&str, &str)]) -> Vec<String> {
    let query: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let page = app.admin.list_jobs(&query).await.expect("list");
    page.data.into_iter().map(|j| j.id).collect()
}

fn set(ids: &[&String]) -> HashSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

async fn list_answers_raw_json_of_the_contract(app: TestApp) {
    let [a, b, ..] = seed(&app).await;
    let response = app
        .admin_send(Method::GET, "/dev-servers/jobs", &[], None)
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers["content-type"].to_str().expect("ascii"),
        "application/json"
    );
    assert!(response.headers.contains_key("x-request-id"));
    let body = response.json();
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["current", "data", "pages", "size", "total"]);
    for k in ["current", "pages", "size", "total"] {
        assert!(body[k].is_u64(), "{k} must be an integer: {body}");
    }
    assert_eq!(
        (body["current"].as_u64(), body["pages"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (body["size"].as_u64(), body["total"].as_u64()),
        (Some(4), Some(4))
    );
    let data = body["data"].as_array().expect("array");
    for job in data {
        for k in ["create_at", "update_at", "abnormal_count"] {
            assert!(job[k].is_i64(), "{k} must be an integer: {job}");
        }
        assert!(job["update_at"].as_i64() >= job["create_at"].as_i64());
        for k in ["id", "name", "user_name", "type", "status"] {
            assert!(job[k].is_string(), "{k} must be a string: {job}");
        }
    }
    let with = data
        .iter()
        .find(|j| j["id"] == a.as_str())
        .expect("a listed");
    assert_eq!(with["description"], "POC");
    assert_eq!(with["user_name"], "admin");
    let without = data
        .iter()
        .find(|j| j["id"] == b.as_str())
        .expect("b listed");
    assert!(
        without.get("description").is_none(),
        "description must be omitted when absent: {without}"
    );
    // Newest first, ties by id.
    let order: Vec<(i64, String)> = data
        .iter()
        .map(|j| {
            (
                j["create_at"].as_i64().unwrap_or(0),
                j["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(order, sorted);
}

async fn two_jobs_reproduce_the_seed_example_page(app: TestApp) {
    app.create_job("software-upgrade-792a", &["sim-server-01"])
        .await;
    app.create_job("diagnosis-81ef", &["sim-server-02"]).await;
    let body = app
        .admin_send(Method::GET, "/dev-servers/jobs", &[], None)
        .await
        .json();
    assert_eq!(
        (
            &body["current"],
            &body["pages"],
            &body["size"],
            &body["total"]
        ),
        (&json!(1), &json!(1), &json!(2), &json!(2))
    );
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
}

async fn list_filters_alone_and_combined(app: TestApp) {
    let [a, b, c, d] = seed(&app).await;
    type Case<'a> = (Vec<(&'a str, &'a str)>, HashSet<String>);
    let cases: Vec<Case> = vec![
        (vec![("id", a.as_str())], set(&[&a])),
        (vec![("id", "no-such-job")], set(&[])),
        (vec![("name", "COMMON")], set(&[&a, &c])),
        (vec![("name", "beta-log")], set(&[&b])),
        (vec![("name", "A-CO")], set(&[&a, &c])),
        (vec![("name", "lta-diag")], set(&[&d])),
        (vec![("name", "ta-\"d")], set(&[])),
        (vec![("name", "a c")], set(&[])),
        (vec![("name", "commonalpha")], set(&[])),
        (vec![("type", "COMMON")], set(&[&a, &c])),
        (vec![("type", "common")], set(&[])),
        (vec![("status", "FINISHED")], set(&[&a, &b])),
        (vec![("status", "PROCESSING")], set(&[&c])),
        (vec![("status", "DELETED")], set(&[&d])),
        (vec![("visible", "false")], set(&[&b])),
        (vec![("visible", "TRUE")], set(&[&a, &c, &d])),
        (vec![("type", "COMMON"), ("status", "FINISHED")], set(&[&a])),
        (
            vec![
                ("type", "LOG_COLLECT"),
                ("status", "FINISHED"),
                ("visible", "false"),
            ],
            set(&[&b]),
        ),
        (vec![("type", "LOG_COLLECT"), ("visible", "true")], set(&[])),
        (
            vec![
                ("name", "a"),
                ("status", "DELETED"),
                ("type", "ASCEND_DIAGNOSIS"),
            ],
            set(&[&d]),
        ),
        (vec![("id", c.as_str()), ("status", "FINISHED")], set(&[])),
        (vec![("unknown", "x")], set(&[&a, &b, &c, &d])),
    ];
    for (query, expected) in cases {
        let query_pairs: Vec<(&str, String)> =
            query.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let page = app.admin.list_jobs(&query_pairs).await.expect("list");
        let got: HashSet<String> = page.data.iter().map(|j| j.id.clone()).collect();
        assert_eq!(got, expected, "query {query:?}");
        assert_eq!(page.total, expected.len() as u64, "total of {query:?}");
    }
}

async fn paging_edges(app: TestApp) {
    // Empty.
    let empty = app.admin.list_jobs(&[]).await.expect("list");
    assert_eq!(
        (empty.current, empty.pages, empty.size, empty.total),
        (1, 0, 0, 0)
    );
    assert!(empty.data.is_empty());
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            app.create_job(&format!("job-{i}"), &["sim-server-01"])
                .await
                .id,
        );
    }
    let all = list_ids(&app, &[]).await;
    assert_eq!(all.len(), 7);
    let page = |limit: &str, offset: &str| {
        let q = vec![("limit", limit.to_string()), ("offset", offset.to_string())];
        let admin = app.admin.clone();
        async move { admin.list_jobs(&q).await.expect("page") }
    };
    // Exactly one page.
    let p = page("7", "0").await;
    assert_eq!(
        (p.current, p.pages, p.size, p.total, p.data.len()),
        (1, 1, 7, 7, 7)
    );
    // Pages of 3: the last is partial, and together they are the whole list in order.
    let (p1, p2, p3) = (
        page("3", "0").await,
        page("3", "3").await,
        page("3", "6").await,
    );
    assert_eq!((p1.current, p1.pages, p1.size), (1, 3, 3));
    assert_eq!((p2.current, p3.current, p3.data.len()), (2, 3, 1));
    let joined: Vec<String> = [p1.data, p2.data, p3.data]
        .concat()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(joined, all);
    // A page in the far half reads the same as the whole list's slice.
    let far = page("2", "4").await;
    let far_ids: Vec<String> = far.data.into_iter().map(|j| j.id).collect();
    assert_eq!(far_ids, all[4..6].to_vec());
    // An offset without a limit: the page without one (all 7), read from the offset on.
    let rest = app
        .admin
        .list_jobs(&[("offset", "5".to_string())])
        .await
        .expect("list");
    assert_eq!(
        (rest.current, rest.pages, rest.size, rest.total),
        (1, 1, 7, 7)
    );
    let rest_ids: Vec<String> = rest.data.into_iter().map(|j| j.id).collect();
    assert_eq!(rest_ids, all[5..].to_vec());
    // Offset past the end.
    let past = page("3", "50").await;
    assert!(past.data.is_empty());
    assert_eq!((past.total, past.pages), (7, 3));
    // The largest offset, with pages whose end is past the largest 64-bit integer.
    for (limit, sort_key) in [("1", "create_at"), ("1000", "name"), ("2", "update_at")] {
        let q = [
            ("limit", limit),
            ("offset", "9223372036854775807"),
            ("sort_key", sort_key),
        ];
        let r = app
            .admin_send(Method::GET, "/dev-servers/jobs", &q, None)
            .await;
        assert_eq!(r.status, 200, "{q:?}: {}", r.json());
        let body = r.json();
        assert_eq!(body["total"], 7, "{q:?}");
        assert_eq!(body["current"], body["pages"], "{q:?}");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(0), "{q:?}");
    }
    // Limit above the maximum is refused.
    let r = app
        .admin_send(Method::GET, "/dev-servers/jobs", &[("limit", "1001")], None)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error_code"], "ModelArts.0107");
    // Sorting by name ascending.
    let by_name = list_ids(&app, &[("sort_key", "name"), ("sort_dir", "asc")]).await;
    let mut expected = ids.clone();
    expected.sort_by_key(|id| ids.iter().position(|x| x == id));
    assert_eq!(by_name, expected);
    let by_name_desc = list_ids(
        &app,
        &[("sort_key", "name"), ("sort_dir", "desc"), ("limit", "2")],
    )
    .await;
    assert_eq!(by_name_desc, vec![ids[6].clone(), ids[5].clone()]);
    // Name and id filters: pages shorter than, as long as, and longer than the matches all
    // carry the exact total, and hold the first matches in the page's order.
    for (query, total, expected) in [
        (vec![("name", "JOB"), ("limit", "3")], 7, &all[..3]),
        (vec![("name", "job-"), ("limit", "7")], 7, &all[..]),
        (vec![("name", "ob"), ("limit", "8")], 7, &all[..]),
        (vec![("name", "job-3"), ("limit", "1")], 1, &ids[3..4]),
        (vec![("name", "job-3"), ("limit", "2")], 1, &ids[3..4]),
        (
            vec![("name", "job"), ("limit", "3"), ("offset", "5")],
            7,
            &all[5..],
        ),
        (
            vec![
                ("name", "Job-"),
                ("sort_key", "name"),
                ("sort_dir", "asc"),
                ("limit", "4"),
            ],
            7,
            &ids[..4],
        ),
        (
            vec![
                ("name", "b-"),
                ("sort_key", "name"),
                ("sort_dir", "desc"),
                ("limit", "2"),
            ],
            7,
            &[ids[6].clone(), ids[5].clone()][..],
        ),
        (vec![("id", ids[2].as_str()), ("limit", "1")], 1, &ids[2..3]),
    ] {
        let q: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let p = app.admin.list_jobs(&q).await.expect("list");
        let found: Vec<String> = p.data.into_iter().map(|j| j.id).collect();
        assert_eq!((p.total, &found[..]), (total, expected), "{query:?}");
    }
}

async fn small_max_page_size_splits_the_default_page(app: TestApp) {
    drop(app);
    let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, |c| c.max_page_size = 2)
        .await
        .expect("app");
    for i in 0..5 {
        app.create_job(&format!("job-{i}"), &["sim-server-01"])
            .await;
    }
    let p = app.admin.list_jobs(&[]).await.expect("list");
    assert_eq!(
        (p.current, p.pages, p.size, p.total, p.data.len()),
        (1, 3, 2, 5, 2)
    );
    // An offset without a limit reads on in pages of the same size, and numbers its page.
    for (offset, current, len) in [("0", 1, 2), ("1", 1, 2), ("3", 2, 2), ("4", 3, 1)] {
        let p = app
            .admin
            .list_jobs(&[("offset", offset.to_string())])
            .await
            .expect("list");
        assert_eq!(
            (p.current, p.pages, p.size, p.total, p.data.len()),
            (current, 3, 2, 5, len),
            "offset {offset}"
        );
    }
}

async fn list_rejects_invalid_filters(app: TestApp) {
    let long = "x".repeat(65);
    for query in [
        vec![("status", "RUNNING")],
        vec![("status", "finished")],
        vec![("status", "")],
        vec![("visible", "1")],
        vec![("visible", "")],
        vec![("type", "bad type")],
        vec![("id", long.as_str())],
        vec![("name", long.as_str())],
        vec![("limit", "0")],
        vec![("limit", "x")],
        vec![("offset", "-3")],
        vec![("sort_key", "status")],
        vec![("sort_dir", "sideways")],
        vec![("status", "FINISHED"), ("status", "DELETED")],
    ] {
        let r = app
            .admin_send(Method::GET, "/dev-servers/jobs", &query, None)
            .await;
        assert_eq!(r.status, 400, "{query:?}");
        let body = r.json();
        assert_eq!(body["error_code"], "ModelArts.0107", "{query:?}");
        assert!(body["error_msg"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(
            body["request_id"].as_str(),
            r.headers["x-request-id"].to_str().ok()
        );
    }
}

async fn simulated_jobs_finish_and_count_failures(app: TestApp) {
    drop(app);
    let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, |c| {
        c.simulate_outcomes = vec![("sim-server-02".into(), "FAILED".into())];
    })
    .await
    .expect("app");
    let job = app
        .create_job(
            "mixed",
            &["sim-server-01", "sim-server-02", "sim-server-03"],
        )
        .await;
    assert_eq!(job.status, "PROCESSING");
    assert_eq!(job.tasks.len(), 3);
    assert!(job.tasks.iter().all(|t| t.status == "PROCESSING"));
    let done = app.wait_for_status(&job.id, "FINISHED", WAIT).await;
    assert_eq!(done.abnormal_count, 1);
    let statuses: BTreeMap<String, String> = done
        .tasks
        .iter()
        .map(|t| (t.server_id.clone(), t.status.clone()))
        .collect();
    assert_eq!(statuses["sim-server-02"], "FAILED");
    assert_eq!(statuses["sim-server-01"], "SUCCESS");
    assert_eq!(statuses["sim-server-03"], "SUCCESS");
    assert!(done.update_at > done.create_at);
    let listed = app.admin.list_jobs(&[]).await.expect("list");
    assert_eq!(listed.data[0].abnormal_count, 1);
    assert_eq!(listed.data[0].status, "FINISHED");
}

async fn a_failure_rate_of_one_fails_every_task(app: TestApp) {
    drop(app);
    let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, |c| {
        c.simulate_failure_rate = 1.0;
    })
    .await
    .expect("app");
    let job = app
        .create_job("doomed", &["sim-server-01", "sim-server-04"])
        .await;
    let done = app.wait_for_status(&job.id, "FINISHED", WAIT).await;
    assert_eq!(done.abnormal_count, 2);
    assert!(done
        .tasks
        .iter()
        .all(|t| t.status == "FAILED" && !t.message.is_empty()));
}

async fn job_detail_raw_json(app: TestApp) {
    let job = app
        .create_job("detail", &["sim-server-01", "sim-server-02"])
        .await;
    let r = app
        .admin_send(
            Method::GET,
            &format!("/dev-servers/jobs/{}", job.id),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["id"], job.id.as_str());
    assert_eq!(body["type"], "COMMON");
    assert!(body["create_at"].is_i64() && body["update_at"].is_i64());
    assert!(body["template_id"].is_string());
    assert_eq!(
        body["items"],
        json!([{"type": "COMMON", "spec": {"cmd": "echo hi"}}])
    );
    let tasks = body["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 2);
    for t in tasks {
        assert!(
            t["create_at"].is_string() && t["update_at"].is_string(),
            "{t}"
        );
        assert!(t["create_at"]
            .as_str()
            .is_some_and(|s| s.parse::<i64>().is_ok()));
        assert!(t["cloud_server"].is_object());
        assert!(t["server_name"].is_string());
    }
    let missing = app
        .admin_send(Method::GET, "/dev-servers/jobs/no-such-job", &[], None)
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error_code"], "ModelArts.0102");
}

async fn delete_is_soft_cancels_tasks_and_ignores_unknown_ids(app: TestApp) {
    add_agent_server(&app, "node-a").await;
    let running = app.create_job("running", &["node-a"]).await;
    let other = app.create_job("kept", &["node-a"]).await;
    let r = app
        .admin_send(
            Method::DELETE,
            "/dev-servers/jobs",
            &[],
            Some(json!({"job_ids": [running.id, "no-such-id"]})),
        )
        .await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(
        (
            &body["total"],
            &body["size"],
            &body["current"],
            &body["pages"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(1))
    );
    assert_eq!(body["data"][0]["id"], running.id.as_str());
    assert_eq!(body["data"][0]["status"], "DELETED");
    let detail = app
        .admin
        .get_job(&running.id)
        .await
        .expect("still readable");
    assert_eq!(detail.status, "DELETED");
    assert_eq!(detail.tasks[0].status, "SKIPPED");
    assert!(detail.tasks[0].message.contains("deleted"));
    let deleted = list_ids(&app, &[("status", "DELETED")]).await;
    assert_eq!(deleted, vec![running.id.clone()]);
    let by_id = list_ids(&app, &[("id", &running.id)]).await;
    assert_eq!(by_id, vec![running.id.clone()]);
    assert_eq!(
        app.admin.get_job(&other.id).await.expect("other").status,
        "PROCESSING"
    );
    // Deleting again answers the job again and changes nothing.
    let again = app
        .admin
        .delete_jobs(std::slice::from_ref(&running.id))
        .await
        .expect("again");
    assert_eq!(again.data.len(), 1);
    let all = app.admin.list_jobs(&[]).await.expect("list");
    assert_eq!(all.total, 2);
}

async fn delete_rejects_bad_bodies(app: TestApp) {
    for body in [
        json!({}),
        json!({"job_ids": []}),
        json!({"job_ids": "abc"}),
        json!({"job_ids": [1, 2]}),
        json!([]),
    ] {
        let r = app
            .admin_send(Method::DELETE, "/dev-servers/jobs", &[], Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json()["error_code"], "ModelArts.0107", "{body}");
    }
}

async fn create_validates_and_creates_nothing_on_error(app: TestApp) {
    let good = serde_json::to_value(job_request("ok-name", &["sim-server-01"])).expect("json");
    let with = |key: &str, value: Value| {
        let mut v = good.clone();
        v[key] = value;
        v
    };
    let without = |key: &str| {
        let mut v = good.clone();
        v.as_object_mut().map(|o| o.remove(key));
        v
    };
    let cases = vec![
        with("name", json!("bad name")),
        with("name", json!("")),
        with("name", json!("x".repeat(65))),
        with("name", json!(7)),
        with("description", json!("has spaces")),
        with("type", json!("NO_SUCH_TEMPLATE")),
        with("type", json!("bad type")),
        with("server_ids", json!([])),
        with("server_ids", json!(["sim-server-01", "sim-server-01"])),
        with("server_ids", json!(["unknown-server"])),
        with("server_ids", json!("sim-server-01")),
        with("items", json!([])),
        with("items", json!([{"type": "bad type"}])),
        with("items", json!([{"type": "COMMON", "spec": {"cmd": 5}}])),
        // The template's rules for its parameters: COMMON's cmd is 1 to 4,096 characters.
        with(
            "items",
            json!([{"type": "COMMON", "spec": {"cmd": "x".repeat(4097)}}]),
        ),
        with(
            "items",
            json!([{"type": "COMMON", "spec": {"cmd": "x".repeat(200_000)}}]),
        ),
        with("items", json!([{"type": "COMMON", "spec": {"cmd": ""}}])),
        // Without a cmd the task would run COMMON's default, the empty command: it is
        // required, whatever the item's type.
        with("items", json!([{"type": "COMMON"}])),
        with("items", json!([{"type": "COMMON", "spec": null}])),
        with("items", json!([{"type": "COMMON", "spec": {"other": "x"}}])),
        with(
            "items",
            json!([{"type": "DEVICE_LOG_COLLECT", "spec": {"dest": "/tmp"}}]),
        ),
        // A spec entry becomes an environment variable of the command.
        with(
            "items",
            json!([{"type": "COMMON", "spec": {"cmd": "echo hi\u{0}there"}}]),
        ),
        with(
            "items",
            json!([{"type": "COMMON", "spec": {"cmd": "true", "a=b": "c"}}]),
        ),
        with("is_reboot", json!("yes")),
        without("name"),
        without("items"),
        without("server_ids"),
        without("type"),
    ];
    for body in cases {
        let r = app
            .admin_send(Method::POST, "/dev-servers/jobs", &[], Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json()["error_code"], "ModelArts.0107", "{body}");
    }
    // Malformed JSON, an empty body, and the fields in an array rather than an object.
    let path = app.admin.project_path("/dev-servers/jobs");
    let positional = br#" ["arr", null, ["sim-server-01"], "COMMON", false,
        [["COMMON", {"cmd": "x"}]], null]"#;
    for raw in [
        b"{\"name\": ".to_vec(),
        Vec::new(),
        b"null".to_vec(),
        positional.to_vec(),
    ] {
        let r = app
            .admin
            .send(Method::POST, &path, &[], Some(raw.clone()), &[])
            .await
            .expect("sent");
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&raw));
        assert_eq!(r.json()["error_code"], "ModelArts.0107");
    }
    let r = app
        .admin
        .send(
            Method::DELETE,
            &path,
            &[],
            Some(br#"[["x"]]"#.to_vec()),
            &[],
        )
        .await
        .expect("sent");
    assert_eq!(r.status, 400, "{}", r.json());
    assert_eq!(app.admin.list_jobs(&[]).await.expect("list").total, 0);
    let ok = app
        .admin_send(Method::POST, "/dev-servers/jobs", &[], Some(good))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.json());
}

async fn idempotent_create_answers_the_same_job(app: TestApp) {
    let req = job_request("once", &["sim-server-01"]);
    let first = app
        .admin
        .create_job(&req, Some("token-1"))
        .await
        .expect("first");
    let second = app
        .admin
        .create_job(&req, Some("token-1"))
        .await
        .expect("second");
    assert_eq!(first.id, second.id);
    let other = app
        .admin
        .create_job(&req, Some("token-2"))
        .await
        .expect("other token");
    assert_ne!(first.id, other.id);
    let mut changed = req.clone();
    changed.name = "twice".to_string();
    let err = app
        .admin
        .create_job(&changed, Some("token-1"))
        .await
        .expect_err("conflict");
    match err {
        litejobs::client::ClientError::Api {
            status, error_code, ..
        } => {
            assert_eq!((status, error_code.as_str()), (409, "ModelArts.0103"));
        }
        e => panic!("unexpected {e}"),
    }
    let path = app.admin.project_path("/dev-servers/jobs");
    let body = serde_json::to_vec(&req).expect("json");
    let bad = app
        .admin
        .send(
            Method::POST,
            &path,
            &[],
            Some(body),
            &[("X-Client-Token", "")],
        )
        .await
        .expect("sent");
    assert_eq!(bad.status, 400);
    let spaced = app
        .admin
        .send(
            Method::POST,
            &path,
            &[],
            Some(serde_json::to_vec(&req).expect("json")),
            &[("X-Client-Token", "a b")],
        )
        .await
        .expect("sent");
    assert_eq!(spaced.status, 400, "a space is not a token's character");
    let said = spaced.json()["error_msg"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(said.contains("no spaces"), "{said}");
    // Another user's token is not this one's: a user who may create but not read jobs does
    // not get the job another created with the same token and body.
    litejobs::iam::put_policy(
        app.store.as_ref(),
        "creators",
        &["modelarts:devserverJob:create".to_string()],
    )
    .await
    .expect("policy");
    let creator =
        crate::helpers::user_with_policy(&app, "creator", &app.project_id, "creators").await;
    match creator.create_job(&req, Some("token-1")).await {
        Err(litejobs::client::ClientError::Api {
            status, error_code, ..
        }) => assert_eq!((status, error_code.as_str()), (409, "ModelArts.0103")),
        other => panic!("another user's token answered {other:?}"),
    }
    let own = creator
        .create_job(&req, Some("token-of-the-creator"))
        .await
        .expect("own token");
    let again = creator
        .create_job(&req, Some("token-of-the-creator"))
        .await
        .expect("own retry");
    assert_eq!(own.id, again.id);
    assert_eq!(app.admin.list_jobs(&[]).await.expect("list").total, 3);
}

async fn totals_stay_exact_through_the_lifecycle(app: TestApp) {
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            app.create_job(&format!("t-{i}"), &["sim-server-01"])
                .await
                .id,
        );
    }
    for id in &ids {
        app.wait_for_status(id, "FINISHED", WAIT).await;
    }
    app.admin.delete_jobs(&ids[..2]).await.expect("delete");
    let count = |status: &'static str| {
        let admin = app.admin.clone();
        async move {
            admin
                .list_jobs(&[("status", status.to_string())])
                .await
                .expect("list")
                .total
        }
    };
    assert_eq!(count("FINISHED").await, 4);
    assert_eq!(count("DELETED").await, 2);
    assert_eq!(count("PROCESSING").await, 0);
    let items: Vec<JobListItem> = app.admin.list_jobs(&[]).await.expect("list").data;
    assert_eq!(items.len(), 6);
}

/// A deleted job past its retention is removed, and the project's total with it.
async fn retention_purges_deleted_jobs(backend: crate::helpers::Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.retention = Duration::from_millis(1);
        c.purge_interval = Duration::from_millis(50);
    })
    .await
    else {
        return;
    };
    let request = job_request("gone", &["sim-server-01"]);
    let gone = app
        .admin
        .create_job(&request, Some("retried-after-purge"))
        .await
        .expect("create");
    let kept = app.create_job("kept", &["sim-server-01"]).await;
    app.admin
        .delete_jobs(std::slice::from_ref(&gone.id))
        .await
        .expect("delete");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = app.admin.list_jobs(&[]).await.expect("list");
        if page.total == 1 {
            assert_eq!(page.data[0].id, kept.id);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deleted job never purged"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let r = app
        .admin_send(
            Method::GET,
            &format!("/dev-servers/jobs/{}", gone.id),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    // Its idempotency key is spent with it: the same request creates a job again.
    let again = app
        .admin
        .create_job(&request, Some("retried-after-purge"))
        .await
        .expect("a create after the purge");
    assert_ne!(again.id, gone.id);
    let page = app.admin.list_jobs(&[]).await.expect("list");
    assert_eq!(page.total, 2);
    let repeat = app
        .admin
        .create_job(&request, Some("retried-after-purge"))
        .await
        .expect("a repeat");
    assert_eq!(repeat.id, again.id);
}

backend_tests!(
    list_answers_raw_json_of_the_contract,
    two_jobs_reproduce_the_seed_example_page,
    list_filters_alone_and_combined,
    paging_edges,
    list_rejects_invalid_filters,
    job_detail_raw_json,
    delete_is_soft_cancels_tasks_and_ignores_unknown_ids,
    delete_rejects_bad_bodies,
    create_validates_and_creates_nothing_on_error,
    idempotent_create_answers_the_same_job,
    totals_stay_exact_through_the_lifecycle,
);

mod sqlite_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simulated_failures_are_counted() {
        simulated_jobs_finish_and_count_failures(TestApp::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failure_rate_one() {
        a_failure_rate_of_one_fails_every_task(TestApp::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_max_page_size() {
        small_max_page_size_splits_the_default_page(TestApp::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention() {
        retention_purges_deleted_jobs(crate::helpers::Backend::Sqlite).await;
    }
}

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention() {
        super::retention_purges_deleted_jobs(crate::helpers::Backend::Postgres).await;
    }
}
