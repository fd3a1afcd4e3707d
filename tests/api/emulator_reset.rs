//! What an emulator's reset leaves behind for the next test of a suite: nothing the
//! authentication remembered, and the demo project named as IAM names it.

use litejobs::client::{Client, ClientAuth, ClientError};
use litejobs::iam::demo;
use litejobs::sign::Credentials;
use reqwest::Method;

use crate::emulator::{admin_client, call, demo_client, emulator};

const ALICE_KEY: &str = "ALICEKEY0000000000AA";
const ALICE_SECRET: &str = "AliceSecretKey00000000000000000000000000";
const PROJECT: &str = "0123456789abcdef0123456789abcdef";

/// A seed of one project and alice, who holds `policy` in it.
fn alice_seed(policy: &str) -> Vec<u8> {
    serde_json::json!({
        "projects": [{"id": PROJECT, "name": "cn-east-3"}],
        "users": [{"name": "alice", "password": "alice-password-1",
                   "access_keys": [{"access_key": ALICE_KEY, "secret_key": ALICE_SECRET}],
                   "grants": [{"project": "cn-east-3", "policy": policy}]}],
        "servers": [{"project": "cn-east-3", "id": "node-1", "simulated": true}]
    })
    .to_string()
    .into_bytes()
}

fn client_of(endpoint: &str, project: &str, access_key: &str, secret_key: &str) -> Client {
    let auth = ClientAuth::AkSk(Credentials {
        access_key: access_key.to_string(),
        secret_key: secret_key.to_string(),
    });
    Client::new(endpoint, project, auth).expect("client")
}

/// The status of a refused call.
fn refused<T: std::fmt::Debug>(answer: Result<T, ClientError>) -> u16 {
    match answer {
        Err(ClientError::Api { status, .. }) => status,
        other => panic!("expected an API error: {other:?}"),
    }
}

/// The status of a create by `client`.
async fn create_status(client: &Client) -> u16 {
    let body =
        serde_json::to_vec(&crate::helpers::job_request("probe", &["node-1"])).expect("body");
    let path = format!("/v1/{}/dev-servers/jobs", client.project_id());
    client
        .send(Method::POST, &path, &[], Some(body), &[])
        .await
        .expect("send")
        .status
}

/// A user the reset removed is not let in by what the authentication looked up before it,
/// and one seeded again with other grants has those at once (the cache would keep both
/// for its time, a minute here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_forgets_the_users_keys_and_grants_authentication_looked_up() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, info) = emulator(dir.path(), &["--auth-cache-ttl", "60s"]).await;
    let admin = admin_client(&info);
    let endpoint = info["endpoint"].as_str().expect("endpoint");
    let alice = client_of(endpoint, PROJECT, ALICE_KEY, ALICE_SECRET);
    let seed = |policy| {
        call(
            &admin,
            Method::POST,
            "/_litejobs/seed",
            Some(alice_seed(policy)),
        )
    };
    let reset = || call(&admin, Method::POST, "/_litejobs/reset", None);

    assert_eq!(seed("ModelArts ReadOnlyAccess").await.0, 200);
    assert_eq!(alice.list_jobs(&[]).await.expect("alice lists").total, 0);
    assert_eq!(create_status(&alice).await, 403, "read-only");
    assert_eq!(reset().await.0, 200);
    assert_eq!(refused(alice.list_jobs(&[]).await), 401);

    assert_eq!(seed("ModelArts ReadOnlyAccess").await.0, 200);
    assert_eq!(create_status(&alice).await, 403);
    assert_eq!(reset().await.0, 200);
    assert_eq!(seed("ModelArts FullAccess").await.0, 200);
    assert_eq!(
        create_status(&alice).await,
        200,
        "the new grant holds at once"
    );
    server.terminate().await.expect("stops");
}

/// Five wrong secrets lock the demo key at this address for five minutes; a reset lifts
/// the lock. And with `--simulate` no address is refused for its failures: every client of
/// a local emulator is one address, which a suite's tests of wrong keys would lock out,
/// the administrator's reset with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_lifts_lock_outs_and_an_emulator_refuses_no_address() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, info) = emulator(dir.path(), &[]).await;
    let admin = admin_client(&info);
    let endpoint = info["endpoint"].as_str().expect("endpoint");
    let demo = demo_client(endpoint);
    let wrong = client_of(
        endpoint,
        demo::PROJECT_ID,
        demo::ACCESS_KEY,
        "NotTheDemoSecretKey000000000000000000000",
    );
    for _ in 0..5 {
        assert_eq!(refused(wrong.list_jobs(&[]).await), 401);
    }
    assert_eq!(refused(demo.list_jobs(&[]).await), 401);
    // 150 unknown keys: past the 100 failures that refuse an address outside an emulator.
    for n in 0..150 {
        let stranger = client_of(
            endpoint,
            demo::PROJECT_ID,
            &format!("UNKNOWNKEY{n:010}"),
            "UnknownSecretKey000000000000000000000000",
        );
        assert_eq!(refused(stranger.list_jobs(&[]).await), 401);
    }
    let (status, answer) = call(&admin, Method::POST, "/_litejobs/reset", None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(demo.list_jobs(&[]).await.expect("unlocked").total, 0);
    server.terminate().await.expect("stops");
}

/// The demo project answers for the region name in IAM's listing; reset and seed take that
/// name for it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_seed_name_the_demo_project_by_its_region() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, info) = emulator(dir.path(), &[]).await;
    let admin = admin_client(&info);
    let region = info["region"].as_str().expect("region").to_string();
    let demo = demo_client(info["endpoint"].as_str().expect("endpoint"));
    let seed = serde_json::json!({"jobs": [{
        "project": region, "name": "seeded", "type": "COMMON",
        "tasks": [{"server_id": "sim-server-01", "status": "SUCCESS"}]
    }]});
    let (status, answer) = call(
        &admin,
        Method::POST,
        "/_litejobs/seed",
        Some(seed.to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(demo.list_jobs(&[]).await.expect("list").total, 1);
    let body = serde_json::json!({ "project_id": region });
    let (status, erased) = call(
        &admin,
        Method::POST,
        "/_litejobs/reset",
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert_eq!(
        (status, erased["erased_jobs"].as_u64()),
        (200, Some(1)),
        "{erased}"
    );
    assert_eq!(demo.list_jobs(&[]).await.expect("list").total, 0);
    server.terminate().await.expect("stops");
}

/// `litejobs emulator reset` resets everything though the environment names a project to
/// connect as (as `litejobs env` and the test set-ups do); `--project-id` written on its
/// command line resets that project's jobs only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_resets_one_project_only_when_its_command_line_says_so() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, info) = emulator(dir.path(), &[]).await;
    let admin = admin_client(&info);
    let demo = demo_client(info["endpoint"].as_str().expect("endpoint"));
    let ready = dir.path().join("ready.json");
    let reset = |extra: &'static [&'static str]| {
        let ready = ready.clone();
        async move {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_litejobs"));
            cmd.args(["emulator", "--ready-file"])
                .arg(&ready)
                .arg("reset")
                .args(extra)
                .env("LITEJOBS_PROJECT_ID", demo::PROJECT_ID)
                .env("HOME", ready.parent().expect("dir"));
            let out = cmd.output().await.expect("runs");
            assert!(out.status.success(), "{out:?}");
            let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
            answer["erased_jobs"].as_u64()
        }
    };
    let create_both = || async {
        for client in [&admin, &demo] {
            client
                .create_job(
                    &crate::helpers::job_request("both", &["sim-server-01"]),
                    None,
                )
                .await
                .expect("created");
        }
    };
    create_both().await;
    assert_eq!(reset(&[]).await, Some(2), "everything");
    create_both().await;
    assert_eq!(
        reset(&["--project-id", "demo"]).await,
        Some(1),
        "the demo project's"
    );
    assert_eq!(admin.list_jobs(&[]).await.expect("list").total, 1);
    server.terminate().await.expect("stops");
}

/// A reset of one project erases its jobs' changes: a list watch of that project resuming
/// from before the reset is told they are gone (`expired`), though other projects' older
/// changes are still kept; one resuming from after it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resuming_from_before_a_projects_reset_is_told_so() {
    let dir = tempfile::tempdir().expect("dir");
    let (server, info) = emulator(dir.path(), &[]).await;
    let admin = admin_client(&info);
    let demo = demo_client(info["endpoint"].as_str().expect("endpoint"));
    let create = |client: &Client, name: &str| {
        let request = crate::helpers::job_request(name, &["sim-server-01"]);
        let client = client.clone();
        async move { client.create_job(&request, None).await.expect("created") }
    };
    create(&admin, "older-elsewhere").await;
    create(&demo, "seen").await;
    let path = demo.project_path("/dev-servers/jobs/events");
    let opening = |after: i64| {
        let (demo, path) = (demo.clone(), path.clone());
        async move {
            let mut stream = demo.events(&path, &[], Some(after)).await.expect("stream");
            stream.next().await.expect("read").expect("an event").event
        }
    };
    let mut live = demo.events(&path, &[], None).await.expect("stream");
    let ready = live.next().await.expect("read").expect("ready");
    let seen: i64 = ready.id.parse().expect("id");
    drop(live);
    let body = serde_json::json!({ "project_id": demo::PROJECT_ID });
    let (status, _) = call(
        &admin,
        Method::POST,
        "/_litejobs/reset",
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(opening(seen).await, "expired");
    create(&demo, "after").await;
    let mut live = demo.events(&path, &[], None).await.expect("stream");
    let now: i64 = live
        .next()
        .await
        .expect("read")
        .expect("ready")
        .id
        .parse()
        .expect("id");
    drop(live);
    assert_eq!(opening(now).await, "ready");
    server.terminate().await.expect("stops");
}
