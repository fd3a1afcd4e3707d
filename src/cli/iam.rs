//! Admin commands `iam …`: projects, users, access keys, policies, grants, tokens and
//! profile files, on the database.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

use super::admin::{emit, find_project, find_user, note_cache_delay, open, DatabaseArgs};
use super::connect::check_endpoint;
use super::output::{OutputArgs, Table};
use crate::domain::now_ms;
use crate::iam::{self, Profile};
use crate::store::Store;

mod records;
use records::{key, policy, project, user};

/// `litejobs iam …`
#[derive(Debug, Args)]
pub struct IamArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(subcommand)]
    pub command: IamCommand,
}

#[derive(Debug, Subcommand)]
pub enum IamCommand {
    /// Projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Users.
    #[command(subcommand)]
    User(UserCommand),
    /// Access keys (AK/SK).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Policies: named lists of action patterns.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Give a user a policy in a project.
    Grant {
        /// User name or id.
        user: String,
        /// Project name or id.
        project: String,
        /// Policy name, e.g. "ModelArts ReadOnlyAccess".
        policy: String,
    },
    /// Take a policy in a project away from a user.
    Revoke {
        /// User name or id.
        user: String,
        /// Project name or id.
        project: String,
        /// Policy name.
        policy: String,
    },
    /// Show the policies a user holds, per project.
    Grants {
        /// User name or id.
        user: String,
    },
    /// IAM tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Create a new key for a user and write a profile file (mode 0600) for the CLI.
    Profile {
        /// User name or id.
        user: String,
        /// Project name or id the profile acts in.
        project: String,
        /// Service endpoint the profile points to, e.g. http://127.0.0.1:8080.
        #[arg(long, value_name = "URL")]
        endpoint: String,
        /// File to write (refused when it exists, unless --force).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Write over --out when it exists: the key of the profile it holds stays valid,
        /// but its secret is lost with the file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project.
    Create {
        /// Project name.
        name: String,
        /// Project id (default: 32 random hex digits).
        #[arg(long)]
        id: Option<String>,
    },
    /// List the projects.
    List,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; without --password one is generated and printed.
    Create {
        /// User name (letters, digits, `-`, `_`, `.`).
        name: String,
        /// Password for IAM tokens.
        #[arg(long)]
        password: Option<String>,
    },
    /// List the users.
    List,
    /// Delete a user with its keys, grants and tokens.
    Delete {
        /// User name or id.
        name: String,
    },
    /// Set a user's password.
    SetPassword {
        /// User name or id.
        name: String,
        /// New password.
        #[arg(long, required = true)]
        password: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an access key for a user and print it with its secret key.
    Create {
        /// User name or id.
        user: String,
        /// What the key is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List a user's access keys (never their secrets).
    List {
        /// User name or id.
        user: String,
    },
    /// Delete an access key; running servers refuse it within their auth cache time.
    Delete {
        /// Access key id.
        access_key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the policies.
    List,
    /// Create or replace a custom policy.
    Put {
        /// Policy name.
        name: String,
        /// Action pattern, e.g. modelarts:devserverJob:list or modelarts:*; repeatable.
        #[arg(long = "action", value_name = "PATTERN", required = true)]
        actions: Vec<String>,
    },
    /// Delete a custom policy (and every grant of it).
    Delete {
        /// Policy name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Revoke every token of a user.
    RevokeUser {
        /// User name or id.
        user: String,
    },
}

async fn ensure_policy(store: &dyn Store, name: &str) -> anyhow::Result<()> {
    if store.list_policies().await?.iter().any(|p| p.name == name) {
        Ok(())
    } else {
        bail!("unknown policy {name} (see `litejobs iam policy list`)")
    }
}

/// What the audit trail records of an `iam` command that changes something: its action,
/// what it names (never a secret) and the project it acts in (a name or id, as given).
struct Audited {
    action: &'static str,
    resources: Vec<String>,
    project: Option<String>,
}

/// The record of an `iam` command, when it changes something.
fn audited(command: &IamCommand) -> Option<Audited> {
    let names = |v: &[&String]| v.iter().map(|s| s.to_string()).collect();
    let (action, resources, project) = match command {
        IamCommand::Project(ProjectCommand::Create { name, .. }) => {
            ("iam.project.create", names(&[name]), Some(name))
        }
        IamCommand::User(UserCommand::Create { name, .. }) => {
            ("iam.user.create", names(&[name]), None)
        }
        IamCommand::User(UserCommand::Delete { name }) => ("iam.user.delete", names(&[name]), None),
        IamCommand::User(UserCommand::SetPassword { name, .. }) => {
            ("iam.user.set_password", names(&[name]), None)
        }
        IamCommand::Key(KeyCommand::Create { user, .. }) => {
            ("iam.key.create", names(&[user]), None)
        }
        IamCommand::Key(KeyCommand::Delete { access_key }) => {
            ("iam.key.delete", names(&[access_key]), None)
        }
        IamCommand::Policy(PolicyCommand::Put { name, .. }) => {
            ("iam.policy.put", names(&[name]), None)
        }
        IamCommand::Policy(PolicyCommand::Delete { name }) => {
            ("iam.policy.delete", names(&[name]), None)
        }
        IamCommand::Grant {
            user,
            project,
            policy,
        } => ("iam.grant", names(&[user, project, policy]), Some(project)),
        IamCommand::Revoke {
            user,
            project,
            policy,
        } => ("iam.revoke", names(&[user, project, policy]), Some(project)),
        IamCommand::Token(TokenCommand::RevokeUser { user }) => {
            ("iam.token.revoke_user", names(&[user]), None)
        }
        IamCommand::Profile { user, project, .. } => {
            ("iam.profile", names(&[user, project]), Some(project))
        }
        _ => return None,
    };
    Some(Audited {
        action,
        resources,
        project: project.cloned(),
    })
}

/// Runs an `iam` command, recording it in the audit trail when it changes something (with
/// the access key it made, if any).
pub async fn run_iam(args: IamArgs) -> anyhow::Result<()> {
    let store = open(&args.database).await?;
    let audit = audited(&args.command);
    let mut made = None;
    let outcome = iam_command(store.as_ref(), args, &mut made).await;
    if let Some(mut a) = audit {
        a.resources.extend(made);
        let named = (a.action, a.resources, a.project.as_deref());
        super::admin::record_admin(store.as_ref(), named, &outcome).await;
    }
    outcome
}

/// Runs an `iam` command; `made` is the access key it made, if any.
async fn iam_command(
    store: &dyn Store,
    args: IamArgs,
    made: &mut Option<String>,
) -> anyhow::Result<()> {
    let sealer = crate::secrets::Sealer::for_database(&args.database.database_url, store).await?;
    let sealer = sealer.as_ref();
    let format = args.output.output;
    match args.command {
        IamCommand::Project(command) => project(store, format, command).await,
        IamCommand::User(command) => user(store, format, command).await,
        IamCommand::Key(command) => key(store, (sealer, made), format, command).await,
        IamCommand::Policy(command) => policy(store, format, command).await,
        IamCommand::Grant {
            user,
            project,
            policy,
        } => {
            let u = find_user(store, &user).await?;
            let p = find_project(store, &project).await?;
            ensure_policy(store, &policy).await?;
            store.grant(&u.id, &p.id, &policy).await?;
            let value = json!({"user_name": u.name, "project_id": p.id, "policy": policy});
            emit(format, &value, || {
                format!(
                    "granted {policy} to {} in project {} ({})\n",
                    u.name, p.name, p.id
                )
            })
        }
        IamCommand::Revoke {
            user,
            project,
            policy,
        } => {
            let u = find_user(store, &user).await?;
            let p = find_project(store, &project).await?;
            if !store.revoke(&u.id, &p.id, &policy).await? {
                bail!("{} holds no {policy} in project {}", u.name, p.name);
            }
            note_cache_delay();
            let value = json!({"user_name": u.name, "project_id": p.id, "policy": policy});
            emit(format, &value, || {
                format!(
                    "revoked {policy} from {} in project {} ({})\n",
                    u.name, p.name, p.id
                )
            })
        }
        IamCommand::Grants { user } => {
            let u = find_user(store, &user).await?;
            let projects = store.list_projects().await?;
            let grants = store.list_grants(&u.id).await?;
            let project_name = |id: &str| {
                projects
                    .iter()
                    .find(|p| p.id == id)
                    .map(|p| p.name.clone())
                    .unwrap_or_default()
            };
            let value: Vec<_> = grants
                .iter()
                .map(|(project_id, policy)| {
                    json!({"project_id": project_id, "project_name": project_name(project_id), "policy": policy})
                })
                .collect();
            emit(format, &json!(value), || {
                let mut table = Table::new(["PROJECT ID", "PROJECT", "POLICY"]);
                for (project_id, policy) in &grants {
                    table.row([project_id.clone(), project_name(project_id), policy.clone()]);
                }
                if table.is_empty() {
                    format!("{} holds no policies\n", u.name)
                } else {
                    table.render()
                }
            })
        }
        IamCommand::Token(TokenCommand::RevokeUser { user }) => {
            let u = find_user(store, &user).await?;
            let revoked = store.revoke_user_tokens(&u.id, now_ms()).await?;
            note_cache_delay();
            emit(
                format,
                &json!({"user_name": u.name, "revoked": revoked}),
                || format!("revoked {revoked} token(s) of {}\n", u.name),
            )
        }
        IamCommand::Profile {
            user,
            project,
            endpoint,
            out,
            force,
        } => {
            check_endpoint(&endpoint)?;
            if !force && std::fs::symlink_metadata(&out).is_ok() {
                anyhow::bail!(iam::profile_exists(&out));
            }
            let u = find_user(store, &user).await?;
            let p = find_project(store, &project).await?;
            if store.project_actions(&u.id, &p.id).await?.is_none() {
                eprintln!(
                    "warning: {} holds no policy in project {}; grant one with `litejobs iam grant`",
                    u.name, p.name
                );
            }
            let key = iam::create_access_key(
                store,
                sealer,
                &u,
                &format!("profile {}", out.display()),
                None,
            )
            .await?;
            *made = Some(key.access_key.clone());
            let profile = Profile {
                endpoint: endpoint.trim_end_matches('/').to_string(),
                project_id: p.id.clone(),
                access_key: key.access_key.clone(),
                secret_key: key.secret_key,
                user_name: Some(u.name.clone()),
                password: None,
            };
            let if_exists = if force {
                iam::IfExists::Replace
            } else {
                iam::IfExists::Refuse
            };
            if let Err(e) = iam::write_profile(&out, &profile, if_exists) {
                // Nobody has the key's secret: take the key back.
                store.delete_access_key(&key.access_key).await?;
                return Err(e);
            }
            let value = json!({
                "path": out.display().to_string(),
                "user_name": u.name,
                "project_id": p.id,
                "access_key": key.access_key,
                "endpoint": profile.endpoint,
            });
            emit(format, &value, || {
                format!(
                    "wrote {} for {} in project {} (access key {})\n",
                    out.display(),
                    u.name,
                    p.name,
                    key.access_key
                )
            })
        }
    }
}
