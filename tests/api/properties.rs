//! Property-based checks: signatures over any request the SDK can make verify, and any
//! change to a signed part fails; query parsing and JSON bodies never panic, and every
//! rejection the API makes of them is a 4xx in its error format. `PROPTEST_CASES` sets the
//! number of cases (a long run: `PROPTEST_CASES=5000`).

use litejobs::domain::filter::ListJobsQuery;
use litejobs::sign::{self, Authorization, Credentials, RequestParts};
use proptest::prelude::*;
use reqwest::Method;

use crate::helpers::TestApp;

const SECRET: &str = "ExampleSecretKey0000000000000000000000001";

fn credentials() -> Credentials {
    Credentials {
        access_key: "PROPTESTACCESSKEY000".into(),
        secret_key: SECRET.into(),
    }
}

/// Text as SDK callers write it: any characters, ASCII most of the time.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[-_.~a-zA-Z0-9 /+&=%?#*]{0,24}",
        1 => any::<String>().prop_map(|s| s.chars().filter(|c| *c != '\0').take(24).collect()),
    ]
}

/// A request as the SDK sends it: path segments encoded with the unreserved set, the query
/// sorted and encoded the same way, the usual headers, and a body.
#[derive(Debug, Clone)]
struct SdkRequest {
    method: &'static str,
    segments: Vec<String>,
    pairs: Vec<(String, String)>,
    body: Vec<u8>,
}

fn sdk_request() -> impl Strategy<Value = SdkRequest> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("DELETE")],
        proptest::collection::vec(text().prop_filter("a segment", |s| !s.is_empty()), 1..4),
        proptest::collection::vec(
            (text().prop_filter("a key", |k| !k.is_empty()), text()),
            0..5,
        ),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(method, segments, pairs, body)| SdkRequest {
            method,
            segments,
            pairs,
            body,
        })
}

impl SdkRequest {
    fn path(&self) -> String {
        let encoded: Vec<String> = self
            .segments
            .iter()
            .map(|s| sign::encode(s.as_bytes()))
            .collect();
        format!("/v1/p/{}", encoded.join("/"))
    }

    /// Signs the request; answers what the server receives: path, query, headers.
    fn signed(&self) -> (String, String, Vec<(String, String)>) {
        let path = self.path();
        let query = sign::query_string(&self.pairs);
        let mut headers = vec![
            ("Host".to_string(), "127.0.0.1:18765".to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
            ("X-Project-Id".to_string(), "p".to_string()),
        ];
        let authorization = sign::sign(
            self.method,
            &path,
            &query,
            &mut headers,
            &self.body,
            &credentials(),
            chrono::Utc::now(),
        );
        headers.push(("Authorization".to_string(), authorization));
        (path, query, headers)
    }
}

fn verifies(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> bool {
    let Some(raw) = headers
        .iter()
        .find(|(n, _)| n == "Authorization")
        .map(|(_, v)| v)
    else {
        return false;
    };
    let Some(auth) = Authorization::parse(raw) else {
        return false;
    };
    let borrowed = sign::borrowed_headers(headers);
    let parts = RequestParts {
        method,
        path,
        query,
        headers: &borrowed,
        body,
    };
    sign::verify(&parts, &auth, SECRET)
}

proptest! {
    #[test]
    fn every_request_the_sdk_can_sign_verifies(req in sdk_request()) {
        let (path, query, headers) = req.signed();
        prop_assert!(verifies(req.method, &path, &query, &headers, &req.body));
        // The query's pairs may arrive in any order: the server sorts them again.
        let mut reversed = req.pairs.clone();
        reversed.reverse();
        let encoded: Vec<String> = reversed
            .iter()
            .map(|(k, v)| format!("{}={}", sign::encode(k.as_bytes()), sign::encode(v.as_bytes())))
            .collect();
        prop_assert!(verifies(req.method, &path, &encoded.join("&"), &headers, &req.body));
    }

    #[test]
    fn any_change_to_a_signed_part_fails(req in sdk_request(), which in 0..5usize, byte in any::<u8>()) {
        let (path, query, mut headers) = req.signed();
        let (mut method, mut path, mut query, mut body) =
            (req.method.to_string(), path, query, req.body.clone());
        match which {
            0 => method = if method == "GET" { "PUT".into() } else { "GET".into() },
            1 => path.push_str("/x"),
            2 => query = if query.is_empty() { "a=b".into() } else { format!("{query}x") },
            3 => body.push(byte),
            _ => {
                let project = headers.iter_mut().find(|(n, _)| n == "X-Project-Id");
                if let Some((_, v)) = project {
                    v.push('x');
                }
            }
        }
        prop_assert!(!verifies(&method, &path, &query, &headers, &body));
    }

    #[test]
    fn list_queries_parse_or_are_refused_without_panicking(
        pairs in proptest::collection::vec(
            (prop_oneof![
                Just("id".to_string()), Just("name".to_string()), Just("type".to_string()),
                Just("status".to_string()), Just("visible".to_string()), Just("limit".to_string()),
                Just("offset".to_string()), Just("sort_key".to_string()),
                Just("sort_dir".to_string()), text(),
            ], text()),
            0..6,
        )
    ) {
        if let Ok(query) = ListJobsQuery::parse(&pairs, 1000) {
            prop_assert!(query.page.limit.is_none_or(|l| (1..=1000).contains(&l)));
            prop_assert!(query.page.offset <= i64::MAX as u64);
        }
    }
}

/// Arbitrary JSON values, nested a little.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        text().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("name".to_string()),
                    Just("type".to_string()),
                    Just("server_ids".to_string()),
                    Just("items".to_string()),
                    Just("spec".to_string()),
                    Just("job_ids".to_string()),
                    text(),
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An answer of the API: below 500, and in the error format when it is an error.
fn check_answer(status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "{status}: {}", String::from_utf8_lossy(body));
    if status >= 400 {
        let error: litejobs::wire::ErrorBody = serde_json::from_slice(body)
            .map_err(|e| TestCaseError::fail(format!("{status} not in the error format: {e}")))?;
        prop_assert!(!error.error_code.is_empty() && !error.error_msg.is_empty());
    }
    Ok(())
}

#[test]
fn the_api_answers_any_query_and_body_without_a_server_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = runtime.block_on(TestApp::sqlite());
    let config = ProptestConfig {
        cases: ProptestConfig::default().cases.min(64),
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (
        proptest::collection::vec((text(), text()), 0..5),
        json(),
        prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::DELETE)],
        prop_oneof![
            Just("/dev-servers/jobs"),
            Just("/dev-servers/jobs/templates"),
            Just("/dev-servers/jobs/some-id"),
        ],
    );
    runner
        .run(&strategy, |(pairs, body, method, rest)| {
            let query: Vec<(&str, String)> =
                pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let path = app.admin.project_path(rest);
            let raw_body = (method != Method::GET).then(|| body.to_string().into_bytes());
            let answer = runtime
                .block_on(app.admin.send(method, &path, &query, raw_body, &[]))
                .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
            check_answer(answer.status, &answer.body)
        })
        .expect("every answer is below 500, errors in the error format");
    drop(app);
}
