//! Timing and peak-memory measurement of external commands, and the
//! markdown report of `bench-analyze`.
//!
//! A [`Runner`] runs a [`CommandSpec`] (optionally pinned to one core with
//! `taskset -c N`) and records its wall-clock time and peak resident set
//! size. Peak RSS comes from GNU time's `%M` (the kernel's `ru_maxrss` of
//! the command) when `/usr/bin/time` exists, else from polling `VmHWM` in
//! `/proc/<pid>/status` every 2 ms (which can miss growth in the last
//! interval before exit). The command's stdout and stderr go to files in a
//! scratch directory, never to the terminal.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A command to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// Name in the report (e.g. `voxplane`, `tshark`).
    pub label: String,
    /// The program: a path, or a bare name looked up in `PATH`.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<OsString>,
}

impl CommandSpec {
    /// Builds a spec from a label, a program and its arguments.
    pub fn new<I, A>(label: &str, program: impl Into<PathBuf>, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        Self {
            label: label.to_owned(),
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

/// One run of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSample {
    /// Wall-clock time from spawn to exit (including the `taskset`/`time`
    /// wrappers' exec, well under a millisecond).
    pub wall: Duration,
    /// Peak resident set size in KiB, if it could be measured.
    pub peak_rss_kib: Option<u64>,
}

/// All runs of one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurement {
    /// The command's label.
    pub label: String,
    /// Every run, in order.
    pub samples: Vec<RunSample>,
}

impl Measurement {
    /// Median wall-clock time (the mean of the two middle runs for an even
    /// count), or `None` without runs.
    pub fn median_wall(&self) -> Option<Duration> {
        median(self.samples.iter().map(|s| s.wall).collect())
    }

    /// The largest peak RSS over all runs (KiB).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.samples.iter().filter_map(|s| s.peak_rss_kib).max()
    }
}

/// The median of `values` (mean of the two middle ones for an even count).
pub fn median(mut values: Vec<Duration>) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2
    })
}

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The program does not exist (or is not in `PATH`).
    #[error("{label}: program not found: {}", path.display())]
    Missing {
        /// The command's label.
        label: String,
        /// The program as given.
        path: PathBuf,
    },
    /// The program could not be started.
    #[error("{label}: cannot start {}: {source}", path.display())]
    Spawn {
        /// The command's label.
        label: String,
        /// The resolved program path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The program exited unsuccessfully.
    #[error("{label}: exited with {status}; stderr ends with:\n{stderr}")]
    Failed {
        /// The command's label.
        label: String,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its standard error.
        stderr: String,
    },
    /// Scratch files could not be written or read.
    #[error("{label}: scratch file error: {source}")]
    Scratch {
        /// The command's label.
        label: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Runs commands and measures them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runner {
    /// `taskset` and the core to pin to, if pinning.
    pub pin: Option<(PathBuf, u32)>,
    /// GNU `time`, if used for peak RSS.
    pub time: Option<PathBuf>,
    /// Directory for the commands' stdout/stderr and time's output.
    pub scratch: PathBuf,
}

impl Runner {
    /// A runner that pins to `core` if `taskset` is found and `core` is
    /// given, and uses `/usr/bin/time` for peak RSS if present.
    pub fn detect(core: Option<u32>, scratch: impl Into<PathBuf>) -> Self {
        let pin = core.and_then(|c| find_program(Path::new("taskset")).map(|p| (p, c)));
        let time = Some(PathBuf::from("/usr/bin/time")).filter(|p| p.is_file());
        Self {
            pin,
            time,
            scratch: scratch.into(),
        }
    }

    /// Runs `cmd` once and measures it.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Missing`] if the program does not exist, `Spawn` if it
    /// cannot start, `Failed` if it exits unsuccessfully.
    pub fn run_once(&self, cmd: &CommandSpec) -> Result<RunSample, HarnessError> {
        let program = find_program(&cmd.program).ok_or_else(|| HarnessError::Missing {
            label: cmd.label.clone(),
            path: cmd.program.clone(),
        })?;
        let scratch_err = |source| HarnessError::Scratch {
            label: cmd.label.clone(),
            source,
        };
        let stem = sanitize(&cmd.label);
        let out_path = self.scratch.join(format!("{stem}.stdout"));
        let err_path = self.scratch.join(format!("{stem}.stderr"));
        let rss_path = self.scratch.join(format!("{stem}.rss"));
        let mut argv: Vec<OsString> = Vec::new();
        if let Some((taskset, core)) = &self.pin {
            argv.extend([taskset.into(), "-c".into(), core.to_string().into()]);
        }
        if let Some(time) = &self.time {
            argv.extend([time.into(), "-f".into(), "%M".into(), "-o".into()]);
            argv.push(rss_path.clone().into());
        }
        argv.push(program.clone().into());
        argv.extend(cmd.args.iter().cloned());

        let stdout = File::create(&out_path).map_err(scratch_err)?;
        let stderr = File::create(&err_path).map_err(scratch_err)?;
        let started = Instant::now();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                label: cmd.label.clone(),
                path: program.clone(),
                source,
            })?;
        let mut polled = None;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {
                    if self.time.is_none()
                        && let Some(hwm) = read_vm_hwm(child.id())
                    {
                        polled = Some(hwm);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(source) => {
                    return Err(HarnessError::Spawn {
                        label: cmd.label.clone(),
                        path: program,
                        source,
                    });
                }
            }
        };
        let wall = started.elapsed();
        if !status.success() {
            let text = fs::read_to_string(&err_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(HarnessError::Failed {
                label: cmd.label.clone(),
                status,
                stderr: tail.join("\n"),
            });
        }
        let peak_rss_kib = if self.time.is_some() {
            fs::read_to_string(&rss_path)
                .ok()
                .and_then(|t| parse_time_rss(&t))
        } else {
            polled
        };
        Ok(RunSample { wall, peak_rss_kib })
    }

    /// Runs each command `runs` times, interleaved (A, B, A, B, …) so that
    /// load changes on a shared machine hit both alike.
    ///
    /// # Errors
    ///
    /// The first failing run's error.
    pub fn measure_interleaved(
        &self,
        cmds: &[CommandSpec],
        runs: usize,
    ) -> Result<Vec<Measurement>, HarnessError> {
        let mut out: Vec<Measurement> = cmds
            .iter()
            .map(|c| Measurement {
                label: c.label.clone(),
                samples: Vec::with_capacity(runs),
            })
            .collect();
        for _ in 0..runs {
            for (cmd, m) in cmds.iter().zip(&mut out) {
                m.samples.push(self.run_once(cmd)?);
            }
        }
        Ok(out)
    }

    /// The stdout of the last run of the command labelled `label`.
    ///
    /// # Errors
    ///
    /// The file cannot be read.
    pub fn last_stdout(&self, label: &str) -> std::io::Result<String> {
        fs::read_to_string(self.scratch.join(format!("{}.stdout", sanitize(label))))
    }
}

/// Everything the report prints.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// RTP packets in the capture.
    pub packets: u64,
    /// All frames in the capture.
    pub frames: u64,
    /// RTP streams in the capture.
    pub streams: u64,
    /// Calls in the capture.
    pub calls: u64,
    /// Capture file size in bytes.
    pub file_bytes: u64,
    /// CPU pinning, as printed (e.g. `taskset -c 1`, or `none`).
    pub pinning: String,
    /// Measurements on the capture; the first is the subject, the others
    /// peers it is compared with.
    pub measured: Vec<Measurement>,
    /// Peak RSS (KiB) of each command on a tiny capture, by label, for the
    /// per-stream memory figure.
    pub baseline_rss_kib: Vec<(String, Option<u64>)>,
}

/// Renders the report as a markdown table (one column per command) followed
/// by the ratio lines.
pub fn render_markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Capture: {} calls, {} RTP streams, {} RTP packets, {} frames, {}; pinning: {}\n",
        r.calls,
        r.streams,
        r.packets,
        r.frames,
        human_bytes(r.file_bytes),
        r.pinning
    );
    let runs = r.measured.first().map_or(0, |m| m.samples.len());
    s.push_str("| metric |");
    for m in &r.measured {
        let _ = write!(s, " {} |", m.label);
    }
    s.push_str("\n|---|");
    for _ in &r.measured {
        s.push_str("---:|");
    }
    s.push('\n');
    let row = |s: &mut String, name: &str, f: &dyn Fn(&Measurement) -> String| {
        let _ = write!(s, "| {name} |");
        for m in &r.measured {
            let _ = write!(s, " {} |", f(m));
        }
        s.push('\n');
    };
    row(&mut s, "RTP packets", &|_| r.packets.to_string());
    row(&mut s, "file size", &|_| human_bytes(r.file_bytes));
    row(&mut s, &format!("wall-clock, median of {runs}"), &|m| {
        m.median_wall()
            .map_or("n/a".into(), |d| format!("{:.3} s", d.as_secs_f64()))
    });
    row(&mut s, "RTP packets/s", &|m| {
        m.median_wall()
            .filter(|d| !d.is_zero())
            .map_or("n/a".into(), |d| {
                format!("{:.0}", r.packets as f64 / d.as_secs_f64())
            })
    });
    row(&mut s, "peak RSS", &|m| {
        m.peak_rss_kib()
            .map_or("n/a".into(), |k| human_bytes(k * 1024))
    });
    row(&mut s, "bytes per stream", &|m| {
        per_stream(r, m).map_or("n/a".into(), |b| format!("{b:.0}"))
    });
    if let Some((subject, peers)) = r.measured.split_first() {
        for p in peers {
            if let (Some(a), Some(b)) = (subject.median_wall(), p.median_wall())
                && !a.is_zero()
            {
                let _ = writeln!(
                    s,
                    "\nSpeed ratio {} / {} wall-clock: {:.2}× ({} is {})",
                    p.label,
                    subject.label,
                    b.as_secs_f64() / a.as_secs_f64(),
                    subject.label,
                    if a <= b { "faster" } else { "slower" }
                );
            }
            if let (Some(a), Some(b)) = (subject.peak_rss_kib(), p.peak_rss_kib())
                && a > 0
            {
                let _ = writeln!(
                    s,
                    "Memory ratio {} / {} peak RSS: {:.2}×",
                    p.label,
                    subject.label,
                    b as f64 / a as f64
                );
            }
        }
    }
    s
}

/// (peak RSS − baseline RSS) × 1024 / streams, if both are known.
fn per_stream(r: &Report, m: &Measurement) -> Option<f64> {
    let peak = m.peak_rss_kib()?;
    let base = r
        .baseline_rss_kib
        .iter()
        .find(|(l, _)| *l == m.label)
        .and_then(|(_, b)| *b)?;
    if r.streams == 0 {
        return None;
    }
    Some(peak.saturating_sub(base) as f64 * 1024.0 / r.streams as f64)
}

/// Resolves a program: a path with a `/` must exist as a file; a bare name
/// is looked up in `PATH`.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn human_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b as f64 >= MIB {
        format!("{:.1} MiB", b as f64 / MIB)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// GNU time writes "Command exited with non-zero status N" before the
/// format's output on failure; the figure is the last line.
fn parse_time_rss(text: &str) -> Option<u64> {
    text.lines().last()?.trim().parse().ok()
}

fn read_vm_hwm(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(time: bool) -> (tempfile::TempDir, Runner) {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Runner::detect(None, dir.path());
        if !time {
            r.time = None;
        }
        (dir, r)
    }

    #[test]
    fn median_odd_even_empty() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(5), ms(1), ms(3)]), Some(ms(3)));
        assert_eq!(
            median(vec![ms(4), ms(1), ms(3), ms(2)]),
            Some(ms(2) + ms(1) / 2)
        );
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn time_output_parsing() {
        assert_eq!(parse_time_rss("1234\n"), Some(1234));
        assert_eq!(
            parse_time_rss("Command exited with non-zero status 1\n99\n"),
            Some(99)
        );
        assert_eq!(parse_time_rss(""), None);
    }

    #[test]
    fn measures_real_commands() {
        for use_time in [true, false] {
            let (dir, r) = runner(use_time);
            let data = dir.path().join("data.bin");
            fs::write(&data, vec![7u8; 1 << 20]).unwrap();
            let cmds = [
                CommandSpec::new("true", "true", Vec::<OsString>::new()),
                CommandSpec::new("cat", "cat", [data.as_os_str().to_owned()]),
            ];
            let m = r.measure_interleaved(&cmds, 3).unwrap();
            assert_eq!(m.len(), 2);
            assert_eq!(m[1].samples.len(), 3);
            assert!(m[0].median_wall().unwrap() > Duration::ZERO);
            assert_eq!(r.last_stdout("cat").unwrap().len(), 1 << 20);
            if r.time.is_some() {
                // Any process has some resident memory.
                assert!(m[1].peak_rss_kib().unwrap() > 100);
            }
        }
    }

    #[test]
    fn sleep_is_timed() {
        let (_dir, r) = runner(false);
        let s = r
            .run_once(&CommandSpec::new("sleep", "sleep", ["0.2"]))
            .unwrap();
        assert!(s.wall >= Duration::from_millis(200), "{:?}", s.wall);
        assert!(s.peak_rss_kib.is_some(), "VmHWM polled while sleeping");
    }

    #[test]
    fn missing_and_failing_programs() {
        let (_dir, r) = runner(true);
        let err = r
            .run_once(&CommandSpec::new(
                "voxplane",
                "/nonexistent/voxplane",
                ["analyze"],
            ))
            .unwrap_err();
        assert!(matches!(err, HarnessError::Missing { .. }));
        assert_eq!(
            err.to_string(),
            "voxplane: program not found: /nonexistent/voxplane"
        );
        let err = r
            .run_once(&CommandSpec::new(
                "sh",
                "sh",
                ["-c", "echo boom >&2; exit 3"],
            ))
            .unwrap_err();
        match err {
            HarnessError::Failed { stderr, status, .. } => {
                assert_eq!(stderr, "boom");
                assert_eq!(status.code(), Some(3));
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn report_table() {
        let sample = |ms: u64, kib: u64| RunSample {
            wall: Duration::from_millis(ms),
            peak_rss_kib: Some(kib),
        };
        let report = Report {
            packets: 1_000_000,
            frames: 1_010_000,
            streams: 2_000,
            calls: 1_000,
            file_bytes: 200 * 1024 * 1024,
            pinning: "taskset -c 1".into(),
            measured: vec![
                Measurement {
                    label: "voxplane".into(),
                    samples: vec![
                        sample(500, 20_000),
                        sample(400, 21_000),
                        sample(600, 20_500),
                    ],
                },
                Measurement {
                    label: "tshark".into(),
                    samples: vec![
                        sample(4_000, 900_000),
                        sample(5_000, 900_000),
                        sample(4_500, 910_000),
                    ],
                },
            ],
            baseline_rss_kib: vec![
                ("voxplane".into(), Some(1_000)),
                ("tshark".into(), Some(100_000)),
            ],
        };
        let md = render_markdown(&report);
        assert!(md.contains("| metric | voxplane | tshark |"), "{md}");
        assert!(
            md.contains("| wall-clock, median of 3 | 0.500 s | 4.500 s |"),
            "{md}"
        );
        assert!(md.contains("| RTP packets/s | 2000000 | 222222 |"), "{md}");
        assert!(md.contains("| file size | 200.0 MiB | 200.0 MiB |"), "{md}");
        // (21,000 − 1,000) KiB × 1024 / 2,000 streams = 10,240 bytes.
        assert!(md.contains("| bytes per stream | 10240 | 414720 |"), "{md}");
        assert!(
            md.contains("Speed ratio tshark / voxplane wall-clock: 9.00×"),
            "{md}"
        );
    }
}
