//! Ephemeral starts: the memory-backed database of `--in-memory`, the emulator's settings
//! from `serve`'s flags, and what the server tells its caller once it answers
//! (`--ready-file`, `--print-config`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use super::control::StartState;
use super::faults::RuleSpec;
use super::{env_lines, Emulator};
use crate::config::ServeConfig;
use crate::iam::{demo, Profile};

/// `--database-url`'s default, the only value `--in-memory` goes with.
pub const DEFAULT_DATABASE: &str = "litejobs.db";

/// `--admin-credentials`' default, which an `--in-memory` start does not write.
pub const DEFAULT_ADMIN_FILE: &str = "litejobs-admin.json";

/// A private directory on a memory-backed file system (`/dev/shm`, else the temporary
/// directory), removed with everything in it when this is dropped.
pub struct MemoryDir {
    path: PathBuf,
    /// [`ALIVE`] in the directory, locked while the process lives (the system lets the lock
    /// go with the process, however it ends).
    _alive: Alive,
}

/// A lock held on a file while it is kept.
#[cfg(unix)]
type Alive = nix::fcntl::Flock<std::fs::File>;
#[cfg(not(unix))]
type Alive = std::fs::File;

/// `file`, locked for as long as it is kept.
fn hold(file: std::fs::File) -> std::io::Result<Alive> {
    #[cfg(unix)]
    {
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| std::io::Error::from(errno))
    }
    #[cfg(not(unix))]
    {
        Ok(file)
    }
}

/// The file in an in-memory server's directory whose lock says the server lives: seen from
/// any process that shares the file system, where its process id may mean nothing (another
/// PID namespace: a container sharing `/dev/shm`).
const ALIVE: &str = "alive.lock";

/// How old a directory without a lock must be before its process id alone may say it is
/// dead (a server makes its directory, then its lock, a moment later).
const UNLOCKED_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

impl MemoryDir {
    pub fn create() -> anyhow::Result<Self> {
        // Its accounts go with the process: their passwords need no costly hashes.
        crate::iam::use_light_password_hashing();
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            tracing::warn!("no /dev/shm: the in-memory database goes to the temporary directory");
            std::env::temp_dir()
        };
        Self::create_in(&base)
    }

    fn create_in(base: &std::path::Path) -> anyhow::Result<Self> {
        sweep(base);
        let path = base.join(format!(
            "litejobs-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let alive = std::fs::File::create(path.join(ALIVE))
            .and_then(hold)
            .with_context(|| format!("cannot lock {}", path.join(ALIVE).display()))?;
        Ok(Self {
            path,
            _alive: alive,
        })
    }

    /// The SQLite URL of the database in this directory.
    pub fn database_url(&self) -> String {
        format!("sqlite://{}", self.path.join("litejobs.db").display())
    }
}

/// Removes the directories of in-memory servers that ended without removing theirs (killed
/// with SIGKILL): `litejobs-<pid>-<id>` whose [`ALIVE`] lock nobody holds (or, without one,
/// a directory of an earlier version: old, and whose process is gone).
fn sweep(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("litejobs-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let dead = match std::fs::File::open(entry.path().join(ALIVE)) {
            Ok(alive) => hold(alive).is_ok(),
            Err(_) => {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > UNLOCKED_GRACE));
                old && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            }
        };
        if dead {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for MemoryDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The emulator as the flags say (without the demo account, which the database decides);
/// fault rules and the seed are read and checked here, so that a mistake stops the start.
pub fn emulator(config: &ServeConfig) -> anyhow::Result<Emulator> {
    let emulator = Emulator {
        region: config.region.clone(),
        demo_account: false,
        control: config.simulate,
        strict: config.strict,
        journal: super::journal::Journal::new(config.journal_size as usize),
        start_state: None,
        faults: super::faults::Faults::default(),
        erased: super::Erased::default(),
    };
    if !config.simulate {
        anyhow::ensure!(
            config.faults.is_empty() && config.seed.is_none(),
            "--fault and --seed need --simulate"
        );
        return Ok(emulator);
    }
    for raw in &config.faults {
        let spec = RuleSpec::parse_flag(raw).map_err(|e| anyhow::anyhow!("--fault {raw}: {e}"))?;
        emulator
            .faults
            .add(spec)
            .map_err(|e| anyhow::anyhow!("--fault {raw}: {e}"))?;
    }
    let seed = match &config.seed {
        Some(path) => {
            let raw = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the seed {}", path.display()))?;
            let seed: super::seed::Seed = serde_json::from_str(&raw)
                .with_context(|| format!("{} is not a seed document", path.display()))?;
            seed.check()
                .with_context(|| format!("the seed {}", path.display()))?;
            Some(seed)
        }
        None => None,
    };
    Ok(Emulator {
        start_state: Some(StartState {
            simulation: crate::worker::SimulationConfig::of(config),
            seed,
        }),
        ..emulator
    })
}

/// What the ready file and `--print-config` hold.
#[derive(Debug, Serialize)]
pub struct ReadyInfo {
    pub endpoint: String,
    pub region: String,
    /// The account to call the API with: the demo account when the server accepts it,
    /// else the administrator.
    pub project_id: String,
    pub access_key: String,
    pub secret_key: String,
    /// The administrator (the control API's caller), when its credentials are known.
    pub admin: Option<Profile>,
    /// The environment that points the official SDKs here.
    pub env: BTreeMap<String, String>,
}

/// The ready information of a server at `endpoint`.
pub fn ready_info(
    endpoint: &str,
    emulator: &Emulator,
    admin: Option<&Profile>,
) -> Option<ReadyInfo> {
    let (project_id, access_key, secret_key) = if emulator.demo_account {
        (
            demo::PROJECT_ID.to_string(),
            demo::ACCESS_KEY.to_string(),
            demo::SECRET_KEY.to_string(),
        )
    } else {
        let admin = admin?;
        (
            admin.project_id.clone(),
            admin.access_key.clone(),
            admin.secret_key.clone(),
        )
    };
    let env = env_lines(endpoint, &emulator.region, &access_key, &secret_key)
        .into_iter()
        .collect();
    Some(ReadyInfo {
        endpoint: endpoint.to_string(),
        region: emulator.region.clone(),
        project_id,
        access_key,
        secret_key,
        admin: admin.map(|a| Profile {
            endpoint: endpoint.to_string(),
            ..a.clone()
        }),
        env,
    })
}

/// Writes the ready file and prints the configuration line, as the flags ask.
pub fn announce(
    config: &ServeConfig,
    endpoint: &str,
    emulator: &Emulator,
    admin: Option<&Profile>,
) -> anyhow::Result<()> {
    if config.ready_file.is_none() && !config.print_config {
        return Ok(());
    }
    let info = ready_info(endpoint, emulator, admin).context(
        "no credentials to announce: the administrator's are not readable \
         (--admin-credentials) and the demo account is off",
    )?;
    let line = serde_json::to_string(&info)?;
    if let Some(path) = &config.ready_file {
        // Written whole under another name, then renamed: a reader never sees half of it.
        let tmp = path.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("cannot write the ready file {}", tmp.display()))?;
        file.write_all(line.as_bytes())?;
        file.write_all(b"\n")?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    if config.print_config {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory is swept when no process holds its lock, whatever its process id says
    /// (another PID namespace's ids mean nothing here), and kept while one holds it.
    #[test]
    fn in_memory_directories_are_swept_by_their_locks_not_their_process_ids() {
        let base = tempfile::tempdir().expect("base");
        let live = MemoryDir::create_in(base.path()).expect("a live server's");
        // A process id this system does not have, whose server lives elsewhere.
        let elsewhere = base.path().join("litejobs-999999999-elsewhere");
        std::fs::create_dir(&elsewhere).expect("dir");
        let held = std::fs::File::create(elsewhere.join(ALIVE))
            .and_then(hold)
            .expect("locked");
        // This process's id, but a lock nobody holds: a server that ended.
        let ended = base
            .path()
            .join(format!("litejobs-{}-ended", std::process::id()));
        std::fs::create_dir(&ended).expect("dir");
        std::fs::File::create(ended.join(ALIVE)).expect("lock file");
        sweep(base.path());
        assert!(live.path.is_dir(), "a live server's directory is kept");
        assert!(elsewhere.is_dir(), "a locked directory is kept");
        assert!(!ended.exists(), "an unlocked one is swept");
        drop(held);
        sweep(base.path());
        assert!(!elsewhere.exists(), "swept once its lock is let go");
    }
}
