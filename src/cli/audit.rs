//! Admin command `audit list`: the audit trail, newest first, from the database.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::admin::{emit, open, DatabaseArgs};
use super::output::{self, OutputArgs, Table};
use crate::audit::{ADMIN, UNKNOWN};
use crate::config::parse_duration;
use crate::store::AuditFilter;

/// `litejobs audit …`
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit records, newest first.
    List {
        /// Only records of the last DURATION (e.g. 1h, 7d).
        #[arg(long, value_parser = parse_duration, conflicts_with = "from")]
        since: Option<Duration>,
        /// Only records from this time on (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long, value_parser = parse_time)]
        from: Option<i64>,
        /// Only records before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<i64>,
        /// Only records of this user (name or id; `unknown` for failed authentications).
        #[arg(long)]
        user: Option<String>,
        /// Only records of this action (e.g. job.create, job.delete, token.issue,
        /// authenticate, iam.user.create).
        #[arg(long)]
        action: Option<String>,
        /// Only records with this outcome: success, denied or failed.
        #[arg(long, value_parser = ["success", "denied", "failed"])]
        outcome: Option<String>,
        /// Only records of this project (its name or id; the id of a removed project's).
        #[arg(long)]
        project: Option<String>,
        /// Most records shown.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        limit: i64,
    },
}

fn parse_time(raw: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{raw} is not an RFC 3339 time: {e}"))
}

/// Runs an `audit` command.
pub async fn run_audit(args: AuditArgs) -> anyhow::Result<()> {
    let store = open(&args.database).await?;
    let AuditCommand::List {
        since,
        from,
        until,
        user,
        action,
        outcome,
        project,
        limit,
    } = args.command;
    let since_ms = match since {
        Some(d) => Some(crate::domain::now_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        None => from,
    };
    // A project named by its name is looked for by its id; a value that names none may
    // still be the id of a removed project, whose records stay.
    let named = match &project {
        Some(p) => store.find_project(p).await?.map(|found| found.id),
        None => None,
    };
    // A user's records are those made by that user (not an administration command run by an
    // operating system's user of the same name); a value that names no user may still be a
    // removed user's name or id, `unknown`, or an operating system's user.
    let user_id = match &user {
        // The trail's own names are the records' user ids (a user of an earlier version
        // may hold one as its name: its records are not those).
        Some(u) if [UNKNOWN, ADMIN].contains(&u.as_str()) => Some(u.clone()),
        Some(u) => store.find_user(u).await?.map(|found| found.id),
        None => None,
    };
    let filter = AuditFilter {
        since_ms,
        until_ms: until,
        user: user.clone().filter(|_| user_id.is_none()),
        user_id: user_id.clone(),
        action,
        outcome,
        project_id: named.clone().or(project.clone()),
        limit,
    };
    let records = store.list_audit(&filter).await?;
    if records.is_empty() {
        // Nothing matched: say so when a project or user named is none at all (a typo),
        // rather than answering an empty trail.
        if let (Some(p), None) = (&project, &named) {
            anyhow::bail!(
                "unknown project {p} (no project, and no record of one, has it as its name or id)"
            );
        }
        if let (Some(u), None) = (&user, &user_id) {
            anyhow::bail!(
                "unknown user {u} (no user, and no record of one, has it as its name or id)"
            );
        }
    }
    emit(args.output.output, &serde_json::to_value(&records)?, || {
        let mut table = Table::new([
            "TIME",
            "USER",
            "ACTION",
            "RESOURCES",
            "OUTCOME",
            "STATUS",
            "SOURCE",
            "KEY",
            "PROJECT",
            "REQUEST",
        ]);
        for r in &records {
            table.row([
                output::time(r.at),
                r.user_name.clone(),
                r.action.clone(),
                r.resources.join(","),
                r.outcome.clone(),
                match (&r.error_code, r.status) {
                    (_, 0) => "-".to_string(),
                    (Some(code), status) => format!("{status} {code}"),
                    (None, status) => status.to_string(),
                },
                r.source.clone(),
                r.access_key.clone().unwrap_or_else(|| "-".to_string()),
                r.project_id.clone().unwrap_or_else(|| "-".to_string()),
                r.request_id.clone(),
            ]);
        }
        if table.is_empty() {
            "no audit records match\n".to_string()
        } else {
            table.render()
        }
    })
}
