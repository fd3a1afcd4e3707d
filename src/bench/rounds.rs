//! Servers measured on one data set: each is started once; then each query is measured on
//! each server in turn, for `--rounds` rounds, and a row holds the requests of all its
//! rounds, and the server's CPU time meanwhile. Measured in turn, the machine's drift during
//! a run (on a shared machine its speed moves by 10% and more from one minute to the next)
//! falls on every server alike.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::load::{self, Measured};
use super::queries::{self, Query};
use super::report::{self, Row};
use super::setup::{Database, Loaded};
use super::{new_temp_dir, wanted, BenchArgs};
use crate::client::{Client, ClientAuth};
use crate::testkit::ServerProcess;

/// A server being measured.
pub struct Contender {
    /// Its executable and extra flags, as the report names it.
    pub name: String,
    pub server: ServerProcess,
    pub client: Client,
    workdir: PathBuf,
}

impl Contender {
    /// Starts `exe` with `extra_flags` on the loaded database.
    pub async fn start(
        exe: &Path,
        extra_flags: &str,
        database_url: &str,
        loaded: &Loaded,
    ) -> anyhow::Result<Self> {
        let workdir = new_temp_dir("litejobs-bench-server")?;
        let admin = workdir.join("server-admin.json").display().to_string();
        let mut flags = vec!["--bench-floor", "--admin-credentials", admin.as_str()];
        flags.extend(extra_flags.split_whitespace());
        // The data set's running tasks were never leased: the server would end them as
        // stalled while it is measured. (An environment variable, which older builds ignore.)
        let env = [("LITEJOBS_TASK_START_TIMEOUT", "36500d")];
        let started =
            ServerProcess::serve_with_env(exe, &workdir, database_url, &flags, &env).await;
        let server = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&workdir);
                return Err(e);
            }
        };
        let client = Client::new(
            &server.endpoint,
            &loaded.project_id,
            ClientAuth::AkSk(loaded.credentials.clone()),
        )?;
        let name = if extra_flags.is_empty() {
            exe.display().to_string()
        } else {
            format!("{} {extra_flags}", exe.display())
        };
        Ok(Self {
            name,
            server,
            client,
            workdir,
        })
    }

    /// Stops the server at once and removes its directory.
    pub async fn stop(self) -> anyhow::Result<()> {
        let killed = self.server.kill_hard().await;
        let _ = std::fs::remove_dir_all(&self.workdir);
        killed
    }
}

/// Copies of a SQLite data set, one per server after the first, removed when dropped.
///
/// On SQLite each server gets a file of its own: servers sharing one would wait for each
/// other's writes (an idle server merges its name indexes after the creates it measured,
/// while the next one measures its own). PostgreSQL's servers share their database, as the
/// replicas of one deployment do.
pub struct SqliteCopies {
    /// The database URL of each server, the first the data set's own; empty when the
    /// servers share the data set's database.
    pub urls: Vec<String>,
    files: Vec<PathBuf>,
}

impl Drop for SqliteCopies {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Makes the copies of `db` that `servers` servers need (see [`SqliteCopies`]).
pub fn sqlite_copies(db: &Database, servers: usize) -> anyhow::Result<SqliteCopies> {
    let mut copies = SqliteCopies {
        urls: Vec::new(),
        files: Vec::new(),
    };
    let Some(file) = crate::store::sqlite_file(&db.url).filter(|_| servers > 1) else {
        return Ok(copies);
    };
    copies.urls.push(db.url.clone());
    for n in 2..=servers {
        let copy = PathBuf::from(format!("{}.server-{n}", file.display()));
        // The file, its WAL, and its master key (which sealed the data set's secrets).
        for suffix in ["", "-wal", ".key"] {
            let from = PathBuf::from(format!("{}{suffix}", file.display()));
            let to = PathBuf::from(format!("{}{suffix}", copy.display()));
            if from.exists() {
                std::fs::copy(&from, &to).with_context(|| {
                    format!("cannot copy {} to {}", from.display(), to.display())
                })?;
            }
        }
        for suffix in ["", "-wal", "-shm", ".key"] {
            copies
                .files
                .push(PathBuf::from(format!("{}{suffix}", copy.display())));
        }
        copies.urls.push(copy.display().to_string());
    }
    Ok(copies)
}

/// Measures the floor, every query and the floor again on each contender in turn, `rounds`
/// times; answers each contender's rows (floor first) and whether any of its requests
/// failed.
pub async fn measure_in_turn(
    args: &BenchArgs,
    backend: &str,
    contenders: &[Contender],
    loaded: &Loaded,
) -> anyhow::Result<Vec<(Vec<Row>, bool)>> {
    let Some(first) = contenders.first() else {
        return Ok(Vec::new());
    };
    let mut queries = queries::all(backend, &first.client, loaded).await?;
    let again = Query {
        label: "floor again (after the queries)".to_string(),
        ..queries[0].clone()
    };
    queries.retain(|q| {
        q.label.starts_with(report::FLOOR) || q.label == report::REFERENCE || wanted(args, &q.label)
    });
    queries.push(again);
    // Per contender, per query: each round's measurement, and the page's total.
    let mut runs: Vec<Vec<Vec<Measured>>> = vec![vec![Vec::new(); queries.len()]; contenders.len()];
    let mut totals: Vec<Vec<Option<u64>>> = vec![vec![None; queries.len()]; contenders.len()];
    let mut errors = vec![false; contenders.len()];
    let concurrency = args.concurrency as usize;
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("  round {round} of {}", args.rounds);
        }
        for (q, query) in queries.iter().enumerate() {
            for (c, contender) in contenders.iter().enumerate() {
                let client = &contender.client;
                let call = query.call_now(client).await?;
                if query.is_list() {
                    totals[c][q] = Some(queries::total_of(client, &call).await?.0);
                }
                if !args.warmup.is_zero() {
                    load::run(client, &call, concurrency, args.warmup).await;
                }
                let cpu_before = contender.server.cpu_time();
                let mut measured = load::run(client, &call, concurrency, args.duration).await;
                measured.server_cpu = cpu_before
                    .zip(contender.server.cpu_time())
                    .map(|(before, after)| after.saturating_sub(before));
                let on = if contenders.len() > 1 {
                    format!(" (server {})", c + 1)
                } else {
                    String::new()
                };
                let cpu = measured.cpu_per_request().map_or(String::new(), |d| {
                    format!(", {:.1} us of server CPU each", d.as_secs_f64() * 1e6)
                });
                println!(
                    "  measured {}{on}: {:.0} req/s{cpu}",
                    query.label,
                    measured.rate()
                );
                if let Some(e) = &measured.first_error {
                    errors[c] = true;
                    println!("  first error: {}", e.chars().take(300).collect::<String>());
                }
                runs[c][q].push(measured);
            }
        }
    }
    let mut out = Vec::with_capacity(contenders.len());
    for ((runs, totals), errors) in runs.into_iter().zip(totals).zip(errors) {
        let mut rows: Vec<Row> = queries
            .iter()
            .zip(runs)
            .zip(totals)
            .map(|((query, runs), total)| Row {
                label: query.label.clone(),
                total,
                floor_ratio: None,
                ref_ratio: None,
                measured: Measured::merged(runs),
                target: query.target,
            })
            .collect();
        // The machine's speed drifts during a run (the load's writes still being flushed at
        // the start, say): each query is held to the faster of the two floors.
        let floor = report::fastest_floor(&rows);
        let reference = report::reference_rate(&rows);
        for row in &mut rows {
            row.floor_ratio = Some(row.measured.rate() / floor.max(1e-9));
            row.ref_ratio = reference.map(|r| row.measured.rate() / r.max(1e-9));
        }
        out.push((rows, errors));
    }
    Ok(out)
}

/// Each server after the first against the first: per query, the ratio of their
/// throughputs and of their throughputs over their own floors (or, on PostgreSQL, their
/// reference rows), and each server's CPU time per request. The CPU time tells the servers
/// apart where the throughput cannot: the floor, whose load generator is the busier of the
/// two on two cores, answers as fast as requests come.
pub fn comparison(names: &[String], rows: &[&[Row]]) -> String {
    let mut out = String::new();
    let (Some(base_name), Some(base)) = (names.first(), rows.first()) else {
        return out;
    };
    // Over the reference row where there is one, else over the floor.
    let over = if base.iter().any(|r| r.ref_ratio.is_some()) {
        "ratio of x ref"
    } else {
        "ratio of x floor"
    };
    for (i, (name, other)) in names.iter().zip(rows).enumerate().skip(1) {
        out.push_str(&format!(
            "\nserver {} ({name}) against server 1 ({base_name})\n{:<34} {:>10} {:>10} {:>8} {:>17} {:>9} {:>9} {:>9}\n",
            i + 1,
            "query",
            "1 req/s",
            format!("{} req/s", i + 1),
            "ratio",
            over,
            "1 cpu us",
            format!("{} cpu us", i + 1),
            "cpu ratio"
        ));
        for row in base.iter() {
            let Some(theirs) = other.iter().find(|r| r.label == row.label) else {
                continue;
            };
            let relative = |r: &Row| r.ref_ratio.or(r.floor_ratio).unwrap_or(0.0);
            let (a, b) = (row.measured.rate(), theirs.measured.rate());
            let micros = |r: &Row| r.measured.cpu_per_request().map(|d| d.as_secs_f64() * 1e6);
            let (cpu_a, cpu_b) = (micros(row), micros(theirs));
            let shown = |us: Option<f64>| us.map_or("-".to_string(), |us| format!("{us:.1}"));
            let cpu_ratio = match (cpu_a, cpu_b) {
                (Some(x), Some(y)) if x > 0.0 => format!("{:.2}", y / x),
                _ => "-".to_string(),
            };
            out.push_str(&format!(
                "{:<34} {a:>10.1} {b:>10.1} {:>8.2} {:>17.2} {:>9} {:>9} {:>9}\n",
                row.label,
                b / a.max(1e-9),
                relative(theirs) / relative(row).max(1e-9),
                shown(cpu_a),
                shown(cpu_b),
                cpu_ratio
            ));
        }
    }
    out
}
