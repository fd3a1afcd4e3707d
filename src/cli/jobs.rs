//! Client commands `jobs …`: list, get, create, delete and wait, as signed API calls.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::Method;

use super::api::{call, print_answer, Answer};
use super::connect::ConnectArgs;
use super::output::{self, OutputArgs, Table};
use crate::client::Client;
use crate::config::parse_duration;
use crate::sign;
use crate::wire::{DeleteJobsRequest, JobCreateRequest, JobDetail, JobItem, JobListItem, Page};

/// `litejobs jobs …`
#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(subcommand)]
    pub command: JobsCommand,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List the project's jobs, newest first.
    List(ListJobsArgs),
    /// Show one job with its items and tasks.
    Get {
        /// Job id.
        id: String,
    },
    /// Create a job that runs on one or more Lite Servers.
    Create(Box<CreateJobArgs>),
    /// Delete jobs (they stay listed as DELETED until retention purges them).
    Delete {
        /// Job ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Print the changes of a job, or of the project's jobs matching the filters, as they
    /// come (until the job is deleted, or Ctrl-C).
    Watch(super::watch::WatchArgs),
    /// Print the output of a job's tasks, as their agents uploaded it (its tail).
    Logs {
        /// Job id.
        id: String,
        /// Only the task on this server.
        #[arg(long = "server", value_name = "ID")]
        server: Option<String>,
        /// Keep printing what is added until the job is FINISHED or DELETED.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Wait until a job is FINISHED or DELETED, then show it.
    Wait {
        /// Job id.
        id: String,
        /// Give up (exit 1) after this long, e.g. 90s, 5m.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// Filters and paging of `jobs list`.
#[derive(Debug, Args)]
pub struct ListJobsArgs {
    /// Only the job with this id.
    #[arg(long)]
    pub id: Option<String>,
    /// Jobs whose name contains this (case-insensitive).
    #[arg(long)]
    pub name: Option<String>,
    /// Jobs of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub job_type: Option<String>,
    /// PROCESSING, FINISHED or DELETED.
    #[arg(long)]
    pub status: Option<String>,
    /// Only visible (true) or hidden (false) jobs.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    pub visible: Option<bool>,
    /// Page size.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Jobs to skip.
    #[arg(long)]
    pub offset: Option<u64>,
    /// create_at, update_at or name.
    #[arg(long, value_name = "KEY")]
    pub sort_key: Option<String>,
    /// asc or desc.
    #[arg(long, value_parser = ["asc", "desc"])]
    pub sort_dir: Option<String>,
}

/// What `jobs create` submits: flags, or a whole request body from a file.
#[derive(Debug, Args)]
pub struct CreateJobArgs {
    /// Job name (letters, digits, `-`, `_`, `.`).
    #[arg(long, required_unless_present = "body")]
    pub name: Option<String>,
    /// Job type, i.e. the template it runs (e.g. COMMON).
    #[arg(long = "type", value_name = "TYPE", required_unless_present = "body")]
    pub job_type: Option<String>,
    /// Lite Server to run on; repeat for several.
    #[arg(long = "server", value_name = "ID", required_unless_present = "body")]
    pub servers: Vec<String>,
    /// Item type (default: the job type).
    #[arg(long = "item", value_name = "TYPE")]
    pub item_type: Option<String>,
    /// Item parameter, e.g. --spec cmd='echo hi'; repeatable.
    #[arg(long = "spec", value_name = "KEY=VALUE", value_parser = parse_spec)]
    pub spec: Vec<(String, String)>,
    /// Job description.
    #[arg(long)]
    pub description: Option<String>,
    /// Restart the servers after a failure.
    #[arg(long)]
    pub reboot: bool,
    /// Hide the job from visible=true lists.
    #[arg(long)]
    pub hidden: bool,
    /// Idempotency token: the same token and request give back the same job.
    #[arg(long, value_name = "TOKEN")]
    pub client_token: Option<String>,
    /// A JobCreateRequest as JSON (`-` for standard input) instead of the flags above.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["name", "job_type", "servers", "item_type", "spec", "description", "reboot", "hidden"]
    )]
    pub body: Option<PathBuf>,
}

fn parse_spec(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE".to_string()),
    }
}

fn job_path(id: &str) -> String {
    format!("/dev-servers/jobs/{}", sign::encode(id.as_bytes()))
}

fn job_list_table(page: &Page<JobListItem>) -> String {
    let mut table = Table::new([
        "ID", "NAME", "TYPE", "STATUS", "ABNORMAL", "USER", "CREATED",
    ]);
    for job in &page.data {
        table.row([
            job.id.clone(),
            job.name.clone(),
            job.job_type.clone(),
            job.status.clone(),
            job.abnormal_count.to_string(),
            job.user_name.clone(),
            output::time(job.create_at),
        ]);
    }
    let mut out = if table.is_empty() {
        "no jobs\n".to_string()
    } else {
        table.render()
    };
    if page.total > page.data.len() as u64 {
        out.push_str(&format!(
            "({} of {} jobs, page {} of {})\n",
            page.data.len(),
            page.total,
            page.current,
            page.pages
        ));
    }
    out
}

fn job_detail_table(job: &JobDetail) -> String {
    let mut out = output::fields(&[
        ("ID", job.id.clone()),
        ("Name", job.name.clone()),
        ("Type", job.job_type.clone()),
        ("Status", job.status.clone()),
        ("Abnormal", job.abnormal_count.to_string()),
        ("User", job.user_name.clone()),
        ("Description", output::or_dash(job.description.as_deref())),
        ("Template", output::or_dash(job.template_id.as_deref())),
        // (A strict server's answer has neither.)
        ("Visible", job.visible.map_or("-".into(), |v| v.to_string())),
        (
            "Reboot",
            job.is_reboot.map_or("-".into(), |v| v.to_string()),
        ),
        ("Created", output::time(job.create_at)),
        ("Updated", output::time(job.update_at)),
    ]);
    let mut items = Table::new(["ITEM TYPE", "SPEC"]);
    for item in &job.items {
        let spec = item
            .spec
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        items.row([item.item_type.clone(), spec]);
    }
    out.push('\n');
    out.push_str(&items.render());
    let mut tasks = Table::new(["TASK", "SERVER", "STATUS", "UPDATED", "MESSAGE"]);
    for task in &job.tasks {
        let server = if task.server_name.is_empty() || task.server_name == task.server_id {
            task.server_id.clone()
        } else {
            format!("{} ({})", task.server_id, task.server_name)
        };
        tasks.row([
            task.id.clone(),
            server,
            task.status.clone(),
            output::time_text(&task.update_at),
            output::truncate(&output::clean(&task.message), 80),
        ]);
    }
    out.push('\n');
    out.push_str(&tasks.render());
    out
}

fn list_query(args: &ListJobsArgs) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    let mut put = |key: &'static str, value: Option<String>| {
        if let Some(v) = value {
            query.push((key, v));
        }
    };
    put("id", args.id.clone());
    put("name", args.name.clone());
    put("type", args.job_type.clone());
    put("status", args.status.clone());
    put("visible", args.visible.map(|v| v.to_string()));
    put("limit", args.limit.map(|v| v.to_string()));
    put("offset", args.offset.map(|v| v.to_string()));
    put("sort_key", args.sort_key.clone());
    put("sort_dir", args.sort_dir.clone());
    query
}

fn read_body(path: &std::path::Path) -> anyhow::Result<JobCreateRequest> {
    let raw = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the request from standard input")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    serde_json::from_str(&raw)
        .with_context(|| format!("{} is not a JobCreateRequest", path.display()))
}

fn create_request(args: &CreateJobArgs) -> anyhow::Result<JobCreateRequest> {
    if let Some(path) = &args.body {
        return read_body(path);
    }
    let (Some(name), Some(job_type)) = (args.name.clone(), args.job_type.clone()) else {
        bail!("--name and --type are required (or a request in --body FILE)");
    };
    if args.servers.is_empty() {
        bail!("name at least one --server (or give a request in --body FILE)");
    }
    let spec: BTreeMap<String, String> = args.spec.iter().cloned().collect();
    Ok(JobCreateRequest {
        name,
        description: args.description.clone(),
        server_ids: args.servers.clone(),
        items: vec![JobItem {
            item_type: args.item_type.clone().unwrap_or_else(|| job_type.clone()),
            spec: (!spec.is_empty()).then_some(spec),
        }],
        job_type,
        is_reboot: args.reboot.then_some(true),
        visible: args.hidden.then_some(false),
    })
}

/// Polls a job until it is FINISHED or DELETED, at most `timeout`; a failure that may pass
/// (the service restarting, busy, or failing for a moment) is waited out like a job still
/// running, and reported only when the time is up.
async fn wait_for_job(
    client: &Client,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<Answer<JobDetail>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(100);
    loop {
        let asked = call::<JobDetail>(client, Method::GET, &job_path(id), &[], None, &[]).await;
        let now = tokio::time::Instant::now();
        let status = match asked {
            Ok(answer) if matches!(answer.value.status.as_str(), "FINISHED" | "DELETED") => {
                return Ok(answer);
            }
            Ok(answer) => answer.value.status,
            Err(e) if now < deadline && e.is_transient() => "unknown".to_string(),
            Err(e) => return Err(e.into()),
        };
        if now >= deadline {
            bail!(
                "job {id} is still {status} after {}",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Runs a `jobs` command.
pub async fn run_jobs(args: JobsArgs) -> anyhow::Result<()> {
    let client = args.connect.client()?;
    let format = args.output.output;
    match args.command {
        JobsCommand::List(list) => {
            let answer: Answer<Page<JobListItem>> = call(
                &client,
                Method::GET,
                "/dev-servers/jobs",
                &list_query(&list),
                None,
                &[],
            )
            .await?;
            print_answer(format, &answer, job_list_table)?;
        }
        JobsCommand::Get { id } => {
            let answer: Answer<JobDetail> =
                call(&client, Method::GET, &job_path(&id), &[], None, &[]).await?;
            print_answer(format, &answer, job_detail_table)?;
        }
        JobsCommand::Create(create) => {
            let request = create_request(&create)?;
            let body = serde_json::to_vec(&request)?;
            let headers: Vec<(&str, &str)> = create
                .client_token
                .as_deref()
                .map(|t| vec![("X-Client-Token", t)])
                .unwrap_or_default();
            let answer: Answer<JobDetail> = call(
                &client,
                Method::POST,
                "/dev-servers/jobs",
                &[],
                Some(body),
                &headers,
            )
            .await?;
            print_answer(format, &answer, job_detail_table)?;
        }
        JobsCommand::Delete { ids } => {
            let body = serde_json::to_vec(&DeleteJobsRequest { job_ids: ids })?;
            let answer: Answer<Page<JobListItem>> = call(
                &client,
                Method::DELETE,
                "/dev-servers/jobs",
                &[],
                Some(body),
                &[],
            )
            .await?;
            print_answer(format, &answer, job_list_table)?;
        }
        JobsCommand::Wait { id, timeout } => {
            let answer = wait_for_job(&client, &id, timeout).await?;
            print_answer(format, &answer, job_detail_table)?;
        }
        JobsCommand::Watch(watch) => super::watch::run_watch(&client, watch, format).await?,
        JobsCommand::Logs { id, server, follow } => {
            print_logs(&client, &id, server.as_deref(), follow, format).await?;
        }
    }
    Ok(())
}

/// How often `jobs logs --follow` looks for more output.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// What of `now` is new after `before` (both tails of one growing output): all of it when
/// the two no longer overlap.
fn added<'a>(before: &str, now: &'a str) -> &'a str {
    if let Some(rest) = now.strip_prefix(before) {
        return rest;
    }
    // The tail moved on: the longest end of `before` that starts `now`.
    for (i, _) in before.char_indices() {
        if now.starts_with(&before[i..]) {
            return &now[before.len() - i..];
        }
    }
    now
}

/// Prints the output of the job's tasks (on `server` only, when given), and with `follow`
/// what is added, until the job ends.
async fn print_logs(
    client: &Client,
    id: &str,
    server: Option<&str>,
    follow: bool,
    format: output::Format,
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut printed: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let job = client.get_job(id).await?;
        let tasks: Vec<_> = job
            .tasks
            .iter()
            .filter(|t| server.is_none_or(|s| t.server_id == s))
            .collect();
        if let Some(s) = server.filter(|_| tasks.is_empty()) {
            bail!("job {id} has no task on server {s}");
        }
        let several = tasks.len() > 1;
        let mut out = String::new();
        for task in &tasks {
            let output = match client.task_output(id, &task.id).await {
                Ok(o) => o.output,
                Err(crate::client::ClientError::Api { status: 404, .. }) => String::new(),
                Err(e) => return Err(e.into()),
            };
            let before = printed.entry(task.id.clone()).or_default();
            let new = added(before, &output);
            if !new.is_empty() && format == output::Format::Json {
                let line = serde_json::json!({
                    "server_id": task.server_id,
                    "task_id": task.id,
                    "output": new,
                });
                let _ = writeln!(out, "{line}");
            } else if !new.is_empty() {
                for line in new.split_inclusive('\n') {
                    if several {
                        out.push_str(&task.server_id);
                        out.push_str(": ");
                    }
                    out.push_str(line);
                }
                if several && !new.ends_with('\n') {
                    out.push('\n');
                }
            }
            *before = output;
        }
        // A reader that went away (`| head`) ends the command, as it ends the others.
        if !output::write_out(&out)? {
            return Ok(());
        }
        let ended = matches!(job.status.as_str(), "FINISHED" | "DELETED");
        if !follow || ended {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::added;

    #[test]
    fn followed_output_prints_only_what_was_added() {
        assert_eq!(added("", "abc"), "abc");
        assert_eq!(added("abc", "abcdef"), "def");
        // The tail dropped its start: "cdefgh" overlaps "abcd" by "cd".
        assert_eq!(added("abcd", "cdefgh"), "efgh");
        assert_eq!(added("abc", "xyz"), "xyz");
        assert_eq!(added("abc", "abc"), "");
    }
}
