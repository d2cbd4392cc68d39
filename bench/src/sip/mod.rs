//! `voxplane bench sip`: the highest call rate a SIP target carries with no
//! failed call, its response times, and the memory it holds per dialog —
//! measured with sipp, for Voxplane's B2BUA and Kamailio in the same run.
//!
//! - [`stat`]: sipp's `-trace_stat` / `-trace_rtt` CSV files.
//! - [`search`]: the rate search (double, then bisect), sans-IO.
//! - [`sipp`]: the UAC/UAS scenarios and campaign driver.
//! - [`target`]: Kamailio (a stateful proxy configured here) and
//!   `voxplane up`, each started pinned to its own CPU.
//! - [`procmem`]: RSS/PSS of a process group from `/proc`.
//! - [`campaign`]: the two measurements of one target, and their report.
//! - [`process`]: child process groups, pinned with `taskset`, killed on
//!   drop.

pub mod campaign;
pub mod process;
pub mod procmem;
pub mod search;
pub mod sipp;
pub mod stat;
pub mod target;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use process::ProcessGroup;

/// Why a SIP benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program the benchmark needs is not installed.
    #[error("{0} is not installed")]
    Missing(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A sipp CSV file did not parse.
    #[error("{file}: {source}")]
    Csv {
        /// The file.
        file: String,
        /// The parse error.
        source: stat::CsvError,
    },
    /// A process exited or never bound its SIP port.
    #[error("{label} did not come up: {detail}")]
    NotReady {
        /// The process.
        label: String,
        /// Its exit status or log tail.
        detail: String,
    },
    /// A campaign could not be carried out (e.g. provisioning failed).
    #[error("{0}")]
    Campaign(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// The first line of `program flag`'s output (stdout, else stderr) that
/// contains `marker`, trimmed.
///
/// # Errors
///
/// When the program cannot be run or prints no such line.
pub fn version_line(program: &Path, flag: &str, marker: &str) -> Result<String, Error> {
    let out = Command::new(program)
        .arg(flag)
        .output()
        .map_err(|e| Error::io(format!("run {} {flag}", program.display()), e))?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .find(|l| l.contains(marker))
        .map(str::to_owned)
        .ok_or_else(|| Error::Campaign(format!("{} {flag}: no version line", program.display())))
}

/// Waits until a UDP socket is bound on `addr` (or on the wildcard address
/// with its port), as `/proc/net/udp` shows it, while `p` keeps running.
///
/// # Errors
///
/// [`Error::NotReady`] when `p` exits or `timeout` passes first.
pub fn wait_udp_bound(
    p: &mut ProcessGroup,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if udp_bound(addr) {
            return Ok(());
        }
        if let Some(status) = p.try_wait() {
            return Err(Error::NotReady {
                label: p.label().to_owned(),
                detail: format!(
                    "exited with {status}; its log ends with:\n{}",
                    p.log_tail(15)
                ),
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                label: p.label().to_owned(),
                detail: format!(
                    "no UDP socket on {addr} after {timeout:?}; its log ends with:\n{}",
                    p.log_tail(15)
                ),
            });
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Whether `/proc/net/udp` (or `udp6`) lists a socket bound to `addr`.
pub fn udp_bound(addr: SocketAddr) -> bool {
    let file = match addr.ip() {
        IpAddr::V4(_) => "/proc/net/udp",
        IpAddr::V6(_) => "/proc/net/udp6",
    };
    std::fs::read_to_string(file).is_ok_and(|t| proc_net_lists(&t, addr))
}

fn proc_net_lists(table: &str, addr: SocketAddr) -> bool {
    table.lines().skip(1).any(|line| {
        let Some(local) = line.split_whitespace().nth(1) else {
            return false;
        };
        let Some((ip, port)) = local.split_once(':') else {
            return false;
        };
        if u16::from_str_radix(port, 16).ok() != Some(addr.port()) {
            return false;
        }
        match addr.ip() {
            // The kernel prints the address as a host-order u32 of the
            // network-order bytes: 127.0.0.1 is `0100007F` on x86.
            IpAddr::V4(want) => u32::from_str_radix(ip, 16)
                .map(|v| std::net::Ipv4Addr::from(v.to_le_bytes()))
                .is_ok_and(|got| got == want || got.is_unspecified()),
            IpAddr::V6(_) => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_net_udp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                     \x20 12: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0\n\
                     \x20 13: 00000000:13CE 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0\n";
        assert!(proc_net_lists(table, "127.0.0.1:5060".parse().unwrap()));
        assert!(!proc_net_lists(table, "127.0.0.2:5060".parse().unwrap()));
        assert!(proc_net_lists(table, "127.0.0.9:5070".parse().unwrap()));
        assert!(!proc_net_lists(table, "127.0.0.1:5080".parse().unwrap()));
        assert!(!proc_net_lists(
            "header\ngarbage line\n",
            "127.0.0.1:1".parse().unwrap()
        ));
    }
}
