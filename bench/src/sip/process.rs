//! Child processes of the benchmark: started in their own process group,
//! optionally pinned to one CPU with `taskset -c N` (inherited by the
//! children they fork, e.g. Kamailio's workers), and killed as a group when
//! dropped so a failed run leaves nothing behind.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::Error;
use crate::harness::find_program;

/// A running child and its process group.
#[derive(Debug)]
pub struct ProcessGroup {
    label: String,
    child: Child,
    log: PathBuf,
}

impl ProcessGroup {
    /// Starts `program args…` in `dir` with stdout and stderr appended to
    /// `dir/<label>.log`, pinned to `cpu` when given.
    ///
    /// # Errors
    ///
    /// When the program (or `taskset` for pinning) is not installed or
    /// cannot be started.
    pub fn spawn<I, S>(
        label: &str,
        program: &Path,
        args: I,
        dir: &Path,
        cpu: Option<usize>,
    ) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let resolved =
            find_program(program).ok_or_else(|| Error::Missing(program.display().to_string()))?;
        let mut cmd = match cpu {
            Some(cpu) => {
                let taskset = find_program(Path::new("taskset"))
                    .ok_or_else(|| Error::Missing("taskset (util-linux)".into()))?;
                let mut c = Command::new(taskset);
                c.arg("-c").arg(cpu.to_string()).arg(&resolved);
                c
            }
            None => Command::new(&resolved),
        };
        let log = dir.join(format!("{label}.log"));
        let io = |e| Error::io(format!("{label}: log {}", log.display()), e);
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io)?;
        let child = cmd
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(io)?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io(format!("{label}: cannot start {}", resolved.display()), e))?;
        Ok(Self {
            label: label.to_owned(),
            child,
            log,
        })
    }

    /// The leader's pid, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The label given at spawn.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The exit status if the leader has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the leader to exit, killing the group after `timeout`.
    /// `None` if it had to be killed.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        None
    }

    /// The last `lines` lines of the child's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM to the group, SIGKILL after 3 s if the leader is still
    /// there, then reaps it. Idempotent.
    pub fn stop(&mut self) {
        if self.try_wait().is_some() {
            // The leader is gone; forked workers may not be.
            self.signal("-KILL");
            return;
        }
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.try_wait().is_some() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.stop();
    }
}
