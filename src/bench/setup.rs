//! The benchmark's database: a fresh one per backend, filled with the data set by bulk
//! load, and removed afterwards.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;

use super::dataset::Generator;
use super::{report, BenchArgs};
use crate::sign::Credentials;
use crate::store::bulk::BulkLoader;
use crate::store::NewServer;
use crate::testkit::ScratchDatabase;

/// PostgreSQL server on which a fresh database is created when none is named.
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Jobs generated and loaded per transaction.
const LOAD_CHUNK: u64 = 10_000;

/// A fresh database, removed afterwards unless kept.
pub struct Database {
    pub backend: &'static str,
    pub url: String,
    /// What to print for it (no password).
    pub shown: String,
    /// A PostgreSQL database the run made (dropped with it), or the temporary directory of
    /// a SQLite file.
    scratch: Option<ScratchDatabase>,
    temp_dir: Option<PathBuf>,
}

/// A fresh database of `backend`: a new SQLite file at `given` (which must not exist) or in
/// a temporary directory, or a new database on the PostgreSQL server `given` names.
pub async fn fresh_database(
    backend: &'static str,
    given: Option<&str>,
) -> anyhow::Result<Database> {
    if backend == "sqlite" {
        let (path, temp_dir) = match given {
            Some(raw) => {
                let path = PathBuf::from(raw.strip_prefix("sqlite://").unwrap_or(raw));
                if path.exists() {
                    bail!(
                        "{} exists; the benchmark fills a fresh database: name a new file",
                        path.display()
                    );
                }
                (path, None)
            }
            None => {
                let dir = super::new_temp_dir("litejobs-bench")?;
                (dir.join("litejobs.db"), Some(dir))
            }
        };
        return Ok(Database {
            backend,
            url: format!("sqlite://{}", path.display()),
            shown: path.display().to_string(),
            scratch: None,
            temp_dir,
        });
    }
    let scratch =
        ScratchDatabase::create(given.unwrap_or(DEFAULT_PG_URL), "litejobs_bench").await?;
    Ok(Database {
        backend,
        url: scratch.url.clone(),
        shown: scratch.shown.clone(),
        scratch: Some(scratch),
        temp_dir: None,
    })
}

/// Removes the database, or says where it was kept.
pub fn clean_up(mut db: Database, keep: bool) {
    if keep {
        if let Some(scratch) = db.scratch.as_mut() {
            scratch.keep();
        }
        println!("kept the {} database: {}", db.backend, db.shown);
        return;
    }
    if let Some(dir) = db.temp_dir.take() {
        let _ = std::fs::remove_dir_all(dir);
    }
    // A scratch PostgreSQL database is dropped with `db`.
}

/// What the queries need to know about the data set.
pub struct Loaded {
    pub project_id: String,
    pub credentials: Credentials,
    pub servers: Vec<String>,
    /// Id of a job in the middle of the measured project.
    pub probe_id: String,
    /// Five characters of a name in the measured project, upper-cased.
    pub probe_name: String,
}

/// Migrates the database, creates the administrator and the servers, and bulk-loads the jobs.
pub async fn load_data_set(args: &BenchArgs, db: &Database) -> anyhow::Result<Loaded> {
    let started = Instant::now();
    let store = crate::store::open(&db.url).await?;
    let crate::iam::Bootstrap::Created(profile) =
        crate::iam::bootstrap_admin(store.as_ref(), None, "http://127.0.0.1").await?
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
