//! `litejobs jobs watch [JOB] [filters]`: the live watch of one job or of the project's jobs,
//! printed as the changes come (a line each, or `-o json` lines), reconnecting after the
//! last change seen when the stream drops.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::output::{self, Format};
use crate::client::{Client, ClientError, StreamEvent};

/// Longest pause between attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What `jobs watch` follows.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Follow this job only (until it is deleted); else every job of the project that
    /// matches the filters.
    pub job: Option<String>,
    /// Only the job with this id.
    #[arg(long, conflicts_with = "job")]
    pub id: Option<String>,
    /// Jobs whose name contains this (case-insensitive).
    #[arg(long, conflicts_with = "job")]
    pub name: Option<String>,
    /// Jobs of this type.
    #[arg(long = "type", value_name = "TYPE", conflicts_with = "job")]
    pub job_type: Option<String>,
    /// PROCESSING, FINISHED or DELETED.
    #[arg(long, conflicts_with = "job")]
    pub status: Option<String>,
    /// Only visible (true) or hidden (false) jobs.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set, conflicts_with = "job")]
    pub visible: Option<bool>,
    /// Start after this event id (as a previous watch printed it) instead of now.
    #[arg(long, value_name = "ID")]
    pub after: Option<i64>,
}

fn filters(args: &WatchArgs) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    let mut add = |k: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    };
    add("id", &args.id);
    add("name", &args.name);
    add("type", &args.job_type);
    add("status", &args.status);
    add("visible", &args.visible.map(|v| v.to_string()));
    q
}

/// One change as a line of text.
fn line(data: &serde_json::Value) -> String {
    let job = &data["job"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let when = job["update_at"]
        .as_i64()
        .map_or("-".to_string(), output::time);
    let mut out = format!(
        "{when}  {:<8}  {}  {}  {}  abnormal={}",
        text(&data["kind"]),
        text(&job["id"]),
        text(&job["name"]),
        text(&job["status"]),
        job["abnormal_count"].as_i64().unwrap_or(0),
    );
    if let Some(task) = data.get("task") {
        out.push_str(&format!(
            "  task {} on {}: {}",
            text(&task["id"]),
            text(&task["server_id"]),
            text(&task["status"])
        ));
        let message = text(&task["message"]);
        let first = message.lines().next().unwrap_or("");
        if !first.is_empty() && first != "-" {
            out.push_str(&format!(" ({first})"));
        }
    }
    out.push('\n');
    out
}

/// Prints one event; true when the watch is over (the watched job was deleted, or the
/// output's reader went away).
fn print_event(event: &StreamEvent, format: Format, one_job: bool) -> anyhow::Result<bool> {
    match event.event.as_str() {
        "job" => {
            let data: serde_json::Value =
                serde_json::from_str(&event.data).context("a change that is not JSON")?;
            let written = match format {
                Format::Json => output::write_out(&format!("{}\n", event.data))?,
                Format::Table => output::write_out(&line(&data))?,
            };
            Ok(!written || (one_job && data["kind"] == "deleted"))
        }
        "snapshot" => {
            let job: serde_json::Value =
                serde_json::from_str(&event.data).context("a snapshot that is not JSON")?;
            let mut written = true;
            if format == Format::Table {
                let status = job["status"].as_str().unwrap_or("-");
                written = output::write_out(&format!(
                    "watching job {} ({}): {status}, abnormal={}\n",
                    job["id"].as_str().unwrap_or("-"),
                    job["name"].as_str().unwrap_or("-"),
                    job["abnormal_count"].as_i64().unwrap_or(0)
                ))?;
            }
            Ok(!written || (one_job && job["status"] == "DELETED"))
        }
        "expired" => {
            eprintln!(
                "watch: the changes after the last one seen are no longer kept; some were \
                 missed (list the jobs again): going on from the newest"
            );
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// Runs `jobs watch` until the watched job is deleted, or forever for the list.
pub async fn run_watch(client: &Client, args: WatchArgs, format: Format) -> anyhow::Result<()> {
    let (path, query) = match &args.job {
        Some(job) => (
            client.project_path(&format!(
                "/dev-servers/jobs/{}/events",
                crate::sign::encode(job.as_bytes())
            )),
            Vec::new(),
        ),
        None => (
            client.project_path("/dev-servers/jobs/events"),
            filters(&args),
        ),
    };
    let query: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.clone())).collect();
    let mut last = args.after;
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut stream = match client.events(&path, &query, last).await {
            Ok(stream) => stream,
            // Refused (a bad filter, no permission, no such job): no use trying again.
            Err(e @ ClientError::Api { status, .. }) if (400..500).contains(&status) => {
                return Err(e.into())
            }
            Err(e) => {
                eprintln!("watch: {e}; reconnecting in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        loop {
            let event = match stream.next().await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("watch: {e}; reconnecting");
                    break;
                }
            };
            if let Ok(id) = event.id.parse::<i64>() {
                last = Some(id);
            }
            if print_event(&event, format, args.job.is_some())? {
                return Ok(());
            }
        }
    }
}
