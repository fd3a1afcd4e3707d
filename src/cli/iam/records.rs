//! The `iam` commands on one kind of record each: projects, users, access keys, policies.

use anyhow::bail;
use serde_json::json;

use super::{KeyCommand, PolicyCommand, ProjectCommand, UserCommand};
use crate::cli::admin::{emit, find_user, note_cache_delay};
use crate::cli::output::{self, Format, Table};
use crate::iam;
use crate::store::{ProjectRecord, Store, UserRecord};

fn project_json(p: &ProjectRecord) -> serde_json::Value {
    json!({"id": p.id, "name": p.name, "create_at": p.create_at})
}

fn user_json(u: &UserRecord) -> serde_json::Value {
    json!({"id": u.id, "name": u.name, "has_password": u.password_hash.is_some(), "create_at": u.create_at})
}

pub(super) async fn project(
    store: &dyn Store,
    format: Format,
    command: ProjectCommand,
) -> anyhow::Result<()> {
    match command {
        ProjectCommand::Create { name, id } => {
            let p = iam::create_project(store, &name, id.as_deref()).await?;
            emit(format, &project_json(&p), || {
                format!("created project {} with id {}\n", p.name, p.id)
            })
        }
        ProjectCommand::List => {
            let projects = store.list_projects().await?;
            let value: Vec<_> = projects.iter().map(project_json).collect();
            emit(format, &json!(value), || {
                let mut table = Table::new(["ID", "NAME", "CREATED"]);
                for p in &projects {
                    table.row([p.id.clone(), p.name.clone(), output::time(p.create_at)]);
                }
                table.render()
            })
        }
    }
}

pub(super) async fn user(
    store: &dyn Store,
    format: Format,
    command: UserCommand,
) -> anyhow::Result<()> {
    match command {
        UserCommand::Create { name, password } => {
            let generated = password.is_none();
            let password = password.unwrap_or_else(iam::new_password);
            let u = iam::create_user(store, &name, Some(&password)).await?;
            let mut value = user_json(&u);
            if generated {
                value["password"] = json!(password);
            }
            emit(format, &value, || {
                let mut text = format!("created user {} with id {}\n", u.name, u.id);
                if generated {
                    text.push_str(&format!("password: {password}\n"));
                }
                text
            })
        }
        UserCommand::List => {
            let users = store.list_users().await?;
            let value: Vec<_> = users.iter().map(user_json).collect();
            emit(format, &json!(value), || {
                let mut table = Table::new(["ID", "NAME", "PASSWORD", "CREATED"]);
                for u in &users {
                    let password = if u.password_hash.is_some() {
                        "set"
                    } else {
                        "-"
                    };
                    table.row([
                        u.id.clone(),
                        u.name.clone(),
                        password.to_string(),
                        output::time(u.create_at),
                    ]);
                }
                table.render()
            })
        }
        UserCommand::Delete { name } => {
            let u = find_user(store, &name).await?;
            if !store.delete_user(&u.id).await? {
                bail!("unknown user {name}");
            }
            note_cache_delay();
            emit(
                format,
                &json!({"user_name": u.name, "deleted": true}),
                || format!("deleted user {}\n", u.name),
            )
        }
        UserCommand::SetPassword { name, password } => {
            iam::check_password(&password).map_err(anyhow::Error::msg)?;
            let u = find_user(store, &name).await?;
            store
                .set_password(&u.id, &iam::hash_password(&password)?)
                .await?;
            // As in IAM, the tokens issued under the old password (and so the console's
            // sessions) end with it.
            let revoked = store
                .revoke_user_tokens(&u.id, crate::domain::now_ms())
                .await?;
            note_cache_delay();
            emit(
                format,
                &json!({"user_name": u.name, "password_set": true, "revoked_tokens": revoked}),
                || {
                    format!(
                        "set the password of {} and revoked {revoked} token(s)\n",
                        u.name
                    )
                },
            )
        }
    }
}

pub(super) async fn key(
    store: &dyn Store,
    (sealer, made): (Option<&crate::secrets::Sealer>, &mut Option<String>),
    format: Format,
    command: KeyCommand,
) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create { user, description } => {
            let u = find_user(store, &user).await?;
            let k = iam::create_access_key(store, sealer, &u, &description, None).await?;
            *made = Some(k.access_key.clone());
            let value = json!({
                "access_key": k.access_key,
                "secret_key": k.secret_key,
                "user_name": k.user_name,
            });
            if format == Format::Table {
                eprintln!("note: keep the secret key now; no command shows it again");
            }
            emit(format, &value, || {
                output::fields(&[
                    ("access key", k.access_key.clone()),
                    ("secret key", k.secret_key.clone()),
                    ("user", k.user_name.clone()),
                ])
            })
        }
        KeyCommand::List { user } => {
            let u = find_user(store, &user).await?;
            let keys = store.list_access_keys(&u.id).await?;
            let value: Vec<_> = keys
                .iter()
                .map(|k| {
                    json!({
                        "access_key": k.access_key,
                        "user_name": k.user_name,
                        "description": k.description,
                        "create_at": k.create_at,
                    })
                })
                .collect();
            emit(format, &json!(value), || {
                let mut table = Table::new(["ACCESS KEY", "DESCRIPTION", "CREATED"]);
                for k in &keys {
                    table.row([
                        k.access_key.clone(),
                        output::or_dash(Some(&k.description)),
                        output::time(k.create_at),
                    ]);
                }
                if table.is_empty() {
                    format!("{} has no access keys\n", u.name)
                } else {
                    table.render()
                }
            })
        }
        KeyCommand::Delete { access_key } => {
            if !store.delete_access_key(&access_key).await? {
                bail!("unknown access key {access_key}");
            }
            note_cache_delay();
            emit(
                format,
                &json!({"access_key": access_key, "deleted": true}),
                || format!("deleted access key {access_key}\n"),
            )
        }
    }
}

pub(super) async fn policy(
    store: &dyn Store,
    format: Format,
    command: PolicyCommand,
) -> anyhow::Result<()> {
    match command {
        PolicyCommand::List => {
            let policies = store.list_policies().await?;
            emit(format, &serde_json::to_value(&policies)?, || {
                let mut table = Table::new(["NAME", "BUILT-IN", "ACTIONS"]);
                for p in &policies {
                    table.row([
                        p.name.clone(),
                        if p.builtin { "yes" } else { "no" }.to_string(),
                        p.actions.join(", "),
                    ]);
                }
                table.render()
            })
        }
        PolicyCommand::Put { name, actions } => {
            iam::put_policy(store, &name, &actions).await?;
            let value = json!({"name": name, "actions": actions, "builtin": false});
            emit(format, &value, || {
                format!("policy {name}: {}\n", actions.join(", "))
            })
        }
        PolicyCommand::Delete { name } => {
            let policies = store.list_policies().await?;
            match policies.iter().find(|p| p.name == name) {
                None => bail!("unknown policy {name}"),
                Some(p) if p.builtin => bail!("{name} is a built-in policy and cannot be deleted"),
                Some(_) => {}
            }
            if !store.delete_policy(&name).await? {
                bail!("unknown policy {name}");
            }
            note_cache_delay();
            emit(format, &json!({"name": name, "deleted": true}), || {
                format!("deleted policy {name}\n")
            })
        }
    }
}
