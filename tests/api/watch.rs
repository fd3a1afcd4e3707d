//! The live watch over Server-Sent Events, on both backends: a job's changes in order from
//! its creation to its deletion, the filtered list, resuming with `Last-Event-ID` after a
//! dropped connection, isolation between projects, a change on one PostgreSQL replica
//! reaching a watcher on another, and `litejobs jobs watch` as a process.

use std::time::{Duration, Instant};

use litejobs::client::{Client, EventStream, StreamEvent};
use reqwest::Method;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{user_with_policy, TestApp};

/// The next event that is not a `ping`, within 10 s.
async fn next(stream: &mut EventStream) -> StreamEvent {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream answers")
            .expect("the stream goes on");
        if event.event != "ping" {
            return event;
        }
    }
}

/// The next job change: (kind, job status, task status if any), with its data.
async fn next_change(stream: &mut EventStream) -> (String, String, Option<String>, Value) {
    let event = next(stream).await;
    assert_eq!(event.event, "job", "{event:?}");
    let data: Value = serde_json::from_str(&event.data).expect("json");
    assert_eq!(data["seq"].to_string(), event.id, "the id is the seq");
    (
        data["kind"].as_str().expect("kind").to_string(),
        data["job"]["status"].as_str().expect("status").to_string(),
        data["task"]["status"].as_str().map(str::to_string),
        data,
    )
}

fn list_path(client: &Client) -> String {
    client.project_path("/dev-servers/jobs/events")
}

fn job_path(client: &Client, id: &str) -> String {
    client.project_path(&format!("/dev-servers/jobs/{id}/events"))
}

async fn a_job_is_watched_from_creation_to_deletion_in_order(app: TestApp) {
    let client = &app.admin;
    // Watching the list from before the creation sees it created.
    let mut list = client
        .events(&list_path(client), &[], None)
        .await
        .expect("list stream");
    let ready = next(&mut list).await;
    assert_eq!(ready.event, "ready");
    let job = app
        .create_job("watched", &["sim-server-01", "sim-server-02"])
        .await;
    let (kind, status, _, data) = next_change(&mut list).await;
    assert_eq!((kind.as_str(), status.as_str()), ("created", "PROCESSING"));
    assert_eq!(data["job"]["id"], job.id.as_str());
    // The job's own stream, from its creation on (its tasks may have ended already).
    let created = data["seq"].as_i64().expect("seq");
    let mut one = client
        .events(&job_path(client, &job.id), &[], Some(created))
        .await
        .expect("job stream");
    let snapshot = next(&mut one).await;
    assert_eq!(snapshot.event, "snapshot");
    let detail: Value = serde_json::from_str(&snapshot.data).expect("json");
    assert_eq!(detail["id"], job.id.as_str());
    assert_eq!(detail["tasks"].as_array().map(Vec::len), Some(2));

    // Its two tasks end (the first as `task`, the last as `finished`); then it is deleted.
    for stream in [&mut one, &mut list] {
        let (kind, status, task, data) = next_change(stream).await;
        assert_eq!(
            (kind.as_str(), status.as_str(), task.as_deref()),
            ("task", "PROCESSING", Some("SUCCESS")),
            "{data}"
        );
        assert!(data["task"]["server_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("sim-server-0")));
        let (kind, status, task, _) = next_change(stream).await;
        assert_eq!(
            (kind.as_str(), status.as_str(), task.as_deref()),
            ("finished", "FINISHED", Some("SUCCESS"))
        );
    }
    let deleted = app
        .admin_send(
            Method::DELETE,
            "/dev-servers/jobs",
            &[],
            Some(serde_json::json!({"job_ids": [job.id]})),
        )
        .await;
    assert_eq!(deleted.status, 200);
    for stream in [&mut one, &mut list] {
        let (kind, status, _, _) = next_change(stream).await;
        assert_eq!((kind.as_str(), status.as_str()), ("deleted", "DELETED"));
    }
}

async fn the_list_watch_keeps_what_its_filters_match(app: TestApp) {
    let client = &app.admin;
    let query = [
        ("name", "KEEP".to_string()),
        ("status", "PROCESSING".to_string()),
        ("limit", "5".to_string()),
    ];
    let mut stream = client
        .events(&list_path(client), &query, None)
        .await
        .expect("stream");
    assert_eq!(next(&mut stream).await.event, "ready");
    app.create_job("other-job", &["sim-server-01"]).await;
    let kept = app.create_job("to-keep-1", &["sim-server-01"]).await;
    // Only the kept job's creation: its task's end makes it FINISHED, which the status
    // filter leaves out, and the other job never matches.
    let (kind, _, _, data) = next_change(&mut stream).await;
    assert_eq!(kind, "created");
    assert_eq!(data["job"]["id"], kept.id.as_str());
    let quiet = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let event = stream.next().await.expect("answers").expect("open");
            if event.event != "ping" {
                return event;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "nothing else matches: {quiet:?}");

    // A bad filter is refused as the list refuses it.
    let refused = client
        .events(
            &list_path(client),
            &[("status", "RUNNING".to_string())],
            None,
        )
        .await;
    match refused {
        Err(litejobs::client::ClientError::Api {
            status, error_code, ..
        }) => assert_eq!((status, error_code.as_str()), (400, "ModelArts.0107")),
        Err(other) => panic!("expected 400, got {other}"),
        Ok(_) => panic!("expected 400, got a stream"),
    }
}

/// A list stream resuming after changes since purged cannot deliver them: it opens with
/// `expired` rather than `ready`, and goes on from the newest change; one resuming after the
/// newest change misses nothing, purged or not.
async fn a_resume_after_changes_no_longer_kept_is_told_so(app: TestApp) {
    let client = &app.admin;
    let mut stream = client
        .events(&list_path(client), &[], None)
        .await
        .expect("stream");
    next(&mut stream).await;
    let first = app.create_job("seen", &["sim-server-01"]).await;
    let (_, _, _, data) = next_change(&mut stream).await;
    assert_eq!(data["job"]["id"], first.id.as_str());
    let seen: i64 = data["seq"].as_i64().expect("seq");
    drop(stream);
    let missed = app.create_job("missed", &["sim-server-02"]).await;
    app.wait_for_status(&missed.id, "FINISHED", Duration::from_secs(10))
        .await;
    app.wait_for_status(&first.id, "FINISHED", Duration::from_secs(10))
        .await;
    let newest = app.store.last_job_event().await.expect("last");
    // Every change so far is purged (as a day's age purges them).
    app.store
        .purge_activity(litejobs::domain::now_ms() + 1, 0)
        .await
        .expect("purged");
    let mut resumed = client
        .events(&list_path(client), &[], Some(seen))
        .await
        .expect("resumed");
    let opening = next(&mut resumed).await;
    assert_eq!(opening.event, "expired", "{opening:?}");
    let said: Value = serde_json::from_str(&opening.data).expect("JSON");
    assert_eq!(said["after"], seen);
    assert_eq!(opening.id, newest.to_string(), "from the newest change");
    let later = app.create_job("later", &["sim-server-01"]).await;
    let (_, _, _, data) = next_change(&mut resumed).await;
    assert_eq!(
        data["job"]["id"],
        later.id.as_str(),
        "goes on from the newest"
    );
    drop(resumed);
    let caught_up = app.store.last_job_event().await.expect("last");
    let mut current = client
        .events(&list_path(client), &[], Some(caught_up))
        .await
        .expect("resumed");
    assert_eq!(next(&mut current).await.event, "ready");
}

async fn a_reconnect_with_last_event_id_replays_what_was_missed(app: TestApp) {
    let client = &app.admin;
    let mut stream = client
        .events(&list_path(client), &[], None)
        .await
        .expect("stream");
    let ready = next(&mut stream).await;
    let first = app.create_job("before-drop", &["sim-server-01"]).await;
    let (_, _, _, data) = next_change(&mut stream).await;
    assert_eq!(data["job"]["id"], first.id.as_str());
    let last_seen: i64 = data["seq"].as_i64().expect("seq");
    drop(stream);
    // While nobody watches, jobs are created and finish.
    let missed: Vec<String> = {
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(
                app.create_job(&format!("missed-{n}"), &["sim-server-02"])
                    .await
                    .id,
            );
        }
        ids
    };
    for id in &missed {
        app.wait_for_status(id, "FINISHED", Duration::from_secs(10))
            .await;
    }
    let mut resumed = client
        .events(&list_path(client), &[], Some(last_seen))
        .await
        .expect("resumed");
    // Its opening event's id is where it resumes: the missed events follow with larger
    // ones, so a client cut off among them resumes after the last it got.
    let opening = next(&mut resumed).await;
    assert_eq!(
        (opening.event.as_str(), opening.id.as_str()),
        ("ready", last_seen.to_string().as_str())
    );
    let mut seen = Vec::new();
    let mut seqs = Vec::new();
    // The first job's task end, then each missed job's creation and finish.
    while seen.len() < 1 + 2 * missed.len() {
        let (kind, _, _, data) = next_change(&mut resumed).await;
        seqs.push(data["seq"].as_i64().expect("seq"));
        seen.push((kind, data["job"]["id"].as_str().expect("id").to_string()));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    assert!(seqs[0] > last_seen);
    let kinds_of = |id: &str| -> Vec<String> {
        seen.iter()
            .filter(|(_, j)| j == id)
            .map(|(k, _)| k.clone())
            .collect()
    };
    assert_eq!(kinds_of(&first.id), ["finished"]);
    for id in &missed {
        assert_eq!(kinds_of(id), ["created", "finished"], "{id}");
    }
    assert!(ready.id.parse::<i64>().is_ok_and(|id| id < last_seen));

    // An id past every event (a client of an emulator since started again) starts afresh:
    // at the newest event, and the next change is sent.
    let newest = *seqs.last().expect("seqs");
    let mut afresh = client
        .events(&list_path(client), &[], Some(newest + 1_000_000))
        .await
        .expect("afresh");
    let opening = next(&mut afresh).await;
    assert_eq!(
        (opening.event.as_str(), opening.id.as_str()),
        ("ready", newest.to_string().as_str())
    );
    let after = app.create_job("after-afresh", &["sim-server-03"]).await;
    let (kind, _, _, data) = next_change(&mut afresh).await;
    assert_eq!(
        (kind.as_str(), data["job"]["id"].as_str()),
        ("created", Some(after.id.as_str()))
    );

    // A Last-Event-ID that is no id is refused.
    let bad = client
        .events(
            &list_path(client),
            &[("last_event_id", "x".to_string())],
            None,
        )
        .await;
    assert!(matches!(
        bad,
        Err(litejobs::client::ClientError::Api { status: 400, .. })
    ));
}

async fn another_project_sees_nothing_of_this_one(app: TestApp) {
    let store = app.store.as_ref();
    let other = litejobs::store::ProjectRecord {
        id: "0fa1c2e3d4b5a697887766554433aa21".to_string(),
        name: "other-team".to_string(),
        create_at: 1,
    };
    store.create_project(&other).await.expect("project");
    let outsider = user_with_policy(&app, "outsider", &other.id, "ModelArts FullAccess").await;
    let mut theirs = outsider
        .events(&list_path(&outsider), &[], None)
        .await
        .expect("their stream");
    assert_eq!(next(&mut theirs).await.event, "ready");
    let job = app.create_job("ours", &["sim-server-01"]).await;
    app.wait_for_status(&job.id, "FINISHED", Duration::from_secs(10))
        .await;
    let quiet = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let event = theirs.next().await.expect("answers").expect("open");
            if event.event != "ping" {
                return event;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "another project's changes: {quiet:?}");
    // Our project's streams are refused to them; our job is unknown in theirs.
    let ours = outsider.for_project(&app.project_id);
    for path in [list_path(&ours), job_path(&ours, &job.id)] {
        let refused = ours.events(&path, &[], None).await;
        assert!(
            matches!(
                refused,
                Err(litejobs::client::ClientError::Api { status: 403, .. })
            ),
            "{path}"
        );
    }
    let unknown = outsider
        .events(&job_path(&outsider, &job.id), &[], None)
        .await;
    assert!(matches!(
        unknown,
        Err(litejobs::client::ClientError::Api { status: 404, .. })
    ));
    // A read-only user of this project may watch.
    let reader =
        user_with_policy(&app, "reader", &app.project_id, "ModelArts ReadOnlyAccess").await;
    let mut read = reader
        .events(&list_path(&reader), &[], None)
        .await
        .expect("a reader watches");
    assert_eq!(next(&mut read).await.event, "ready");
}

/// A job id no job can have is answered as the job's detail answers it: too long is 400,
/// one holding U+0000 (which PostgreSQL's text cannot hold) is no job's.
async fn a_watch_of_an_impossible_job_id_is_refused_or_unknown(app: TestApp) {
    for (id, status, code) in [
        ("x".repeat(65), 400, "ModelArts.0107"),
        ("a%00b".to_string(), 404, "ModelArts.0102"),
    ] {
        let path = app
            .admin
            .project_path(&format!("/dev-servers/jobs/{id}/events"));
        let answer = app
            .admin
            .send(Method::GET, &path, &[], None, &[])
            .await
            .expect("an answer");
        assert_eq!(answer.status, status, "{id}: {}", answer.json());
        assert_eq!(answer.json()["error_code"], code);
    }
    app.stop().await;
}

/// Jobs erased (the emulator's reset) take their events along: a watcher replaying from the
/// start sees only what came after.
async fn erased_jobs_are_not_replayed(app: TestApp) {
    let client = &app.admin;
    let project = litejobs::domain::ProjectId::parse(&app.project_id).expect("project");
    let old = app.create_job("erased", &["sim-server-01"]).await;
    app.wait_for_status(&old.id, "FINISHED", Duration::from_secs(10))
        .await;
    let mut before = client
        .events(&list_path(client), &[], Some(0))
        .await
        .expect("stream");
    assert_eq!(next(&mut before).await.event, "ready");
    let (_, _, _, data) = next_change(&mut before).await;
    assert_eq!(
        data["job"]["id"],
        old.id.as_str(),
        "replayed before the reset"
    );
    drop(before);
    assert_eq!(
        app.store.erase_jobs(Some(&project)).await.expect("erase"),
        1
    );
    // With no event left, a server starting now takes up after the last one handed out, so
    // that the next one is no gap to wait at.
    let first = data["seq"].as_i64().expect("seq");
    let position = app.store.last_job_event().await.expect("position");
    assert!(position > first, "{position} after {first}");
    let mut after = client
        .events(&list_path(client), &[], Some(0))
        .await
        .expect("stream");
    // The changes after 0 are no longer all kept: the stream says so, and goes on from the
    // newest.
    assert_eq!(next(&mut after).await.event, "expired");
    let new = app.create_job("after-reset", &["sim-server-01"]).await;
    let (kind, _, _, data) = next_change(&mut after).await;
    assert_eq!(
        (kind.as_str(), data["job"]["id"].as_str()),
        ("created", Some(new.id.as_str()))
    );
    app.stop().await;
}

/// Waits (at most 10 s) for a stream to end, ignoring pings; panics on anything else.
async fn ends(stream: &mut EventStream) {
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Ok(Some(event)) if event.event == "ping" => {}
                Ok(Some(event)) => panic!("an event, not the end: {event:?}"),
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream went on");
}

/// A stream is checked as requests are: it ends once the grant it rests on is taken away,
/// or its token is revoked, while another goes on.
async fn a_watch_ends_when_its_credentials_no_longer_hold(app: TestApp) {
    use litejobs::iam::READ_ONLY;
    let signed = user_with_policy(&app, "signed", &app.project_id, READ_ONLY).await;
    let holder = user_with_policy(&app, "holder", &app.project_id, READ_ONLY).await;
    let token =
        litejobs::client::issue_token(&app.endpoint, "holder", "pw-of-the-user", &app.project_id)
            .await
            .expect("token");
    let by_token = Client::new(
        &app.endpoint,
        &app.project_id,
        litejobs::client::ClientAuth::Token(token),
    )
    .expect("client");
    let mut streams = Vec::new();
    for client in [&signed, &by_token, &holder] {
        let mut stream = client
            .events(&list_path(client), &[], None)
            .await
            .expect("stream");
        assert_eq!(next(&mut stream).await.event, "ready");
        streams.push(stream);
    }
    let signed_id = app
        .store
        .find_user("signed")
        .await
        .expect("store")
        .expect("user")
        .id;
    let holder_id = app
        .store
        .find_user("holder")
        .await
        .expect("store")
        .expect("user")
        .id;
    assert!(app
        .store
        .revoke(&signed_id, &app.project_id, READ_ONLY)
        .await
        .expect("revoke"));
    ends(&mut streams[0]).await;
    let revoked = app
        .store
        .revoke_user_tokens(&holder_id, litejobs::domain::now_ms())
        .await
        .expect("revoke");
    assert_eq!(revoked, 1);
    ends(&mut streams[1]).await;
    // The holder's signed stream (its grant and key intact) goes on.
    let job = app.create_job("still-watched", &["sim-server-01"]).await;
    let (kind, _, _, data) = next_change(&mut streams[2]).await;
    assert_eq!(
        (kind.as_str(), data["job"]["id"].as_str()),
        ("created", Some(job.id.as_str()))
    );
    app.stop().await;
}

/// A resume from long ago reads the missed events from the database batch by batch as the
/// client takes them: all of them, in order, across more than one batch.
async fn a_resume_from_long_ago_replays_every_batch_in_order(app: TestApp) {
    let client = &app.admin;
    client
        .register_server("node-quiet", &litejobs::wire::AgentRegistration::default())
        .await
        .expect("register");
    let mut stream = client
        .events(&list_path(client), &[], None)
        .await
        .expect("stream");
    let from: i64 = next(&mut stream).await.id.parse().expect("ready id");
    drop(stream);
    // Jobs whose server has no agent stay PROCESSING: one event each, then one at deletion.
    let mut ids = Vec::new();
    for n in 0..300 {
        ids.push(
            app.create_job(&format!("quiet-{n}"), &["node-quiet"])
                .await
                .id,
        );
    }
    client.delete_jobs(&ids).await.expect("delete");
    let mut resumed = client
        .events(&list_path(client), &[], Some(from))
        .await
        .expect("resumed");
    assert_eq!(next(&mut resumed).await.id, from.to_string());
    let mut kinds = Vec::new();
    let mut last = from;
    while kinds.len() < 2 * ids.len() {
        let (kind, _, _, data) = next_change(&mut resumed).await;
        let seq = data["seq"].as_i64().expect("seq");
        assert!(seq > last, "in order: {seq} after {last}");
        last = seq;
        kinds.push((kind, data["job"]["id"].as_str().expect("id").to_string()));
    }
    let created: Vec<&String> = kinds
        .iter()
        .filter(|(k, _)| k == "created")
        .map(|(_, id)| id)
        .collect();
    assert_eq!(created, ids.iter().collect::<Vec<_>>());
    assert_eq!(
        kinds.iter().filter(|(k, _)| k == "deleted").count(),
        ids.len()
    );
}

backend_tests!(
    a_resume_from_long_ago_replays_every_batch_in_order,
    a_watch_ends_when_its_credentials_no_longer_hold,
    erased_jobs_are_not_replayed,
    a_watch_of_an_impossible_job_id_is_refused_or_unknown,
    a_job_is_watched_from_creation_to_deletion_in_order,
    the_list_watch_keeps_what_its_filters_match,
    a_reconnect_with_last_event_id_replays_what_was_missed,
    a_resume_after_changes_no_longer_kept_is_told_so,
    another_project_sees_nothing_of_this_one,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_change_on_one_replica_reaches_a_watcher_on_another() {
    let Some(a) = TestApp::spawn(crate::helpers::Backend::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    // Replica B finds A's administrator in the database, and its profile here.
    std::fs::copy(
        a.dir.path().join("admin.json"),
        dir.path().join("admin.json"),
    )
    .expect("profile");
    let mut config = crate::helpers::test_config(dir.path(), &a.database_url);
    config.simulate = false;
    let b = TestApp::start(dir, config).await;
    // Replica B answers for A's administrator: same database.
    let on_b = Client::new(
        &b.endpoint,
        &a.project_id,
        litejobs::client::ClientAuth::AkSk(a.credentials.clone()),
    )
    .expect("client");
    let mut stream = on_b
        .events(&list_path(&on_b), &[], None)
        .await
        .expect("stream on b");
    assert_eq!(next(&mut stream).await.event, "ready");
    let created = Instant::now();
    let job = a.create_job("across", &["sim-server-01"]).await;
    let (kind, _, _, data) = next_change(&mut stream).await;
    assert_eq!(
        (kind.as_str(), data["job"]["id"].as_str()),
        ("created", Some(job.id.as_str()))
    );
    assert!(
        created.elapsed() < Duration::from_secs(1),
        "{:?}",
        created.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_watch_prints_a_jobs_changes_until_it_is_deleted() {
    // Tasks that take 2 s: the watch is there before they end.
    let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, |c| {
        c.simulate_delay = Duration::from_secs(2);
    })
    .await
    .expect("sqlite");
    let profile = app.dir.path().join("admin.json");
    let job = app
        .create_job("cli-watched", &["sim-server-01", "sim-server-02"])
        .await;
    let watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_litejobs"))
        .args([
            "jobs",
            "watch",
            &job.id,
            "-o",
            "json",
            "--endpoint",
            &app.endpoint,
        ])
        .arg("--profile")
        .arg(&profile)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("jobs watch starts");
    app.wait_for_status(&job.id, "FINISHED", Duration::from_secs(10))
        .await;
    let deleted = app
        .admin_send(
            Method::DELETE,
            "/dev-servers/jobs",
            &[],
            Some(serde_json::json!({"job_ids": [job.id]})),
        )
        .await;
    assert_eq!(deleted.status, 200);
    let output = tokio::time::timeout(Duration::from_secs(20), watch.wait_with_output())
        .await
        .expect("jobs watch ends once the job is deleted")
        .expect("output");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(kinds, ["task", "finished", "deleted"]);
    assert!(lines.iter().all(|l| l["job"]["id"] == job.id.as_str()));
}

/// The job changes of `stream`, as (seq, job id), until `done` holds of them.
async fn changes_until(
    stream: &mut EventStream,
    done: impl Fn(&[(i64, String)]) -> bool,
) -> Vec<(i64, String)> {
    let mut seen = Vec::new();
    while !done(&seen) {
        let (_, _, _, data) = next_change(stream).await;
        let id = data["job"]["id"].as_str().expect("id").to_string();
        seen.push((data["seq"].as_i64().expect("seq"), id));
    }
    let seqs: Vec<i64> = seen.iter().map(|(s, _)| *s).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    seen
}

/// A replica nobody watched starts its first watcher's stream before a change whose
/// transaction took its `seq` but commits after a later one did: the change reaches it when
/// it commits, and the later one after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_first_watcher_gets_a_change_committed_late() {
    let Some(app) = TestApp::spawn(crate::helpers::Backend::Postgres).await else {
        return;
    };
    let client = &app.admin;
    let first = app.create_job("first", &["sim-server-01"]).await;
    app.wait_for_status(&first.id, "FINISHED", Duration::from_secs(10))
        .await;
    let (mut slow, late) =
        litejobs::testkit::uncommitted_job_event(&app.database_url, &first.id).await;
    let second = app.create_job("second", &["sim-server-02"]).await;
    // The first watcher of this replica arrives while the late change is not committed.
    let mut stream = client
        .events(&list_path(client), &[], None)
        .await
        .expect("stream");
    let ready: i64 = next(&mut stream).await.id.parse().expect("ready id");
    assert!(ready < late, "opens before the hole: {ready} < {late}");
    sqlx::query("COMMIT")
        .execute(&mut slow)
        .await
        .expect("commit");
    let seen = changes_until(&mut stream, |seen| {
        seen.iter().any(|(seq, _)| *seq == late) && seen.iter().any(|(_, id)| *id == second.id)
    })
    .await;
    assert!(seen.iter().all(|(seq, _)| *seq > ready), "{seen:?}");
    app.stop().await;
}

/// A first watcher that starts before a hole a rolled-back transaction left gets the
/// changes committed after it at once, though nothing is written after it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_first_watcher_passes_a_rolled_back_hole_at_once() {
    let Some(app) = TestApp::spawn(crate::helpers::Backend::Postgres).await else {
        return;
    };
    let client = &app.admin;
    client
        .register_server("node-quiet", &litejobs::wire::AgentRegistration::default())
        .await
        .expect("register");
    let first = app.create_job("first", &["node-quiet"]).await;
    let (mut slow, hole) =
        litejobs::testkit::uncommitted_job_event(&app.database_url, &first.id).await;
    // Its server has no agent: its creation is the last change written.
    let second = app.create_job("second", &["node-quiet"]).await;
    sqlx::query("ROLLBACK")
        .execute(&mut slow)
        .await
        .expect("rollback");
    let mut stream = client
        .events(&list_path(client), &[], None)
        .await
        .expect("stream");
    let ready: i64 = next(&mut stream).await.id.parse().expect("ready id");
    assert!(ready < hole, "opens before the hole: {ready} < {hole}");
    let seen = changes_until(&mut stream, |seen| {
        seen.iter().any(|(_, id)| *id == second.id)
    })
    .await;
    assert!(seen.iter().all(|(seq, _)| *seq > hole), "{seen:?}");
    app.stop().await;
}

/// On PostgreSQL a change's `seq` is handed out before its transaction commits: one that
/// commits long after a later one (a slow replica, a slow disk) still reaches the watchers,
/// in order, rather than being skipped once the hub stops waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_change_committed_late_is_not_skipped() {
    let Some(app) = TestApp::spawn(crate::helpers::Backend::Postgres).await else {
        return;
    };
    let client = &app.admin;
    let first = app.create_job("first", &["sim-server-01"]).await;
    app.wait_for_status(&first.id, "FINISHED", Duration::from_secs(10))
        .await;
    let mut stream = client
        .events(&list_path(client), &[], None)
        .await
        .expect("stream");
    assert_eq!(next(&mut stream).await.event, "ready");
    // A transaction takes its `seq`, and commits only after a later change did, and after
    // longer than the hub would wait without asking the database.
    let (mut slow, late) =
        litejobs::testkit::uncommitted_job_event(&app.database_url, &first.id).await;
    let second = app.create_job("second", &["sim-server-02"]).await;
    tokio::time::sleep(litejobs::watch::GAP_WAIT + Duration::from_secs(2)).await;
    sqlx::query("COMMIT")
        .execute(&mut slow)
        .await
        .expect("commit");
    let seen = changes_until(&mut stream, |seen| {
        seen.iter().any(|(seq, _)| *seq == late) && seen.iter().any(|(_, id)| *id == second.id)
    })
    .await;
    assert_eq!(seen[0].1, first.id, "the late change first: {seen:?}");
    app.stop().await;
}

/// A hole a rolled-back change left is passed at once though another program holds a
/// transaction that writes (to another table) open: only a transaction writing job events
/// can hold a missing `seq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_hole_is_passed_while_an_unrelated_transaction_writes() {
    let Some(app) = TestApp::spawn(crate::helpers::Backend::Postgres).await else {
        return;
    };
    let client = &app.admin;
    let first = app.create_job("first", &["sim-server-01"]).await;
    app.wait_for_status(&first.id, "FINISHED", Duration::from_secs(10))
        .await;
    let mut stream = client
        .events(&list_path(client), &[], None)
        .await
        .expect("stream");
    assert_eq!(next(&mut stream).await.event, "ready");
    let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(&app.database_url)
        .await
        .expect("connect");
    for statement in ["BEGIN", "CREATE TEMP TABLE held (i int)"] {
        sqlx::query(statement)
            .execute(&mut other)
            .await
            .expect(statement);
    }
    let (mut slow, hole) =
        litejobs::testkit::uncommitted_job_event(&app.database_url, &first.id).await;
    let second = app.create_job("second", &["sim-server-02"]).await;
    sqlx::query("ROLLBACK")
        .execute(&mut slow)
        .await
        .expect("rollback");
    let seen = tokio::time::timeout(
        Duration::from_secs(4),
        changes_until(&mut stream, |seen| {
            seen.iter().any(|(_, id)| *id == second.id)
        }),
    )
    .await
    .expect("the change after the hole, while the other transaction is open");
    assert!(seen.iter().all(|(seq, _)| *seq != hole), "{seen:?}");
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("rollback");
    app.stop().await;
}
