//! The systems under test, each started fresh (in its own directory, pinned
//! to its CPU) for every measurement so one step's leftovers cannot affect
//! the next.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::ProcessGroup;
use super::sipp::Endpoint;
use super::{Error, wait_udp_bound};

/// What a target is started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Short calls at a given rate.
    Rate,
    /// Many concurrent long calls, to measure memory per dialog.
    HoldDialogs,
}

/// How the memory of a target's processes is summed (see
/// [`super::procmem`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryMetric {
    /// `VmRSS` of the process group (one process).
    Rss,
    /// `Pss` summed over the process group (forked workers sharing memory).
    Pss,
}

/// A SIP target: a proxy or B2BUA between the sipp UAC and UAS.
pub trait Target {
    /// Name in reports (`kamailio`, `voxplane`).
    fn label(&self) -> &'static str;
    /// Where the UAC sends its INVITEs.
    fn sip_addr(&self) -> SocketAddr;
    /// Starts a fresh instance with its files in `dir`, and returns once it
    /// listens.
    ///
    /// # Errors
    ///
    /// When it is not installed, cannot be configured, or does not come up.
    fn start(&self, dir: &Path, purpose: Purpose) -> Result<ProcessGroup, Error>;
    /// How its memory is summed.
    fn memory_metric(&self) -> MemoryMetric;
    /// Its version line, for the report.
    ///
    /// # Errors
    ///
    /// When it cannot be run.
    fn version(&self) -> Result<String, Error>;
    /// The most concurrent dialogs it can hold in this configuration, with
    /// the reason, if it is limited (e.g. by media ports).
    fn dialog_limit(&self) -> Option<(u64, String)> {
        None
    }
}

/// Kamailio as a stateful proxy: `tm`, `rr` (record-routing), `sl`,
/// `maxfwd`, no authentication; every new INVITE is relayed to the UAS.
/// For [`Purpose::HoldDialogs`] the `dialog` module also tracks each call
/// (`dlg_manage`): without it a stateful proxy keeps nothing per
/// established call once the INVITE transaction is gone, and "memory per
/// held dialog" would measure nothing.
#[derive(Debug, Clone)]
pub struct Kamailio {
    /// The `kamailio` program.
    pub program: PathBuf,
    /// Its modules directory.
    pub modules: PathBuf,
    /// SIP listen address (UDP).
    pub listen: SocketAddr,
    /// Where new calls go (the sipp UAS).
    pub next_hop: SocketAddr,
    /// UDP worker processes (`children`).
    pub children: u32,
    /// Shared memory (`-m`, MiB): transactions and dialogs live here.
    pub shm_mib: u32,
    /// Private memory per process (`-M`, MiB).
    pub pkg_mib: u32,
    /// CPU to pin every Kamailio process to.
    pub cpu: Option<usize>,
}

impl Kamailio {
    /// Debian's module directory.
    pub const DEBIAN_MODULES: &'static str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";

    /// The configuration file for `purpose`.
    pub fn config(&self, purpose: Purpose) -> String {
        let dialogs = purpose == Purpose::HoldDialogs;
        let mut cfg = format!(
            r#"#!KAMAILIO
# Written by `voxplane bench sip`: a stateful proxy on loopback.
debug=-1
log_stderror=yes
fork=yes
children={children}
disable_tcp=yes
auto_aliases=no
listen=udp:{listen}
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "pv.so"
loadmodule "textops.so"
"#,
            children = self.children,
            listen = self.listen,
            modules = self.modules.display(),
        );
        if dialogs {
            cfg.push_str(
                "loadmodule \"dialog.so\"\n\
                 modparam(\"dialog\", \"default_timeout\", 21600)\n",
            );
        }
        let track = if dialogs { "dlg_manage(); " } else { "" };
        let _ = write!(
            cfg,
            r#"
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ {track}t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (!is_method("INVITE")) {{ sl_send_reply("405", "Method Not Allowed"); exit; }}
    t_check_trans();
    record_route();
    {track}$du = "sip:{next_hop}";
    if (!t_relay()) {{ sl_reply_error(); }}
}}
"#,
            next_hop = self.next_hop,
        );
        cfg
    }
}

impl Target for Kamailio {
    fn label(&self) -> &'static str {
        "kamailio"
    }

    fn sip_addr(&self) -> SocketAddr {
        self.listen
    }

    fn start(&self, dir: &Path, purpose: Purpose) -> Result<ProcessGroup, Error> {
        if !self.modules.join("tm.so").is_file() {
            return Err(Error::Missing(format!(
                "Kamailio's modules (tm.so in {})",
                self.modules.display()
            )));
        }
        let cfg = dir.join("kamailio.cfg");
        std::fs::write(&cfg, self.config(purpose))
            .map_err(|e| Error::io(format!("write {}", cfg.display()), e))?;
        let dir_s = dir.display().to_string();
        let args = [
            "-f".to_owned(),
            cfg.display().to_string(),
            "-DD".into(),
            "-E".into(),
            "-m".into(),
            self.shm_mib.to_string(),
            "-M".into(),
            self.pkg_mib.to_string(),
            "-Y".into(),
            dir_s.clone(),
            "-w".into(),
            dir_s,
        ];
        let mut p = ProcessGroup::spawn("kamailio", &self.program, args, dir, self.cpu)?;
        wait_udp_bound(&mut p, self.listen, Duration::from_secs(15))?;
        // The socket is bound before the workers fork; give them a moment.
        std::thread::sleep(Duration::from_millis(300));
        Ok(p)
    }

    fn memory_metric(&self) -> MemoryMetric {
        MemoryMetric::Pss
    }

    fn version(&self) -> Result<String, Error> {
        super::version_line(&self.program, "-v", "kamailio")
    }
}

/// `voxplane up` as a B2BUA with media anchored on its in-process
/// dataplane (one relay worker, its media session timeout raised so held
/// calls without RTP stay up). The UAS registers as user
/// [`Voxplane::CALLEE`] in the demo domain before each run, and the UAC
/// calls that user.
#[derive(Debug, Clone)]
pub struct Voxplane {
    /// The `voxplane` program.
    pub program: PathBuf,
    /// sipp, to register the UAS.
    pub sipp: PathBuf,
    /// SIP listen address (`--sip-listen`).
    pub listen: SocketAddr,
    /// The sipp UAS (registered as the callee).
    pub uas: Endpoint,
    /// Media address (`--media-addr`).
    pub media_addr: std::net::IpAddr,
    /// Media ports (`--port-range`, inclusive).
    pub port_range: (u16, u16),
    /// CPU to pin it to.
    pub cpu: Option<usize>,
}

impl Voxplane {
    /// Media ports one anchored call takes: RTP and RTCP on each of its two
    /// legs.
    pub const PORTS_PER_CALL: u64 = 4;
    /// The user the UAS registers as (the UAC's `-s`).
    pub const CALLEE: &'static str = "bench";
    /// The demo domain `voxplane up` seeds.
    pub const DOMAIN: &'static str = "voxplane.local";
}

impl Target for Voxplane {
    fn label(&self) -> &'static str {
        "voxplane"
    }

    fn sip_addr(&self) -> SocketAddr {
        self.listen
    }

    fn start(&self, dir: &Path, _purpose: Purpose) -> Result<ProcessGroup, Error> {
        let args = [
            "up".to_owned(),
            "--data-dir".into(),
            dir.join("voxplane-data").display().to_string(),
            "--sip-listen".into(),
            self.listen.to_string(),
            "--media-addr".into(),
            self.media_addr.to_string(),
            "--port-range".into(),
            format!("{}-{}", self.port_range.0, self.port_range.1),
            "--workers".into(),
            "1".into(),
            "--metrics-listen".into(),
            format!("{}:0", self.listen.ip()),
            "--media-timeout".into(),
            "86400".into(),
        ];
        let mut p = ProcessGroup::spawn("voxplane", &self.program, args, dir, self.cpu)?;
        wait_udp_bound(&mut p, self.listen, Duration::from_secs(30))?;
        self.register_callee(dir, &mut p)?;
        Ok(p)
    }

    fn memory_metric(&self) -> MemoryMetric {
        MemoryMetric::Rss
    }

    fn version(&self) -> Result<String, Error> {
        super::version_line(&self.program, "version", "voxplane")
    }

    fn dialog_limit(&self) -> Option<(u64, String)> {
        let ports = u64::from(self.port_range.1.saturating_sub(self.port_range.0)) + 1;
        Some((
            ports / Self::PORTS_PER_CALL,
            format!(
                "media port range {}-{} on {} ({} ports per anchored call)",
                self.port_range.0,
                self.port_range.1,
                self.media_addr,
                Self::PORTS_PER_CALL
            ),
        ))
    }
}

impl Voxplane {
    /// One REGISTER from the UAS's address (before the UAS binds it).
    fn register_callee(&self, dir: &Path, up: &mut ProcessGroup) -> Result<(), Error> {
        let xml = dir.join("register.xml");
        let text = REGISTER_XML
            .replace("USER", Self::CALLEE)
            .replace("DOMAIN", Self::DOMAIN);
        std::fs::write(&xml, text).map_err(|e| Error::io(format!("write {}", xml.display()), e))?;
        let ip = self.uas.sip.ip().to_string();
        let args = [
            "-sf".to_owned(),
            xml.display().to_string(),
            "-i".into(),
            ip.clone(),
            "-mi".into(),
            ip,
            "-p".into(),
            self.uas.sip.port().to_string(),
            "-mp".into(),
            self.uas.media_port.to_string(),
            "-m".into(),
            "1".into(),
            "-recv_timeout".into(),
            "5000".into(),
            "-timeout".into(),
            "15s".into(),
            "-timeout_error".into(),
            "-nostdin".into(),
            self.listen.to_string(),
        ];
        let mut reg = ProcessGroup::spawn("sipp-register", &self.sipp, args, dir, None)?;
        match reg.wait_timeout(Duration::from_secs(20)) {
            Some(s) if s.success() => Ok(()),
            status => Err(Error::NotReady {
                label: "voxplane".into(),
                detail: format!(
                    "registering the callee failed (sipp: {status:?}); sipp's log ends with:\n{}\nvoxplane's log ends with:\n{}",
                    reg.log_tail(8),
                    up.log_tail(8)
                ),
            }),
        }
    }
}

/// REGISTER of the callee (`USER@DOMAIN`) at its UAS address.
const REGISTER_XML: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="voxplane bench sip register">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:DOMAIN SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:USER@DOMAIN>;tag=[pid]reg
      To: <sip:USER@DOMAIN>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:USER@[local_ip]:[local_port]>
      Expires: 3600
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn kamailio() -> Kamailio {
        Kamailio {
            program: "kamailio".into(),
            modules: Kamailio::DEBIAN_MODULES.into(),
            listen: "127.0.0.1:5060".parse().unwrap(),
            next_hop: "127.0.0.1:5080".parse().unwrap(),
            children: 4,
            shm_mib: 512,
            pkg_mib: 16,
            cpu: Some(1),
        }
    }

    #[test]
    fn kamailio_config_is_a_record_routing_stateful_proxy() {
        let cfg = kamailio().config(Purpose::Rate);
        for needle in [
            "children=4",
            "listen=udp:127.0.0.1:5060",
            "loadmodule \"tm.so\"",
            "record_route();",
            "loose_route()",
            "$du = \"sip:127.0.0.1:5080\";",
            "t_relay()",
        ] {
            assert!(cfg.contains(needle), "{needle} missing in\n{cfg}");
        }
        assert!(!cfg.contains("dialog"));
        let held = kamailio().config(Purpose::HoldDialogs);
        assert!(
            held.contains("loadmodule \"dialog.so\"") && held.matches("dlg_manage();").count() == 2
        );
    }

    #[test]
    fn voxplane_dialogs_are_limited_by_media_ports() {
        let v = Voxplane {
            program: "voxplane".into(),
            sipp: "sipp".into(),
            listen: "127.0.0.1:5060".parse().unwrap(),
            uas: Endpoint {
                sip: "127.0.0.1:5080".parse().unwrap(),
                media_port: 18_000,
            },
            media_addr: "127.0.0.1".parse().unwrap(),
            port_range: (20000, 59999),
            cpu: None,
        };
        assert_eq!(v.dialog_limit().unwrap().0, 10_000);
    }
}
