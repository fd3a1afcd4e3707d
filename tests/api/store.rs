//! The store's conformance suite: every method of `JobStore`, `IamStore` and `Store`, its
//! errors and its isolation by project, run against SQLite and PostgreSQL alike.

use std::sync::Arc;

use litejobs::domain::filter::ListJobsQuery;
use litejobs::domain::{ProjectId, TaskStatus};
use litejobs::store::{
    AccessKeyRecord, AuditFilter, IdempotencyKey, LeaseState, LeaseTerms, Leased, NewJob,
    NewServer, PolicyRecord, ProjectRecord, Stall, Store, StoreError, TaskLease, TokenGrounds,
    UserRecord,
};
use litejobs::testkit::ScratchDatabase;
use litejobs::wire::JobItem;

/// A freshly migrated store, and what keeps its database alive.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    _pg: Option<ScratchDatabase>,
}

impl TestStore {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let store = litejobs::store::open(&url).await.expect("open");
        Self {
            store,
            _dir: dir,
            _pg: None,
        }
    }

    async fn postgres() -> Option<Self> {
        let db = litejobs::testkit::test_database().await?;
        let store = litejobs::store::open(&db.url).await.expect("open");
        Some(Self {
            store,
            _dir: tempfile::tempdir().expect("tempdir"),
            _pg: Some(db),
        })
    }
}

/// Runs each named test on SQLite and on PostgreSQL: `store_tests!(a)` makes `sqlite::a`
/// and `postgres::a` from `async fn a(store: &dyn Store)`.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = super::TestStore::sqlite().await;
                    super::$name(t.store.as_ref()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(t) = super::TestStore::postgres().await else {
                        return;
                    };
                    super::$name(t.store.as_ref()).await;
                }
            )*
        }
    };
}

store_tests!(
    servers_are_registered_listed_touched_and_removed_per_project,
    creates_check_servers_and_answer_the_job_as_stored,
    idempotency_keys_answer_the_same_job_or_conflict,
    a_taken_job_id_is_a_conflict,
    deletes_are_soft_cancel_running_tasks_and_stay_in_the_project,
    tasks_end_once_and_finish_their_job,
    leases_hand_each_task_to_one_holder_until_it_lapses,
    renewals_keep_leases_and_tell_ended_or_lost_tasks,
    stalled_tasks_are_those_never_started_lapsed_or_past_deadline,
    a_task_leased_again_has_its_whole_run_time,
    output_is_kept_from_the_lease_holder_only,
    servers_seen_in_a_batch_keep_their_latest_time,
    due_simulated_tasks_are_those_of_simulated_servers_past_their_delay,
    purges_remove_old_deleted_jobs_keys_and_tokens,
    lists_are_scoped_to_the_project_with_exact_totals,
    every_page_is_its_slice_of_the_whole_list,
    concurrent_creates_each_get_their_own_outcome,
    projects_and_users_are_found_by_id_or_name,
    concurrent_creates_cannot_take_each_other_s_names,
    access_keys_belong_to_their_user,
    policies_and_grants_give_actions_per_project,
    tokens_are_found_until_they_expire_or_are_revoked,
    tokens_are_issued_only_while_their_grounds_hold,
    a_new_password_ends_every_token_issued_on_the_old_one,
    the_store_answers_a_ping_and_names_its_backend,
    job_events_follow_every_change_in_commit_order,
    audit_records_are_kept_listed_by_filter_and_purged,
    fleet_gauges_count_running_tasks_and_agents_online,
    running_tasks_are_counted_per_server_of_the_project,
);

fn project(id: &str) -> ProjectId {
    ProjectId::parse(id).expect("project id")
}

fn server(id: &str, kind: &str) -> NewServer {
    NewServer {
        id: id.to_string(),
        name: format!("{id}-name"),
        kind: kind.to_string(),
        sim_outcome: (kind == "simulated").then(|| "SUCCESS".to_string()),
        cloud_server: [("type".to_string(), "BMS".to_string())].into(),
        now_ms: 1,
    }
}

async fn add_servers(store: &dyn Store, p: &ProjectId, ids: &[&str]) {
    for id in ids {
        store
            .upsert_server(p, server(id, "agent"))
            .await
            .expect("server");
    }
}

fn job(name: &str, servers: &[&str], now_ms: i64) -> NewJob {
    NewJob {
        id: litejobs::domain::ids::new_id(),
        name: name.to_string(),
        description: Some("d".to_string()),
        job_type: "COMMON".to_string(),
        template_id: Some("t-1".to_string()),
        user_name: "alice".to_string(),
        visible: true,
        is_reboot: false,
        items: vec![JobItem {
            item_type: "COMMON".to_string(),
            spec: Some([("cmd".to_string(), "echo hi".to_string())].into()),
        }],
        server_ids: servers.iter().map(|s| s.to_string()).collect(),
        now_ms,
    }
}

fn key(token: &str, body: &str, not_before_ms: i64) -> Option<IdempotencyKey> {
    Some(IdempotencyKey {
        token: token.to_string(),
        body_hash: body.to_string(),
        earlier_hash: None,
        not_before_ms,
    })
}

fn query(raw: &str) -> ListJobsQuery {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    ListJobsQuery::parse(&pairs, 1000).expect("query")
}

/// `(total, ids)` of a page.
async fn list(store: &dyn Store, p: &ProjectId, raw: &str) -> (u64, Vec<String>) {
    let page = store.list_jobs(p, &query(raw), 1000).await.expect("list");
    let ids = page
        .items()
        .expect("items")
        .into_iter()
        .map(|j| j.id)
        .collect();
    (page.total, ids)
}

async fn servers_are_registered_listed_touched_and_removed_per_project(store: &dyn Store) {
    let (p1, p2) = (project("p1"), project("p2"));
    store
        .upsert_server(&p1, server("b", "agent"))
        .await
        .expect("b");
    store
        .upsert_server(&p1, server("a", "simulated"))
        .await
        .expect("a");
    store
        .upsert_server(&p2, server("a", "agent"))
        .await
        .expect("a in p2");
    // Registering again updates the server.
    let mut renamed = server("b", "agent");
    renamed.name = "b-renamed".to_string();
    store.upsert_server(&p1, renamed).await.expect("update");
    let listed = store.list_servers(&p1).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(listed[1].name, "b-renamed");
    assert_eq!(listed[0].kind, "simulated");
    assert_eq!(listed[0].cloud_server["type"], "BMS");
    assert_eq!(listed[0].last_seen_at, None);

    assert!(store.touch_server(&p1, "a", 42).await.expect("touch"));
    assert!(!store.touch_server(&p1, "nope", 42).await.expect("touch"));
    let seen = store.list_servers(&p1).await.expect("list");
    assert_eq!(seen[0].last_seen_at, Some(42));
    // The other project's server of the same id is its own.
    assert_eq!(
        store.list_servers(&p2).await.expect("list")[0].last_seen_at,
        None
    );

    // An agent registers a new server, or its own again (whatever kind it says), but never
    // takes over a server of another kind.
    let mut by_agent = server("b", "simulated");
    by_agent.name = "b-by-agent".to_string();
    assert!(store.register_agent_server(&p1, by_agent).await.expect("b"));
    assert!(store
        .register_agent_server(&p1, server("c", "agent"))
        .await
        .expect("c"));
    assert!(!store
        .register_agent_server(&p1, server("a", "agent"))
        .await
        .expect("a"));
    let listed = store.list_servers(&p1).await.expect("list");
    let shown: Vec<(&str, &str, &str)> = listed
        .iter()
        .map(|s| (s.id.as_str(), s.name.as_str(), s.kind.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            ("a", "a-name", "simulated"),
            ("b", "b-by-agent", "agent"),
            ("c", "c-name", "agent")
        ]
    );

    assert!(store.delete_server(&p1, "a").await.expect("delete"));
    assert!(!store.delete_server(&p1, "a").await.expect("again"));
    assert_eq!(store.list_servers(&p1).await.expect("list").len(), 2);
    assert_eq!(store.list_servers(&p2).await.expect("list").len(), 1);
}

async fn creates_check_servers_and_answer_the_job_as_stored(store: &dyn Store) {
    let (p1, p2) = (project("p1"), project("p2"));
    add_servers(store, &p1, &["s1", "s2"]).await;
    add_servers(store, &p2, &["s3"]).await;
    // A server of another project is unknown here; nothing is created.
    match store
        .create_job(&p1, job("j", &["s1", "s3"], 5), None)
        .await
    {
        Err(StoreError::UnknownServers(missing)) => assert_eq!(missing, ["s3"]),
        other => panic!("expected unknown servers, got {other:?}"),
    }
    assert_eq!(list(store, &p1, "").await.0, 0);

    let created = store
        .create_job(&p1, job("j", &["s2", "s1"], 5), None)
        .await
        .expect("create");
    assert_eq!(created.status, "PROCESSING");
    assert_eq!((created.create_at, created.update_at), (5, 5));
    let servers: Vec<&str> = created.tasks.iter().map(|t| t.server_id.as_str()).collect();
    assert_eq!(
        servers,
        ["s2", "s1"],
        "one task per server, in the job's order"
    );
    assert!(created.tasks.iter().all(|t| t.status == "PROCESSING"));
    assert_eq!(created.tasks[0].server_name, "s2-name");
    assert_eq!(created.tasks[0].cloud_server["type"], "BMS");
    let stored = store.get_job(&p1, &created.id).await.expect("get");
    assert_eq!(stored.as_ref(), Some(&created));
    // Another project does not see it.
    assert_eq!(store.get_job(&p2, &created.id).await.expect("get"), None);
    assert_eq!(store.get_job(&p1, "no-such-job").await.expect("get"), None);
}

async fn idempotency_keys_answer_the_same_job_or_conflict(store: &dyn Store) {
    let (p1, p2) = (project("p1"), project("p2"));
    add_servers(store, &p1, &["s1"]).await;
    add_servers(store, &p2, &["s1"]).await;
    let first = store
        .create_job(&p1, job("a", &["s1"], 10), key("tok", "h1", 0))
        .await
        .expect("create");
    let again = store
        .create_job(&p1, job("a", &["s1"], 11), key("tok", "h1", 0))
        .await
        .expect("repeat");
    assert_eq!(again.id, first.id);
    let other_body = store
        .create_job(&p1, job("b", &["s1"], 12), key("tok", "h2", 0))
        .await;
    assert!(matches!(other_body, Err(StoreError::IdempotencyConflict)));
    // A key is the project's own.
    let elsewhere = store
        .create_job(&p2, job("a", &["s1"], 13), key("tok", "h2", 0))
        .await
        .expect("other project");
    assert_ne!(elsewhere.id, first.id);
    // An expired key is spent: the request creates a job.
    let later = store
        .create_job(&p1, job("c", &["s1"], 20), key("tok", "h3", 15))
        .await
        .expect("after expiry");
    assert_ne!(later.id, first.id);
    assert_eq!(list(store, &p1, "").await.0, 2);

    // A key an earlier version stored (the hash of the request alone) answers its job to
    // that job's user, and to no one else.
    let stored = store
        .create_job(&p2, job("d", &["s1"], 30), key("old", "request", 0))
        .await
        .expect("stored by an earlier version");
    let mut now = key("old", "user+request", 0);
    if let Some(k) = now.as_mut() {
        k.earlier_hash = Some("request".to_string());
    }
    let again = store
        .create_job(&p2, job("d", &["s1"], 31), now.clone())
        .await
        .expect("repeat");
    assert_eq!(again.id, stored.id);
    let mut other_user = job("d", &["s1"], 32);
    other_user.user_name = "bob".to_string();
    let refused = store.create_job(&p2, other_user, now).await;
    assert!(matches!(refused, Err(StoreError::IdempotencyConflict)));
    assert_eq!(list(store, &p2, "").await.0, 2);
}

async fn a_taken_job_id_is_a_conflict(store: &dyn Store) {
    let p1 = project("p1");
    add_servers(store, &p1, &["s1"]).await;
    let first = job("a", &["s1"], 1);
    let mut twin = job("b", &["s1"], 2);
    twin.id = first.id.clone();
    store.create_job(&p1, first, None).await.expect("first");
    let refused = store.create_job(&p1, twin, None).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(list(store, &p1, "").await.0, 1);
}

async fn deletes_are_soft_cancel_running_tasks_and_stay_in_the_project(store: &dyn Store) {
    let (p1, p2) = (project("p1"), project("p2"));
    add_servers(store, &p1, &["s1", "s2"]).await;
    add_servers(store, &p2, &["s1"]).await;
    let gone = store
        .create_job(&p1, job("gone", &["s1", "s2"], 1), None)
        .await
        .expect("create");
    // Same create_at: only the job id tells the jobs' tasks apart.
    let kept = store
        .create_job(&p1, job("kept", &["s1", "s2"], 1), None)
        .await
        .expect("create");
    let theirs = store
        .create_job(&p2, job("theirs", &["s1"], 1), None)
        .await
        .expect("create");
    // One task of `gone` already ended: it stays as it ended.
    let ended = &gone.tasks[0].id;
    let end = store.complete_task(&p1, ended, TaskStatus::Success, "ok", 2, None);
    assert!(end.await.expect("complete"));

    assert!(store
        .delete_jobs(&p1, &[], 5)
        .await
        .expect("none")
        .is_empty());
    let ids = [gone.id.clone(), theirs.id.clone(), "unknown".to_string()];
    let deleted = store.delete_jobs(&p1, &ids, 5).await.expect("delete");
    assert_eq!(
        deleted.len(),
        1,
        "unknown ids and other projects' are ignored"
    );
    assert_eq!(
        (deleted[0].status.as_str(), deleted[0].update_at),
        ("DELETED", 5)
    );

    let shown = store
        .get_job(&p1, &gone.id)
        .await
        .expect("get")
        .expect("soft");
    assert_eq!(shown.status, "DELETED");
    let statuses: Vec<&str> = shown.tasks.iter().map(|t| t.status.as_str()).collect();
    assert_eq!(statuses, ["SUCCESS", "SKIPPED"]);
    assert!(shown.tasks[1].message.contains("deleted"));
    let other = store
        .get_job(&p1, &kept.id)
        .await
        .expect("get")
        .expect("kept");
    assert!(other.tasks.iter().all(|t| t.status == "PROCESSING"));
    let theirs = store
        .get_job(&p2, &theirs.id)
        .await
        .expect("get")
        .expect("theirs");
    assert_eq!(theirs.status, "PROCESSING");
    // Deleted jobs stay listed, and deleting again changes nothing.
    assert_eq!(
        list(store, &p1, "status=DELETED").await,
        (1, vec![gone.id.clone()])
    );
    let again = store
        .delete_jobs(&p1, std::slice::from_ref(&gone.id), 9)
        .await
        .expect("again");
    assert_eq!(again[0].update_at, 5);
    // A task of a deleted job cannot end any more.
    let late = store.complete_task(&p1, &gone.tasks[1].id, TaskStatus::Success, "", 9, None);
    assert!(!late.await.expect("complete"));
}

async fn tasks_end_once_and_finish_their_job(store: &dyn Store) {
    let (p1, p2) = (project("p1"), project("p2"));
    add_servers(store, &p1, &["s1", "s2", "s3"]).await;
    let created = store
        .create_job(&p1, job("j", &["s1", "s2", "s3"], 1), None)
        .await
        .expect("create");
    let [t1, t2, t3] = [0, 1, 2].map(|i| created.tasks[i].id.clone());
    // Not an end, another project's task, an unknown task: nothing changes.
    let not_end = store.complete_task(&p1, &t1, TaskStatus::Processing, "", 2, None);
    assert!(!not_end.await.expect("complete"));
    let other = store.complete_task(&p2, &t1, TaskStatus::Success, "", 2, None);
    assert!(!other.await.expect("complete"));
    let unknown = store.complete_task(&p1, "nope", TaskStatus::Success, "", 2, None);
    assert!(!unknown.await.expect("complete"));

    let done = store.complete_task(&p1, &t1, TaskStatus::Failed, "boom\nline 2", 3, None);
    assert!(done.await.expect("complete"));
    let twice = store.complete_task(&p1, &t1, TaskStatus::Success, "", 4, None);
    assert!(!twice.await.expect("complete"), "a task ends once");
    let skipped = store.complete_task(&p1, &t2, TaskStatus::Skipped, "", 4, None);
    assert!(skipped.await.expect("complete"));
    let job = store
        .get_job(&p1, &created.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!((job.status.as_str(), job.abnormal_count), ("PROCESSING", 1));
    assert_eq!(job.tasks[0].message, "boom\nline 2");
    assert_eq!(job.tasks[0].update_at, "3");

    let last = store.complete_task(&p1, &t3, TaskStatus::Success, "ok", 7, None);
    assert!(last.await.expect("complete"));
    let job = store
        .get_job(&p1, &created.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!((job.status.as_str(), job.abnormal_count), ("FINISHED", 1));
    assert_eq!(job.update_at, 7);
    assert_eq!(list(store, &p1, "status=FINISHED").await.0, 1);
    assert_eq!(list(store, &p1, "status=PROCESSING").await.0, 0);
}

/// Lease terms at `now` until `until`, with every task given `run` ms to run.
fn terms(now_ms: i64, until: i64, run: &(dyn Fn(&str) -> i64 + Send + Sync)) -> LeaseTerms<'_> {
    LeaseTerms {
        now_ms,
        until,
        renews: true,
        run_time_ms: run,
    }
}

fn holder<'a>(owner: &'a str, server_id: &'a str, epoch: Option<i64>) -> TaskLease<'a> {
    TaskLease {
        server_id,
        owner,
        epoch,
    }
}

const HOUR: &(dyn Fn(&str) -> i64 + Send + Sync) = &|_: &str| 3_600_000;

async fn leases_hand_each_task_to_one_holder_until_it_lapses(store: &dyn Store) {
    let p1 = project("p1");
    add_servers(store, &p1, &["s1", "s2"]).await;
    for n in 0..3 {
        let created = store.create_job(&p1, job(&format!("j{n}"), &["s1", "s2"], n), None);
        created.await.expect("create");
    }
    let first = store
        .lease_tasks(&p1, "s1", "agent-a", terms(100, 200, HOUR), 2)
        .await
        .expect("lease");
    assert_eq!(first.tasks.len(), 2, "at most the limit");
    assert_eq!(first.tasks[0].job_type, "COMMON");
    assert_eq!(first.tasks[0].items[0].item_type, "COMMON");
    assert_eq!(
        (first.tasks[0].lease_until, first.tasks[0].lease_epoch),
        (200, 1)
    );
    let second = store
        .lease_tasks(&p1, "s1", "agent-b", terms(150, 250, HOUR), 5)
        .await
        .expect("lease");
    assert_eq!(second.tasks.len(), 1, "the rest, not those leased");
    let none = store
        .lease_tasks(&p1, "s1", "agent-b", terms(150, 250, HOUR), 5)
        .await
        .expect("lease");
    assert!(none.tasks.is_empty());
    assert_eq!(none.next_expiry, Some(200), "when the first lease lapses");

    // Only the holder of the lease, on its server, under its epoch, may end the task.
    let task = &first.tasks[0].task_id;
    for wrong in [
        holder("agent-b", "s1", None),
        holder("agent-a", "s2", None),
        holder("agent-a", "s1", Some(7)),
    ] {
        let end = store.complete_task(&p1, task, TaskStatus::Success, "", 160, Some(wrong));
        assert!(!end.await.expect("complete"), "{wrong:?}");
    }
    // A lapsed lease is taken again under a new epoch; the old holder's report is refused,
    // even when the same agent took it again.
    let retaken = store
        .lease_tasks(&p1, "s1", "agent-a", terms(300, 400, HOUR), 5)
        .await
        .expect("lease");
    assert_eq!(retaken.tasks.len(), 3);
    let again = retaken
        .tasks
        .iter()
        .find(|t| &t.task_id == task)
        .expect("retaken");
    assert_eq!(again.lease_epoch, 2);
    let late = holder("agent-a", "s1", Some(1));
    let refused = store.complete_task(&p1, task, TaskStatus::Success, "", 310, Some(late));
    assert!(!refused.await.expect("complete"));
    let current = holder("agent-a", "s1", Some(2));
    let ended = store.complete_task(&p1, task, TaskStatus::Success, "", 320, Some(current));
    assert!(ended.await.expect("complete"));
    // Another server's tasks are its own.
    let other = store
        .lease_tasks(&p1, "s2", "agent-c", terms(320, 420, HOUR), 10)
        .await
        .expect("lease");
    assert_eq!(other.tasks.len(), 3);
    // And another project's server of the same id sees none of them.
    let p2 = project("p2");
    add_servers(store, &p2, &["s1"]).await;
    let theirs = store
        .lease_tasks(&p2, "s1", "agent-a", terms(500, 600, HOUR), 10)
        .await
        .expect("lease");
    assert_eq!(theirs, Leased::default());

    // A holder that renews nothing (an agent before heartbeats) holds its leases for the
    // tasks' run time: they are not taken again while the tasks may still run.
    let mut whole_run = terms(700, 800, HOUR);
    whole_run.renews = false;
    let held = store
        .lease_tasks(&p1, "s1", "agent-old", whole_run, 10)
        .await
        .expect("lease");
    assert_eq!(held.tasks.len(), 2, "the lapsed ones");
    assert!(held.tasks.iter().all(|t| t.lease_until == 700 + 3_600_000));
    let not_again = store
        .lease_tasks(&p1, "s1", "agent-old", terms(900, 1000, HOUR), 10)
        .await
        .expect("lease");
    assert!(not_again.tasks.is_empty());
}

async fn renewals_keep_leases_and_tell_ended_or_lost_tasks(store: &dyn Store) {
    let p1 = project("p1");
    add_servers(store, &p1, &["s1"]).await;
    for n in 0..4 {
        let created = store.create_job(&p1, job(&format!("j{n}"), &["s1"], n), None);
        created.await.expect("create");
    }
    let leased = store
        .lease_tasks(&p1, "s1", "agent-a", terms(10, 100, HOUR), 4)
        .await
        .expect("lease");
    let held: Vec<(String, i64)> = leased
        .tasks
        .iter()
        .map(|t| (t.task_id.clone(), t.lease_epoch))
        .collect();
    assert_eq!(held.len(), 4);
    // One ends, one's job is deleted, one's lease lapses and is taken by another agent.
    let done = store.complete_task(
        &p1,
        &held[0].0,
        TaskStatus::Failed,
        "exit 3",
        20,
        Some(holder("agent-a", "s1", Some(held[0].1))),
    );
    assert!(done.await.expect("complete"));
    let deleted_job = leased.tasks[1].job_id.clone();
    store
        .delete_jobs(&p1, &[deleted_job], 30)
        .await
        .expect("delete");
    assert!(store
        .renew_leases(&p1, "s1", "agent-a", &[], 500)
        .await
        .expect("nothing")
        .is_empty());
    // A renewal of a lease the agent no longer holds changes nothing.
    let states = store
        .renew_leases(&p1, "s1", "agent-b", &held[2..3], 500)
        .await
        .expect("renew");
    assert_eq!(states, [LeaseState::Lost]);
    let mut renewal = held.clone();
    renewal.push(("unknown".to_string(), 1));
    renewal[3].1 += 1; // a stale epoch
    let states = store
        .renew_leases(&p1, "s1", "agent-a", &renewal, 500)
        .await
        .expect("renew");
    assert_eq!(
        states,
        [
            LeaseState::Ended {
                status: "FAILED".to_string(),
                message: "exit 3".to_string()
            },
            LeaseState::Ended {
                status: "SKIPPED".to_string(),
                message: states_message(&states[1]),
            },
            LeaseState::Held { until: 500 },
            LeaseState::Lost,
            LeaseState::Lost,
        ]
    );
    // The renewed lease holds past its first end: nobody else can take it at 200.
    let later = store
        .lease_tasks(&p1, "s1", "agent-b", terms(200, 300, HOUR), 4)
        .await
        .expect("lease");
    let ids: Vec<&str> = later.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, [held[3].0.as_str()], "only the lapsed one");
    // Another project's agent cannot renew this project's leases.
    let p2 = project("p2");
    let states = store
        .renew_leases(&p2, "s1", "agent-a", &held[2..3], 900)
        .await
        .expect("renew");
    assert_eq!(states, [LeaseState::Lost]);
}

fn states_message(state: &LeaseState) -> String {
    match state {
        LeaseState::Ended { message, .. } => {
            assert!(message.contains("deleted"), "{message}");
            message.clone()
        }
        other => panic!("not ended: {other:?}"),
    }
}

async fn stalled_tasks_are_those_never_started_lapsed_or_past_deadline(store: &dyn Store) {
    let (p1, p2) = (project("p1"), project("p2"));
    add_servers(store, &p1, &["s1"]).await;
    add_servers(store, &p2, &["s1"]).await;
    store
        .upsert_server(&p1, server("sim", "simulated"))
        .await
        .expect("sim");
    let never = store.create_job(&p2, job("never", &["s1"], 1_000), None);
    let never = never.await.expect("create");
    let simulated = store.create_job(&p1, job("sim", &["sim"], 1_000), None);
    simulated.await.expect("create");
    let lapsing = store.create_job(&p1, job("lapsing", &["s1"], 1_000), None);
    let lapsing = lapsing.await.expect("create");
    let long = |_: &str| 1_000_000;
    store
        .lease_tasks(&p1, "s1", "a", terms(2_000, 5_000, &long), 1)
        .await
        .expect("lease");
    let overdue = store.create_job(&p1, job("overdue", &["s1"], 3_000), None);
    let overdue = overdue.await.expect("create");
    let short = |_: &str| 1_000;
    store
        .lease_tasks(&p1, "s1", "a", terms(3_000, 90_000, &short), 1)
        .await
        .expect("lease");
    let fresh = store.create_job(&p1, job("fresh", &["s1"], 9_000), None);
    fresh.await.expect("create");

    // At 11 s, with 5 s to start (or to be taken again): `never` (created at 1 s) never
    // started, `lapsing`'s lease lapsed at 5 s, `overdue` ran past its deadline at 4 s;
    // `fresh` and simulated tasks are left alone.
    let mut stalled = store
        .stalled_tasks(11_000, 5_000, 100)
        .await
        .expect("stalled");
    stalled.sort_by_key(|t| t.task_id.clone());
    let mut expected = vec![
        (
            never.tasks[0].id.clone(),
            Stall::NeverStarted { created_at: 1_000 },
        ),
        (
            lapsing.tasks[0].id.clone(),
            Stall::LeaseLapsed { at: 5_000 },
        ),
        (
            overdue.tasks[0].id.clone(),
            Stall::PastDeadline { at: 4_000 },
        ),
    ];
    expected.sort_by_key(|(id, _)| id.clone());
    let found: Vec<(String, Stall)> = stalled
        .iter()
        .map(|t| (t.task_id.clone(), t.stall))
        .collect();
    assert_eq!(found, expected);
    let projects: Vec<&str> = stalled.iter().map(|t| t.project_id.as_str()).collect();
    assert!(projects.contains(&"p2") && projects.contains(&"p1"));
    assert!(stalled.iter().all(|t| t.server_id == "s1"));
    // The oldest of each kind: a backlog of tasks never started holds no lease back.
    let one_each = store
        .stalled_tasks(11_000, 5_000, 1)
        .await
        .expect("one of each");
    let mut kinds: Vec<bool> = one_each
        .iter()
        .map(|t| matches!(t.stall, Stall::NeverStarted { .. }))
        .collect();
    kinds.sort();
    assert_eq!(kinds, [false, true], "{one_each:?}");
    // Before any of those moments, nothing is stalled.
    assert!(store
        .stalled_tasks(3_500, 5_000, 100)
        .await
        .expect("none")
        .is_empty());
}

/// A task leased again after its lease lapsed (its agent crashed) runs from its start: its
/// run time counts from that lease, not from the first.
async fn a_task_leased_again_has_its_whole_run_time(store: &dyn Store) {
    let p1 = project("p1");
    add_servers(store, &p1, &["s1"]).await;
    let created = store.create_job(&p1, job("rerun", &["s1"], 1_000), None);
    let created = created.await.expect("create");
    let run = |_: &str| 10_000;
    let first = store
        .lease_tasks(&p1, "s1", "a", terms(2_000, 5_000, &run), 1)
        .await
        .expect("lease");
    // The lease lapsed at 5 s; another agent takes the task at 8 s.
    let again = store
        .lease_tasks(&p1, "s1", "b", terms(8_000, 11_000, &run), 1)
        .await
        .expect("lease again");
    assert_eq!(again.tasks.len(), 1);
    assert!(again.tasks[0].lease_epoch > first.tasks[0].lease_epoch);
    // At 13 s the first run's time (to 12 s) is over, the second's (to 18 s) is not.
    let stalled = store
        .stalled_tasks(13_000, 60_000, 100)
        .await
        .expect("stalled");
    assert!(
        stalled.iter().all(|t| t.task_id != created.tasks[0].id),
        "{stalled:?}"
    );
    let stalled = store
        .stalled_tasks(18_500, 60_000, 100)
        .await
        .expect("stalled");
    let stalls: Vec<Stall> = stalled.iter().map(|t| t.stall).collect();
    assert_eq!(stalls, vec![Stall::PastDeadline { at: 18_000 }]);
}

async fn output_is_kept_from_the_lease_holder_only(store: &dyn Store) {
    let (p1, p2) = (project("p1"), project("p2"));
    add_servers(store, &p1, &["s1"]).await;
    let created = store.create_job(&p1, job("out", &["s1"], 1), None);
    let created = created.await.expect("create");
    let task = &created.tasks[0].id;
    assert_eq!(
        store
            .task_output(&p1, &created.id, task)
            .await
            .expect("none yet"),
        None
    );
    // Not leased yet: nobody holds it.
    let put = store.put_task_output(&p1, task, holder("a", "s1", None), "x", 5);
    assert!(!put.await.expect("put"));
    let leased = store
        .lease_tasks(&p1, "s1", "a", terms(10, 100, HOUR), 1)
        .await
        .expect("lease");
    let epoch = leased.tasks[0].lease_epoch;
    for wrong in [
        holder("b", "s1", Some(epoch)),
        holder("a", "s2", Some(epoch)),
        holder("a", "s1", Some(epoch + 1)),
    ] {
        let put = store.put_task_output(&p1, task, wrong, "stolen", 20);
        assert!(!put.await.expect("put"), "{wrong:?}");
    }
    let mine = holder("a", "s1", Some(epoch));
    assert!(store
        .put_task_output(&p1, task, mine, "line 1\n", 20)
        .await
        .expect("put"));
    assert!(store
        .put_task_output(&p1, task, mine, "line 1\nline 2 ✓\n", 30)
        .await
        .expect("put"));
    let kept = store
        .task_output(&p1, &created.id, task)
        .await
        .expect("output")
        .expect("kept");
    assert_eq!(
        (kept.output.as_str(), kept.update_at),
        ("line 1\nline 2 ✓\n", 30)
    );
    // Found only under its own job and project.
    let elsewhere = store.task_output(&p1, "other-job", task).await.expect("o");
    assert_eq!(elsewhere, None);
    let theirs = store.task_output(&p2, &created.id, task).await.expect("o");
    assert_eq!(theirs, None);
    // Once the task ended, its output stays but no more is taken.
    let end = store.complete_task(&p1, task, TaskStatus::Success, "", 40, Some(mine));
    assert!(end.await.expect("complete"));
    let put = store.put_task_output(&p1, task, mine, "late", 50);
    assert!(!put.await.expect("put"));
    let after = store.task_output(&p1, &created.id, task).await.expect("o");
    assert_eq!(after.map(|o| o.update_at), Some(30));
}

async fn servers_seen_in_a_batch_keep_their_latest_time(store: &dyn Store) {
    let (p1, p2) = (project("p1"), project("p2"));
    add_servers(store, &p1, &["a", "b"]).await;
    add_servers(store, &p2, &["a"]).await;
    store.touch_servers(&[]).await.expect("nothing");
    let seen = [
        (p1.clone(), "a".to_string(), 50),
        (p1.clone(), "b".to_string(), 60),
        (p2.clone(), "a".to_string(), 70),
        (p1.clone(), "gone".to_string(), 80),
    ];
    store.touch_servers(&seen).await.expect("touch");
    // An older time never moves a server back.
    store
        .touch_servers(&[(p1.clone(), "a".to_string(), 10)])
        .await
        .expect("older");
    let times = |servers: Vec<litejobs::wire::Server>| -> Vec<(String, Option<i64>)> {
        servers
            .into_iter()
            .map(|s| (s.id, s.last_seen_at))
            .collect()
    };
    assert_eq!(
        times(store.list_servers(&p1).await.expect("p1")),
        [("a".to_string(), Some(50)), ("b".to_string(), Some(60))]
    );
    assert_eq!(
        times(store.list_servers(&p2).await.expect("p2")),
        [("a".to_string(), Some(70))]
    );
}

async fn due_simulated_tasks_are_those_of_simulated_servers_past_their_delay(store: &dyn Store) {
    let p1 = project("p1");
    store
        .upsert_server(&p1, server("sim", "simulated"))
        .await
        .expect("sim");
    add_servers(store, &p1, &["real"]).await;
    store
        .create_job(&p1, job("old", &["sim", "real"], 10), None)
        .await
        .expect("old");
    store
        .create_job(&p1, job("new", &["sim"], 50), None)
        .await
        .expect("new");
    let due = store.due_simulated_tasks(30, 10).await.expect("due");
    assert_eq!(
        due.len(),
        1,
        "the simulated server's task created before 30"
    );
    assert_eq!(
        (due[0].server_id.as_str(), due[0].outcome.as_str()),
        ("sim", "SUCCESS")
    );
    assert_eq!(due[0].project_id, p1);
    assert_eq!(
        store.due_simulated_tasks(100, 10).await.expect("due").len(),
        2
    );
    assert_eq!(
        store.due_simulated_tasks(100, 1).await.expect("due").len(),
        1
    );
}

async fn purges_remove_old_deleted_jobs_keys_and_tokens(store: &dyn Store) {
    let p1 = project("p1");
    add_servers(store, &p1, &["s1"]).await;
    let old = store
        .create_job(&p1, job("old", &["s1"], 1), key("k", "h", 0))
        .await
        .expect("old");
    let recent = store
        .create_job(&p1, job("recent", &["s1"], 1), None)
        .await
        .expect("recent");
    store
        .delete_jobs(&p1, std::slice::from_ref(&old.id), 10)
        .await
        .expect("delete");
    store
        .delete_jobs(&p1, std::slice::from_ref(&recent.id), 100)
        .await
        .expect("delete");
    let (user, project_id) = iam_user_with_project(store).await;
    store
        .insert_token(
            ("expired", &user.id, &project_id),
            (1, 20),
            TokenGrounds::Unconditional,
        )
        .await
        .expect("token");
    store
        .insert_token(
            ("valid", &user.id, &project_id),
            (1, 10_000),
            TokenGrounds::Unconditional,
        )
        .await
        .expect("token");

    assert_eq!(store.purge(50, 50).await.expect("purge"), 1);
    assert_eq!(store.get_job(&p1, &old.id).await.expect("get"), None);
    assert!(store.get_job(&p1, &recent.id).await.expect("get").is_some());
    assert_eq!(list(store, &p1, "").await, (1, vec![recent.id.clone()]));
    assert!(store.find_token("valid", 30).await.expect("find").is_some());
    // The purged job's key is spent: the same key creates a new job.
    let again = store
        .create_job(&p1, job("old", &["s1"], 60), key("k", "h", 0))
        .await;
    assert_ne!(again.expect("create").id, old.id);
    assert_eq!(store.purge(50, 50).await.expect("purge"), 0);
}

async fn lists_are_scoped_to_the_project_with_exact_totals(store: &dyn Store) {
    let (p1, p2) = (project("p1"), project("p2"));
    add_servers(store, &p1, &["s1"]).await;
    add_servers(store, &p2, &["s1"]).await;
    let mut ids = Vec::new();
    for n in 0..12 {
        let mut new = job(&format!("Alpha-{n:02}"), &["s1"], n);
        new.visible = n % 3 != 0;
        new.job_type = if n % 2 == 0 { "COMMON" } else { "LOG_COLLECT" }.to_string();
        ids.push(store.create_job(&p1, new, None).await.expect("create").id);
    }
    store
        .create_job(&p2, job("Alpha-99", &["s1"], 99), None)
        .await
        .expect("other");
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(list(store, &p1, "").await, (12, newest_first.clone()));
    assert_eq!(
        list(store, &p1, "limit=5&offset=5").await,
        (12, newest_first[5..10].to_vec())
    );
    assert_eq!(
        list(store, &p1, "limit=5&offset=10").await,
        (12, newest_first[10..].to_vec())
    );
    assert_eq!(list(store, &p1, "limit=5&offset=12").await, (12, vec![]));
    assert_eq!(list(store, &p1, "name=alpha").await.0, 12);
    assert_eq!(list(store, &p1, "name=A-0&limit=3").await.0, 10);
    assert_eq!(list(store, &p1, "name=99").await.0, 0);
    assert_eq!(list(store, &p1, "type=COMMON").await.0, 6);
    assert_eq!(list(store, &p1, "visible=false").await.0, 4);
    assert_eq!(list(store, &p1, "type=LOG_COLLECT&visible=true").await.0, 4);
    assert_eq!(
        list(store, &p1, &format!("id={}", ids[3])).await,
        (1, vec![ids[3].clone()])
    );
    assert_eq!(list(store, &p2, &format!("id={}", ids[3])).await.0, 0);
    assert_eq!(list(store, &p1, "id=a%00b").await, (0, vec![]));
    assert_eq!(list(store, &p2, "").await.0, 1);
    assert_eq!(list(store, &project("p3"), "").await, (0, vec![]));
}

/// Every page, from either end of the list, in every order and under the filters whose
/// totals come from the counters, is its slice of the whole list, with the whole list's
/// total; past the end, an empty page with that total.
async fn every_page_is_its_slice_of_the_whole_list(store: &dyn Store) {
    let p = project("pages");
    add_servers(store, &p, &["s1"]).await;
    for n in 0..11 {
        // Pairs of jobs created at the same time: ties are ordered by id.
        let mut new = job(&format!("Job-{:02}", (n * 7) % 11), &["s1"], n / 2);
        new.visible = n % 4 != 0;
        new.job_type = if n % 3 == 0 { "LOG_COLLECT" } else { "COMMON" }.to_string();
        store.create_job(&p, new, None).await.expect("create");
    }
    for filter in [
        "",
        "status=PROCESSING",
        "type=COMMON&status=PROCESSING&visible=true",
        "visible=false",
        "status=FINISHED",
    ] {
        for order in [
            "sort_dir=desc",
            "sort_dir=asc",
            "sort_key=name&sort_dir=asc",
            "sort_key=name&sort_dir=desc",
            "sort_key=update_at",
        ] {
            let (total, whole) = list(store, &p, &format!("{filter}&{order}")).await;
            assert_eq!(total, whole.len() as u64, "{filter}&{order}");
            for limit in [1, 3, 4] {
                for offset in 0..=whole.len() + 1 {
                    let raw = format!("{filter}&{order}&limit={limit}&offset={offset}");
                    let slice = whole.iter().skip(offset).take(limit).cloned().collect();
                    assert_eq!(list(store, &p, &raw).await, (total, slice), "{raw}");
                }
            }
        }
    }
}

async fn concurrent_creates_each_get_their_own_outcome(store: &dyn Store) {
    let p1 = project("p1");
    add_servers(store, &p1, &["s1", "s2"]).await;
    let creates = (0..30).map(|n| {
        let servers: &[&str] = if n % 5 == 0 {
            &["s1", "nope"]
        } else {
            &["s1", "s2"]
        };
        store.create_job(&p1, job(&format!("j{n}"), servers, n), None)
    });
    let outcomes = futures::future::join_all(creates).await;
    for (n, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok(created) => {
                assert!(n % 5 != 0, "j{n} names an unknown server");
                let stored = store.get_job(&p1, &created.id).await.expect("get");
                assert_eq!(stored.as_ref(), Some(created), "j{n}");
            }
            Err(StoreError::UnknownServers(missing)) => {
                assert_eq!((n % 5, missing.as_slice()), (0, &["nope".to_string()][..]));
            }
            Err(e) => panic!("j{n}: {e}"),
        }
    }
    let (a, b, c) = futures::future::join3(
        store.create_job(&p1, job("k", &["s1"], 40), key("t", "h1", 0)),
        store.create_job(&p1, job("k", &["s1"], 40), key("t", "h1", 0)),
        store.create_job(&p1, job("k2", &["s1"], 40), key("t", "h2", 0)),
    )
    .await;
    // The first body to claim the key wins it; the other body's creates conflict.
    let conflict = |r: &Result<_, StoreError>| matches!(r, Err(StoreError::IdempotencyConflict));
    match c {
        Ok(_) => assert!(conflict(&a) && conflict(&b), "{a:?} {b:?}"),
        Err(StoreError::IdempotencyConflict) => {
            assert_eq!(a.expect("a").id, b.expect("b").id);
        }
        Err(e) => panic!("c: {e}"),
    }
    assert_eq!(list(store, &p1, "").await.0, 24 + 1);
}

/// A user `u` with a project `proj`, answered with the project's id.
async fn iam_user_with_project(store: &dyn Store) -> (UserRecord, String) {
    let user = UserRecord {
        id: "user-1".to_string(),
        name: "u".to_string(),
        password_hash: Some("hash".to_string()),
        create_at: 1,
    };
    store.create_user(&user).await.expect("user");
    let p = ProjectRecord {
        id: "proj-1".to_string(),
        name: "proj".to_string(),
        create_at: 1,
    };
    store.create_project(&p).await.expect("project");
    (user, p.id)
}

async fn projects_and_users_are_found_by_id_or_name(store: &dyn Store) {
    let (user, project_id) = iam_user_with_project(store).await;
    let found = store
        .find_project("proj")
        .await
        .expect("find")
        .expect("by name");
    assert_eq!(found.id, project_id);
    assert_eq!(
        store
            .find_project(&project_id)
            .await
            .expect("find")
            .map(|p| p.name),
        Some("proj".into())
    );
    assert_eq!(
        store
            .find_project("nope")
            .await
            .expect("find")
            .map(|p| p.id),
        None
    );
    let taken = ProjectRecord {
        id: "proj-2".to_string(),
        name: "proj".to_string(),
        create_at: 2,
    };
    assert!(matches!(
        store.create_project(&taken).await,
        Err(StoreError::Conflict(_))
    ));
    // Projects are named by either: no project's id may be another's name, nor its name
    // another's id.
    for tricky in [
        ProjectRecord {
            id: "proj".to_string(),
            name: "other".to_string(),
            create_at: 3,
        },
        ProjectRecord {
            id: "proj-3".to_string(),
            name: project_id.clone(),
            create_at: 3,
        },
    ] {
        assert!(
            matches!(
                store.create_project(&tricky).await,
                Err(StoreError::Conflict(_))
            ),
            "{tricky:?}"
        );
    }
    // A project may have its id as its name.
    let itself = ProjectRecord {
        id: "self-named".to_string(),
        name: "self-named".to_string(),
        create_at: 4,
    };
    store.create_project(&itself).await.expect("its own name");
    let names: Vec<String> = store
        .list_projects()
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["proj", "self-named"]);

    assert_eq!(
        store.find_user("u").await.expect("find").map(|u| u.id),
        Some(user.id.clone())
    );
    assert_eq!(
        store
            .find_user(&user.id)
            .await
            .expect("find")
            .map(|u| u.name),
        Some("u".into())
    );
    let twin = UserRecord {
        id: "user-2".to_string(),
        ..user.clone()
    };
    let alias = UserRecord {
        id: "user-3".to_string(),
        name: user.id.clone(),
        ..user.clone()
    };
    for taken in [twin, alias] {
        assert!(
            matches!(
                store.create_user(&taken).await,
                Err(StoreError::Conflict(_))
            ),
            "{taken:?}"
        );
    }
    store.set_password(&user.id, "new-hash").await.expect("set");
    let changed = store.find_user("u").await.expect("find").expect("user");
    assert_eq!(changed.password_hash.as_deref(), Some("new-hash"));
    assert!(matches!(
        store.set_password("nobody", "h").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.list_users().await.expect("list").len(), 1);
    assert!(store.delete_user(&user.id).await.expect("delete"));
    assert!(!store.delete_user(&user.id).await.expect("again"));
    assert!(store.list_users().await.expect("list").is_empty());
}

/// Creates made at once cannot name each other: of a project `a` named `b` and a project
/// `b` named `c` (and the same of users), created together, one is refused.
async fn concurrent_creates_cannot_take_each_other_s_names(store: &dyn Store) {
    for round in 0..40 {
        let [a, b, c] = ["a", "b", "c"].map(|n| format!("{n}-{round}"));
        let projects = [(&a, &b), (&b, &c)].map(|(id, name)| ProjectRecord {
            id: id.clone(),
            name: name.clone(),
            create_at: round,
        });
        let users = projects.clone().map(|p| UserRecord {
            id: p.id,
            name: p.name,
            password_hash: None,
            create_at: round,
        });
        let (first, second, third, fourth) = tokio::join!(
            store.create_project(&projects[0]),
            store.create_project(&projects[1]),
            store.create_user(&users[0]),
            store.create_user(&users[1]),
        );
        for (what, answers) in [("projects", [first, second]), ("users", [third, fourth])] {
            let made = answers.iter().filter(|a| a.is_ok()).count();
            assert_eq!(made, 1, "{what} of round {round}: {answers:?}");
            assert!(
                answers
                    .iter()
                    .any(|a| matches!(a, Err(StoreError::Conflict(_)))),
                "{what} of round {round}: {answers:?}"
            );
        }
    }
}

async fn access_keys_belong_to_their_user(store: &dyn Store) {
    let (user, _) = iam_user_with_project(store).await;
    let record = |ak: &str, at: i64| AccessKeyRecord {
        access_key: ak.to_string(),
        secret_key: "sealed-secret".to_string(),
        user_id: user.id.clone(),
        user_name: String::new(),
        description: "ci".to_string(),
        create_at: at,
    };
    store
        .create_access_key(&record("AK2", 2))
        .await
        .expect("key");
    store
        .create_access_key(&record("AK1", 1))
        .await
        .expect("key");
    assert!(matches!(
        store.create_access_key(&record("AK1", 3)).await,
        Err(StoreError::Conflict(_))
    ));
    let found = store
        .find_access_key("AK1")
        .await
        .expect("find")
        .expect("key");
    assert_eq!(
        (found.user_name.as_str(), found.secret_key.as_str()),
        ("u", "sealed-secret")
    );
    assert_eq!(
        store
            .find_access_key("AK9")
            .await
            .expect("find")
            .map(|k| k.user_id),
        None
    );
    let listed: Vec<String> = store
        .list_access_keys(&user.id)
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.access_key)
        .collect();
    assert_eq!(listed, ["AK1", "AK2"], "oldest first");
    assert!(store.delete_access_key("AK1").await.expect("delete"));
    assert!(!store.delete_access_key("AK1").await.expect("again"));
    // A user's keys go with the user.
    store.delete_user(&user.id).await.expect("delete user");
    assert_eq!(
        store
            .find_access_key("AK2")
            .await
            .expect("find")
            .map(|k| k.user_id),
        None
    );
}

async fn policies_and_grants_give_actions_per_project(store: &dyn Store) {
    let (user, project_id) = iam_user_with_project(store).await;
    let policy = |name: &str, actions: &[&str], builtin| PolicyRecord {
        name: name.to_string(),
        actions: actions.iter().map(|a| a.to_string()).collect(),
        builtin,
    };
    store
        .upsert_policy(&policy("readers", &["a:list"], false))
        .await
        .expect("policy");
    store
        .upsert_policy(&policy("readers", &["a:list", "a:get"], false))
        .await
        .expect("update");
    store
        .upsert_policy(&policy("Builtin", &["*"], true))
        .await
        .expect("builtin");
    let listed = store.list_policies().await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].actions, ["a:list", "a:get"]);

    assert_eq!(
        store
            .project_actions(&user.id, &project_id)
            .await
            .expect("none"),
        None
    );
    store
        .grant(&user.id, &project_id, "readers")
        .await
        .expect("grant");
    store
        .grant(&user.id, &project_id, "readers")
        .await
        .expect("twice is once");
    store
        .grant(&user.id, &project_id, "Builtin")
        .await
        .expect("grant");
    let mut actions = store
        .project_actions(&user.id, &project_id)
        .await
        .expect("actions")
        .expect("granted");
    actions.sort();
    assert_eq!(actions, ["*", "a:get", "a:list"]);
    assert_eq!(
        store
            .project_actions(&user.id, "other")
            .await
            .expect("none"),
        None
    );
    assert_eq!(
        store.list_grants(&user.id).await.expect("grants"),
        [
            (project_id.clone(), "Builtin".to_string()),
            (project_id.clone(), "readers".to_string())
        ]
    );
    // A grant names a project and a policy that exist.
    let missing = store.grant(&user.id, "no-such-project", "readers").await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );

    assert!(store
        .revoke(&user.id, &project_id, "Builtin")
        .await
        .expect("revoke"));
    assert!(!store
        .revoke(&user.id, &project_id, "Builtin")
        .await
        .expect("again"));
    // A built-in policy stays; a custom one goes, with its grants.
    assert!(!store.delete_policy("Builtin").await.expect("builtin stays"));
    assert!(store.delete_policy("readers").await.expect("delete"));
    assert_eq!(
        store
            .project_actions(&user.id, &project_id)
            .await
            .expect("none"),
        None
    );
}

async fn tokens_are_found_until_they_expire_or_are_revoked(store: &dyn Store) {
    let (user, project_id) = iam_user_with_project(store).await;
    store
        .insert_token(
            ("h1", &user.id, &project_id),
            (1, 100),
            TokenGrounds::Unconditional,
        )
        .await
        .expect("token");
    store
        .insert_token(
            ("h2", &user.id, &project_id),
            (1, 100),
            TokenGrounds::Unconditional,
        )
        .await
        .expect("token");
    store
        .insert_token(
            ("h3", &user.id, &project_id),
            (1, 100),
            TokenGrounds::Unconditional,
        )
        .await
        .expect("token");
    let found = store
        .find_token("h1", 50)
        .await
        .expect("find")
        .expect("valid");
    assert_eq!(
        (
            found.user_name.as_str(),
            found.project_id.as_str(),
            found.expires_at
        ),
        ("u", project_id.as_str(), 100)
    );
    assert!(
        store.find_token("h1", 100).await.expect("find").is_none(),
        "expired"
    );
    assert!(store.find_token("nope", 50).await.expect("find").is_none());
    assert!(store.revoke_token("h1", 60).await.expect("revoke"));
    assert!(!store.revoke_token("h1", 61).await.expect("again"));
    assert!(store.find_token("h1", 62).await.expect("find").is_none());
    assert_eq!(
        store
            .revoke_user_tokens(&user.id, 70)
            .await
            .expect("revoke all"),
        2
    );
    assert!(store.find_token("h2", 71).await.expect("find").is_none());
    assert_eq!(
        store
            .revoke_user_tokens(&user.id, 72)
            .await
            .expect("none left"),
        0
    );
}

async fn tokens_are_issued_only_while_their_grounds_hold(store: &dyn Store) {
    let (user, project_id) = iam_user_with_project(store).await;
    store
        .set_password(&user.id, "hash-1")
        .await
        .expect("password");
    let issue = |hash: &'static str, grounds: TokenGrounds<'static>| {
        let (user_id, project_id) = (user.id.clone(), project_id.clone());
        async move {
            store
                .insert_token((hash, &user_id, &project_id), (10, 1_000), grounds)
                .await
                .expect("an answer")
        }
    };
    assert!(issue("t1", TokenGrounds::Password("hash-1")).await);
    assert!(!issue("t2", TokenGrounds::Password("another")).await);
    assert!(issue("t3", TokenGrounds::Token("t1")).await);
    assert!(!issue("t4", TokenGrounds::Token("no-such-token")).await);
    // A new password: tokens issued on the old one are refused.
    store
        .set_password(&user.id, "hash-2")
        .await
        .expect("password");
    assert!(!issue("t5", TokenGrounds::Password("hash-1")).await);
    assert!(issue("t6", TokenGrounds::Password("hash-2")).await);
    // A revoked token is no ground for another.
    assert!(store.revoke_token("t1", 20).await.expect("revoke"));
    assert!(!issue("t7", TokenGrounds::Token("t1")).await);
    assert_eq!(
        store
            .revoke_user_tokens(&user.id, 30)
            .await
            .expect("revoke"),
        2
    );
    assert!(!issue("t8", TokenGrounds::Token("t6")).await);
    for refused in ["t2", "t4", "t5", "t7", "t8"] {
        assert!(
            store.find_token(refused, 50).await.expect("find").is_none(),
            "{refused}"
        );
    }
}

/// Sign-ins on the old password and project switches from a session racing a new password
/// and the revocation of the user's tokens (as `iam user set-password` does): no token they
/// made survives.
async fn a_new_password_ends_every_token_issued_on_the_old_one(store: &dyn Store) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (user, project_id) = iam_user_with_project(store).await;
    store.set_password(&user.id, "old").await.expect("password");
    store
        .insert_token(
            ("session", &user.id, &project_id),
            (10, i64::MAX / 2),
            TokenGrounds::Unconditional,
        )
        .await
        .expect("session");
    let issued = AtomicUsize::new(0);
    let sign_ins = |n: usize| {
        let (user, project_id, issued) = (&user, &project_id, &issued);
        async move {
            let mut made = Vec::new();
            for i in 0..60 {
                let hash = format!("race-{n}-{i}");
                let grounds = if n % 2 == 0 {
                    TokenGrounds::Password("old")
                } else {
                    TokenGrounds::Token("session")
                };
                let stored = store
                    .insert_token((&hash, &user.id, project_id), (10, i64::MAX / 2), grounds)
                    .await
                    .expect("an answer");
                if stored {
                    issued.fetch_add(1, Ordering::SeqCst);
                    made.push(hash);
                }
            }
            made
        }
    };
    let change = async {
        while issued.load(Ordering::SeqCst) < 10 {
            tokio::task::yield_now().await;
        }
        store.set_password(&user.id, "new").await.expect("password");
        store
            .revoke_user_tokens(&user.id, 20)
            .await
            .expect("revoke");
    };
    let (made, ()) = futures::join!(futures::future::join_all((0..4).map(sign_ins)), change);
    let made: Vec<String> = made.into_iter().flatten().collect();
    assert!(made.len() >= 10, "{made:?}");
    for hash in &made {
        assert!(
            store.find_token(hash, 30).await.expect("find").is_none(),
            "{hash} survived"
        );
    }
}

async fn the_store_answers_a_ping_and_names_its_backend(store: &dyn Store) {
    store.ping().await.expect("ping");
    assert!(["sqlite", "postgres"].contains(&store.backend()));
    assert_eq!(store.readiness().await.expect("readiness"), None);
    let pools = store.pool_use();
    assert!(!pools.is_empty());
    assert!(pools.iter().all(|p| p.idle + p.in_use >= 1), "{pools:?}");
}

async fn job_events_follow_every_change_in_commit_order(store: &dyn Store) {
    let (p1, p2) = (project("p1"), project("p2"));
    add_servers(store, &p1, &["s1", "s2"]).await;
    add_servers(store, &p2, &["s1"]).await;
    assert_eq!(store.last_job_event().await.expect("last"), 0);
    let mut hidden = job("ev", &["s1", "s2"], 10);
    hidden.visible = false;
    let job1 = store.create_job(&p1, hidden, None).await.expect("create");
    let theirs = store.create_job(&p2, job("theirs", &["s1"], 11), None);
    theirs.await.expect("create");
    let end = store.complete_task(
        &p1,
        &job1.tasks[0].id,
        TaskStatus::Failed,
        "boom\nline 2",
        20,
        None,
    );
    assert!(end.await.expect("complete"));
    let end = store.complete_task(&p1, &job1.tasks[1].id, TaskStatus::Success, "", 30, None);
    assert!(end.await.expect("complete"));
    store
        .delete_jobs(&p1, std::slice::from_ref(&job1.id), 40)
        .await
        .expect("delete");
    // A refused or repeated change writes no event.
    let again = store.complete_task(&p1, &job1.tasks[1].id, TaskStatus::Success, "", 50, None);
    assert!(!again.await.expect("complete"));
    store
        .delete_jobs(&p1, std::slice::from_ref(&job1.id), 60)
        .await
        .expect("delete again");

    let all = store.job_events_after(None, 0, 100).await.expect("events");
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(
        store.last_job_event().await.expect("last"),
        *seqs.last().expect("some")
    );
    let ours = store
        .job_events_after(Some(&p1), 0, 100)
        .await
        .expect("ours");
    let kinds: Vec<(&str, &str)> = ours
        .iter()
        .map(|e| (e.kind.as_str(), e.job_id.as_str()))
        .collect();
    let id = job1.id.as_str();
    assert_eq!(
        kinds,
        [
            ("created", id),
            ("task", id),
            ("finished", id),
            ("deleted", id)
        ]
    );
    assert!(ours.iter().all(|e| !e.visible && e.project_id == "p1"));
    let item: serde_json::Value = serde_json::from_str(&ours[1].item).expect("item");
    assert_eq!(
        (item["status"].as_str(), item["abnormal_count"].as_i64()),
        (Some("PROCESSING"), Some(1))
    );
    let task: serde_json::Value =
        serde_json::from_str(ours[1].task.as_deref().expect("task")).expect("task json");
    assert_eq!(task["id"], job1.tasks[0].id.as_str());
    assert_eq!(
        (task["server_id"].as_str(), task["status"].as_str()),
        (Some("s1"), Some("FAILED"))
    );
    assert_eq!(task["message"], "boom\nline 2");
    let finished: serde_json::Value = serde_json::from_str(&ours[2].item).expect("item");
    assert_eq!(finished["status"], "FINISHED");
    assert_eq!(ours[3].at, 40);
    // After an event, and a limit.
    let after = store
        .job_events_after(Some(&p1), ours[1].seq, 2)
        .await
        .expect("after");
    let kinds: Vec<&str> = after.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["finished", "deleted"]);
    // Purged by time; the others stay.
    store.purge_activity(35, 0).await.expect("purge");
    let left = store.job_events_after(None, 0, 100).await.expect("left");
    assert!(left.iter().all(|e| e.at >= 35), "{left:?}");
    assert_eq!(left.len(), 1);
}

async fn audit_records_are_kept_listed_by_filter_and_purged(store: &dyn Store) {
    let record = |at: i64, user: &str, action: &str, outcome: &str| litejobs::store::AuditRecord {
        at,
        project_id: Some("p1".to_string()),
        user_id: format!("id-{user}"),
        user_name: user.to_string(),
        access_key: Some("AK1".to_string()),
        action: action.to_string(),
        resources: vec!["r1".to_string(), "r 2".to_string()],
        source: "10.0.0.1".to_string(),
        request_id: format!("req-{at}"),
        outcome: outcome.to_string(),
        status: if outcome == "success" { 200 } else { 403 },
        error_code: (outcome != "success").then(|| "ModelArts.0105".to_string()),
    };
    store.record_audit(&[]).await.expect("nothing");
    let records = [
        record(10, "alice", "job.create", "success"),
        record(20, "bob", "job.delete", "denied"),
        record(30, "alice", "job.delete", "success"),
    ];
    store.record_audit(&records).await.expect("record");
    let list = |filter: AuditFilter| async move {
        let found = store.list_audit(&filter).await.expect("list");
        found.into_iter().map(|r| r.at).collect::<Vec<i64>>()
    };
    let all = AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    };
    let everything = store.list_audit(&all).await.expect("list");
    assert_eq!(everything[2], records[0], "kept as given");
    assert_eq!(list(all.clone()).await, [30, 20, 10], "newest first");
    assert_eq!(
        list(AuditFilter {
            user: Some("alice".into()),
            ..all.clone()
        })
        .await,
        [30, 10]
    );
    assert_eq!(
        list(AuditFilter {
            user: Some("id-bob".into()),
            ..all.clone()
        })
        .await,
        [20]
    );
    assert_eq!(
        list(AuditFilter {
            action: Some("job.delete".into()),
            ..all.clone()
        })
        .await,
        [30, 20]
    );
    assert_eq!(
        list(AuditFilter {
            outcome: Some("denied".into()),
            ..all.clone()
        })
        .await,
        [20]
    );
    assert_eq!(
        list(AuditFilter {
            since_ms: Some(20),
            until_ms: Some(30),
            ..all.clone()
        })
        .await,
        [20]
    );
    assert_eq!(
        list(AuditFilter {
            project_id: Some("p2".into()),
            ..all.clone()
        })
        .await,
        Vec::<i64>::new()
    );
    assert_eq!(
        list(AuditFilter {
            limit: 1,
            ..all.clone()
        })
        .await,
        [30]
    );
    store.purge_activity(0, 25).await.expect("purge");
    assert_eq!(list(all).await, [30]);
}

async fn fleet_gauges_count_running_tasks_and_agents_online(store: &dyn Store) {
    let (p1, p2) = (project("p1"), project("p2"));
    add_servers(store, &p1, &["a1", "a2"]).await;
    add_servers(store, &p2, &["b1"]).await;
    store
        .upsert_server(&p1, server("sim", "simulated"))
        .await
        .expect("sim");
    store
        .create_job(&p1, job("j", &["a1", "a2", "sim"], 1), None)
        .await
        .expect("job");
    store
        .create_job(&p2, job("k", &["b1"], 2), None)
        .await
        .expect("job");
    store
        .lease_tasks(&p1, "a1", "agent", terms(100, 10_000, HOUR), 5)
        .await
        .expect("lease");
    store.touch_server(&p1, "a1", 5_000).await.expect("touch");
    store.touch_server(&p2, "b1", 1_000).await.expect("touch");
    let gauges = store.fleet_gauges(6_000, 2_000).await.expect("gauges");
    assert_eq!((gauges.waiting, gauges.leased, gauges.simulated), (2, 1, 1));
    assert_eq!(gauges.agents_online, [("p1".to_string(), 1)]);
    // Past the lease's end, its task waits again.
    let later = store.fleet_gauges(20_000, 0).await.expect("gauges");
    assert_eq!((later.waiting, later.leased), (3, 0));
    assert_eq!(
        later.agents_online,
        [("p1".to_string(), 1), ("p2".to_string(), 1)]
    );
}

async fn running_tasks_are_counted_per_server_of_the_project(store: &dyn Store) {
    let (p1, p2) = (project("p1"), project("p2"));
    add_servers(store, &p1, &["a1", "a2", "idle"]).await;
    add_servers(store, &p2, &["a1"]).await;
    assert!(store.running_tasks(&p1).await.expect("none").is_empty());
    let first = store
        .create_job(&p1, job("j", &["a1", "a2"], 1), None)
        .await
        .expect("job");
    store
        .create_job(&p1, job("k", &["a1"], 2), None)
        .await
        .expect("job");
    store
        .create_job(&p2, job("theirs", &["a1"], 3), None)
        .await
        .expect("job");
    let running = store.running_tasks(&p1).await.expect("running");
    assert_eq!(running, [("a1".to_string(), 2), ("a2".to_string(), 1)]);
    // An ended task no longer runs; a deleted job's tasks are cancelled.
    let a2 = first
        .tasks
        .iter()
        .find(|t| t.server_id == "a2")
        .expect("a2");
    let end = store.complete_task(&p1, &a2.id, TaskStatus::Failed, "no", 4, None);
    assert!(end.await.expect("complete"));
    store
        .delete_jobs(&p1, std::slice::from_ref(&first.id), 5)
        .await
        .expect("delete");
    let running = store.running_tasks(&p1).await.expect("running");
    assert_eq!(running, [("a1".to_string(), 1)]);
    let theirs = store.running_tasks(&p2).await.expect("running");
    assert_eq!(theirs, [("a1".to_string(), 1)]);
}

/// A PostgreSQL database that applied an earlier text of migration 12 (whose audit status
/// was an INTEGER) opens: its schema is brought to today's text, and today's checksum
/// recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_an_edited_migrations_earlier_text_opens() {
    use sqlx::Connection;
    let Some(database) = litejobs::testkit::test_database().await else {
        return;
    };
    drop(litejobs::store::open(&database.url).await.expect("open"));
    let mut conn = sqlx::PgConnection::connect(&database.url)
        .await
        .expect("connect");
    sqlx::raw_sql(
        "ALTER TABLE audit_log ALTER COLUMN status TYPE INTEGER; \
         UPDATE _sqlx_migrations SET checksum = decode('fc85ffb3eda5508245ff75f503a7be11d3c9e2\
         6837dffd7bb855ad53ea78f1eaedcbe1d0718009eb480c2c31020f7a0e', 'hex') WHERE version = 12",
    )
    .execute(&mut conn)
    .await
    .expect("as the earlier build left it");
    let column = "SELECT data_type FROM information_schema.columns \
                  WHERE table_name = 'audit_log' AND column_name = 'status'";
    let kind: String = sqlx::query_scalar(column)
        .fetch_one(&mut conn)
        .await
        .expect("type");
    assert_eq!(kind, "integer");
    drop(litejobs::store::open(&database.url).await.expect("opens"));
    let kind: String = sqlx::query_scalar(column)
        .fetch_one(&mut conn)
        .await
        .expect("type");
    assert_eq!(kind, "bigint");
    drop(
        litejobs::store::open(&database.url)
            .await
            .expect("opens again"),
    );
}

/// A migration is never edited once it has shipped (a database that applied it records its
/// checksum, and sqlx refuses a database whose file differs): `migrations/SHIPPED` holds the
/// SHA-384 of each, and a new migration adds its line (`sha384sum sqlite/00NN_….sql`, from
/// `migrations/`). A change of schema is a new migration.
#[test]
fn shipped_migrations_are_unchanged() {
    use sha2::Digest;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let shipped = std::fs::read_to_string(root.join("SHIPPED")).expect("SHIPPED");
    let mut listed = std::collections::BTreeSet::new();
    for line in shipped.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, file) = line.split_once("  ").expect("`sum  path` lines");
        let text = std::fs::read(root.join(file)).expect(file);
        assert_eq!(
            hex::encode(sha2::Sha384::digest(&text)),
            sum,
            "{file} changed after it shipped: put the change in a new migration"
        );
        listed.insert(file.to_string());
    }
    for backend in ["sqlite", "postgres"] {
        for entry in std::fs::read_dir(root.join(backend)).expect("migrations") {
            let name = entry.expect("entry").file_name();
            let file = format!("{backend}/{}", name.to_string_lossy());
            assert!(
                listed.contains(&file),
                "{file} is not in migrations/SHIPPED"
            );
        }
    }
}
