//! `litejobs bench`: what pgbench is for PostgreSQL, for litejobs. It fills a fresh database
//! (SQLite or PostgreSQL) with a realistic data set by bulk load, starts the real server on a
//! loopback port, and drives signed requests at a chosen concurrency for a chosen time per
//! query. Each query's throughput is also shown as a share of the floor: the same HTTP stack
//! and authentication answering fixed bytes without the database; on PostgreSQL, also as a
//! share of the reference row, the floor after one `SELECT 1`. It reports latencies, the
//! server's peak memory and one summary line per backend and server. Several server builds
//! (`--server-exe`) can be measured on the same data, one after the other, to compare them
//! in one run.

pub mod dataset;
pub mod fleet;
pub mod load;
pub mod report;
mod setup;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use self::load::{Call, Measured};
use self::report::{Row, Target};
use self::setup::{clean_up, fresh_database, load_data_set, Database, Loaded};
use crate::client::{Client, ClientAuth};
use crate::config::parse_duration;
use crate::testkit::ServerProcess;
use crate::wire::{JobCreateRequest, JobItem};

/// The memory target of the server.
const MEMORY_TARGET: u64 = 100 * 1024 * 1024;
/// Rows per page of the paged queries.
const PAGE: &str = "50";

/// Which backends to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

/// `litejobs bench` settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Backends to measure. Default: those the --database-url values name, else sqlite.
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,

    /// Where to build the fresh database: a SQLite file path that does not exist yet (kept
    /// afterwards; default: a temporary file), or a postgres:// URL of a server on which a new database
    /// is created (default: postgres://postgres@127.0.0.1:5432/postgres). Repeatable, one
    /// per backend.
    #[arg(long = "database-url")]
    pub database_urls: Vec<String>,

    /// Jobs in the measured project.
    #[arg(long, default_value_t = 1_000_000)]
    pub jobs: u64,

    /// Other projects in the database.
    #[arg(long, default_value_t = 1000)]
    pub other_projects: u64,

    /// Jobs spread over the other projects.
    #[arg(long, default_value_t = 1_000_000)]
    pub other_jobs: u64,

    /// Concurrent clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,

    /// Measured time per query (e.g. `10s`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Unmeasured time per query before its measurement.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Servers each created job runs on.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub servers_per_job: u32,

    /// Seed of the data set.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Keep the database afterwards (its location is printed).
    #[arg(long)]
    pub keep: bool,

    /// The `litejobs` executable to serve the API (default: this one). Repeat it to measure
    /// several builds on the same data, one after the other, in one run.
    #[arg(long = "server-exe")]
    pub server_exes: Vec<PathBuf>,

    /// Measure only the queries whose label starts with this (e.g. `name`, `status`,
    /// `create`, `fleet`); repeatable. The floor and the reference row are always measured.
    #[arg(long = "only")]
    pub only: Vec<String>,

    /// Extra flags of the servers measured (e.g. `--no-audit`), one per `--server-exe` in
    /// order (or one for them all): to compare settings of one build in one run.
    #[arg(
        long = "server-flags",
        value_name = "FLAGS",
        allow_hyphen_values = true
    )]
    pub server_flags: Vec<String>,

    /// Agents of the fleet row: each a real long-poll over HTTP (0: no fleet row).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub agents: u64,

    /// How long the fleet stays idle while the statements the server sends are counted.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub fleet_idle: Duration,

    /// Jobs created across the fleet, one at a time, to measure their dispatch.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub fleet_jobs: u64,
}

/// Runs the benchmark; the exit code is 1 when a request failed.
pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(args.jobs >= 1, "--jobs must be at least 1");
    anyhow::ensure!(
        args.other_jobs == 0 || args.other_projects >= 1,
        "--other-jobs needs --other-projects of at least 1"
    );
    let exes = if args.server_exes.is_empty() {
        vec![std::env::current_exe().context("cannot find the litejobs executable")?]
    } else {
        args.server_exes.clone()
    };
    for exe in &exes {
        anyhow::ensure!(exe.is_file(), "{} is not a file", exe.display());
    }
    anyhow::ensure!(
        args.server_flags.len() <= 1 || args.server_flags.len() == exes.len(),
        "--server-flags is given once, or once per server"
    );
    println!("{}", machine());
    let mut summaries = Vec::new();
    let mut failed = false;
    for backend in backends(&args)? {
        let given = args
            .database_urls
            .iter()
            .find(|u| url_backend(u) == backend)
            .map(String::as_str);
        let db = fresh_database(backend, given).await?;
        let outcome = bench_backend(&args, &exes, &db).await;
        clean_up(db, args.keep);
        let (summary, errors) = outcome?;
        failed |= errors;
        summaries.extend(summary);
    }
    println!();
    for s in summaries {
        println!("{s}");
    }
    Ok(i32::from(failed))
}

fn url_backend(url: &str) -> &'static str {
    if crate::store::is_postgres_url(url) {
        "postgres"
    } else {
        "sqlite"
    }
}

fn backends(args: &BenchArgs) -> anyhow::Result<Vec<&'static str>> {
    let named: Vec<&'static str> = args.database_urls.iter().map(|u| url_backend(u)).collect();
    let mut out = match args.backend {
        Some(BackendChoice::Sqlite) => vec!["sqlite"],
        Some(BackendChoice::Postgres) => vec!["postgres"],
        Some(BackendChoice::Both) => vec!["sqlite", "postgres"],
        None if named.is_empty() => vec!["sqlite"],
        None => named.clone(),
    };
    out.dedup();
    for n in &named {
        anyhow::ensure!(
            out.contains(n),
            "--database-url names a {n} database, but --backend does not include {n}"
        );
    }
    Ok(out)
}

/// The machine the numbers come from.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB RAM", kib / (1024.0 * 1024.0)))
        })
        .unwrap_or_else(|| "unknown RAM".to_string());
    format!("machine: {cores} cores ({cpu}), {memory}")
}

/// One query of the run: its label, the call, and its target.
#[derive(Clone)]
struct Query {
    label: String,
    call: Call,
    target: Target,
}

fn get(query: &[(&str, &str)]) -> Call {
    Call::Get {
        rest: "/dev-servers/jobs".to_string(),
        query: query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The `total` of a list answer.
async fn total_of(client: &Client, call: &Call) -> anyhow::Result<(u64, usize)> {
    let (status, body) = load::send_once(client, call, 0)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    anyhow::ensure!(
        status == 200,
        "the list answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let page: serde_json::Value = serde_json::from_slice(&body)?;
    let total = page["total"]
        .as_u64()
        .context("the list answered no total")?;
    Ok((total, body.len()))
}

/// Loads the data set into `db`, then measures each server in `exes` on it; answers their
/// summary lines and whether any request failed.
async fn bench_backend(
    args: &BenchArgs,
    exes: &[PathBuf],
    db: &Database,
) -> anyhow::Result<(Vec<String>, bool)> {
    println!(
        "\n== {}: {} jobs in the measured project + {} in {} others; concurrency {}; \
         {:?} per query after {:?} of warm-up",
        db.backend,
        args.jobs,
        args.other_jobs,
        args.other_projects,
        args.concurrency,
        args.duration,
        args.warmup
    );
    println!("database: {}", db.shown);
    let loaded = load_data_set(args, db).await?;
    let (mut summaries, mut failed) = (Vec::new(), false);
    for (i, exe) in exes.iter().enumerate() {
        let flags = match args.server_flags.as_slice() {
            [] => "",
            [all] => all.as_str(),
            each => each[i].as_str(),
        };
        let name = if flags.is_empty() {
            exe.display().to_string()
        } else {
            format!("{} {flags}", exe.display())
        };
        if exes.len() > 1 {
            println!("\n-- server {name}");
        }
        let (summary, errors) = bench_server(args, exe, flags, db, &loaded).await?;
        let summary = if exes.len() > 1 {
            summary.replacen(": ", &format!(" ({name}): "), 1)
        } else {
            summary
        };
        summaries.push(summary);
        failed |= errors;
    }
    Ok((summaries, failed))
}

/// Starts the server `exe` on the loaded database and measures every query.
async fn bench_server(
    args: &BenchArgs,
    exe: &Path,
    extra_flags: &str,
    db: &Database,
    loaded: &Loaded,
) -> anyhow::Result<(String, bool)> {
    let workdir = new_temp_dir("litejobs-bench-server")?;
    let admin = workdir.join("server-admin.json").display().to_string();
    let mut flags = vec!["--bench-floor", "--admin-credentials", admin.as_str()];
    flags.extend(extra_flags.split_whitespace());
    // The data set's running tasks were never leased: the server would end them as stalled
    // while it is measured. (An environment variable, which older builds ignore.)
    let env = [("LITEJOBS_TASK_START_TIMEOUT", "36500d")];
    let server = match ServerProcess::serve_with_env(exe, &workdir, &db.url, &flags, &env).await {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&workdir);
            return Err(e);
        }
    };
    let outcome = measure(args, db.backend, &server, loaded).await;
    let peak = server.peak_memory_bytes();
    let fleet = match &outcome {
        Ok(_) if args.agents > 0 && wanted(args, fleet::LABEL) => {
            Some(measure_fleet(args, &server, loaded).await)
        }
        _ => None,
    };
    if outcome.as_ref().map_or(true, |(_, errors)| *errors) {
        eprintln!("server log (last lines):\n{}", server.log_tail());
    }
    server.kill_hard().await?;
    let _ = std::fs::remove_dir_all(&workdir);
    let (rows, errors) = outcome?;
    println!(
        "{:<34} {}",
        "server peak memory (VmHWM)",
        peak.map_or("unknown".to_string(), |b| format!(
            "{:.1} MiB",
            report::mib(b)
        ))
    );
    let mut summary = report::summary(db.backend, &rows, peak, MEMORY_TARGET);
    let mut errors = errors;
    if let Some(fleet) = fleet {
        let fleet = fleet?;
        println!("{}", fleet.lines());
        let misses = fleet.misses();
        errors |= fleet.errors > 0;
        summary.push_str(&format!(
            " | {}: {}",
            fleet.summary(),
            if misses.is_empty() {
                "targets met".to_string()
            } else {
                format!("missed: {}", misses.join("; "))
            }
        ));
    }
    Ok((summary, errors))
}

/// Whether the label is among those `--only` asks for (all when it asks for none).
fn wanted(args: &BenchArgs, label: &str) -> bool {
    args.only.is_empty()
        || args
            .only
            .iter()
            .any(|prefix| label.starts_with(prefix.as_str()))
}

async fn measure_fleet(
    args: &BenchArgs,
    server: &ServerProcess,
    loaded: &Loaded,
) -> anyhow::Result<fleet::FleetReport> {
    println!("\n{}", fleet::LABEL);
    let client = Client::new(
        &server.endpoint,
        &loaded.project_id,
        ClientAuth::AkSk(loaded.credentials.clone()),
    )?;
    let agents = usize::try_from(args.agents)?;
    let jobs = usize::try_from(args.fleet_jobs)?;
    fleet::measure(&client, server, agents, args.fleet_idle, jobs).await
}

/// A new directory under the system's temporary directory, named `<prefix>-<random>`.
pub(crate) fn new_temp_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", &suffix[..12]));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Measures the floor, then every query; answers the rows (floor first) and whether any
/// request failed.
async fn measure(
    args: &BenchArgs,
    backend: &str,
    server: &ServerProcess,
    loaded: &Loaded,
) -> anyhow::Result<(Vec<Row>, bool)> {
    let client = Client::new(
        &server.endpoint,
        &loaded.project_id,
        ClientAuth::AkSk(loaded.credentials.clone()),
    )?;
    let unfiltered = get(&[("limit", PAGE)]);
    let (total, page_bytes) = total_of(&client, &unfiltered).await?;
    // A page of 50 jobs: on SQLite at least half the floor; on PostgreSQL, whose
    // statements share the two cores with the server, at least 60% of the reference row.
    let page = |max_p99_ms: u64, min_floor_ratio: f64| Target {
        min_floor_ratio: (backend == "sqlite").then_some(min_floor_ratio),
        min_ref_ratio: (backend == "postgres").then_some(0.6),
        max_p99: Some(Duration::from_millis(max_p99_ms)),
        min_rate: None,
    };
    let page_fast = page(10, 0.5);
    let deep_offset = total.saturating_sub(75).to_string();
    let create = JobCreateRequest {
        name: "bench-create".to_string(),
        description: None,
        server_ids: loaded.servers.clone(),
        job_type: "COMMON".to_string(),
        is_reboot: None,
        items: vec![JobItem {
            item_type: "COMMON".to_string(),
            spec: Some([("cmd".to_string(), "npu-smi info".to_string())].into()),
        }],
        visible: None,
    };
    let mut queries = vec![
        Query {
            label: "floor (auth, fixed bytes)".to_string(),
            call: Call::Get {
                rest: "/bench-floor".to_string(),
                query: vec![("bytes".to_string(), page_bytes.to_string())],
            },
            target: Target::default(),
        },
        Query {
            label: "unfiltered limit=50".to_string(),
            call: unfiltered,
            target: page_fast,
        },
        Query {
            label: "status limit=50".to_string(),
            call: get(&[("status", "FINISHED"), ("limit", PAGE)]),
            target: page_fast,
        },
        Query {
            label: "type+status+visible limit=50".to_string(),
            call: get(&[
                ("type", "ASCEND_DIAGNOSIS"),
                ("status", "FINISHED"),
                ("visible", "true"),
                ("limit", PAGE),
            ]),
            target: page_fast,
        },
        Query {
            label: "id".to_string(),
            call: get(&[("id", &loaded.probe_id)]),
            target: page_fast,
        },
        Query {
            label: format!("name={} limit=50", loaded.probe_name),
            call: get(&[("name", &loaded.probe_name), ("limit", PAGE)]),
            target: Target {
                max_p99: None,
                ..page(0, 0.2)
            },
        },
        Query {
            label: "sdk default (no parameters)".to_string(),
            call: get(&[]),
            target: Target::default(),
        },
        Query {
            label: format!("deep page offset={deep_offset}"),
            call: get(&[("offset", &deep_offset), ("limit", PAGE)]),
            target: Target {
                min_floor_ratio: None,
                ..page(50, 0.0)
            },
        },
        Query {
            label: format!("create ({} servers each)", loaded.servers.len()),
            call: Call::Create { template: create },
            target: Target {
                min_rate: (backend == "sqlite").then_some(1000.0),
                ..Target::default()
            },
        },
    ];
    if backend == "postgres" {
        // The least any query costs on PostgreSQL: the floor's answer after one `SELECT 1`.
        queries.insert(
            1,
            Query {
                label: report::REFERENCE.to_string(),
                call: Call::Get {
                    rest: "/bench-floor".to_string(),
                    query: vec![
                        ("bytes".to_string(), page_bytes.to_string()),
                        ("ping".to_string(), "true".to_string()),
                    ],
                },
                target: Target::default(),
            },
        );
    }
    let again = Query {
        label: "floor again (after the queries)".to_string(),
        ..queries[0].clone()
    };
    queries.retain(|q| {
        q.label.starts_with(report::FLOOR) || q.label == report::REFERENCE || wanted(args, &q.label)
    });
    let concurrency = args.concurrency as usize;
    let mut rows: Vec<Row> = Vec::with_capacity(queries.len() + 1);
    let mut errors = false;
    for q in queries.into_iter().chain([again]) {
        let total = match &q.call {
            Call::Get { rest, .. } if rest == "/dev-servers/jobs" => {
                Some(total_of(&client, &q.call).await?.0)
            }
            _ => None,
        };
        if !args.warmup.is_zero() {
            load::run(&client, &q.call, concurrency, args.warmup).await;
        }
        let measured: Measured = load::run(&client, &q.call, concurrency, args.duration).await;
        println!("  measured {}: {:.0} req/s", q.label, measured.rate());
        if let Some(e) = &measured.first_error {
            errors = true;
            println!("  first error: {}", e.chars().take(300).collect::<String>());
        }
        rows.push(Row {
            label: q.label,
            total,
            floor_ratio: None,
            ref_ratio: None,
            measured,
            target: q.target,
        });
    }
    // The machine's speed drifts during a run (the load's writes still being flushed at the
    // start, say): each query is held to the faster of the two floors.
    let floor = report::fastest_floor(&rows);
    let reference = report::reference_rate(&rows);
    for row in &mut rows {
        row.floor_ratio = Some(row.measured.rate() / floor.max(1e-9));
        row.ref_ratio = reference.map(|r| row.measured.rate() / r.max(1e-9));
    }
    println!("{}", report::header());
    for row in &rows {
        println!("{}", report::line(row));
    }
    Ok((rows, errors))
}
