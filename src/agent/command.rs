//! Running a task's commands: each item's command in a process group of its own, with the
//! item's parameters in its environment, under the task's timeout; stopped (the whole group,
//! `SIGTERM` then `SIGKILL`) on a timeout or a cancellation; only the tail of what the
//! commands print is kept.

use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use crate::wire::{AgentResult, AgentTask};

/// Most of a task's output kept in its reported summary (its tail).
const MAX_SUMMARY: usize = 64 * 1024;

/// The last bytes a command wrote, at most a fixed number.
#[derive(Debug)]
pub struct Tail {
    bytes: VecDeque<u8>,
    max: usize,
    /// Bytes ever written.
    pub(super) written: u64,
}

impl Tail {
    pub fn new(max: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            max: max.max(1),
            written: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.written += chunk.len() as u64;
        let chunk = &chunk[chunk.len().saturating_sub(self.max)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.max);
        self.bytes.drain(..overflow.min(self.bytes.len()));
        self.bytes.extend(chunk);
    }

    /// The kept bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut all = Vec::with_capacity(a.len() + b.len());
        all.extend_from_slice(a);
        all.extend_from_slice(b);
        String::from_utf8_lossy(&all).into_owned()
    }
}

/// Where a command's output goes: each sink keeps its own tail.
type Sinks = Arc<[Arc<Mutex<Tail>>]>;

fn write_all(sinks: &Sinks, bytes: &[u8]) {
    for sink in sinks.iter() {
        sink.lock().unwrap_or_else(|e| e.into_inner()).push(bytes);
    }
}

/// Copies what `from` yields into `sinks` until its end.
async fn drain(mut from: impl AsyncRead + Unpin, sinks: Sinks) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => write_all(&sinks, &buf[..n]),
        }
    }
}

/// Why a command stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TimedOut,
    Cancelled,
}

/// Sends `signal` to every process of the group `pgid`.
fn signal_group(pgid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pgid) = i32::try_from(pgid) {
        // ESRCH (nobody left in the group) is what we want anyway.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
    }
}

/// True while some process of group `pgid` lives (or waits to be reaped).
fn group_lives(pgid: u32) -> bool {
    i32::try_from(pgid).is_ok_and(|pgid| {
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None)
            != Err(nix::errno::Errno::ESRCH)
    })
}

/// How often a stopped command's process group is looked at while it has its grace.
const GROUP_POLL: Duration = Duration::from_millis(20);

/// Ends the whole process group of `child`: `SIGTERM`, then `SIGKILL` once `grace` has
/// passed with some process of the group still there. The whole group has the grace, not
/// only the shell: a template's command is commonly a shell running another, and the
/// outer one ends at once, before the command it runs has cleaned up.
async fn end_group(child: &mut tokio::process::Child, pgid: u32, grace: Duration) {
    signal_group(pgid, nix::sys::signal::Signal::SIGTERM);
    let until = tokio::time::Instant::now() + grace;
    loop {
        // Reap the shell once it exits: a zombie still counts as one of the group.
        let _ = child.try_wait();
        if !group_lives(pgid) {
            // (No SIGKILL then: the group's id may already be another's.)
            break;
        }
        if tokio::time::Instant::now() >= until {
            tracing::warn!(
                pgid,
                "the command outlived SIGTERM; killing its process group"
            );
            signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(GROUP_POLL).await;
    }
    let _ = child.wait().await;
}

/// Starts the template command under `sh -c` with the parameters as environment variables,
/// in a process group of its own. Its stdout and stderr share one pipe (close-on-exec, so
/// that commands started meanwhile hold none of it), whose reading end is answered: two
/// pipes, each read on its own, would interleave their lines anyhow.
fn start(
    command: &str,
    params: &BTreeMap<String, String>,
) -> std::io::Result<(tokio::process::Child, tokio::net::unix::pipe::Receiver)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let output = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write.try_clone()?))
        .stderr(Stdio::from(write))
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in params
        .iter()
        .filter(|(k, _)| crate::domain::ids::is_env_name(k))
    {
        cmd.env(k, v);
    }
    // The command holds the pipe's writing end once started: this process's copies go with
    // `cmd`, so that the reader sees its end when the command's processes are gone.
    let child = cmd.spawn()?;
    Ok((child, output))
}

/// Runs one item: the template command, its output into `sinks`; until `deadline` or
/// `cancel`. Answers whether it succeeded (and how it ended otherwise).
async fn run_item(
    command: &str,
    params: &BTreeMap<String, String>,
    (deadline, cancel): (tokio::time::Instant, &CancellationToken),
    sinks: Sinks,
    grace: Duration,
) -> Result<bool, Stop> {
    let (mut child, output) = match start(command, params) {
        Ok(started) => started,
        Err(e) => {
            write_all(
                &sinks,
                format!("cannot start the command: {e}\n").as_bytes(),
            );
            return Ok(false);
        }
    };
    let pgid = child.id().unwrap_or(0);
    let reader = tokio::spawn(drain(output, sinks.clone()));
    let outcome = tokio::select! {
        status = child.wait() => Ok(status),
        () = tokio::time::sleep_until(deadline) => Err(Stop::TimedOut),
        () = cancel.cancelled() => Err(Stop::Cancelled),
    };
    match &outcome {
        // Whatever the shell left behind in its group goes with it.
        Ok(_) => signal_group(pgid, nix::sys::signal::Signal::SIGKILL),
        Err(_) => end_group(&mut child, pgid, grace).await,
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    match outcome? {
        Ok(s) if s.success() => Ok(true),
        Ok(s) => {
            write_all(&sinks, format!("\n[{s}]\n").as_bytes());
            Ok(false)
        }
        Err(e) => {
            write_all(
                &sinks,
                format!("\n[cannot wait for the command: {e}]\n").as_bytes(),
            );
            Ok(false)
        }
    }
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "timed out after {}s (the task's timeout): its processes were ended",
        timeout.as_secs()
    )
}

/// Keeps the last `max` bytes of `text`, cut at a character boundary.
fn keep_tail(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = text.len() - max;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        *text = text.split_off(cut);
    }
}

/// How a task ended: its result to report, or `None` when it was stopped because it is no
/// longer this agent's to report (cancelled, or leased again elsewhere).
pub type Outcome = Option<AgentResult>;

/// Runs every item of a task in order; the task fails at the first failing item. The
/// template's timeout bounds the whole task (every item together). `output` receives the
/// tail of everything the commands print; `cancel` stops the task.
pub async fn execute(
    task: &AgentTask,
    output: Arc<Mutex<Tail>>,
    cancel: &CancellationToken,
    grace: Duration,
) -> Outcome {
    let result = |status: &str, message: String| {
        Some(AgentResult {
            status: status.into(),
            message,
            lease_epoch: Some(task.lease_epoch),
        })
    };
    if task.command.is_empty() {
        return result(
            "FAILED",
            format!("no template for job type {}", task.job_type),
        );
    }
    let timeout = Duration::from_secs(task.timeout_secs.max(1));
    let now = tokio::time::Instant::now();
    // (A timeout too far off to be an instant is as good as none.)
    let deadline = now
        .checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
    let mut message = String::new();
    for (i, item) in task.items.iter().enumerate() {
        let mut params = task.params.clone();
        if let Some(spec) = &item.spec {
            params.extend(spec.clone());
        }
        let header = format!("[item {} {}]\n", i + 1, item.item_type);
        write_all(&[output.clone()].into(), header.as_bytes());
        let own = Arc::new(Mutex::new(Tail::new(MAX_SUMMARY)));
        let sinks: Sinks = [own.clone(), output.clone()].into();
        let ran = if deadline <= tokio::time::Instant::now() {
            Err(Stop::TimedOut)
        } else {
            run_item(&task.command, &params, (deadline, cancel), sinks, grace).await
        };
        message.push_str(&header);
        message.push_str(&own.lock().unwrap_or_else(|e| e.into_inner()).text());
        keep_tail(&mut message, MAX_SUMMARY);
        match ran {
            Ok(true) => {}
            Ok(false) => return result("FAILED", message),
            Err(Stop::TimedOut) => {
                message.push_str(&timed_out(timeout));
                keep_tail(&mut message, MAX_SUMMARY);
                return result("FAILED", message);
            }
            Err(Stop::Cancelled) => return None,
        }
    }
    result("SUCCESS", message)
}

#[cfg(test)]
mod tests {
    use super::Tail;

    #[test]
    fn a_tail_keeps_the_last_bytes_only() {
        let mut tail = Tail::new(10);
        tail.push(b"hello ");
        tail.push(b"world, again");
        assert_eq!(tail.text(), "rld, again");
        tail.push(&[b'x'; 100]);
        assert_eq!(tail.text(), "x".repeat(10));
        assert_eq!(tail.written, 6 + 12 + 100);
    }
}
