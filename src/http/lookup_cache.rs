//! Short-lived copies of what authentication reads from the database on every request:
//! access keys, tokens and grants, each trusted for [`super::auth::AuthConfig::cache_ttl`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::error::ApiError;
use crate::store::{AccessKeyRecord, Store, TokenRecord};

/// Most entries one lookup cache holds; beyond it, expired entries go, then all.
const MAX_CACHED: usize = 100_000;

/// The action patterns a user holds in a project.
pub(super) type Actions = Arc<Vec<String>>;

/// A value and when it stops being trusted.
struct Cached<T> {
    value: T,
    until: Instant,
}

/// Short-lived copies of what authentication reads from the database on every request.
/// Only found keys and tokens are kept (an unknown one is asked again, and counted as a
/// failure); grants are kept found or not.
pub(super) struct LookupCache {
    ttl: Duration,
    keys: DashMap<String, Cached<AccessKeyRecord>>,
    tokens: DashMap<String, Cached<TokenRecord>>,
    grants: DashMap<(String, String), Cached<Option<Actions>>>,
}

fn cached<K, T>(map: &DashMap<K, Cached<T>>, key: &K) -> Option<T>
where
    K: std::hash::Hash + Eq,
    T: Clone,
{
    let entry = map.get(key)?;
    (entry.until > Instant::now()).then(|| entry.value.clone())
}

impl LookupCache {
    /// How long a looked-up value is trusted.
    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }

    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            keys: DashMap::new(),
            tokens: DashMap::new(),
            grants: DashMap::new(),
        }
    }

    /// Forgets everything looked up (an emulator's reset: the users and keys it knew may be
    /// gone, or granted otherwise).
    pub(super) fn clear(&self) {
        self.keys.clear();
        self.tokens.clear();
        self.grants.clear();
    }

    fn keep<K, T>(&self, map: &DashMap<K, Cached<T>>, key: K, value: T)
    where
        K: std::hash::Hash + Eq,
    {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        if map.len() >= MAX_CACHED {
            map.retain(|_, c| c.until > now);
            if map.len() >= MAX_CACHED {
                map.clear();
            }
        }
        map.insert(
            key,
            Cached {
                value,
                until: now + self.ttl,
            },
        );
    }

    pub(super) async fn access_key(
        &self,
        store: &dyn Store,
        access_key: &str,
    ) -> Result<Option<AccessKeyRecord>, ApiError> {
        if let Some(hit) = cached(&self.keys, &access_key.to_string()) {
            return Ok(Some(hit));
        }
        let found = store.find_access_key(access_key).await?;
        if let Some(record) = &found {
            self.keep(&self.keys, access_key.to_string(), record.clone());
        }
        Ok(found)
    }

    pub(super) async fn token(
        &self,
        store: &dyn Store,
        hash: &str,
        now_ms: i64,
    ) -> Result<Option<TokenRecord>, ApiError> {
        if let Some(hit) = cached(&self.tokens, &hash.to_string()) {
            if hit.expires_at > now_ms {
                return Ok(Some(hit));
            }
        }
        let found = store.find_token(hash, now_ms).await?;
        if let Some(record) = &found {
            self.keep(&self.tokens, hash.to_string(), record.clone());
        }
        Ok(found)
    }

    pub(super) async fn project_actions(
        &self,
        store: &dyn Store,
        user_id: &str,
        project_id: &str,
    ) -> Result<Option<Actions>, ApiError> {
        let key = (user_id.to_string(), project_id.to_string());
        if let Some(hit) = cached(&self.grants, &key) {
            return Ok(hit);
        }
        let found = store
            .project_actions(user_id, project_id)
            .await?
            .map(Arc::new);
        self.keep(&self.grants, key, found.clone());
        Ok(found)
    }

    /// Forgets a token at once (it was revoked here).
    pub(super) fn forget_token(&self, token_hash: &str) {
        self.tokens.remove(token_hash);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::LookupCache;
    use crate::store::{IamStore, SqliteStore};

    async fn store_with_admin() -> (tempfile::TempDir, SqliteStore, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("t.db").display().to_string())
            .await
            .expect("store");
        let crate::iam::Bootstrap::Created(profile) =
            crate::iam::bootstrap_admin(&store, None, "http://127.0.0.1:1")
                .await
                .expect("bootstrap")
        else {
            panic!("a fresh database has no administrator");
        };
        (dir, store, profile.access_key)
    }

    #[tokio::test]
    async fn a_deleted_key_is_remembered_for_the_ttl_only() {
        let (_dir, store, key) = store_with_admin().await;
        let remembering = LookupCache::new(Duration::from_secs(60));
        let forgetting = LookupCache::new(Duration::ZERO);
        for cache in [&remembering, &forgetting] {
            let found = cache.access_key(&store, &key).await.expect("lookup");
            assert!(found.is_some());
        }
        assert!(store.delete_access_key(&key).await.expect("delete"));
        let kept = remembering.access_key(&store, &key).await.expect("lookup");
        assert!(kept.is_some(), "within the ttl the cached key answers");
        let gone = forgetting.access_key(&store, &key).await.expect("lookup");
        assert!(gone.is_none(), "a zero ttl asks the database every time");
    }

    #[tokio::test]
    async fn grants_are_cached_found_or_not() {
        let (_dir, store, key) = store_with_admin().await;
        let cache = LookupCache::new(Duration::from_secs(60));
        let user = store
            .find_access_key(&key)
            .await
            .expect("lookup")
            .expect("admin key")
            .user_id;
        let project = crate::iam::create_project(&store, "other", None)
            .await
            .expect("project");
        let before = cache
            .project_actions(&store, &user, &project.id)
            .await
            .expect("lookup");
        assert!(before.is_none());
        store
            .grant(&user, &project.id, crate::iam::FULL_ACCESS)
            .await
            .expect("grant");
        let cached = cache
            .project_actions(&store, &user, &project.id)
            .await
            .expect("lookup");
        assert!(cached.is_none(), "the refusal is remembered for the ttl");
        let fresh = LookupCache::new(Duration::ZERO)
            .project_actions(&store, &user, &project.id)
            .await
            .expect("lookup");
        assert!(fresh.is_some());
    }
}
