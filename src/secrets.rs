//! Secret keys at rest. The HMAC check needs each access key's secret in the clear, so the
//! store keeps it sealed with AES-256-GCM under a master key that lives outside the
//! database (bound to its access key id as associated data): a copy of the database alone
//! cannot sign requests.
//!
//! The master key comes from `LITEJOBS_MASTER_KEY` (base64 of 32 bytes), else from the file
//! `LITEJOBS_MASTER_KEY_FILE` names, else, for a SQLite database, from `<database>.key`
//! beside it (created, mode 0600, when missing). A PostgreSQL store without a configured key
//! keeps secrets unsealed and says so at start: replicas must share one key.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;

/// Prefix of a sealed secret as stored.
const SEALED_PREFIX: &str = "sealed:v1:";

/// Seals and opens secret keys with the master key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<master key>)")
    }
}

fn decode_key(raw: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = B64
        .decode(raw.trim())
        .context("the master key is not base64")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the master key must be 32 bytes"))
}

/// Writes a new random master key to `path` (mode 0600) unless it exists.
fn create_key_file(path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(B64.encode(key).as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "created the master key that seals secret keys; back it up with the database");
            Ok(())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

impl Sealer {
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// The sealer for a database, per the rules of this module; `None` when no master key
    /// is configured for a PostgreSQL database. Checked against a secret the database holds
    /// sealed, if any: a database restored without its own key (or given another's) is
    /// refused with what to do, rather than served with every access key refused.
    pub async fn for_database(
        database_url: &str,
        store: &dyn crate::store::Store,
    ) -> anyhow::Result<Option<Self>> {
        let sealed = one_sealed_secret(store).await?;
        let sealer = match std::env::var("LITEJOBS_MASTER_KEY") {
            Ok(raw) => Some(Self::new(decode_key(&raw)?)),
            Err(_) => match key_file(database_url, sealed.is_some())? {
                Some(path) => {
                    let raw = std::fs::read_to_string(&path).with_context(|| {
                        let restore = if sealed.is_some() {
                            ", which seals the secret keys this database holds: restore it \
                             from the database's backup"
                        } else {
                            ""
                        };
                        format!("cannot read the master key {}{restore}", path.display())
                    })?;
                    Some(Self::new(decode_key(&raw)?))
                }
                None => None,
            },
        };
        if let Some((access_key, stored)) = &sealed {
            match &sealer {
                Some(sealer) => {
                    sealer.open(access_key, stored).map_err(|_| {
                        anyhow::anyhow!(
                            "the master key does not open the secret keys this database holds: \
                             it is another database's; use the key backed up with this one"
                        )
                    })?;
                }
                None => anyhow::bail!(
                    "the database holds sealed secret keys but no master key is configured: \
                     set LITEJOBS_MASTER_KEY or LITEJOBS_MASTER_KEY_FILE"
                ),
            }
        }
        Ok(sealer)
    }

    /// Seals `secret` for storage, bound to its access key id.
    pub fn seal(&self, access_key: &str, secret: &str) -> anyhow::Result<String> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: access_key.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("cannot seal a secret key"))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(format!("{SEALED_PREFIX}{}", B64.encode(out)))
    }

    /// Opens a stored secret; an unsealed one (stored without a master key) is returned as is.
    pub fn open(&self, access_key: &str, stored: &str) -> anyhow::Result<String> {
        let Some(encoded) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_string());
        };
        let bytes = B64
            .decode(encoded)
            .context("a sealed secret is not base64")?;
        anyhow::ensure!(bytes.len() > 12, "a sealed secret is too short");
        let (nonce, sealed) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: access_key.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!("cannot open the secret of {access_key}: wrong master key?")
            })?;
        String::from_utf8(plain).context("a sealed secret is not UTF-8")
    }
}

/// The master key's file: `LITEJOBS_MASTER_KEY_FILE`, else `<database>.key` beside a SQLite
/// database, made when missing, unless the database holds sealed secrets already (a new key
/// would not open them).
fn key_file(database_url: &str, holds_sealed: bool) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = std::env::var_os("LITEJOBS_MASTER_KEY_FILE") {
        return Ok(Some(PathBuf::from(path)));
    }
    let Some(database) = crate::store::sqlite_file(database_url) else {
        return Ok(None);
    };
    let mut name = database.into_os_string();
    name.push(".key");
    let path = PathBuf::from(name);
    if !path.exists() && !holds_sealed {
        create_key_file(&path)?;
    }
    Ok(Some(path))
}

/// An access key whose secret the store holds sealed, with that secret, if there is one.
async fn one_sealed_secret(
    store: &dyn crate::store::Store,
) -> anyhow::Result<Option<(String, String)>> {
    for user in store.list_users().await? {
        for key in store.list_access_keys(&user.id).await? {
            if key.secret_key.starts_with(SEALED_PREFIX) {
                return Ok(Some((key.access_key, key.secret_key)));
            }
        }
    }
    Ok(None)
}

/// Opens a stored secret without a sealer: only unsealed secrets can be read.
pub fn open_unsealed(access_key: &str, stored: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        !stored.starts_with(SEALED_PREFIX),
        "the secret of {access_key} is sealed but no master key is configured \
         (LITEJOBS_MASTER_KEY or LITEJOBS_MASTER_KEY_FILE)"
    );
    Ok(stored.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_access_key() {
        let sealer = Sealer::new([7; 32]);
        let sealed = sealer.seal("AK1", "the-secret").expect("seal");
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("the-secret"));
        assert_eq!(sealer.open("AK1", &sealed).expect("open"), "the-secret");
        assert!(
            sealer.open("AK2", &sealed).is_err(),
            "bound to its access key"
        );
        assert!(
            Sealer::new([8; 32]).open("AK1", &sealed).is_err(),
            "bound to the master key"
        );
        assert_ne!(
            sealed,
            sealer.seal("AK1", "the-secret").expect("seal"),
            "fresh nonce"
        );
        assert_eq!(sealer.open("AK1", "plain").expect("legacy"), "plain");
        assert!(open_unsealed("AK1", &sealed).is_err());
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        use crate::store::sqlite_file;
        assert_eq!(
            sqlite_file("litejobs.db"),
            Some(PathBuf::from("litejobs.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:///tmp/x.db?mode=rwc"),
            Some(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(
            sqlite_file("sqlite://rel.db"),
            Some(PathBuf::from("rel.db"))
        );
        assert_eq!(sqlite_file("postgres://h/db"), None);
        assert_eq!(sqlite_file("mysql://h/db"), None);
        assert_eq!(sqlite_file("sqlite::memory:"), None);
    }
}
