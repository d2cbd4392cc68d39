//! `voxplane dataplane`: the relay alone, controlled over rtpengine's ng
//! protocol, with Prometheus counters on `/metrics`.
//!
//! The metrics endpoint is a few lines of HTTP/1.0 over a std
//! `TcpListener` on its own thread rather than axum: it serves one
//! read-only page to a scraper, and the relay binary then needs no async
//! runtime. (When the NQS/MIS HTTP APIs bring axum into the binary, this
//! can move onto it.)

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use dataplane::afxdp::{AfXdpBackend, AfXdpConfig};
use dataplane::mis_sink::MisConfig;
use dataplane::relay::{DropReason, RelayConfig};
use dataplane::udp::{MirrorConfig, UdpBackend, UdpConfig, UdpControl, serve_ng};
use dataplane::uring::UringBackend;

/// Packet I/O backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// recvmmsg/sendmmsg on UDP sockets; no privileges needed.
    Udp,
    /// io_uring: multishot receive into provided buffers.
    Uring,
    /// AF_XDP on `--iface` (root: CAP_NET_ADMIN, CAP_BPF); busy-polls one
    /// core per worker.
    Afxdp,
}

/// Arguments of `voxplane dataplane`.
#[derive(clap::Args, Debug, Clone)]
pub struct DataplaneArgs {
    /// Where to receive ng control requests (UDP).
    #[arg(long, value_name = "ADDR:PORT")]
    ng_listen: SocketAddr,
    /// The local media address (advertised in SDP). Give it twice for an
    /// IPv4 and an IPv6 address.
    #[arg(long, value_name = "ADDR", required = true)]
    media_addr: Vec<IpAddr>,
    /// Local media ports, `LO-HI` (LO even).
    #[arg(long, value_name = "LO-HI", value_parser = parse_range, default_value = "30000-39999")]
    port_range: RangeInclusive<u16>,
    /// Packet I/O backend.
    #[arg(long, value_enum, default_value = "udp")]
    backend: BackendKind,
    /// Network interfaces media arrives on and leaves by (AF_XDP; comma
    /// separated). The `media_redirect` XDP program is attached to each for
    /// the port range; everything else stays with the kernel.
    #[arg(long, value_name = "IFACE[,IFACE]")]
    iface: Option<String>,
    /// Worker threads (default: one per core; for AF_XDP, one per rx queue
    /// of the first interface).
    #[arg(long)]
    workers: Option<usize>,
    /// Serve Prometheus counters on http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// Most concurrent sessions.
    #[arg(long, default_value_t = 100_000)]
    max_sessions: usize,
    /// Seconds after an SDP during which a leg's source may be learned.
    #[arg(long, default_value_t = 3)]
    latch_window: u64,
    /// Seconds without media after which a session is deleted.
    #[arg(long, default_value_t = 60)]
    media_timeout: u64,
    /// Send copies of recorded sessions' packets (ng `start recording`) as
    /// HEP3 over UDP to this collector (Homer, heplify-server).
    #[arg(long, value_name = "ADDR:PORT")]
    hep_sink: Option<SocketAddr>,
    /// HEP3 capture agent id.
    #[arg(long, default_value_t = 2001)]
    hep_capture_id: u32,
    /// Send recorded sessions (ng `start recording`) to this `voxplane mis`
    /// recorder: metadata over TCP to --mis-control-port, RTP copies over
    /// UDP to --mis-media-port.
    #[arg(long, value_name = "ADDR")]
    mis: Option<std::net::IpAddr>,
    /// The recorder's metadata port (TCP).
    #[arg(long, default_value_t = 1040)]
    mis_control_port: u16,
    /// The recorder's media port (UDP).
    #[arg(long, default_value_t = 5400)]
    mis_media_port: u16,
}

pub(crate) fn parse_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (lo, hi) = s.split_once('-').ok_or("expected LO-HI")?;
    let lo: u16 = lo.trim().parse().map_err(|e| format!("LO: {e}"))?;
    let hi: u16 = hi.trim().parse().map_err(|e| format!("HI: {e}"))?;
    if !lo.is_multiple_of(2) || hi <= lo {
        return Err("LO must be even and below HI".into());
    }
    Ok(lo..=hi)
}

/// Runs the relay until the process is killed.
pub fn run(args: &DataplaneArgs) -> anyhow::Result<()> {
    let running = start(args)?;
    tracing::info!(
        ng = %running.ng_addr,
        metrics = ?running.metrics_addr,
        "dataplane running"
    );
    running.wait()
}

/// A started relay: its bound addresses and threads.
pub struct Running {
    /// Where ng requests are received.
    pub ng_addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    ng_thread: Option<thread::JoinHandle<std::io::Result<()>>>,
    _backend: RunningBackend,
}

/// The backend kept alive while the command runs.
enum RunningBackend {
    Udp(UdpBackend),
    Uring(UringBackend),
    Afxdp(AfXdpBackend),
}

impl RunningBackend {
    fn control(&self) -> UdpControl {
        match self {
            RunningBackend::Udp(b) => b.control(),
            RunningBackend::Uring(b) => b.control(),
            RunningBackend::Afxdp(b) => b.control(),
        }
    }
}

impl Running {
    fn wait(mut self) -> anyhow::Result<()> {
        match self.ng_thread.take().map(thread::JoinHandle::join) {
            Some(Ok(r)) => r.context("ng listener"),
            Some(Err(_)) => bail!("ng listener panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ng_thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the backend, the ng listener and the metrics endpoint.
pub fn start(args: &DataplaneArgs) -> anyhow::Result<Running> {
    let interfaces: Vec<String> = args
        .iface
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if args.backend == BackendKind::Afxdp {
        if interfaces.is_empty() {
            bail!("--backend afxdp needs --iface IFACE[,IFACE]");
        }
        if args.media_addr.iter().any(IpAddr::is_ipv6) {
            tracing::warn!("the afxdp backend forwards IPv4 only; IPv6 media is dropped");
        }
    } else if args.iface.is_some() {
        tracing::warn!("--iface is used by the afxdp backend only; ignored");
    }
    let pick = |v6: bool| args.media_addr.iter().copied().find(|a| a.is_ipv6() == v6);
    let relay = RelayConfig {
        media_v4: pick(false),
        media_v6: pick(true),
        ports: args.port_range.clone(),
        max_sessions: args.max_sessions,
        latch_window: Duration::from_secs(args.latch_window),
        media_timeout: Duration::from_secs(args.media_timeout),
        ..RelayConfig::default()
    };
    let workers = args.workers.unwrap_or_else(|| match interfaces.first() {
        Some(iface) if args.backend == BackendKind::Afxdp => rx_queues(iface),
        _ => thread::available_parallelism().map_or(1, |n| n.get()),
    });
    let config = UdpConfig {
        relay,
        workers,
        mirror: MirrorConfig {
            hep: args.hep_sink,
            hep_capture_id: args.hep_capture_id,
            ring_bytes: None,
            mis: args.mis.map(|ip| MisConfig {
                control: SocketAddr::new(ip, args.mis_control_port),
                media: SocketAddr::new(ip, args.mis_media_port),
            }),
        },
    };
    let backend = match args.backend {
        BackendKind::Uring => RunningBackend::Uring(
            UringBackend::start(config).context("starting the io_uring backend")?,
        ),
        BackendKind::Afxdp => RunningBackend::Afxdp(
            AfXdpBackend::start(AfXdpConfig {
                relay: config.relay,
                interfaces,
                workers: config.workers,
                mirror: config.mirror,
            })
            .context("starting the AF_XDP backend")?,
        ),
        BackendKind::Udp => {
            RunningBackend::Udp(UdpBackend::start(config).context("starting the UDP backend")?)
        }
    };
    let ng_socket = UdpSocket::bind(args.ng_listen)
        .with_context(|| format!("binding the ng socket {}", args.ng_listen))?;
    let ng_addr = ng_socket.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let metrics_addr = match args.metrics_listen {
        Some(addr) => {
            let listener =
                TcpListener::bind(addr).with_context(|| format!("binding metrics on {addr}"))?;
            let bound = listener.local_addr()?;
            let control = backend.control();
            thread::Builder::new()
                .name("metrics".into())
                .spawn(move || serve_metrics(&listener, &control))?;
            Some(bound)
        }
        None => None,
    };
    let mut control = backend.control();
    let stop_ng = Arc::clone(&stop);
    let ng_thread = thread::Builder::new().name("ng".into()).spawn(move || {
        serve_ng(&ng_socket, &mut control, &|| {
            stop_ng.load(Ordering::Relaxed)
        })
    })?;
    Ok(Running {
        ng_addr,
        metrics_addr,
        stop,
        ng_thread: Some(ng_thread),
        _backend: backend,
    })
}

/// The number of rx queues of `iface` (one AF_XDP worker each), from
/// sysfs; 1 when unknown.
fn rx_queues(iface: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(0)
        .max(1)
}

fn serve_metrics(listener: &TcpListener, control: &UdpControl) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let (status, body) = if line.starts_with("GET /metrics ") {
            ("200 OK", render_metrics(control))
        } else {
            ("404 Not Found", "not found\n".to_owned())
        };
        let _ = write!(
            stream,
            "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}

/// The Prometheus text exposition of the relay's counters.
fn render_metrics(control: &UdpControl) -> String {
    use std::fmt::Write as _;
    let (relay, io) = control.counters();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "voxplane_relay_sessions",
        "gauge",
        "Sessions in the table.",
        io.sessions,
    );
    metric(
        "voxplane_relay_rx_packets_total",
        "counter",
        "Datagrams received on media ports.",
        relay.rx_packets,
    );
    metric(
        "voxplane_relay_rx_bytes_total",
        "counter",
        "UDP payload octets received on media ports.",
        relay.rx_bytes,
    );
    metric(
        "voxplane_relay_forwarded_total",
        "counter",
        "Datagrams the relay decided to forward.",
        relay.forwarded,
    );
    metric(
        "voxplane_relay_tx_packets_total",
        "counter",
        "Datagrams sent.",
        io.tx_packets,
    );
    metric(
        "voxplane_relay_tx_errors_total",
        "counter",
        "Forwarded datagrams not sent (kernel refused; AF_XDP: TX ring full or no next hop).",
        io.tx_errors,
    );
    metric(
        "voxplane_relay_bind_errors_total",
        "counter",
        "Media ports that could not be bound.",
        io.bind_errors,
    );
    metric(
        "voxplane_relay_sessions_created_total",
        "counter",
        "Sessions created.",
        relay.sessions_created,
    );
    metric(
        "voxplane_relay_sessions_deleted_total",
        "counter",
        "Sessions deleted.",
        relay.sessions_deleted,
    );
    metric(
        "voxplane_relay_media_timeouts_total",
        "counter",
        "Sessions timed out for lack of media.",
        relay.media_timeouts,
    );
    metric(
        "voxplane_relay_hep_packets_total",
        "counter",
        "HEP3 copies sent to the collector.",
        io.hep_packets,
    );
    metric(
        "voxplane_relay_hep_errors_total",
        "counter",
        "HEP3 copies not sent.",
        io.hep_errors,
    );
    metric(
        "voxplane_relay_unroutable_total",
        "counter",
        "AF_XDP: forwards dropped for want of a next hop (not in the neighbour table) or TTL.",
        io.unroutable,
    );
    metric(
        "voxplane_relay_mis_packets_total",
        "counter",
        "RTP copies sent to the MIS recorder.",
        io.mis_packets,
    );
    metric(
        "voxplane_relay_mis_drops_total",
        "counter",
        "RTP copies to the MIS recorder the socket refused.",
        io.mis_drops,
    );
    metric(
        "voxplane_relay_mis_metadata_drops_total",
        "counter",
        "MIS metadata frames dropped: the link's queue was full.",
        io.mis_meta_drops,
    );
    metric(
        "voxplane_relay_mis_connected",
        "gauge",
        "MIS metadata connections up (one per worker).",
        io.mis_connected,
    );
    let _ = writeln!(
        out,
        "# HELP voxplane_relay_drops_total Datagrams dropped, by reason.\n# TYPE voxplane_relay_drops_total counter"
    );
    for reason in DropReason::ALL {
        let _ = writeln!(
            out,
            "voxplane_relay_drops_total{{reason=\"{}\"}} {}",
            reason.as_str(),
            relay.drops.get(reason)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;
    use wire::bencode::Value;

    fn args() -> DataplaneArgs {
        DataplaneArgs {
            ng_listen: "127.0.0.1:0".parse().unwrap(),
            media_addr: vec!["127.0.0.1".parse().unwrap()],
            port_range: 43000..=43099,
            backend: BackendKind::Udp,
            iface: None,
            workers: Some(2),
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            max_sessions: 10,
            latch_window: 3,
            media_timeout: 60,
            hep_sink: None,
            hep_capture_id: 2001,
            mis: None,
            mis_control_port: 1040,
            mis_media_port: 5400,
        }
    }

    fn ng(sock: &UdpSocket, to: SocketAddr, cookie: &str, body: &[(&str, &str)]) -> Vec<u8> {
        let mut req = format!("{cookie} ").into_bytes();
        Value::Dict(
            body.iter()
                .map(|(k, v)| (k.as_bytes(), Value::str(v)))
                .collect(),
        )
        .emit(&mut req);
        sock.send_to(&req, to).unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        assert!(buf[..n].starts_with(format!("{cookie} ").as_bytes()));
        buf[cookie.len() + 1..n].to_vec()
    }

    fn sdp_for(s: &UdpSocket) -> String {
        let a = s.local_addr().unwrap();
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\n",
            a.port()
        )
    }

    fn port_in(resp: &[u8]) -> u16 {
        let v = Value::parse(resp).unwrap();
        let sdp = v
            .get(b"sdp")
            .and_then(Value::as_str)
            .expect("sdp in response");
        let m = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
        m.split(' ').nth(1).unwrap().parse().unwrap()
    }

    /// The command end to end: ng over UDP, RTP both ways over loopback,
    /// a third party's RTP dropped, and the counters on /metrics.
    #[test]
    fn ng_media_and_metrics_udp() {
        ng_media_and_metrics(BackendKind::Udp, 43000);
    }

    #[test]
    fn ng_media_and_metrics_uring() {
        ng_media_and_metrics(BackendKind::Uring, 43200);
    }

    fn ng_media_and_metrics(backend: BackendKind, lo: u16) {
        let running = start(&DataplaneArgs {
            backend,
            port_range: lo..=lo + 99,
            ..args()
        })
        .unwrap();
        let ctl = UdpSocket::bind("127.0.0.1:0").unwrap();
        ctl.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(
            ng(&ctl, running.ng_addr, "p1", &[("command", "ping")]),
            b"d6:result4:ponge"
        );
        let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
        let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
        let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&caller, &callee, &attacker] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        let offer = ng(
            &ctl,
            running.ng_addr,
            "o1",
            &[
                ("command", "offer"),
                ("call-id", "cmd-1"),
                ("from-tag", "a"),
                ("sdp", &sdp_for(&caller)),
            ],
        );
        let answer = ng(
            &ctl,
            running.ng_addr,
            "a1",
            &[
                ("command", "answer"),
                ("call-id", "cmd-1"),
                ("from-tag", "a"),
                ("to-tag", "b"),
                ("sdp", &sdp_for(&callee)),
            ],
        );
        let callee_side: SocketAddr =
            ("127.0.0.1".parse::<IpAddr>().unwrap(), port_in(&offer)).into();
        let caller_side: SocketAddr =
            ("127.0.0.1".parse::<IpAddr>().unwrap(), port_in(&answer)).into();
        let pkt = [0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 1, 0xff, 0xff];
        let mut buf = [0u8; 2048];
        for _ in 0..10 {
            caller.send_to(&pkt, caller_side).unwrap();
            let (n, from) = callee.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&pkt[..], callee_side));
            callee.send_to(&pkt, callee_side).unwrap();
            let (n, from) = caller.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&pkt[..], caller_side));
        }
        for _ in 0..5 {
            attacker.send_to(&pkt, caller_side).unwrap();
            attacker.send_to(&pkt, callee_side).unwrap();
        }
        caller.send_to(&pkt, caller_side).unwrap();
        callee.recv_from(&mut buf).unwrap();
        assert!(attacker.recv_from(&mut buf).is_err(), "RTP bleed");
        assert!(
            caller.recv_from(&mut buf).is_err(),
            "attacker media injected"
        );

        let mut http = TcpStream::connect(running.metrics_addr.unwrap()).unwrap();
        http.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut page = String::new();
        http.read_to_string(&mut page).unwrap();
        assert!(page.starts_with("HTTP/1.0 200 OK\r\n"), "{page}");
        assert!(page.contains("\nvoxplane_relay_sessions 1\n"), "{page}");
        assert!(
            page.contains("\nvoxplane_relay_forwarded_total 21\n"),
            "{page}"
        );
        assert!(
            page.contains("voxplane_relay_drops_total{reason=\"spoofed_source\"} 10\n"),
            "{page}"
        );

        let del = ng(
            &ctl,
            running.ng_addr,
            "d1",
            &[("command", "delete"), ("call-id", "cmd-1")],
        );
        assert_eq!(
            Value::parse(&del)
                .unwrap()
                .get(b"result")
                .and_then(Value::as_str),
            Some("ok")
        );
    }

    #[test]
    fn refuses_afxdp_without_an_interface_and_bad_ranges() {
        let e = start(&DataplaneArgs {
            backend: BackendKind::Afxdp,
            ..args()
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("needs --iface"), "{e}");
        // A missing interface is a clear error, not a panic.
        let e = start(&DataplaneArgs {
            backend: BackendKind::Afxdp,
            iface: Some("vx-no-such-if0".into()),
            ..args()
        })
        .err()
        .unwrap();
        assert!(format!("{e:#}").contains("AF_XDP"), "{e:#}");
        assert!(parse_range("30001-30010").is_err());
        assert!(parse_range("30000").is_err());
        assert_eq!(parse_range("30000-30099"), Ok(30000..=30099));
    }
}
