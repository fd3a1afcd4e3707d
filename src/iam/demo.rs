//! The demo account of `serve --simulate` on a loopback address: fixed, documented
//! credentials, so that examples can be pasted. They are public, so only such a server
//! accepts them; any other start takes them away from the database.

use super::{create_access_key, create_project, create_user, FULL_ACCESS};
use crate::secrets::Sealer;
use crate::store::{Store, StoreError};

pub const PROJECT_ID: &str = "5f3c9e2a7d104b6c8e1f0a2b3c4d5e6f";
pub const PROJECT_NAME: &str = "demo";
pub const USER: &str = "demo";
pub const PASSWORD: &str = "demo-password";
pub const ACCESS_KEY: &str = "LITEJOBSDEMOACCESSKY";
pub const SECRET_KEY: &str = "LiteJobsDemoSecretKey0000000000000000000";

/// True when `e` says a row is already there (another replica made it meanwhile).
fn already_there(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<StoreError>(),
        Some(StoreError::Conflict(_))
    )
}

/// True when the demo project is there (by its id, not a project named so).
async fn project_there(store: &dyn Store) -> anyhow::Result<bool> {
    Ok(store
        .find_project(PROJECT_ID)
        .await?
        .is_some_and(|p| p.id == PROJECT_ID))
}

/// True for the user the demo account made: it holds the demo key, or the demo password
/// (an administrator's user of that name is not given the public key).
async fn is_the_demo_user(
    store: &dyn Store,
    user: &crate::store::UserRecord,
) -> anyhow::Result<bool> {
    if user.name != USER {
        return Ok(false);
    }
    if let Some(key) = store.find_access_key(ACCESS_KEY).await? {
        return Ok(key.user_id == user.id);
    }
    Ok(user
        .password_hash
        .as_deref()
        .is_some_and(|hash| super::verify_password(PASSWORD, hash)))
}

/// Makes the demo project, user, grant and access key, those that are missing. Replicas
/// starting together may all do it: what another made first is taken as it is. False, with
/// a warning, when another project holds the demo project's name or id, or another user
/// the demo user's name (made by an administrator): there is no demo account then.
pub async fn ensure(store: &dyn Store, sealer: Option<&Sealer>) -> anyhow::Result<bool> {
    if !project_there(store).await? {
        match create_project(store, PROJECT_NAME, Some(PROJECT_ID)).await {
            Err(e) if !already_there(&e) => return Err(e),
            _ => {}
        }
        if !project_there(store).await? {
            tracing::warn!(
                project_id = PROJECT_ID,
                name = PROJECT_NAME,
                "another project is named like the demo project (its name or id): \
                 no demo account"
            );
            return Ok(false);
        }
    }
    let user = match store.find_user(USER).await? {
        Some(u) if is_the_demo_user(store, &u).await? => u,
        Some(_) => {
            tracing::warn!(
                user = USER,
                "a user named like the demo user, with another password, is an \
                 administrator's: no demo account"
            );
            return Ok(false);
        }
        None => match create_user(store, USER, Some(PASSWORD)).await {
            Ok(u) => u,
            Err(e) if already_there(&e) => store
                .find_user(USER)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the demo user vanished as it was made"))?,
            Err(e) => return Err(e),
        },
    };
    store.grant(&user.id, PROJECT_ID, FULL_ACCESS).await?;
    if store.find_access_key(ACCESS_KEY).await?.is_none() {
        let fixed = Some((ACCESS_KEY, SECRET_KEY));
        let description = "demo key of serve --simulate";
        match create_access_key(store, sealer, &user, description, fixed).await {
            Err(e) if !already_there(&e) => return Err(e),
            _ => {}
        }
    }
    Ok(true)
}

/// Takes the demo account's access key, tokens and grant away, if an earlier
/// `serve --simulate` on loopback made them: its credentials are public, and this server
/// does not accept them.
pub async fn retire(store: &dyn Store) -> anyhow::Result<()> {
    let Some(key) = store.find_access_key(ACCESS_KEY).await? else {
        return Ok(());
    };
    store.delete_access_key(ACCESS_KEY).await?;
    store
        .revoke_user_tokens(&key.user_id, crate::domain::now_ms())
        .await?;
    store.revoke(&key.user_id, PROJECT_ID, FULL_ACCESS).await?;
    tracing::warn!(
        access_key = ACCESS_KEY,
        "removed the demo account's access key, tokens and grant: its credentials are \
         public, and only `serve --simulate` on a loopback address accepts them"
    );
    Ok(())
}
