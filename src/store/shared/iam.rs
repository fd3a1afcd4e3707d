//! Users, access keys, projects, policies, grants and tokens: the whole [`IamStore`], for
//! every store whose pools run the shared SQL (both backends: nothing here differs).

use async_trait::async_trait;

use super::{parse_json, to_json, Exec, SqlPools, SqlRow, Statement};
use crate::store::error::retry_read;
use crate::store::{
    AccessKeyRecord, IamStore, PolicyRecord, ProjectRecord, StoreError, StoreResult, TokenGrounds,
    TokenRecord, UserRecord,
};

/// Runs a change on the write pool, naming `what` in a unique-key or foreign-key conflict.
async fn change<P: SqlPools>(pools: &P, what: &str, s: Statement<'_>) -> StoreResult<u64> {
    write(pools, s).await.map_err(|e| e.naming(what))
}

/// Rows answered on the read pool (tried twice when the database was unavailable).
async fn read<P: SqlPools>(
    pools: &P,
    s: Statement<'_>,
) -> StoreResult<Vec<<<P::Db as sqlx::Database>::Connection as Exec>::Row>> {
    retry_read(|| async { pools.read_pool().acquire().await?.rows(s.clone()).await }).await
}

/// A change on the write pool; answers the rows changed.
async fn write<P: SqlPools>(pools: &P, s: Statement<'_>) -> StoreResult<u64> {
    pools.write_pool().acquire().await?.run(s).await
}

/// On PostgreSQL, takes the user's row `FOR {mode}` (`SHARE` or `UPDATE`) until `tx` ends:
/// how a token's issue and a revocation of the user's tokens wait for each other. (SQLite's
/// writes are one at a time already.)
async fn hold_user<P: SqlPools>(
    tx: &mut <P::Db as sqlx::Database>::Connection,
    user_id: &str,
    mode: &str,
) -> StoreResult<()> {
    if !super::is_sqlite::<P::Db>() {
        let lock = format!("SELECT 1 FROM users WHERE id = $1 FOR {mode}");
        tx.rows(Statement::new(lock).bind(user_id)).await?;
    }
    Ok(())
}

/// Inserts a project or a user (`s`, into `table`) unless its id or name is another's name
/// or id, which the statement's own `NOT EXISTS` checks. On PostgreSQL that check is made in
/// the statement's snapshot, which does not see a concurrent insert not yet committed (two
/// creates could each take the other's name), so the insert first takes a lock of the
/// table that one insert at a time may hold; readers are not held up. (SQLite's writes are
/// one at a time already.)
async fn insert_named<P: SqlPools>(
    pools: &P,
    (table, what): (&str, &str),
    s: Statement<'_>,
) -> StoreResult<u64> {
    let mut tx = super::begin_write(pools.write_pool()).await?;
    if !super::is_sqlite::<P::Db>() {
        tx.run(Statement::new(format!(
            "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"
        )))
        .await?;
    }
    let rows = tx.run(s).await.map_err(|e| e.naming(what))?;
    tx.commit().await?;
    Ok(rows)
}

/// A create that wrote no row: its id or name is another's name or id (`taken` says so).
fn created(rows: u64, taken: impl FnOnce() -> String) -> StoreResult<()> {
    if rows == 0 {
        return Err(StoreError::Conflict(taken()));
    }
    Ok(())
}

fn project(r: &impl SqlRow) -> StoreResult<ProjectRecord> {
    Ok(ProjectRecord {
        id: r.text(0)?,
        name: r.text(1)?,
        create_at: r.int(2)?,
    })
}

fn user(r: &impl SqlRow) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        id: r.text(0)?,
        name: r.text(1)?,
        password_hash: r.opt_text(2)?,
        create_at: r.int(3)?,
    })
}

fn access_key(r: &impl SqlRow) -> StoreResult<AccessKeyRecord> {
    Ok(AccessKeyRecord {
        access_key: r.text(0)?,
        secret_key: r.text(1)?,
        user_id: r.text(2)?,
        user_name: r.text(3)?,
        description: r.text(4)?,
        create_at: r.int(5)?,
    })
}

const PROJECT_COLUMNS: &str = "SELECT id, name, create_at FROM projects";
const USER_COLUMNS: &str = "SELECT id, name, password_hash, create_at FROM users";
const KEY_COLUMNS: &str = "SELECT k.access_key, k.secret_key, k.user_id, u.name, \
    k.description, k.create_at FROM access_keys k JOIN users u ON u.id = k.user_id";

#[async_trait]
impl<P: SqlPools> IamStore for P {
    async fn create_project(&self, p: &ProjectRecord) -> StoreResult<()> {
        // Projects are named by id or name: neither may be another project's other one.
        let s = Statement::new(
            "INSERT INTO projects (id, name, create_at) SELECT $1, $2, $3 \
             WHERE NOT EXISTS (SELECT 1 FROM projects WHERE id = $2 OR name = $1)",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(p.create_at);
        let rows = insert_named(self, ("projects", "project"), s).await?;
        created(rows, || {
            format!("a project whose id or name is {} or {}", p.name, p.id)
        })
    }

    async fn list_projects(&self) -> StoreResult<Vec<ProjectRecord>> {
        let s = Statement::new(format!("{PROJECT_COLUMNS} ORDER BY name"));
        read(self, s).await?.iter().map(project).collect()
    }

    async fn find_project(&self, id_or_name: &str) -> StoreResult<Option<ProjectRecord>> {
        let s = Statement::new(format!(
            "{PROJECT_COLUMNS} WHERE id = $1 OR name = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(id_or_name);
        read(self, s).await?.first().map(project).transpose()
    }

    async fn create_user(&self, u: &UserRecord) -> StoreResult<()> {
        // Users are named by id or name: neither may be another user's other one.
        let s = Statement::new(
            "INSERT INTO users (id, name, password_hash, create_at) SELECT $1, $2, $3, $4 \
             WHERE NOT EXISTS (SELECT 1 FROM users WHERE id = $2 OR name = $1)",
        )
        .bind(&u.id)
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(u.create_at);
        let rows = insert_named(self, ("users", "user"), s).await?;
        created(rows, || format!("a user whose id is {}", u.name))
    }

    async fn find_user(&self, id_or_name: &str) -> StoreResult<Option<UserRecord>> {
        let s = Statement::new(format!(
            "{USER_COLUMNS} WHERE id = $1 OR name = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(id_or_name);
        read(self, s).await?.first().map(user).transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        let s = Statement::new(format!("{USER_COLUMNS} ORDER BY name"));
        read(self, s).await?.iter().map(user).collect()
    }

    async fn set_password(&self, user_id: &str, hash: &str) -> StoreResult<()> {
        let s = Statement::new("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user_id);
        if write(self, s).await? == 0 {
            return Err(StoreError::NotFound(format!("user {user_id}")));
        }
        Ok(())
    }

    async fn delete_user(&self, user_id: &str) -> StoreResult<bool> {
        let s = Statement::new("DELETE FROM users WHERE id = $1").bind(user_id);
        Ok(write(self, s).await? > 0)
    }

    async fn create_access_key(&self, k: &AccessKeyRecord) -> StoreResult<()> {
        let s = Statement::new(
            "INSERT INTO access_keys (access_key, user_id, secret_key, description, create_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&k.access_key)
        .bind(&k.user_id)
        .bind(&k.secret_key)
        .bind(&k.description)
        .bind(k.create_at);
        change(self, "access key", s).await.map(drop)
    }

    async fn find_access_key(&self, ak: &str) -> StoreResult<Option<AccessKeyRecord>> {
        let s = Statement::new(format!("{KEY_COLUMNS} WHERE k.access_key = $1")).bind(ak);
        read(self, s).await?.first().map(access_key).transpose()
    }

    async fn list_access_keys(&self, user_id: &str) -> StoreResult<Vec<AccessKeyRecord>> {
        let s = Statement::new(format!(
            "{KEY_COLUMNS} WHERE k.user_id = $1 ORDER BY k.create_at"
        ))
        .bind(user_id);
        read(self, s).await?.iter().map(access_key).collect()
    }

    async fn delete_access_key(&self, ak: &str) -> StoreResult<bool> {
        let s = Statement::new("DELETE FROM access_keys WHERE access_key = $1").bind(ak);
        Ok(write(self, s).await? > 0)
    }

    async fn upsert_policy(&self, p: &PolicyRecord) -> StoreResult<()> {
        let s = Statement::new(
            "INSERT INTO policies (name, actions, builtin) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET actions = excluded.actions, \
             builtin = excluded.builtin",
        )
        .bind(&p.name)
        .bind(to_json(&p.actions)?)
        .bind(p.builtin);
        write(self, s).await.map(drop)
    }

    async fn list_policies(&self) -> StoreResult<Vec<PolicyRecord>> {
        let s = Statement::new("SELECT name, actions, builtin FROM policies ORDER BY name");
        read(self, s)
            .await?
            .iter()
            .map(|r| {
                Ok(PolicyRecord {
                    name: r.text(0)?,
                    actions: parse_json("policy actions", &r.text(1)?)?,
                    builtin: r.boolean(2)?,
                })
            })
            .collect()
    }

    async fn delete_policy(&self, name: &str) -> StoreResult<bool> {
        let s =
            Statement::new("DELETE FROM policies WHERE name = $1 AND builtin = FALSE").bind(name);
        Ok(write(self, s).await? > 0)
    }

    async fn grant(&self, user_id: &str, project_id: &str, policy: &str) -> StoreResult<()> {
        let s = Statement::new(
            "INSERT INTO grants (user_id, project_id, policy_name) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(project_id)
        .bind(policy);
        change(self, "grant", s).await.map(drop)
    }

    async fn revoke(&self, user_id: &str, project_id: &str, policy: &str) -> StoreResult<bool> {
        let s = Statement::new(
            "DELETE FROM grants WHERE user_id = $1 AND project_id = $2 AND policy_name = $3",
        )
        .bind(user_id)
        .bind(project_id)
        .bind(policy);
        Ok(write(self, s).await? > 0)
    }

    async fn list_grants(&self, user_id: &str) -> StoreResult<Vec<(String, String)>> {
        let s = Statement::new(
            "SELECT project_id, policy_name FROM grants WHERE user_id = $1 \
             ORDER BY project_id, policy_name",
        )
        .bind(user_id);
        read(self, s)
            .await?
            .iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?)))
            .collect()
    }

    async fn project_actions(
        &self,
        user_id: &str,
        project_id: &str,
    ) -> StoreResult<Option<Vec<String>>> {
        let s = Statement::new(
            "SELECT p.actions FROM grants g JOIN policies p ON p.name = g.policy_name \
             WHERE g.user_id = $1 AND g.project_id = $2",
        )
        .bind(user_id)
        .bind(project_id);
        let rows = read(self, s).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut actions = Vec::new();
        for r in rows {
            actions.extend(parse_json::<Vec<String>>("policy actions", &r.text(0)?)?);
        }
        Ok(Some(actions))
    }

    async fn insert_token(
        &self,
        (token_hash, user_id, project_id): (&str, &str, &str),
        (issued_at, expires_at): (i64, i64),
        grounds: TokenGrounds<'_>,
    ) -> StoreResult<bool> {
        // The token, while its grounds hold. On PostgreSQL the user's row is taken first (FOR
        // SHARE) and held until the token is committed; the insert then reads the grounds in
        // a snapshot taken after it got the row. A new password or a revocation of the user's
        // tokens (which takes the row first) either comes before, and the insert finds its
        // grounds gone, or waits for the token and then finds it. (SQLite's writes are one at
        // a time already.)
        let (held, grounds) = match grounds {
            TokenGrounds::Password(hash) => ("password_hash = $6", Some(hash)),
            TokenGrounds::Token(hash) => (
                "EXISTS (SELECT 1 FROM tokens WHERE token_hash = $6 AND user_id = $2 \
                 AND revoked_at IS NULL AND expires_at > $4)",
                Some(hash),
            ),
            TokenGrounds::Unconditional => ("TRUE", None),
        };
        let mut tx = super::begin_write(self.write_pool()).await?;
        hold_user::<Self>(&mut tx, user_id, "SHARE").await?;
        let mut s = Statement::new(format!(
            "INSERT INTO tokens (token_hash, user_id, project_id, issued_at, expires_at) \
             SELECT $1, $2, $3, $4, $5 FROM users WHERE id = $2 AND {held}"
        ))
        .bind(token_hash)
        .bind(user_id)
        .bind(project_id)
        .bind(issued_at)
        .bind(expires_at);
        if let Some(hash) = grounds {
            s = s.bind(hash);
        }
        let stored = tx.run(s).await? > 0;
        tx.commit().await?;
        Ok(stored)
    }

    async fn find_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<TokenRecord>> {
        let s = Statement::new(
            "SELECT t.user_id, u.name, t.project_id, t.expires_at FROM tokens t \
             JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_ms);
        read(self, s)
            .await?
            .first()
            .map(|r| {
                Ok(TokenRecord {
                    user_id: r.text(0)?,
                    user_name: r.text(1)?,
                    project_id: r.text(2)?,
                    expires_at: r.int(3)?,
                })
            })
            .transpose()
    }

    async fn revoke_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<bool> {
        let s = Statement::new(
            "UPDATE tokens SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms)
        .bind(token_hash);
        Ok(write(self, s).await? > 0)
    }

    async fn revoke_user_tokens(&self, user_id: &str, now_ms: i64) -> StoreResult<u64> {
        // A token being issued holds the user's row (see `insert_token`): waited for here,
        // it is committed, and found by the update below.
        let mut tx = super::begin_write(self.write_pool()).await?;
        hold_user::<Self>(&mut tx, user_id, "UPDATE").await?;
        let s = Statement::new(
            "UPDATE tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms)
        .bind(user_id);
        let revoked = tx.run(s).await?;
        tx.commit().await?;
        Ok(revoked)
    }
}
