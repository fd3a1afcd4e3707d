//! `litejobs bench`: what pgbench is for PostgreSQL, for litejobs. It fills a fresh database
//! (SQLite or PostgreSQL) with a realistic data set by bulk load, starts the real server on a
//! loopback port, and drives signed requests at a chosen concurrency for a chosen time per
//! query. Each query's throughput is also shown as a share of the floor: the same HTTP stack
//! and authentication answering fixed bytes without the database; on PostgreSQL, also as a
//! share of the reference row, the floor after one `SELECT 1`. It reports latencies, the
//! server's peak memory and one summary line per backend and server. Several server builds
//! (`--server-exe`) can be measured on the same data in one run, each query on each of them
//! in turn (`rounds.rs`), to compare them.

pub mod dataset;
pub mod fleet;
pub mod load;
mod queries;
pub mod report;
mod rounds;
mod setup;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use self::report::Row;
use self::rounds::Contender;
use self::setup::{clean_up, fresh_database, load_data_set, Database, Loaded};
use crate::client::{Client, ClientAuth};
use crate::config::parse_duration;
use crate::testkit::ServerProcess;

/// The memory target of the server.
const MEMORY_TARGET: u64 = 100 * 1024 * 1024;

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
    /// several builds on the same data in one run: each query on each of them in turn.
    #[arg(long = "server-exe")]
    pub server_exes: Vec<PathBuf>,

    /// Measure only the queries whose label starts with this (e.g. `name`, `status`,
    /// `create`, `fleet`); repeatable. The floor and the reference row are always measured.
    #[arg(long = "only")]
    pub only: Vec<String>,

    /// Times each query is measured on each server (the servers in turn, query by query);
    /// a row holds the requests of all its rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

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

/// Loads the data set into `db`, then measures each server in `exes` on it, in turn
/// ([`rounds`]); answers their summary lines and whether any request failed.
async fn bench_backend(
    args: &BenchArgs,
    exes: &[PathBuf],
    db: &Database,
) -> anyhow::Result<(Vec<String>, bool)> {
    println!(
        "\n== {}: {} jobs in the measured project + {} in {} others; concurrency {}; \
         {:?} per query after {:?} of warm-up{}",
        db.backend,
        args.jobs,
        args.other_jobs,
        args.other_projects,
        args.concurrency,
        args.duration,
        args.warmup,
        if args.rounds > 1 {
            format!("; {} rounds", args.rounds)
        } else {
            String::new()
        }
    );
    println!("database: {}", db.shown);
    let loaded = load_data_set(args, db).await?;
    let copies = rounds::sqlite_copies(db, exes.len())?;
    let mut contenders = Vec::with_capacity(exes.len());
    for (i, exe) in exes.iter().enumerate() {
        let flags = match args.server_flags.as_slice() {
            [] => "",
            [all] => all.as_str(),
            each => each[i].as_str(),
        };
        let url = copies.urls.get(i).unwrap_or(&db.url);
        match Contender::start(exe, flags, url, &loaded).await {
            Ok(c) => contenders.push(c),
            Err(e) => {
                stop_all(contenders).await;
                return Err(e);
            }
        }
    }
    if contenders.len() > 1 {
        for (i, c) in contenders.iter().enumerate() {
            println!("server {}: {}", i + 1, c.name);
        }
    }
    let measured = match rounds::measure_in_turn(args, db.backend, &contenders, &loaded).await {
        Ok(m) => m,
        Err(e) => {
            stop_all(contenders).await;
            return Err(e);
        }
    };
    let (mut summaries, mut failed) = (Vec::new(), false);
    let names: Vec<String> = contenders.iter().map(|c| c.name.clone()).collect();
    let several = contenders.len() > 1;
    let mut tables = Vec::with_capacity(contenders.len());
    for (contender, (rows, errors)) in contenders.into_iter().zip(measured) {
        if several {
            println!("\n-- server {}", contender.name);
        }
        let finished = finish_server(args, db.backend, &contender, &loaded, &rows, errors).await;
        let named = format!(" ({}): ", contender.name);
        contender.stop().await?;
        let (summary, errors) = finished?;
        summaries.push(if several {
            summary.replacen(": ", &named, 1)
        } else {
            summary
        });
        failed |= errors;
        tables.push(rows);
    }
    if several {
        let tables: Vec<&[Row]> = tables.iter().map(Vec::as_slice).collect();
        print!("{}", rounds::comparison(&names, &tables));
    }
    Ok((summaries, failed))
}

async fn stop_all(contenders: Vec<Contender>) {
    for c in contenders {
        let _ = c.stop().await;
    }
}

/// Prints a server's table and peak memory, measures its fleet row (when asked for), and
/// answers its summary line and whether any request failed.
async fn finish_server(
    args: &BenchArgs,
    backend: &str,
    contender: &Contender,
    loaded: &Loaded,
    rows: &[Row],
    errors: bool,
) -> anyhow::Result<(String, bool)> {
    let server = &contender.server;
    println!("{}", report::header());
    for row in rows {
        println!("{}", report::line(row));
    }
    let peak = server.peak_memory_bytes();
    if errors {
        eprintln!("server log (last lines):\n{}", server.log_tail());
    }
    println!(
        "{:<34} {}",
        "server peak memory (VmHWM)",
        peak.map_or("unknown".to_string(), |b| format!(
            "{:.1} MiB",
            report::mib(b)
        ))
    );
    let mut summary = report::summary(backend, rows, peak, MEMORY_TARGET);
    let mut errors = errors;
    if args.agents > 0 && wanted(args, fleet::LABEL) {
        let fleet = measure_fleet(args, server, loaded).await?;
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
