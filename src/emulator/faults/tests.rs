//! Fault rules' tests: flags, matching, hits, task rules.

use super::*;

fn list_call() -> Call {
    Call {
        operation: "ListDevServerJobs".into(),
        method: "GET".into(),
        route: "/v1/{project_id}/dev-servers/jobs".into(),
        project: Some("p1".into()),
        access_key: Some("AK1".into()),
    }
}

#[test]
fn flags_parse_into_rules_and_nonsense_is_refused() {
    let spec = RuleSpec::parse_flag("op=ListDevServerJobs,status=429,times=2").expect("rule");
    assert_eq!(spec.status, Some(429));
    assert_eq!(spec.times, Some(2));
    let slow = RuleSpec::parse_flag("task=slow,server=sim-server-01,delay=2s").expect("rule");
    assert_eq!(slow.delay_ms, Some(2000));
    for named in [
        "op=list_dev_server_jobs,status=503",
        "op=getdevserverjob,status=503",
        "op=GET /v1/{project_id}/dev-servers/jobs,status=503",
        "op=/health,delay=1s",
        "op=*,drop=true",
    ] {
        assert!(RuleSpec::parse_flag(named).is_ok(), "{named:?}");
    }
    for bad in [
        "",
        "op=ListDevServerJob,status=429",
        "op=ListDevServerJobs",
        "status=200",
        "status=429,times=0",
        "status=429,probability=2",
        "task=fail",
        "task=slow,server=s",
        "colour=blue,status=500",
    ] {
        assert!(
            RuleSpec::parse_flag(bad).is_err(),
            "{bad:?} must be refused"
        );
    }
}

/// An answer's code and message are limited in characters, not bytes.
#[test]
fn an_error_code_and_message_are_counted_in_characters() {
    let rule = |code: String, msg: String| RuleSpec {
        status: Some(500),
        error_code: Some(code),
        error_msg: Some(msg),
        ..RuleSpec::default()
    };
    assert!(rule("é".repeat(64), "é".repeat(1024)).check().is_ok());
    assert!(rule("é".repeat(65), "x".into()).check().is_err());
    assert!(rule("X".into(), "é".repeat(1025)).check().is_err());
    assert!(rule(String::new(), "x".into()).check().is_err());
}

#[test]
fn a_rule_for_the_next_two_calls_hits_two_then_goes() {
    let faults = Faults::default();
    faults
        .add(RuleSpec::parse_flag("op=list_dev_server_jobs,status=429,times=2").expect("rule"))
        .expect("added");
    assert!(faults.pick(&list_call()).is_some());
    assert!(faults.pick(&list_call()).is_some());
    assert!(faults.pick(&list_call()).is_none());
    assert!(faults.list().is_empty());
}

#[test]
fn a_rule_of_probability_zero_never_fires_and_one_always_does() {
    let faults = Faults::default();
    faults
        .add(RuleSpec::parse_flag("status=500,probability=0").expect("rule"))
        .expect("added");
    assert!((0..200).all(|_| faults.pick(&list_call()).is_none()));
    faults
        .add(RuleSpec::parse_flag("status=503,probability=1").expect("rule"))
        .expect("added");
    assert!((0..200).all(|_| faults.pick(&list_call()).is_some()));
    assert_eq!(faults.list()[1].hits, 200);
}

#[test]
fn task_rules_fail_hang_or_slow_their_servers_tasks() {
    let faults = Faults::default();
    faults
        .add(RuleSpec::parse_flag("task=fail,server=s1").expect("rule"))
        .expect("added");
    faults
        .add(RuleSpec::parse_flag("task=hang,server=s2,project=p1").expect("rule"))
        .expect("added");
    faults
        .add(RuleSpec::parse_flag("task=slow,server=s3,delay=1h").expect("rule"))
        .expect("added");
    assert_eq!(faults.verdict("p1", "s1", "t1"), TaskVerdict::Fail);
    assert_eq!(faults.verdict("p1", "s2", "t2"), TaskVerdict::Wait);
    assert_eq!(faults.verdict("p2", "s2", "t3"), TaskVerdict::AsSimulated);
    assert_eq!(faults.verdict("p1", "s3", "t4"), TaskVerdict::Wait);
    assert_eq!(faults.verdict("p1", "s4", "t5"), TaskVerdict::AsSimulated);
    // A task rule never answers an API call.
    assert!(faults.pick(&list_call()).is_none());
    let hits: Vec<u64> = faults.list().iter().map(|r| r.hits).collect();
    assert_eq!(hits, [1, 1, 1]);
}

#[test]
fn a_route_must_be_one_of_the_apis() {
    let rule = |op: &str| RuleSpec {
        operation: Some(op.to_string()),
        status: Some(500),
        ..RuleSpec::default()
    };
    for good in [
        "GET /v1/{project_id}/dev-servers/jobs",
        "/v1/{project_id}/dev-servers/jobs/{id}",
        "POST /v1/{project_id}/agent/servers/{server_id}/lease",
        "DELETE /v3/auth/tokens",
    ] {
        assert!(rule(good).check().is_ok(), "{good}");
    }
    for bad in [
        "GET /v1/{project_id}/dev-server/jobs",
        "get /v1/{project_id}/dev-servers/jobs",
        "PUT /v1/{project_id}/dev-servers/jobs",
        "GET  /v1/{project_id}/dev-servers/jobs",
        "/v1/p1/dev-servers/jobs",
    ] {
        assert!(rule(bad).check().is_err(), "{bad}");
    }
}

#[test]
fn task_rules_take_their_times_tasks_each_once_and_then_go() {
    let faults = Faults::default();
    let fail = faults
        .add(RuleSpec::parse_flag("task=fail,server=s1,times=2").expect("rule"))
        .expect("added");
    let hang = faults
        .add(RuleSpec::parse_flag("task=hang,server=s2,times=1").expect("rule"))
        .expect("added");
    faults
        .add(RuleSpec::parse_flag("task=fail,server=s3,probability=0").expect("rule"))
        .expect("added");
    let slow = faults
        .add(RuleSpec::parse_flag("task=slow,server=s4,delay=50ms,times=1").expect("rule"))
        .expect("added");
    let ids = |f: &Faults| f.list().iter().map(|r| r.id).collect::<Vec<_>>();

    assert_eq!(faults.verdict("p", "s1", "a"), TaskVerdict::Fail);
    assert_eq!(faults.verdict("p", "s1", "b"), TaskVerdict::Fail);
    assert_eq!(faults.verdict("p", "s1", "c"), TaskVerdict::AsSimulated);
    assert!(
        !ids(&faults).contains(&fail.id),
        "two tasks taken: the rule goes"
    );

    // The hung task is held, asked again and again; the next task is not taken.
    for _ in 0..3 {
        assert_eq!(faults.verdict("p", "s2", "d"), TaskVerdict::Wait);
    }
    assert_eq!(faults.verdict("p", "s2", "e"), TaskVerdict::AsSimulated);
    let held = faults
        .list()
        .into_iter()
        .find(|r| r.id == hang.id)
        .expect("kept");
    assert_eq!(held.hits, 1);
    // Removed, it lets its task end as simulated: not taken by another rule.
    let other = faults
        .add(RuleSpec::parse_flag("task=fail,server=s2").expect("rule"))
        .expect("added");
    assert!(faults.remove(hang.id));
    assert_eq!(faults.verdict("p", "s2", "d"), TaskVerdict::AsSimulated);
    assert!(faults.remove(other.id));

    assert!((0..50).all(|n| faults.verdict("p", "s3", &n.to_string()) == TaskVerdict::AsSimulated));

    assert_eq!(faults.verdict("p", "s4", "f"), TaskVerdict::Wait);
    assert_eq!(faults.verdict("p", "s4", "g"), TaskVerdict::AsSimulated);
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(faults.verdict("p", "s4", "f"), TaskVerdict::AsSimulated);
    assert!(
        !ids(&faults).contains(&slow.id),
        "its one task ended: the rule goes"
    );

    // A task held back whose job goes (no longer due) is held no more.
    let gone = faults
        .add(RuleSpec::parse_flag("task=hang,server=s5,times=1").expect("rule"))
        .expect("added");
    assert_eq!(faults.verdict("p", "s5", "h"), TaskVerdict::Wait);
    faults.due_now(&["h".to_string()].into());
    assert!(ids(&faults).contains(&gone.id), "still holding h");
    faults.due_now(&Default::default());
    assert!(
        !ids(&faults).contains(&gone.id),
        "h is gone: so is the rule"
    );

    // Settings of an answer mean nothing to a task.
    for bad in [
        "task=fail,server=s1,status=999",
        "task=hang,server=s1,op=*",
        "task=fail,server=s1,delay=2s",
    ] {
        assert!(RuleSpec::parse_flag(bad).is_err(), "{bad}");
    }
}

#[test]
fn project_and_key_narrow_a_rule() {
    let faults = Faults::default();
    faults
        .add(RuleSpec::parse_flag("op=*,status=500,project=p2").expect("rule"))
        .expect("added");
    faults
        .add(RuleSpec::parse_flag("status=503,key=AK2").expect("rule"))
        .expect("added");
    assert!(faults.pick(&list_call()).is_none());
    let mut other = list_call();
    other.access_key = Some("AK2".into());
    assert!(matches!(
        faults.pick(&other),
        Some(Injected {
            then: Then::Answer(FaultAnswer { status: 503, .. }),
            ..
        })
    ));
}

/// An error answer's status, `error_code`, `error_msg` and `Connection` header.
async fn parts(response: Response) -> (u16, String, String, Option<String>) {
    let status = response.status().as_u16();
    let connection = response
        .headers()
        .get(axum::http::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let text = |key: &str| body[key].as_str().unwrap_or_default().to_string();
    (status, text("error_code"), text("error_msg"), connection)
}

/// The answer of a lone rule `spec` to a list call.
fn answer_of(spec: &str, body_timeout: Duration) -> Response {
    let faults = Faults::default();
    faults
        .add(RuleSpec::parse_flag(spec).expect("rule"))
        .expect("added");
    match faults.pick(&list_call()) {
        Some(Injected {
            then: Then::Answer(answer),
            ..
        }) => answer.respond(body_timeout),
        other => panic!("{spec} answers nothing: {other:?}"),
    }
}

#[tokio::test]
async fn a_status_the_gateway_answers_is_answered_as_the_gateway_does() {
    let timeout = Duration::from_secs(7);
    for (status, own) in [
        (408, ApiError::BodyTimeout(timeout)),
        (413, ApiError::BodyTooLarge),
        (414, ApiError::UriTooLong),
        (431, ApiError::HeadersTooLarge),
    ] {
        let injected = parts(answer_of(
            &format!("op=ListDevServerJobs,status={status}"),
            timeout,
        ))
        .await;
        let real = parts(own.into_unlogged_response()).await;
        assert_eq!(injected, real);
        assert_eq!(injected.1, "APIG.0201", "{status}");
        // A message of the rule's own keeps the connection's end.
        let own_message = parts(answer_of(&format!("op=*,status={status},msg=own"), timeout)).await;
        assert_eq!((own_message.2.as_str(), own_message.3), ("own", real.3));
    }
}
