//! `litejobs bench` with tiny numbers on SQLite and on PostgreSQL: it must load, start the
//! real server, measure every query without errors and print its report. (No speed is
//! asserted here: speed targets live in the benchmark's own report.)

use std::process::Command;

/// One row of the report's table: label, total and the numeric columns.
struct ReportRow {
    label: String,
    total: Option<u64>,
    rate: f64,
    floor_ratio: f64,
    /// Throughput as a share of the reference row's (PostgreSQL runs only).
    ref_ratio: Option<f64>,
    p99_ms: f64,
    errors: u64,
}

/// Rows end with ten columns: total, req/s, x floor, x ref, p50, p90, p99, max, errors,
/// target.
fn parse_row(line: &str) -> Option<ReportRow> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    if tokens.len() < 11 {
        return None;
    }
    let (label, columns) = tokens.split_at(tokens.len() - 10);
    let rate: f64 = columns[1].parse().ok()?;
    Some(ReportRow {
        label: label.join(" "),
        total: columns[0].parse().ok(),
        rate,
        floor_ratio: columns[2].parse().ok()?,
        ref_ratio: columns[3].parse().ok(),
        p99_ms: columns[6].parse().ok()?,
        errors: columns[8].parse().ok()?,
    })
}

/// Runs `litejobs bench` briefly (4 clients, 300 ms per query, no warm-up, no fleet row)
/// with `args`.
fn bench(args: &[&str]) -> std::process::Output {
    bench_with_fleet(0, args)
}

/// Runs `litejobs bench` briefly, with a fleet row of `agents` agents (none if 0).
fn bench_with_fleet(agents: u32, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_litejobs"))
        .args([
            "bench",
            "--concurrency",
            "4",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--agents",
            &agents.to_string(),
            "--fleet-idle",
            "2s",
            "--fleet-jobs",
            "20",
        ])
        .args(args)
        .output()
        .expect("litejobs bench runs")
}

/// The fleet row's lines: idle statements per second, and the dispatch's p99 and
/// undelivered jobs.
fn fleet_numbers(stdout: &str) -> (f64, f64, u64) {
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix} in:\n{stdout}"))
            .to_string()
    };
    let number_after = |text: &str, marker: &str| -> f64 {
        let (_, rest) = text
            .split_once(marker)
            .unwrap_or_else(|| panic!("no {marker} in {text}"));
        rest.split_whitespace()
            .next()
            .and_then(|n| n.trim_end_matches(',').parse().ok())
            .unwrap_or_else(|| panic!("no number after {marker} in {text}"))
    };
    let idle = line("fleet idle statements/s (40 agents)");
    let dispatch = line("fleet dispatch (answered -> leased)");
    (
        number_after(&idle, ")"),
        number_after(&dispatch, "p99"),
        number_after(&dispatch, "jobs,") as u64,
    )
}

/// The run's report, which it must have ended with success.
fn stdout_of(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout.into_owned()
}

/// The fleet row: agents long-poll a real server, sit idle, then take jobs created across
/// them; every job is delivered and the numbers are reported.
fn assert_fleet_row(output: &std::process::Output, backend: &str) {
    let stdout = stdout_of(output);
    let (idle, p99_ms, undelivered) = fleet_numbers(&stdout);
    assert!(idle >= 0.0, "{stdout}");
    assert!(p99_ms > 0.0, "{stdout}");
    assert_eq!(undelivered, 0, "{stdout}");
    assert!(
        stdout.contains("fleet errors                       0"),
        "{stdout}"
    );
    assert!(stdout.contains("fleet server memory (VmRSS)"), "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with(&format!("summary {backend}: ")))
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    assert!(summary.contains("| fleet 40 agents: idle "), "{summary}");
    // Only the fleet was asked for: no query row but the floor's.
    assert!(!stdout.contains("unfiltered limit=50"), "{stdout}");
}

#[test]
fn the_fleet_row_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db").display().to_string();
    let output = bench_with_fleet(
        40,
        &[
            "--backend",
            "sqlite",
            "--database-url",
            &db,
            "--only",
            "fleet",
            "--jobs",
            "50",
            "--other-projects",
            "0",
            "--other-jobs",
            "0",
        ],
    );
    assert_fleet_row(&output, "sqlite");
}

#[tokio::test]
async fn the_fleet_row_on_postgresql() {
    let Some(database) = crate::helpers::test_database().await else {
        return;
    };
    let output = bench_with_fleet(
        40,
        &[
            "--backend",
            "postgres",
            "--database-url",
            &database.url,
            "--only",
            "fleet",
            "--jobs",
            "50",
            "--other-projects",
            "0",
            "--other-jobs",
            "0",
        ],
    );
    drop(database);
    assert_fleet_row(&output, "postgres");
}

#[test]
fn bench_loads_measures_every_query_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bench.db");
    let db_arg = db.display().to_string();
    let output = bench(&[
        "--backend",
        "sqlite",
        "--jobs",
        "300",
        "--other-projects",
        "3",
        "--other-jobs",
        "200",
        "--servers-per-job",
        "8",
        "--database-url",
        &db_arg,
    ]);
    let stdout = stdout_of(&output);
    assert!(
        stdout
            .lines()
            .all(|l| parse_row(l).is_none_or(|r| r.ref_ratio.is_none())),
        "a SQLite run has no reference row:\n{stdout}"
    );

    assert!(stdout.contains("machine: "), "{stdout}");
    assert!(
        stdout.contains("loaded 500 jobs (300 in the measured project, 200 in 3 others)"),
        "{stdout}"
    );
    let rows: Vec<ReportRow> = stdout.lines().filter_map(parse_row).collect();
    let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    for expected in [
        "floor (auth, fixed bytes)",
        "floor again (after the queries)",
        "unfiltered limit=50",
        "status limit=50",
        "type+status+visible limit=50",
        "id",
        "sdk default (no parameters)",
        "create (8 servers each)",
    ] {
        assert!(
            labels.contains(&expected),
            "no row {expected} in:\n{stdout}"
        );
    }
    assert!(labels.iter().any(|l| l.starts_with("name=")), "{stdout}");
    assert!(
        labels.iter().any(|l| l.starts_with("deep page offset=225")),
        "{stdout}"
    );
    for row in &rows {
        assert!(row.rate > 0.0, "{} answered nothing:\n{stdout}", row.label);
        assert!(row.p99_ms > 0.0, "{} has no latency:\n{stdout}", row.label);
        assert_eq!(row.errors, 0, "{} had errors:\n{stdout}", row.label);
    }
    // Every ratio is taken against the faster of the floor's two measurements.
    let floors: Vec<&ReportRow> = rows
        .iter()
        .filter(|r| r.label.starts_with("floor"))
        .collect();
    assert_eq!(floors.len(), 2, "{stdout}");
    let fastest = floors.iter().map(|r| r.rate).fold(0.0, f64::max);
    for row in &rows {
        let expected = row.rate / fastest;
        assert!(
            (row.floor_ratio - expected).abs() < 0.006,
            "{}: x floor {} where {expected:.3} was expected:\n{stdout}",
            row.label,
            row.floor_ratio
        );
    }
    let total = |label: &str| rows.iter().find(|r| r.label == label).and_then(|r| r.total);
    assert_eq!(total("unfiltered limit=50"), Some(300));
    assert_eq!(total("sdk default (no parameters)"), Some(300));
    assert_eq!(total("id"), Some(1));
    let name_total = rows
        .iter()
        .find(|r| r.label.starts_with("name="))
        .and_then(|r| r.total);
    assert!(
        name_total.is_some_and(|t| t >= 1),
        "the probed name matches its job"
    );

    assert!(stdout.contains("server peak memory (VmHWM)"), "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("summary sqlite: floor "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    assert!(summary.contains("peak memory "), "{summary}");
    assert!(summary.contains("targets met"), "{summary}");
    assert!(db.exists(), "a database the caller named is kept");
}

#[tokio::test]
async fn bench_on_postgresql_measures_a_round_trip_too() {
    let Some(database) = crate::helpers::test_database().await else {
        return;
    };
    let url = database.url.clone();
    // A blocking wait is fine here: the test's runtime has nothing else to run.
    let output = bench(&[
        "--backend",
        "postgres",
        "--jobs",
        "200",
        "--other-projects",
        "2",
        "--other-jobs",
        "100",
        "--database-url",
        &url,
    ]);
    drop(database);
    let stdout = stdout_of(&output);
    let rows: Vec<ReportRow> = stdout.lines().filter_map(parse_row).collect();
    for expected in [
        "floor (auth, fixed bytes)",
        "round trip (floor + SELECT 1)",
        "unfiltered limit=50",
        "create (8 servers each)",
        "floor again (after the queries)",
    ] {
        let row = rows
            .iter()
            .find(|r| r.label == expected)
            .unwrap_or_else(|| panic!("no row {expected} in:\n{stdout}"));
        assert!(row.rate > 0.0 && row.errors == 0, "{expected}:\n{stdout}");
    }
    assert_eq!(
        rows.iter()
            .find(|r| r.label == "unfiltered limit=50")
            .and_then(|r| r.total),
        Some(200)
    );
    // Every row is also a share of the reference row (the floor after one `SELECT 1`).
    let reference = rows
        .iter()
        .find(|r| r.label == "round trip (floor + SELECT 1)")
        .map(|r| r.rate)
        .expect("the reference row");
    for row in &rows {
        let expected = row.rate / reference;
        let shown = row.ref_ratio.expect("an x ref column");
        assert!(
            (shown - expected).abs() < 0.006,
            "{}: x ref {shown} where {expected:.3} was expected:\n{stdout}",
            row.label
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("summary postgres: floor ")),
        "{stdout}"
    );
}

/// The floor route the benchmark measures: fixed bytes to a caller who may list jobs, after a
/// database round trip when asked; absent unless the server is started for benchmarks.
async fn floor_route_answers_fixed_bytes_and_pings_on_request(backend: crate::helpers::Backend) {
    use reqwest::Method;

    let Some(app) = crate::helpers::TestApp::spawn_with(backend, |c| c.bench_floor = true).await
    else {
        return;
    };
    for query in [
        vec![("bytes", "10")],
        vec![("bytes", "10"), ("ping", "true")],
    ] {
        let r = app
            .admin_send(Method::GET, "/bench-floor", &query, None)
            .await;
        assert_eq!((r.status, r.body.len()), (200, 10), "{query:?}");
        assert_eq!(r.json(), serde_json::json!({}), "{query:?}");
    }
    for query in [vec![("ping", "yes")], vec![("bytes", "-1")]] {
        let r = app
            .admin_send(Method::GET, "/bench-floor", &query, None)
            .await;
        assert_eq!(r.status, 400, "{query:?}");
        assert_eq!(r.json()["error_code"], "ModelArts.0107", "{query:?}");
    }
    drop(app);
    let Some(app) = crate::helpers::TestApp::spawn(backend).await else {
        return;
    };
    let r = app.admin_send(Method::GET, "/bench-floor", &[], None).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn floor_route_on_sqlite() {
    floor_route_answers_fixed_bytes_and_pings_on_request(crate::helpers::Backend::Sqlite).await;
}

#[tokio::test]
async fn floor_route_on_postgres() {
    floor_route_answers_fixed_bytes_and_pings_on_request(crate::helpers::Backend::Postgres).await;
}

/// With `--server-exe` given twice, the data set is loaded once and each query measured on
/// each server in turn, for each of `--rounds`; each server gets its own table and summary
/// line, and the second is compared with the first.
#[test]
fn bench_measures_each_server_build_on_the_same_data() {
    let exe = env!("CARGO_BIN_EXE_litejobs");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bench.db");
    let output = bench(&[
        "--database-url",
        &db.display().to_string(),
        "--backend",
        "sqlite",
        "--jobs",
        "100",
        "--other-projects",
        "1",
        "--other-jobs",
        "10",
        "--rounds",
        "2",
        "--server-exe",
        exe,
        "--server-exe",
        exe,
    ]);
    let stdout = stdout_of(&output);
    assert_eq!(stdout.matches("loaded 110 jobs").count(), 1, "{stdout}");
    assert_eq!(
        stdout.matches(&format!("-- server {exe}")).count(),
        2,
        "{stdout}"
    );
    let summaries: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(&format!("summary sqlite ({exe}): floor ")))
        .collect();
    assert_eq!(summaries.len(), 2, "{stdout}");
    let tables = stdout.lines().filter(|l| l.starts_with("query ")).count();
    assert_eq!(tables, 3, "two tables and the comparison:\n{stdout}");

    // In turn: each query on server 1, then on server 2, in each round.
    let measured: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("measured "))
        .collect();
    let of = |label: &str| -> Vec<&str> {
        measured
            .iter()
            .filter(|l| l.starts_with(label))
            .map(|l| if l.contains("(server 1)") { "1" } else { "2" })
            .collect()
    };
    assert_eq!(of("id "), ["1", "2", "1", "2"], "{stdout}");
    assert_eq!(of("create "), ["1", "2", "1", "2"], "{stdout}");
    assert_eq!(stdout.matches("round 2 of 2").count(), 1, "{stdout}");
    // On SQLite the second server measured a copy of the data set, removed afterwards.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with("-shm") && !name.ends_with("-wal"))
        .collect();
    left.sort();
    assert_eq!(left, ["bench.db", "bench.db.key"], "{stdout}");
    // The deep page stays 75 jobs from the end as the creates make the list longer.
    assert!(
        stdout.contains("deep page offset=25 "),
        "the deep page is named by its first offset:\n{stdout}"
    );

    // The comparison: per query, both throughputs and their ratios.
    let comparison = stdout
        .split_once(&format!("server 2 ({exe}) against server 1 ({exe})"))
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no comparison:\n{stdout}"));
    let id = comparison
        .lines()
        .find(|l| l.starts_with("id "))
        .unwrap_or_else(|| panic!("no id row in the comparison:\n{stdout}"));
    let numbers: Vec<f64> = id
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().expect("a number"))
        .collect();
    // Both rates, their ratio, the ratio over each floor; each server's CPU time per
    // request (microseconds) and their ratio.
    assert_eq!(numbers.len(), 7, "{id}");
    assert!(numbers[0] > 0.0 && numbers[1] > 0.0, "{id}");
    assert!(
        (numbers[2] - numbers[1] / numbers[0]).abs() < 0.006,
        "the ratio of the two rates: {id}"
    );
    assert!(
        numbers[4] > 0.0 && numbers[5] > 0.0,
        "CPU per request: {id}"
    );
    assert!(
        (numbers[6] - numbers[5] / numbers[4]).abs() < 0.006 + numbers[6] * 0.02,
        "the ratio of the CPU times: {id}"
    );
    assert!(
        stdout.contains(" us of server CPU each"),
        "each measurement names the server's CPU per request:\n{stdout}"
    );
}

/// `--server-flags` starts each server with flags of its own, named in its summary.
#[test]
fn bench_compares_settings_of_one_build() {
    let exe = env!("CARGO_BIN_EXE_litejobs");
    let output = bench(&[
        "--backend",
        "sqlite",
        "--jobs",
        "50",
        "--other-projects",
        "0",
        "--other-jobs",
        "0",
        "--only",
        "create",
        "--server-exe",
        exe,
        "--server-exe",
        exe,
        "--server-flags=",
        "--server-flags=--no-audit",
    ]);
    let stdout = stdout_of(&output);
    let summaries: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("summary sqlite ("))
        .collect();
    assert_eq!(summaries.len(), 2, "{stdout}");
    assert!(summaries[0].starts_with(&format!("summary sqlite ({exe}): ")));
    assert!(summaries[1].starts_with(&format!("summary sqlite ({exe} --no-audit): ")));
    assert!(summaries.iter().all(|s| s.contains("create (")), "{stdout}");
}
