//! Memory held by a process group, from `/proc`.
//!
//! Two sums over every process of the group:
//! - `VmRSS` (`/proc/PID/status`): resident pages, counting a page shared
//!   by k processes k times. Right for one process (Voxplane).
//! - `Pss` (`/proc/PID/smaps_rollup`): resident pages with each shared page
//!   divided among the processes mapping it, so the sum counts every page
//!   once. Right for Kamailio, whose forked workers share one `mmap`ed
//!   shared-memory pool (`-m`, where `tm` and `dialog` keep their state)
//!   besides their private package memory (`-M`).
//!
//! For a single process the two differ only by its share of libraries
//! mapped by other processes, which does not change while it holds calls,
//! so deltas of either are comparable.

use std::fs;
use std::io;

/// Memory of a process group at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupMemory {
    /// Processes in the group.
    pub processes: usize,
    /// Sum of `VmRSS` (KiB).
    pub rss_kib: u64,
    /// Sum of `Pss` (KiB).
    pub pss_kib: u64,
}

/// The memory of every process whose process group is `pgid` (a leader
/// started with `process_group(0)` has `pgid` = its pid).
///
/// # Errors
///
/// When `/proc` cannot be listed or no process is in the group. A process
/// that exits while it is being read is skipped.
pub fn group_memory(pgid: u32) -> io::Result<GroupMemory> {
    let mut total = GroupMemory::default();
    for entry in fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if process_group(&stat) != Some(pgid) {
            continue;
        }
        let (Ok(status), Ok(rollup)) = (
            fs::read_to_string(format!("/proc/{pid}/status")),
            fs::read_to_string(format!("/proc/{pid}/smaps_rollup")),
        ) else {
            continue;
        };
        total.processes += 1;
        total.rss_kib += kib_field(&status, "VmRSS:").unwrap_or(0);
        total.pss_kib += kib_field(&rollup, "Pss:").unwrap_or(0);
    }
    if total.processes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no process in group {pgid}"),
        ));
    }
    Ok(total)
}

/// The process group (field 5) of a `/proc/PID/stat` line. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted
/// from the last `)`.
fn process_group(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state, ppid, pgrp.
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// A `Name:   1234 kB` line's number.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_fields() {
        let stat = "4242 (kam (ail) io) S 1 4242 4242 0 -1 4194560 120 0 0 0";
        assert_eq!(process_group(stat), Some(4242));
        assert_eq!(process_group("garbage"), None);
        assert_eq!(process_group("1 (x)"), None);
        let status = "Name:\tkamailio\nVmHWM:\t   9000 kB\nVmRSS:\t   8123 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(8123));
        assert_eq!(kib_field("Rss: 10 kB\nPss: 7 kB\n", "Pss:"), Some(7));
        assert_eq!(kib_field(status, "Pss:"), None);
    }

    #[test]
    fn measures_this_test_process_group() {
        let stat = fs::read_to_string("/proc/self/stat").unwrap();
        let pgid = process_group(&stat).unwrap();
        let m = group_memory(pgid).unwrap();
        assert!(m.processes >= 1);
        assert!(m.rss_kib > 0 && m.pss_kib > 0);
        assert!(group_memory(u32::MAX).is_err());
    }
}
