//! A sandboxed Python process for one request's code: bubblewrap (`bwrap`) namespaces around
//! the system Python, with resource limits set inside before any user code runs.
//!
//! Isolation (docs/decisions/0010-code-sandbox.md):
//! - every namespace unshared (user, pid, network, ipc, uts, cgroup, mount), so no network
//!   at all and no view of the server's processes; user code runs as `nobody` (65534), with
//!   every capability dropped and no further user namespaces;
//! - the file system is `/usr` read-only (and the `/lib`, `/bin` links), a fresh `/proc` and
//!   `/dev`, and a private size-capped tmpfs at `/tmp`, the only writable place: no `/etc`,
//!   no home, no data directory, config or keys;
//! - an empty environment (bubblewrap itself is started with none, so not even its own
//!   `/proc/1/environ` holds the server's);
//! - limits: address space, CPU seconds, processes, file size (setrlimit before any user
//!   code), wall time per call (the whole sandbox is killed), output bytes, scratch bytes.
//!
//! The process keeps its interpreter between calls, so variables defined in one call exist
//! in the next. After a call that kills it (wall time, CPU time), the next call starts a
//! fresh one and says the state was lost.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The program run inside the sandbox (the request loop).
const DRIVER: &str = include_str!("driver.py");

/// Limits on one request's Python (defaults in brackets).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SandboxLimits {
    /// Wall time for one call; past it the sandbox is killed [10 s].
    pub wall: Duration,
    /// CPU seconds for the sandbox's life [10].
    pub cpu_secs: u64,
    /// Address space of the Python process [512 MiB].
    pub memory_bytes: u64,
    /// Processes the sandbox's user may have [16]. A root server starts the sandbox as
    /// `nobody`, whose processes these are; a server running as another user shares the
    /// count with its own threads, so this must then be set above them.
    pub processes: u64,
    /// Output kept from one call [64 KiB].
    pub output_bytes: usize,
    /// Size of the scratch `/tmp` [64 MiB].
    pub scratch_bytes: u64,
    /// Largest file the code may write [16 MiB].
    pub file_bytes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            wall: Duration::from_secs(10),
            cpu_secs: 10,
            memory_bytes: 512 << 20,
            processes: 16,
            output_bytes: 64 << 10,
            scratch_bytes: 64 << 20,
            file_bytes: 16 << 20,
        }
    }
}

/// Where bubblewrap and Python are, and the limits.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub bwrap: PathBuf,
    /// util-linux's `setpriv`: a server running as root starts bubblewrap as `nobody`, so
    /// the sandbox's processes count against `nobody`'s process limit (root's are exempt).
    pub setpriv: PathBuf,
    /// The Python inside the sandbox: must live under `/usr`, the only tree mounted.
    pub python: PathBuf,
    pub limits: SandboxLimits,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            setpriv: PathBuf::from("/usr/bin/setpriv"),
            python: PathBuf::from("/usr/bin/python3"),
            limits: SandboxLimits::default(),
        }
    }
}

/// Why the sandbox could not run a call at all (a call whose code fails is a [`RunOutput`]
/// with an `error`, not this).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the code sandbox could not start: {0}")]
    Start(String),
    #[error("the code sandbox failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What one call printed, and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RunOutput {
    /// Printed text (stdout and stderr together, a bare last expression's repr), cut at the
    /// output limit.
    pub output: String,
    /// `None` when the code ran to its end; else what stopped it (its exception, a limit).
    pub error: Option<String>,
    /// Base64 PNGs of the matplotlib figures the code left open (at most 4, each at most
    /// 512 KiB).
    #[serde(default)]
    pub images: Vec<String>,
}

/// One request's Python, started on first use.
pub struct PythonSandbox {
    cfg: SandboxConfig,
    proc: Option<Running>,
    /// A process was lost (killed at a limit): the next one starts empty.
    lost_state: bool,
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl PythonSandbox {
    pub fn new(cfg: SandboxConfig) -> Self {
        PythonSandbox {
            cfg,
            proc: None,
            lost_state: false,
        }
    }

    /// Runs `code` in the request's interpreter.
    pub async fn run(&mut self, code: &str) -> Result<RunOutput, SandboxError> {
        let restarted = self.proc.is_none() && self.lost_state;
        if self.proc.is_none() {
            self.proc = Some(self.spawn()?);
        }
        let wall = self.cfg.limits.wall;
        let reply = {
            let p = self.proc.as_mut().expect("started above");
            // JSON escaping can make output six times longer; then up to four figures.
            let max_line = self.cfg.limits.output_bytes as u64 * 6 + 4096 + 4 * (700 << 10);
            tokio::time::timeout(wall, call(p, code, max_line)).await
        };
        let mut out = match reply {
            Ok(Ok(Some(out))) => out,
            Ok(Ok(None)) => self
                .lost("the Python process ended (a CPU time or process limit, or the code exited)"),
            Ok(Err(e)) => return Err(e),
            Err(_) => self.lost(&format!(
                "the wall time limit of {} s was reached",
                wall.as_secs()
            )),
        };
        if restarted {
            out.output.insert_str(
                0,
                "[the sandbox was restarted after a limit: earlier state is lost]\n",
            );
        }
        Ok(out)
    }

    /// Kills the process after a limit; the next call starts a fresh one.
    fn lost(&mut self, why: &str) -> RunOutput {
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.start_kill();
        }
        self.lost_state = true;
        RunOutput {
            output: String::new(),
            error: Some(format!("Execution stopped: {why}.")),
            images: Vec::new(),
        }
    }

    fn spawn(&self) -> Result<Running, SandboxError> {
        let l = &self.cfg.limits;
        let limits = serde_json::json!({
            "memory": l.memory_bytes,
            "cpu": l.cpu_secs,
            "processes": l.processes,
            "file": l.file_bytes,
            "output": l.output_bytes,
        });
        let mut cmd = if running_as_root() {
            let mut c = Command::new(&self.cfg.setpriv);
            c.args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--",
            ])
            .arg(&self.cfg.bwrap);
            c
        } else {
            Command::new(&self.cfg.bwrap)
        };
        cmd.args(bwrap_args(l.scratch_bytes))
            .arg(&self.cfg.python)
            .args(["-I", "-u", "-c", DRIVER])
            .arg(limits.to_string())
            // Nothing of the server's environment reaches bubblewrap (its sandbox-side
            // reaper keeps bubblewrap's own environment).
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| SandboxError::Start(format!("{}: {e}", self.cfg.bwrap.display())))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| SandboxError::Start("no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| SandboxError::Start("no stdout".into()))?;
        Ok(Running {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }
}

/// Whether this process runs as root (`/proc/self` belongs to its effective user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// bubblewrap's arguments: the isolation described in the module docs.
fn bwrap_args(scratch_bytes: u64) -> Vec<String> {
    let args = [
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv",
        "HOME",
        "/tmp",
        "--setenv",
        "PATH",
        "/usr/bin",
        "--setenv",
        "MPLBACKEND",
        "Agg",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
        // Three public, read-only pieces of /etc: matplotlib's system config (Debian keeps
        // it there), the alternatives links that shared libraries such as numpy's BLAS are
        // found through, and fontconfig's configuration. Nothing else of /etc (no passwd,
        // shadow, hosts, resolv.conf).
        "--ro-bind-try",
        "/etc/matplotlibrc",
        "/etc/matplotlibrc",
        "--ro-bind-try",
        "/etc/alternatives",
        "/etc/alternatives",
        "--ro-bind-try",
        "/etc/fonts",
        "/etc/fonts",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/bin",
        "/bin",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
    ];
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.push(scratch_bytes.to_string());
    v.extend(["--tmpfs", "/tmp", "--chdir", "/tmp", "--"].map(String::from));
    v
}

/// Sends one call and reads its answer; `None` when the process has ended.
async fn call(
    p: &mut Running,
    code: &str,
    max_line: u64,
) -> Result<Option<RunOutput>, SandboxError> {
    let mut line = serde_json::json!({ "code": code }).to_string();
    line.push('\n');
    if p.stdin.write_all(line.as_bytes()).await.is_err() || p.stdin.flush().await.is_err() {
        return Ok(None);
    }
    // Bounded: the code can write to the answer channel itself.
    let mut answer = String::new();
    if (&mut p.stdout)
        .take(max_line)
        .read_line(&mut answer)
        .await?
        == 0
    {
        return Ok(None);
    }
    Ok(serde_json::from_str(&answer).ok())
}

impl Drop for PythonSandbox {
    fn drop(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            let _ = p.child.start_kill();
        }
    }
}
