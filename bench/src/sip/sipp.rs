//! Driving sipp (Debian `sip-tester`): a UAS that answers every call, and
//! UAC campaigns whose outcome is read from sipp's exit code and its
//! `-trace_stat` / `-trace_rtt` CSV files.
//!
//! The scenarios (`scenarios/uac.xml`, `scenarios/uas.xml`) place calls with
//! an SDP offer (PCMU, PCMA, telephone-event) so a B2BUA anchors media, keep
//! the route set of the 200 (`rrs`) so ACK and BYE follow a proxy's
//! Record-Route or a B2BUA's Contact, and measure two response times:
//! `rtd 1` INVITE → 200 and `rtd 2` BYE → 200. No RTP is sent.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Error;
use super::process::ProcessGroup;
use super::stat::{self, RttSample, StatSummary};

/// The UAC scenario.
pub const UAC_XML: &str = include_str!("scenarios/uac.xml");
/// The UAS scenario.
pub const UAS_XML: &str = include_str!("scenarios/uas.xml");

/// A sipp instance's SIP address and the first media port it binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// SIP address (`-i`, `-p`); the IP is also the media IP (`-mi`).
    pub sip: SocketAddr,
    /// Media port (`-mp`): sipp binds it (and the next ones) at start.
    pub media_port: u16,
}

/// One UAC campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Campaign {
    /// Calls per second (`-r`, `-rp 1000`).
    pub rate: u32,
    /// Calls to place (`-m`).
    pub calls: u64,
    /// Concurrent call limit (`-l`); sipp's default (3 × rate × call
    /// length) when `None`.
    pub limit: Option<u64>,
    /// Time between ACK and BYE (`-d`, ms).
    pub hold_ms: u64,
    /// A call fails when an expected message is this late
    /// (`-recv_timeout`, ms).
    pub recv_timeout_ms: u64,
    /// sipp gives up on the whole run after this (`-timeout`,
    /// `-timeout_error`).
    pub timeout: Duration,
}

/// What a finished UAC campaign reported.
#[derive(Debug, Clone)]
pub struct UacOutcome {
    /// sipp's exit code: 0 when every call succeeded, 1 when some failed,
    /// others for fatal errors; `None` if it was killed.
    pub exit_code: Option<i32>,
    /// The cumulative stat row.
    pub stat: StatSummary,
    /// Every response-time sample.
    pub rtt: Vec<RttSample>,
    /// The first lines of sipp's error trace, if it wrote one.
    pub errors: Option<String>,
}

/// sipp with the benchmark's scenarios written into a directory.
#[derive(Debug, Clone)]
pub struct Sipp {
    program: PathBuf,
    cpu: Option<usize>,
    uac_xml: PathBuf,
    uas_xml: PathBuf,
}

impl Sipp {
    /// Writes the scenarios into `dir`. sipp processes will be pinned to
    /// `cpu` when given.
    ///
    /// # Errors
    ///
    /// When the scenario files cannot be written.
    pub fn new(program: PathBuf, dir: &Path, cpu: Option<usize>) -> Result<Self, Error> {
        let uac_xml = dir.join("uac.xml");
        let uas_xml = dir.join("uas.xml");
        for (path, text) in [(&uac_xml, UAC_XML), (&uas_xml, UAS_XML)] {
            fs::write(path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        }
        Ok(Self {
            program,
            cpu,
            uac_xml,
            uas_xml,
        })
    }

    /// `sipp -v`'s version line (e.g. `SIPp v3.6.1-SCTP-PCAP-RTPSTREAM`).
    ///
    /// # Errors
    ///
    /// When sipp cannot be run.
    pub fn version(&self) -> Result<String, Error> {
        super::version_line(&self.program, "-v", "SIPp")
    }

    /// Starts a UAS on `uas` that answers every call until stopped, with
    /// its files in `dir`.
    ///
    /// # Errors
    ///
    /// When sipp cannot be started or does not bind its port within 10 s.
    pub fn spawn_uas(&self, uas: Endpoint, dir: &Path) -> Result<ProcessGroup, Error> {
        let mut args = self.common(&self.uas_xml, uas);
        args.push("-trace_err".into());
        let mut p = ProcessGroup::spawn("sipp-uas", &self.program, args, dir, self.cpu)?;
        super::wait_udp_bound(&mut p, uas.sip, Duration::from_secs(10))?;
        Ok(p)
    }

    /// Starts a UAC campaign from `uac` to `target` (files in `dir`) and
    /// returns without waiting: for holding calls while memory is measured.
    ///
    /// # Errors
    ///
    /// When sipp cannot be started.
    pub fn spawn_uac(
        &self,
        uac: Endpoint,
        target: SocketAddr,
        campaign: &Campaign,
        dir: &Path,
    ) -> Result<ProcessGroup, Error> {
        let mut args = self.common(&self.uac_xml, uac);
        let c = campaign;
        for (flag, value) in [
            ("-r", c.rate.to_string()),
            ("-rp", "1000".into()),
            ("-m", c.calls.to_string()),
            ("-d", c.hold_ms.to_string()),
            ("-recv_timeout", c.recv_timeout_ms.to_string()),
            ("-timeout", format!("{}s", c.timeout.as_secs().max(1))),
            ("-stf", dir.join("stat.csv").display().to_string()),
            ("-fd", "1".into()),
            ("-rtt_freq", "1".into()),
            ("-s", super::target::Voxplane::CALLEE.into()),
        ] {
            args.push(flag.into());
            args.push(value);
        }
        if let Some(l) = c.limit {
            args.extend(["-l".into(), l.to_string()]);
        }
        args.extend(
            ["-timeout_error", "-trace_stat", "-trace_rtt", "-trace_err"].map(String::from),
        );
        args.push(target.to_string());
        ProcessGroup::spawn("sipp-uac", &self.program, args, dir, self.cpu)
    }

    /// Runs a UAC campaign to the end and reads its outcome.
    ///
    /// # Errors
    ///
    /// When sipp cannot be started, or ends without a readable stat file
    /// (e.g. it could not bind its port).
    pub fn run_uac(
        &self,
        uac: Endpoint,
        target: SocketAddr,
        campaign: &Campaign,
        dir: &Path,
    ) -> Result<UacOutcome, Error> {
        let mut p = self.spawn_uac(uac, target, campaign, dir)?;
        // sipp enforces `timeout` itself; the margin covers start and exit.
        let status = p.wait_timeout(campaign.timeout + Duration::from_secs(15));
        let stat = read_stat(dir).map_err(|e| {
            Error::Campaign(format!(
                "sipp uac left no usable stat file ({e}); its log ends with:\n{}",
                p.log_tail(10)
            ))
        })?;
        Ok(UacOutcome {
            exit_code: status.and_then(|s| s.code()),
            stat,
            rtt: read_rtt(dir)?,
            errors: read_errors(dir),
        })
    }

    fn common(&self, scenario: &Path, at: Endpoint) -> Vec<String> {
        let ip = at.sip.ip().to_string();
        vec![
            "-sf".into(),
            scenario.display().to_string(),
            "-i".into(),
            ip.clone(),
            "-mi".into(),
            ip,
            "-p".into(),
            at.sip.port().to_string(),
            "-mp".into(),
            at.media_port.to_string(),
            "-nostdin".into(),
        ]
    }
}

/// The stat file of a campaign run in `dir`.
///
/// # Errors
///
/// When it is missing or does not parse.
pub fn read_stat(dir: &Path) -> Result<StatSummary, Error> {
    let path = dir.join("stat.csv");
    let text =
        fs::read_to_string(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    StatSummary::parse(&text).map_err(|e| Error::Csv {
        file: path.display().to_string(),
        source: e,
    })
}

/// The response-time samples of a campaign run in `dir` (sipp names the
/// file `uac_<pid>_rtt.csv`); empty if sipp wrote none.
///
/// # Errors
///
/// When a file exists but does not parse.
pub fn read_rtt(dir: &Path) -> Result<Vec<RttSample>, Error> {
    let mut all = Vec::new();
    for path in files_named(dir, "uac_", "_rtt.csv") {
        let text = fs::read_to_string(&path).unwrap_or_default();
        all.extend(stat::parse_rtt(&text).map_err(|e| Error::Csv {
            file: path.display().to_string(),
            source: e,
        })?);
    }
    Ok(all)
}

fn read_errors(dir: &Path) -> Option<String> {
    let path = files_named(dir, "uac_", "_errors.log").into_iter().next()?;
    let text = fs::read_to_string(path).ok()?;
    let head: Vec<&str> = text.lines().filter(|l| !l.is_empty()).take(6).collect();
    (!head.is_empty()).then(|| head.join("\n"))
}

fn files_named(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    v.sort();
    v
}
