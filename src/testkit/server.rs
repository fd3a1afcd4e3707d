//! `litejobs serve` as a child process on a loopback port: its memory is its own and can be
//! read from `/proc`, and it can be stopped cleanly or killed.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Lines of the server's log kept to explain a failure.
const LOG_TAIL: usize = 40;
/// Longest wait for the server to listen (a first start may build indexes).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the server to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `litejobs serve`.
pub struct ServerProcess {
    child: Child,
    pid: u32,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// `http://ADDR`, or `https://ADDR` when it serves TLS.
    pub endpoint: String,
    log_tail: Arc<Mutex<VecDeque<String>>>,
}

/// The scheme and address in the server's `litejobs listening on http://ADDR` (or
/// `https://`) log line, as text or JSON logs write it.
fn listening_address(line: &str) -> Option<(&'static str, std::net::SocketAddr)> {
    let (scheme, rest) = match line.split_once("listening on http://") {
        Some((_, rest)) => ("http", rest),
        None => ("https", line.split_once("listening on https://")?.1),
    };
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    Some((scheme, addr.parse().ok()?))
}

fn keep_line(tail: &Mutex<VecDeque<String>>, line: String) {
    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
    if tail.len() == LOG_TAIL {
        tail.pop_front();
    }
    tail.push_back(line);
}

impl ServerProcess {
    /// Runs `exe serve --addr 127.0.0.1:0 --rate-limit 0 --database-url URL` and `args`, in
    /// `dir`, and waits until it listens.
    pub async fn serve(
        exe: &Path,
        dir: &Path,
        database_url: &str,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::serve_with_env(exe, dir, database_url, args, &[]).await
    }

    /// [`ServerProcess::serve`] with more environment variables.
    pub async fn serve_with_env(
        exe: &Path,
        dir: &Path,
        database_url: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut all: Vec<OsString> = ["serve", "--addr", "127.0.0.1:0", "--rate-limit", "0"]
            .iter()
            .map(OsString::from)
            .collect();
        all.push("--database-url".into());
        all.push(database_url.into());
        all.extend(args.iter().map(OsString::from));
        Self::spawn_with_env(exe, &all, dir, env).await
    }

    /// Runs `exe` with `args` (a `serve` command line listening on a loopback address) in
    /// `dir`, and waits until it listens.
    pub async fn spawn(exe: &Path, args: &[OsString], dir: &Path) -> anyhow::Result<Self> {
        Self::spawn_with_env(exe, args, dir, &[]).await
    }

    /// [`ServerProcess::spawn`] with more environment variables (which builds that do not
    /// know them ignore, where a flag would stop them).
    pub async fn spawn_with_env(
        exe: &Path,
        args: &[OsString],
        dir: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("LITEJOBS_CHILD_LOG").unwrap_or_else(|_| "info".to_string()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stderr = child.stderr.take().context("no server stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let log_tail = Arc::new(Mutex::new(VecDeque::new()));
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                let addr = listening_address(&line);
                keep_line(&log_tail, line);
                if addr.is_some() {
                    return Ok::<_, std::io::Error>(addr);
                }
            }
            Ok(None)
        })
        .await;
        let (scheme, addr) = match found {
            Ok(Ok(Some(found))) => found,
            Ok(Ok(None) | Err(_)) => {
                bail!(
                    "the server stopped before listening:\n{}",
                    tail_text(&log_tail)
                )
            }
            Err(_) => bail!(
                "the server did not listen within {START_TIMEOUT:?}:\n{}",
                tail_text(&log_tail)
            ),
        };
        // Keep draining the log, so the child never blocks on a full pipe.
        let drain = log_tail.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep_line(&drain, line);
            }
        });
        Ok(Self {
            child,
            pid,
            addr,
            endpoint: format!("{scheme}://{addr}"),
            log_tail,
        })
    }

    /// The server's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The CPU time the server has used so far (user and system, all its threads), from
    /// `/proc`; `None` where that cannot be read.
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // The fields after the command name (which may hold spaces) in parentheses: state is
        // the first of them, utime and stime the 12th and 13th.
        let (_, rest) = stat.rsplit_once(") ")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0)?;
        Some(std::time::Duration::from_nanos(
            ticks.saturating_mul(1_000_000_000) / per_second,
        ))
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        tail_text(&self.log_tail)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends SIGTERM and waits (at most 20 s) for the process to exit; answers how.
    pub async fn terminate(mut self) -> anyhow::Result<ExitStatus> {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("cannot run kill")?;
        anyhow::ensure!(sent.success(), "kill -TERM {} failed", self.pid);
        tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .with_context(|| format!("the server did not exit within {STOP_TIMEOUT:?}"))?
            .context("cannot wait for the server")
    }

    /// Kills the process (SIGKILL): it has no chance to finish anything.
    pub async fn kill_hard(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("cannot kill the server")
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    tail.lock()
        .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::listening_address;

    #[test]
    fn finds_the_address_in_text_and_json_log_lines() {
        let text = "2025-01-01T00:00:00Z  INFO litejobs::serve: litejobs listening on \
                    http://127.0.0.1:41234 addr=127.0.0.1:41234 backend=\"sqlite\"";
        let json = r#"{"fields":{"message":"litejobs listening on http://127.0.0.1:5","addr":"127.0.0.1:5"}}"#;
        let addr = |a: &str| a.parse::<std::net::SocketAddr>().ok();
        assert_eq!(
            listening_address(text),
            Some(("http", addr("127.0.0.1:41234").expect("addr")))
        );
        assert_eq!(
            listening_address(json),
            Some(("http", addr("127.0.0.1:5").expect("addr")))
        );
        let tls = "litejobs listening on https://[::1]:8443 addr=[::1]:8443";
        assert_eq!(
            listening_address(tls),
            Some(("https", addr("[::1]:8443").expect("addr")))
        );
        assert_eq!(listening_address("nothing here"), None);
    }
}
