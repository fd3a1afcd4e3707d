//! Identity operations shared by the server's start-up, the token API and the admin
//! commands: users with hashed passwords, access keys, projects, policies and grants.

pub mod demo;

use anyhow::{bail, Context};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distributions::Alphanumeric;
use rand::Rng;

use crate::domain::now_ms;
use crate::domain::permission::{valid_pattern, BUILTIN_POLICIES};
use crate::secrets::Sealer;
use crate::store::{AccessKeyRecord, PolicyRecord, ProjectRecord, Store, StoreError, UserRecord};

/// Name of the built-in policy that grants everything.
pub const FULL_ACCESS: &str = "ModelArts FullAccess";
/// Name of the built-in read-only policy.
pub const READ_ONLY: &str = "ModelArts ReadOnlyAccess";

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// A new access key id: 20 upper-case letters and digits, as the cloud's.
pub fn new_access_key() -> String {
    random_string(20, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
}

/// A new secret key: 40 letters and digits.
pub fn new_secret_key() -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// A new project id: 32 lower-case hex digits, as the cloud's.
pub fn new_project_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A new random password for generated accounts.
pub fn new_password() -> String {
    random_string(
        24,
        b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789",
    )
}

/// Hash passwords with light Argon2id parameters from now on: for an in-memory emulator,
/// whose accounts go with the process, so that it starts in milliseconds. (Hashes carry
/// their parameters; verifying reads them from the hash.)
static LIGHT_HASHING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// See [`LIGHT_HASHING`].
pub fn use_light_password_hashing() {
    LIGHT_HASHING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Argon2id hash of a password in PHC string form.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let argon2 = if LIGHT_HASHING.load(std::sync::atomic::Ordering::Relaxed) {
        let params = argon2::Params::new(1024, 1, 1, None)
            .map_err(|e| anyhow::anyhow!("bad Argon2 parameters: {e}"))?;
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
    } else {
        Argon2::default()
    };
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash password: {e}"))
}

/// The hash of a random password, made once, with the parameters new passwords get: a
/// sign-in naming no user (or one without a password) is checked against it, so that it
/// costs what a wrong password costs and its answer's time does not tell that the name is
/// unknown.
pub fn decoy_password_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&crate::domain::ids::new_id()).unwrap_or_default())
}

/// True when `password` matches the stored hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Makes sure the built-in policies exist with their current actions.
pub async fn ensure_builtin_policies(store: &dyn Store) -> anyhow::Result<()> {
    for (name, actions) in BUILTIN_POLICIES {
        store
            .upsert_policy(&PolicyRecord {
                name: name.to_string(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
                builtin: true,
            })
            .await?;
    }
    Ok(())
}

/// True for a project name: 1 to 64 characters, none of them a control character.
pub fn project_name_ok(name: &str) -> bool {
    crate::domain::ids::bounded("name", name).is_ok()
}

/// Creates a project; a random id when none is given.
pub async fn create_project(
    store: &dyn Store,
    name: &str,
    id: Option<&str>,
) -> anyhow::Result<ProjectRecord> {
    let id = id.map_or_else(new_project_id, str::to_string);
    crate::domain::ProjectId::parse(&id)?;
    anyhow::ensure!(
        project_name_ok(name),
        "a project name is 1 to 64 characters, none of them a control character"
    );
    let project = ProjectRecord {
        id,
        name: name.to_string(),
        create_at: now_ms(),
    };
    store.create_project(&project).await?;
    Ok(project)
}

/// Refuses a new user's name or password: a name outside the pattern, or one of the audit
/// trail's own (`unknown`, `cli`); an empty password.
pub fn check_new_user(name: &str, password: Option<&str>) -> Result<(), String> {
    if !crate::domain::ids::is_simple_name(name) {
        return Err("a user name must match ^[-_.a-zA-Z0-9]{1,64}$".into());
    }
    let reserved = [crate::audit::UNKNOWN, crate::audit::ADMIN];
    if reserved.contains(&name) {
        return Err(format!(
            "the user names {} are the audit trail's own",
            reserved.join(" and ")
        ));
    }
    password.map_or(Ok(()), check_password)
}

/// Refuses a password no one should sign in with: an empty one.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.is_empty() {
        return Err("the password must not be empty".into());
    }
    Ok(())
}

/// Creates a user, with a password hash when a password is given.
pub async fn create_user(
    store: &dyn Store,
    name: &str,
    password: Option<&str>,
) -> anyhow::Result<UserRecord> {
    check_new_user(name, password).map_err(anyhow::Error::msg)?;
    let user = UserRecord {
        id: uuid::Uuid::new_v4().simple().to_string(),
        name: name.to_string(),
        password_hash: password.map(hash_password).transpose()?,
        create_at: now_ms(),
    };
    store.create_user(&user).await?;
    Ok(user)
}

/// Creates an access key for a user; a random pair unless one is given. The secret is
/// stored sealed when there is a master key; the answer holds it in the clear.
pub async fn create_access_key(
    store: &dyn Store,
    sealer: Option<&Sealer>,
    user: &UserRecord,
    description: &str,
    fixed: Option<(&str, &str)>,
) -> anyhow::Result<AccessKeyRecord> {
    let (ak, sk) = fixed.map_or_else(
        || (new_access_key(), new_secret_key()),
        |(a, s)| (a.to_string(), s.to_string()),
    );
    anyhow::ensure!(
        !ak.is_empty() && ak.len() <= 64 && ak.bytes().all(|b| b.is_ascii_alphanumeric()),
        "an access key is 1 to 64 letters or digits"
    );
    anyhow::ensure!(sk.len() >= 16, "a secret key has at least 16 characters");
    let key = AccessKeyRecord {
        access_key: ak,
        secret_key: sk,
        user_id: user.id.clone(),
        user_name: user.name.clone(),
        description: description.to_string(),
        create_at: now_ms(),
    };
    let stored = match sealer {
        Some(sealer) => AccessKeyRecord {
            secret_key: sealer.seal(&key.access_key, &key.secret_key)?,
            ..key.clone()
        },
        None => key.clone(),
    };
    store.create_access_key(&stored).await?;
    Ok(key)
}

/// Creates or replaces a custom policy.
pub async fn put_policy(store: &dyn Store, name: &str, actions: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty() && name.len() <= 64,
        "a policy name is 1 to 64 characters"
    );
    if BUILTIN_POLICIES.iter().any(|(n, _)| *n == name) {
        bail!("{name} is a built-in policy and cannot be changed");
    }
    for a in actions {
        anyhow::ensure!(
            valid_pattern(a),
            "{a} is no action pattern that grants an action (the actions: {})",
            crate::domain::Action::ALL.map(|a| a.as_str()).join(", ")
        );
    }
    store
        .upsert_policy(&PolicyRecord {
            name: name.to_string(),
            actions: actions.to_vec(),
            builtin: false,
        })
        .await?;
    Ok(())
}

/// Credentials the first start writes for the administrator; also the CLI's profile format.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    pub endpoint: String,
    pub project_id: String,
    pub access_key: String,
    pub secret_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// What `bootstrap_admin` did.
pub enum Bootstrap {
    /// Users already existed; nothing was created.
    Existing,
    /// An administrator was created with this profile.
    Created(Profile),
}

/// On a database without users, creates the administrator `admin` with a key, a `default`
/// project and full access to it.
pub async fn bootstrap_admin(
    store: &dyn Store,
    sealer: Option<&Sealer>,
    endpoint: &str,
) -> anyhow::Result<Bootstrap> {
    ensure_builtin_policies(store).await?;
    if !store.list_users().await?.is_empty() {
        return Ok(Bootstrap::Existing);
    }
    let password = new_password();
    let user = match create_user(store, "admin", Some(&password)).await {
        Ok(user) => user,
        // Another replica created it first.
        Err(e)
            if matches!(
                e.downcast_ref::<StoreError>(),
                Some(StoreError::Conflict(_))
            ) =>
        {
            return Ok(Bootstrap::Existing)
        }
        Err(e) => return Err(e),
    };
    let project = match store.find_project("default").await? {
        Some(p) => p,
        None => create_project(store, "default", None).await?,
    };
    store.grant(&user.id, &project.id, FULL_ACCESS).await?;
    let key = create_access_key(store, sealer, &user, "created at first start", None)
        .await
        .context("cannot create the administrator's access key")?;
    Ok(Bootstrap::Created(Profile {
        endpoint: endpoint.to_string(),
        project_id: project.id,
        access_key: key.access_key,
        secret_key: key.secret_key,
        user_name: Some(user.name),
        password: Some(password),
    }))
}

/// What [`write_profile`] does with a file already at its path: a profile's secret key is
/// shown nowhere else, so it is never lost without being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Write nothing, and say so.
    Refuse,
    /// Rename it to `<file>.replaced-<epoch ms>` first (answered), then write.
    KeepAside,
    /// Write over it (asked for).
    Replace,
}

/// Why a profile is not written over the file at `path`, and what to do instead.
pub fn profile_exists(path: &std::path::Path) -> String {
    format!(
        "{} exists (another profile's secret key may be only there): give another file, or \
         --force to replace it",
        path.display()
    )
}

/// Writes a profile to a file only its owner can read (its folder made, only its owner's,
/// when missing); answers where a file it found there was kept ([`IfExists::KeepAside`]).
pub fn write_profile(
    path: &std::path::Path,
    profile: &Profile,
    if_exists: IfExists,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    use std::io::Write;
    let json = serde_json::to_vec_pretty(profile)?;
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(folder)
            .with_context(|| format!("cannot make the folder {}", folder.display()))?;
    }
    let mut kept = None;
    let found = std::fs::symlink_metadata(path).ok().map(|m| m.file_type());
    if found.is_some_and(|k| !k.is_file() && !k.is_symlink()) {
        // A device, a pipe, a folder: no profile to keep, and nothing to write a secret in.
        anyhow::bail!(
            "{} is not a file: give the path of a file to write the profile to",
            path.display()
        );
    }
    if if_exists == IfExists::KeepAside && found.is_some() {
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".replaced-{}", crate::domain::now_ms()));
        let aside = std::path::PathBuf::from(aside);
        std::fs::rename(path, &aside).with_context(|| {
            format!(
                "{} holds another profile, which cannot be kept aside as {}",
                path.display(),
                aside.display()
            )
        })?;
        kept = Some(aside);
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if if_exists == IfExists::Refuse {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        let said = if e.kind() == std::io::ErrorKind::AlreadyExists {
            profile_exists(path)
        } else {
            format!("cannot write {}", path.display())
        };
        anyhow::Error::new(e).context(said)
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(&json)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file already there is kept aside; a folder or a pipe there is neither moved nor
    /// written to: there is no profile in it to keep, and no place for a secret.
    #[cfg(unix)]
    #[test]
    fn a_profile_keeps_a_file_aside_and_touches_nothing_else() {
        let dir = tempfile::tempdir().expect("dir");
        let profile = Profile {
            endpoint: "http://127.0.0.1:8080".into(),
            project_id: "p".into(),
            access_key: "AK".into(),
            secret_key: "SK".into(),
            user_name: None,
            password: None,
        };
        let file = dir.path().join("admin.json");
        std::fs::write(&file, "older").expect("older");
        let kept = write_profile(&file, &profile, IfExists::KeepAside)
            .expect("written")
            .expect("kept aside");
        assert_eq!(std::fs::read_to_string(kept).expect("read"), "older");
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).expect("folder");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        for path in [&folder, &fifo] {
            for if_exists in [IfExists::KeepAside, IfExists::Replace] {
                let refused = write_profile(path, &profile, if_exists).expect_err("refused");
                assert!(refused.to_string().contains("is not a file"), "{refused}");
            }
        }
        assert!(folder.is_dir() && fifo.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(left.len(), 4, "nothing else moved: {left:?}");
    }

    #[test]
    fn the_decoy_is_a_real_hash_of_new_passwords_parameters() {
        let decoy = PasswordHash::new(decoy_password_hash()).expect("a PHC string");
        let real = hash_password("s3cret").expect("hashes");
        let real = PasswordHash::new(&real).expect("a PHC string");
        assert_eq!(decoy.algorithm, real.algorithm);
        assert_eq!(decoy.params, real.params);
        assert!(!verify_password("s3cret", decoy_password_hash()));
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("s3cret").expect("hashes");
        assert!(verify_password("s3cret", &hash));
        assert!(!verify_password("other", &hash));
        assert!(!verify_password("s3cret", "not a hash"));
    }

    #[test]
    fn light_hashes_verify_and_say_their_parameters() {
        let light = {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            let params = argon2::Params::new(1024, 1, 1, None).expect("params");
            Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(b"s3cret", &salt)
                .expect("hash")
                .to_string()
        };
        assert!(light.contains("m=1024,t=1,p=1"), "{light}");
        assert!(verify_password("s3cret", &light));
        assert!(!verify_password("other", &light));
    }

    #[test]
    fn generated_keys_have_the_cloud_shape() {
        let ak = new_access_key();
        assert_eq!(ak.len(), 20);
        assert!(ak
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        assert_eq!(new_secret_key().len(), 40);
        assert_eq!(new_project_id().len(), 32);
    }
}
