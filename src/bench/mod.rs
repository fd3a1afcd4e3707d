//! `litejobs bench`: what pgbench is for PostgreSQL, for litejobs. It fills a fresh database
//! (SQLite or PostgreSQL) with a realistic data set by bulk load, starts the real server on a
//! loopback port, and drives signed requests at a chosen concurrency for a chosen time per
//! query. Each query's throughput is also shown as a share of the floor: the same HTTP stack
//! and authentication answering fixed bytes without the database. It reports latencies, the
//! server's peak memory and one summary line per backend.

pub mod dataset;
pub mod floor;
pub mod load;
pub mod report;
pub mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use self::dataset::Generator;
use self::load::{Call, Measured};
use self::report::{Row, Target};
use self::server::ServerProcess;
use crate::client::{Client, ClientAuth};
use crate::sign::Credentials;
use crate::store::bulk::BulkLoader;
use crate::store::NewServer;
use crate::wire::{JobCreateRequest, JobItem};

/// PostgreSQL server on which a fresh database is created when none is named.
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Jobs generated and loaded per transaction.
const LOAD_CHUNK: u64 = 10_000;
/// The memory target of the server.
const MEMORY_TARGET: u64 = 100 * 1024 * 1024;
/// Rows per page of the paged queries.
const PAGE: &str = "50";

fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|e| e.to_string())
}

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
}

/// A fresh database and how to clean it up.
struct Database {
    backend: &'static str,
    url: String,
    /// What to print for it (no password).
    shown: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Nothing,
    RemoveDir(PathBuf),
    DropPg { admin_url: String, name: String },
}

/// Runs the benchmark; the exit code is 1 when a request failed.
pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(args.jobs >= 1, "--jobs must be at least 1");
    anyhow::ensure!(
        args.other_jobs == 0 || args.other_projects >= 1,
        "--other-jobs needs --other-projects of at least 1"
    );
    let exe = std::env::current_exe().context("cannot find the litejobs executable")?;
    println!("{}", machine());
    let mut summaries = Vec::new();
    let mut failed = false;
    for backend in backends(&args)? {
        let given = args
            .database_urls
            .iter()
            .find(|u| url_backend(u) == backend)
            .map(String::as_str);
        let db = fresh_database(backend, given, args.keep).await?;
        let outcome = bench_backend(&args, &exe, &db).await;
        clean_up(db, args.keep).await;
        let (summary, errors) = outcome?;
        failed |= errors;
        summaries.push(summary);
    }
    println!();
    for s in summaries {
        println!("{s}");
    }
    Ok(i32::from(failed))
}

fn url_backend(url: &str) -> &'static str {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
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

async fn fresh_database(
    backend: &'static str,
    given: Option<&str>,
    keep: bool,
) -> anyhow::Result<Database> {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    if backend == "sqlite" {
        let (path, cleanup) = match given {
            Some(raw) => {
                let path = PathBuf::from(raw.strip_prefix("sqlite://").unwrap_or(raw));
                if path.exists() {
                    bail!(
                        "{} exists; the benchmark fills a fresh database: name a new file",
                        path.display()
                    );
                }
                (path, Cleanup::Nothing)
            }
            None => {
                let dir = std::env::temp_dir().join(format!("litejobs-bench-{}", &suffix[..12]));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let cleanup = if keep {
                    Cleanup::Nothing
                } else {
                    Cleanup::RemoveDir(dir.clone())
                };
                (dir.join("litejobs.db"), cleanup)
            }
        };
        return Ok(Database {
            backend,
            url: format!("sqlite://{}", path.display()),
            shown: path.display().to_string(),
            cleanup,
        });
    }
    use sqlx::Connection;
    let admin_url = given.unwrap_or(DEFAULT_PG_URL).to_string();
    let name = format!("litejobs_bench_{}", &suffix[..12]);
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .context("cannot connect to PostgreSQL")?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot create the database {name}"))?;
    let mut url = reqwest::Url::parse(&admin_url).context("bad PostgreSQL URL")?;
    url.set_path(&format!("/{name}"));
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    Ok(Database {
        backend,
        url: url.to_string(),
        shown: shown.to_string(),
        cleanup: Cleanup::DropPg { admin_url, name },
    })
}

async fn clean_up(db: Database, keep: bool) {
    if keep {
        println!("kept the {} database: {}", db.backend, db.shown);
        return;
    }
    match db.cleanup {
        Cleanup::Nothing => {}
        Cleanup::RemoveDir(dir) => {
            let _ = std::fs::remove_dir_all(dir);
        }
        Cleanup::DropPg { admin_url, name } => {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(e) = sqlx::query(&drop).execute(&mut conn).await {
                    eprintln!("cannot drop the benchmark database {name}: {e}");
                }
            }
        }
    }
}

/// What the queries need to know about the data set.
struct Loaded {
    project_id: String,
    credentials: Credentials,
    servers: Vec<String>,
    /// Id of a job in the middle of the measured project.
    probe_id: String,
    /// Five characters of a name in the measured project, upper-cased.
    probe_name: String,
}

/// Migrates the database, creates the administrator and the servers, and bulk-loads the jobs.
async fn load_data_set(args: &BenchArgs, db: &Database) -> anyhow::Result<Loaded> {
    let started = Instant::now();
    let store = crate::store::open(&db.url).await?;
    let crate::iam::Bootstrap::Created(profile) =
        crate::iam::bootstrap_admin(store.as_ref(), "http://127.0.0.1").await?
    else {
        bail!("the database {} is not fresh: it has users", db.shown);
    };
    let project = crate::domain::ProjectId::parse(&profile.project_id)?;
    let now = crate::domain::now_ms();
    let servers: Vec<String> = (1..=args.servers_per_job)
        .map(|n| format!("bench-server-{n:02}"))
        .collect();
    for id in &servers {
        let server = NewServer {
            id: id.clone(),
            name: id.clone(),
            kind: "agent".to_string(),
            sim_outcome: None,
            cloud_server: [("type".to_string(), "BMS".to_string())].into(),
            now_ms: now,
        };
        store.upsert_server(&project, server).await?;
    }
    drop(store);

    let templates = crate::templates::TemplateCatalog::load(None)?;
    let mut generator = Generator::new(args.seed, now, &templates);
    let mut loader = BulkLoader::connect(&db.url).await?;
    let others = generator.projects(args.other_projects);
    loader.insert_projects(&others).await?;
    let (probe_at, name_at) = (args.jobs / 2, args.jobs / 3);
    let (mut probe_id, mut probe_name) = (String::new(), String::new());
    let total = args.jobs + args.other_jobs;
    let mut done = 0u64;
    let mut next_report = total / 10;
    let mut start = 0;
    while start < args.jobs {
        let end = (start + LOAD_CHUNK).min(args.jobs);
        let rows: Vec<_> = (start..end)
            .map(|i| generator.job(project.as_str(), i, args.jobs, &servers))
            .collect();
        for (i, row) in (start..end).zip(&rows) {
            if i == probe_at {
                probe_id = row.id.clone();
            }
            if i == name_at {
                let suffix = row.name.rsplit('-').next().unwrap_or(&row.name);
                probe_name = suffix
                    .chars()
                    .take(5)
                    .collect::<String>()
                    .to_ascii_uppercase();
            }
        }
        loader.insert_jobs(&rows).await?;
        done += end - start;
        start = end;
        progress(&mut next_report, done, total, started);
    }
    let other_servers: Vec<String> = (1..=4).map(|n| format!("node-{n:02}")).collect();
    let mut start = 0;
    while start < args.other_jobs {
        let end = (start + LOAD_CHUNK).min(args.other_jobs);
        let rows: Vec<_> = (start..end)
            .map(|i| {
                let p = generator.index_below(args.other_projects) as usize;
                let project_id = others.get(p).map_or("", |p| p.id.as_str()).to_string();
                generator.job(&project_id, i, args.other_jobs, &other_servers)
            })
            .collect();
        loader.insert_jobs(&rows).await?;
        done += end - start;
        start = end;
        progress(&mut next_report, done, total, started);
    }
    loader.finish().await?;
    let elapsed = started.elapsed();
    println!(
        "loaded {total} jobs ({} in the measured project, {} in {} others) in {:.1} s \
         ({:.0} jobs/s){}",
        args.jobs,
        args.other_jobs,
        args.other_projects,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(1e-9),
        database_size(db).await.map_or(String::new(), |b| format!(
            "; database {:.0} MiB",
            report::mib(b)
        ))
    );
    Ok(Loaded {
        project_id: profile.project_id,
        credentials: Credentials {
            access_key: profile.access_key,
            secret_key: profile.secret_key,
        },
        servers,
        probe_id,
        probe_name,
    })
}

fn progress(next_report: &mut u64, done: u64, total: u64, started: Instant) {
    if done >= *next_report && done < total {
        eprintln!(
            "  loading: {done}/{total} jobs, {:.0} s",
            started.elapsed().as_secs_f64()
        );
        *next_report += (total / 10).max(1);
    }
}

async fn database_size(db: &Database) -> Option<u64> {
    if db.backend == "sqlite" {
        let path = db.url.strip_prefix("sqlite://")?;
        let main = std::fs::metadata(path).ok()?.len();
        let wal = std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len());
        return Some(main + wal);
    }
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.ok()?;
    let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut conn)
        .await
        .ok()?;
    u64::try_from(size).ok()
}

/// One query of the run: its label, the call, and its target.
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

async fn bench_backend(
    args: &BenchArgs,
    exe: &Path,
    db: &Database,
) -> anyhow::Result<(String, bool)> {
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
    let workdir = tempfile_dir()?;
    let server = ServerProcess::start(exe, &db.url, &workdir).await;
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&workdir);
            return Err(e);
        }
    };
    let outcome = measure(args, db.backend, &server, &loaded).await;
    let peak = server.peak_memory_bytes();
    if outcome.as_ref().map_or(true, |(_, errors)| *errors) {
        eprintln!("server log (last lines):\n{}", server.log_tail());
    }
    server.stop().await?;
    let _ = std::fs::remove_dir_all(&workdir);
    let (rows, errors) = outcome?;
    let floor = rows
        .first()
        .map(|r| r.measured.clone())
        .context("no floor was measured")?;
    println!(
        "{:<34} {}",
        "server peak memory (VmHWM)",
        peak.map_or("unknown".to_string(), |b| format!(
            "{:.1} MiB",
            report::mib(b)
        ))
    );
    let summary = report::summary(db.backend, &floor, &rows[1..], peak, MEMORY_TARGET);
    Ok((summary, errors))
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "litejobs-bench-server-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
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
    let page_fast = Target {
        min_floor_ratio: Some(0.5),
        max_p99: Some(Duration::from_millis(10)),
        min_rate: None,
    };
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
    let queries = vec![
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
                min_floor_ratio: Some(0.2),
                ..Target::default()
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
                max_p99: Some(Duration::from_millis(50)),
                ..Target::default()
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
    println!("{}", report::header());
    let concurrency = args.concurrency as usize;
    let mut rows: Vec<Row> = Vec::with_capacity(queries.len());
    let mut errors = false;
    for q in queries {
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
        let floor_rate = rows.first().map(|f| f.measured.rate());
        let row = Row {
            label: q.label,
            total,
            floor_ratio: floor_rate.map(|f| measured.rate() / f.max(1e-9)),
            measured,
            target: q.target,
        };
        println!("{}", report::line(&row));
        if let Some(e) = &row.measured.first_error {
            errors = true;
            println!("  first error: {}", e.chars().take(300).collect::<String>());
        }
        rows.push(row);
    }
    Ok((rows, errors))
}
