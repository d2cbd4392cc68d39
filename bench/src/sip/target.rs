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
    /// How long after the last call is answered its finished transactions
    /// may still be held, so memory read after that is dialog state.
    /// Default: 6 s (Kamailio's `tm` keeps a completed INVITE transaction
    /// 5 s).
    fn transaction_linger(&self) -> Duration {
        Duration::from_secs(6)
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
/// calls without RTP stay up). Its data directory is provisioned before
/// each start the way an operator would connect two carriers: the UAC is
/// trunk [`Voxplane::UAC_TRUNK`] (trusted by its source address), the UAS
/// is trunk [`Voxplane::UAS_TRUNK`], and the default dialplan routes every
/// call from the first to the second. The per-source rate limit is raised
/// to [`Voxplane::SIP_RATE`]: all the load comes from one address.
#[derive(Debug, Clone)]
pub struct Voxplane {
    /// The `voxplane` program.
    pub program: PathBuf,
    /// SIP listen address (`--sip-listen`).
    pub listen: SocketAddr,
    /// The sipp UAC (the calling trunk, admitted by its address).
    pub uac: Endpoint,
    /// The sipp UAS (the called trunk).
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
    /// The called number (the UAC's `-s`).
    pub const CALLEE: &'static str = "bench";
    /// The trunk the UAC's calls come from.
    pub const UAC_TRUNK: &'static str = "bench-uac";
    /// The trunk the calls are routed to (the UAS).
    pub const UAS_TRUNK: &'static str = "bench-uas";
    /// `--sip-rate` and `--sip-burst` for the bench: far above any rate
    /// sipp reaches, so the guard's token bucket never refuses.
    pub const SIP_RATE: u32 = 1_000_000;

    /// The default dialplan: every call from the UAC trunk goes to the UAS
    /// trunk.
    #[must_use]
    pub fn dialplan() -> String {
        format!(
            "# Written by `voxplane bench sip`.\n[[rule]]\nname = \"bench\"\nsource = \"trunk:{}\"\ntrunk = \"{}\"\n",
            Self::UAC_TRUNK,
            Self::UAS_TRUNK
        )
    }

    /// The provisioning commands (arguments of `voxplane`) run on
    /// `data_dir` before `voxplane up`; `plan` is the dialplan file.
    #[must_use]
    pub fn provisioning(&self, data_dir: &Path, plan: &Path) -> Vec<Vec<String>> {
        let dd = data_dir.display().to_string();
        let prefix = if self.uac.sip.is_ipv4() { 32 } else { 128 };
        let trunk = |name: &str, peer: SocketAddr, allow: Option<String>| {
            let mut a: Vec<String> = ["trunk", "add", name, "--host"].map(str::to_owned).into();
            a.extend([
                peer.ip().to_string(),
                "--port".into(),
                peer.port().to_string(),
                "--options-ping".into(),
                "0".into(),
            ]);
            if let Some(cidr) = allow {
                a.extend(["--allow-ip".into(), cidr]);
            }
            a.extend(["--data-dir".into(), dd.clone()]);
            a
        };
        vec![
            trunk(
                Self::UAC_TRUNK,
                self.uac.sip,
                Some(format!("{}/{prefix}", self.uac.sip.ip())),
            ),
            trunk(Self::UAS_TRUNK, self.uas.sip, None),
            vec![
                "dialplan".into(),
                "load".into(),
                plan.display().to_string(),
                "--data-dir".into(),
                dd,
            ],
        ]
    }

    /// Writes the dialplan and runs the provisioning commands.
    fn provision(&self, dir: &Path, data_dir: &Path) -> Result<(), Error> {
        let plan = dir.join("dialplan.toml");
        std::fs::write(&plan, Self::dialplan())
            .map_err(|e| Error::io(format!("write {}", plan.display()), e))?;
        for args in self.provisioning(data_dir, &plan) {
            let out = std::process::Command::new(&self.program)
                .args(&args)
                .output()
                .map_err(|e| Error::io(format!("run {}", self.program.display()), e))?;
            if !out.status.success() {
                return Err(Error::Campaign(format!(
                    "voxplane {}: {}\n{}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok(())
    }
}

impl Target for Voxplane {
    fn label(&self) -> &'static str {
        "voxplane"
    }

    fn sip_addr(&self) -> SocketAddr {
        self.listen
    }

    fn start(&self, dir: &Path, _purpose: Purpose) -> Result<ProcessGroup, Error> {
        let data_dir = dir.join("voxplane-data");
        self.provision(dir, &data_dir)?;
        let args = [
            "up".to_owned(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--sip-listen".into(),
            self.listen.to_string(),
            "--no-tcp".into(),
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
            "--sip-rate".into(),
            Self::SIP_RATE.to_string(),
            "--sip-burst".into(),
            Self::SIP_RATE.to_string(),
        ];
        let mut p = ProcessGroup::spawn("voxplane", &self.program, args, dir, self.cpu)?;
        wait_udp_bound(&mut p, self.listen, Duration::from_secs(30))?;
        Ok(p)
    }

    fn memory_metric(&self) -> MemoryMetric {
        MemoryMetric::Rss
    }

    fn version(&self) -> Result<String, Error> {
        super::version_line(&self.program, "version", "voxplane")
    }

    /// RFC 6026: the accepted server INVITE transaction (Timer L) and the
    /// B leg's client INVITE transaction (Timer M) live 64·T1 = 32 s with
    /// `voxplane up`'s default T1 of 500 ms; one second more.
    fn transaction_linger(&self) -> Duration {
        Duration::from_secs(33)
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

    fn voxplane() -> Voxplane {
        Voxplane {
            program: "voxplane".into(),
            listen: "127.0.0.1:5060".parse().unwrap(),
            uac: Endpoint {
                sip: "127.0.0.1:5070".parse().unwrap(),
                media_port: 16_000,
            },
            uas: Endpoint {
                sip: "127.0.0.1:5080".parse().unwrap(),
                media_port: 18_000,
            },
            media_addr: "127.0.0.1".parse().unwrap(),
            port_range: (20000, 59999),
            cpu: None,
        }
    }

    #[test]
    fn voxplane_dialogs_are_limited_by_media_ports() {
        assert_eq!(voxplane().dialog_limit().unwrap().0, 10_000);
    }

    #[test]
    fn voxplane_trusts_the_uac_trunk_and_routes_it_to_the_uas_trunk() {
        use control::dialplan::{Action, CallInfo, CallSource, Dialplan};
        let cmds = voxplane().provisioning(Path::new("/d"), Path::new("/d/plan.toml"));
        let line: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            line,
            [
                "trunk add bench-uac --host 127.0.0.1 --port 5070 --options-ping 0 \
                 --allow-ip 127.0.0.1/32 --data-dir /d",
                "trunk add bench-uas --host 127.0.0.1 --port 5080 --options-ping 0 --data-dir /d",
                "dialplan load /d/plan.toml --data-dir /d",
            ]
        );
        let plan = Dialplan::parse(&Voxplane::dialplan()).unwrap();
        let call = |source| CallInfo {
            to: Voxplane::CALLEE,
            from: "caller",
            source,
            ip: Some("127.0.0.1".parse().unwrap()),
        };
        let routed = plan.evaluate(&call(CallSource::Trunk(Voxplane::UAC_TRUNK)), 0);
        assert_eq!(routed.action, Action::Trunk(Voxplane::UAS_TRUNK.into()));
        assert_eq!(routed.number, Voxplane::CALLEE);
        // Nobody else is routed by the bench rule.
        let other = plan.evaluate(&call(CallSource::Trunk("other")), 0);
        assert_eq!(other.action, Action::NoRoute);
    }
}
