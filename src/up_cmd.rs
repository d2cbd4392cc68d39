//! `voxplane up`: the SIP core (B2BUA) and the UDP relay in one process,
//! with the SBUS store opened in the data directory (local only) and
//! Prometheus counters on `/metrics`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::Context;
use control::b2bua::{COUNTED_METHODS, Config};
use control::driver::{Driver, DriverConfig, Snapshot};
use control::policy::StorePolicy;
use control::provision::Provisioning;
use control::transaction::TimerConfig;
use dataplane::relay::RelayConfig;
use dataplane::udp::{MirrorConfig, UdpBackend, UdpConfig, UdpControl};

/// Arguments of `voxplane up`.
#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Data directory (SBUS store, CDRs).
    #[arg(long, value_name = "DIR", default_value = "voxplane-data")]
    data_dir: PathBuf,
    /// SIP listen address (UDP, and TCP on the same address unless
    /// `--no-tcp`).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:5060")]
    sip_listen: SocketAddr,
    /// Do not listen on TCP.
    #[arg(long)]
    no_tcp: bool,
    /// SIP over TLS listen address (off by default; 5061 is usual).
    #[arg(long, value_name = "ADDR:PORT")]
    sip_tls_listen: Option<SocketAddr>,
    /// TLS certificate chain (PEM). Without it, a self-signed certificate is
    /// created in DATA_DIR/tls on first start.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The local media address (advertised in SDP).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    media_addr: Vec<IpAddr>,
    /// Local media ports, `LO-HI` (LO even).
    #[arg(long, value_name = "LO-HI", value_parser = crate::dataplane_cmd::parse_range, default_value = "30000-39999")]
    port_range: RangeInclusive<u16>,
    /// Packet I/O backend of the relay (only `udp` in `up` today).
    #[arg(long, default_value = "udp")]
    backend: String,
    /// Relay worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Serve Prometheus counters on http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9090")]
    metrics_listen: SocketAddr,
    /// Requests per second allowed from one source address (flood
    /// protection); a load generator on one address needs more.
    #[arg(long, default_value_t = 100.0)]
    sip_rate: f64,
    /// Burst allowed above the rate, per source.
    #[arg(long, default_value_t = 200.0)]
    sip_burst: f64,
    /// Digest algorithms offered in challenges, most preferred first
    /// (RFC 8760). Clients that only read the first challenge and know MD5
    /// only (sipp 3.6, some phones) need `md5,sha-256`.
    #[arg(long, value_delimiter = ',', default_value = "sha-256,md5")]
    digest: Vec<String>,
    /// Also write CDRs to this ClickHouse server (HTTP URL, e.g.
    /// `http://127.0.0.1:8123`), table DATABASE.cdrs.
    #[arg(long, value_name = "URL")]
    cdr_clickhouse: Option<String>,
    /// ClickHouse database for CDRs.
    #[arg(long, value_name = "NAME", default_value = "voxplane")]
    cdr_clickhouse_db: String,
    /// Seconds without media after which a relay session is deleted.
    #[arg(long, default_value_t = 60)]
    media_timeout: u64,
    /// SIP timer T1 in milliseconds (RFC 3261 §17).
    #[arg(long, default_value_t = 500)]
    t1_ms: u64,
    /// SIP timer T2 in milliseconds.
    #[arg(long, default_value_t = 4000)]
    t2_ms: u64,
    /// SIP timer T4 in milliseconds.
    #[arg(long, default_value_t = 5000)]
    t4_ms: u64,
}

/// What embedding callers (`voxplane demo`) add to [`start`].
#[derive(Default)]
pub struct Extras {
    /// The relay's mirror sinks (in-process rings, HEP3, MIS).
    pub mirror: MirrorConfig,
    /// Passwords for the demo users instead of random ones (in the order
    /// of [`DEMO_USERS`]).
    pub demo_passwords: Option<[String; 2]>,
    /// Also hand every finished call here (after the CDR is queued).
    pub on_call: Option<control::driver::CallSink>,
    /// Do not serve `/metrics`.
    pub no_metrics: bool,
}

/// A running SIP core and relay. Dropping it stops both (the SIP core
/// first, so its last BYEs still reach the relay); [`Running::stop`] also
/// waits for the CDRs to be stored.
pub struct Running {
    /// The SIP core (shared with the metrics endpoint when it runs).
    pub driver: Arc<Driver>,
    /// The relay.
    pub backend: UdpBackend,
    /// Where `/metrics` is served, unless [`Extras::no_metrics`].
    pub metrics_addr: Option<SocketAddr>,
    cdr_writer: thread::JoinHandle<()>,
}

impl Running {
    /// Stops the SIP core, then the relay, then (when nothing else holds
    /// the SIP core, i.e. without `/metrics`) waits for the CDR writer to
    /// store the last CDRs.
    pub fn stop(self) {
        let Running {
            driver,
            backend,
            cdr_writer,
            ..
        } = self;
        let alone = Arc::try_unwrap(driver).map(drop).is_ok();
        drop(backend);
        if alone {
            let _ = cdr_writer.join();
        }
    }
}

/// Runs until killed.
pub fn run(args: &UpArgs) -> anyhow::Result<()> {
    let running = start(args, Extras::default())?;
    let driver = &running.driver;
    if let Some(tcp) = driver.tcp_addr {
        println!("voxplane up: SIP tcp:{tcp}");
    }
    if let Some(tls) = driver.tls_addr {
        println!("voxplane up: SIP tls:{tls}");
    }
    println!(
        "voxplane up: SIP udp:{} media {:?} ports {}-{} metrics http://{}/metrics data {}",
        driver.udp_addr,
        args.media_addr,
        args.port_range.start(),
        args.port_range.end(),
        running
            .metrics_addr
            .map_or_else(|| "-".to_owned(), |a| a.to_string()),
        args.data_dir.display()
    );
    loop {
        thread::park();
    }
}

/// Starts the relay, the SIP core and (unless [`Extras::no_metrics`]) the
/// metrics endpoint of `voxplane up`.
pub fn start(args: &UpArgs, extras: Extras) -> anyhow::Result<Running> {
    if args.backend != "udp" {
        anyhow::bail!(
            "voxplane up runs the udp backend only today (got --backend {})",
            args.backend
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let store = Arc::new(
        sbus::store::Store::open(&args.data_dir, sbus::types::MemberId(1))
            .with_context(|| format!("opening the SBUS store in {}", args.data_dir.display()))?,
    );
    let provisioning = Provisioning::new(Arc::clone(&store));
    seed_demo(&provisioning, extras.demo_passwords.as_ref())?;
    let policy = StorePolicy::new(provisioning).context("reading provisioning")?;
    let pick = |v6: bool| args.media_addr.iter().copied().find(|a| a.is_ipv6() == v6);
    let relay = RelayConfig {
        media_v4: pick(false),
        media_v6: pick(true),
        ports: args.port_range.clone(),
        media_timeout: Duration::from_secs(args.media_timeout),
        ..RelayConfig::default()
    };
    let workers = args
        .workers
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
    let backend = UdpBackend::start(UdpConfig {
        relay,
        workers,
        mirror: extras.mirror,
    })
    .context("starting the UDP relay")?;
    let mut core = Config::new(format!("{:08x}", rand::random::<u32>()), rand::random());
    core.timers = TimerConfig {
        t1: Duration::from_millis(args.t1_ms),
        t2: Duration::from_millis(args.t2_ms),
        t4: Duration::from_millis(args.t4_ms),
    };
    core.auth.algorithms = args
        .digest
        .iter()
        .map(|a| {
            control::auth::Algorithm::from_param(Some(a))
                .with_context(|| format!("unknown digest algorithm {a:?} (md5, sha-256)"))
        })
        .collect::<anyhow::Result<_>>()?;
    core.guard.rate_per_s = args.sip_rate;
    core.guard.burst = args.sip_burst;
    let tls = match args.sip_tls_listen {
        Some(addr) => Some((addr, tls_config(args, addr)?)),
        None => None,
    };
    let (mut sink, cdr_writer) = cdr_sink(
        Arc::clone(&store),
        match &args.cdr_clickhouse {
            Some(url) => Some(
                control::cdr::ClickHouseWriter::new(url, &args.cdr_clickhouse_db)
                    .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        },
    )?;
    if let Some(mut tap) = extras.on_call {
        let mut cdrs = sink;
        sink = Box::new(move |record| {
            cdrs(record.clone());
            tap(record);
        });
    }
    let driver = Driver::start(
        DriverConfig {
            udp: args.sip_listen,
            // The same port as UDP (0 picks one for each).
            tcp: (!args.no_tcp).then_some(args.sip_listen),
            tls,
            core,
        },
        backend.control(),
        Box::new(policy),
        sink,
    )
    .with_context(|| format!("binding SIP on {}", args.sip_listen))?;
    let driver = Arc::new(driver);
    let metrics_addr = if extras.no_metrics {
        None
    } else {
        let listener = TcpListener::bind(args.metrics_listen)
            .with_context(|| format!("binding metrics on {}", args.metrics_listen))?;
        let addr = listener.local_addr()?;
        let driver = Arc::clone(&driver);
        let control = backend.control();
        thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                if let Err(e) = serve_metrics(listener, driver, control) {
                    tracing::error!(error = %e, "metrics endpoint stopped");
                }
            })?;
        Some(addr)
    };
    Ok(Running {
        driver,
        backend,
        metrics_addr,
        cdr_writer,
    })
}

impl UpArgs {
    /// The settings `voxplane demo` runs the core with: loopback, UDP
    /// only, ephemeral SIP port, `ports` for media, data in `data_dir`.
    pub fn embedded(data_dir: PathBuf, ports: RangeInclusive<u16>) -> Self {
        Self {
            data_dir,
            sip_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            no_tcp: true,
            sip_tls_listen: None,
            tls_cert: None,
            tls_key: None,
            media_addr: vec![IpAddr::from([127, 0, 0, 1])],
            port_range: ports,
            backend: "udp".into(),
            workers: Some(1),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            sip_rate: 100.0,
            sip_burst: 200.0,
            digest: vec!["sha-256".into(), "md5".into()],
            cdr_clickhouse: None,
            cdr_clickhouse_db: "voxplane".into(),
            media_timeout: 60,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
        }
    }
}

/// The operator's certificate, or a self-signed one kept in the data dir.
fn tls_config(args: &UpArgs, addr: SocketAddr) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => (
            std::fs::read_to_string(c).with_context(|| format!("reading {}", c.display()))?,
            std::fs::read_to_string(k).with_context(|| format!("reading {}", k.display()))?,
        ),
        _ => {
            let dir = args.data_dir.join("tls");
            let (c, k) = (dir.join("sip-cert.pem"), dir.join("sip-key.pem"));
            if !c.exists() {
                std::fs::create_dir_all(&dir)?;
                let names = vec![
                    "voxplane.local".to_owned(),
                    "localhost".to_owned(),
                    addr.ip().to_string(),
                ];
                let (cert, key) = control::driver::self_signed(&names)?;
                std::fs::write(&c, cert)?;
                std::fs::write(&k, key)?;
                println!(
                    "voxplane up: created a self-signed SIP TLS certificate in {}",
                    c.display()
                );
            }
            (std::fs::read_to_string(&c)?, std::fs::read_to_string(&k)?)
        }
    };
    Ok(control::driver::tls_config(&cert, &key)?)
}

/// The demo domain and two users on first start (their passwords are
/// printed once: only digests are stored).
fn seed_demo(p: &Provisioning, passwords: Option<&[String; 2]>) -> anyhow::Result<()> {
    if p.domains()?.iter().any(|d| d.name == DEMO_DOMAIN) {
        return Ok(());
    }
    p.add_domain(DEMO_DOMAIN, Default::default())?;
    for (i, user) in DEMO_USERS.into_iter().enumerate() {
        if let Some(passwords) = passwords {
            p.add_user(&format!("{user}@{DEMO_DOMAIN}"), &passwords[i], user)?;
            continue;
        }
        let password: String = {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            (0..12)
                .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
                .collect()
        };
        p.add_user(&format!("{user}@{DEMO_DOMAIN}"), &password, user)?;
        println!("voxplane up: demo user {user}@{DEMO_DOMAIN} password {password}");
    }
    Ok(())
}

/// CDRs kept for a ClickHouse that is down (the store has them all).
const CLICKHOUSE_BACKLOG: usize = 100_000;

/// The demo users `voxplane up` seeds.
pub const DEMO_USERS: [&str; 2] = ["alice", "bob"];

/// The demo domain `voxplane up` seeds.
pub const DEMO_DOMAIN: &str = "voxplane.local";

/// CDRs are written to the store by a thread of their own (a durable commit
/// per call must not stall the SIP core), then, when configured, to
/// ClickHouse in batches; a ClickHouse outage keeps the batch (up to
/// [`CLICKHOUSE_BACKLOG`] CDRs) and retries every 5 s — the store keeps every
/// CDR regardless.
fn cdr_sink(
    store: Arc<sbus::store::Store>,
    mut clickhouse: Option<control::cdr::ClickHouseWriter>,
) -> anyhow::Result<(control::driver::CallSink, thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel::<control::b2bua::CallRecord>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let writer = thread::Builder::new().name("cdr".into()).spawn(move || {
        let mut pending = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(record) => {
                    tracing::info!(
                        call_id = %record.call_id,
                        status = record.status,
                        cause = record.cause.as_str(),
                        "call ended"
                    );
                    let cdr = record.to_cdr();
                    if let Err(e) = control::cdr::write(&store, &cdr) {
                        tracing::error!(error = %e, call_id = %record.call_id, "CDR not written");
                    }
                    if clickhouse.is_some() {
                        pending.push(cdr);
                        pending.extend(rx.try_iter().map(|r| r.to_cdr()));
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if let Some(ch) = clickhouse.as_mut()
                && !pending.is_empty()
            {
                match runtime.block_on(ch.write(&pending)) {
                    Ok(()) => pending.clear(),
                    Err(e) => {
                        tracing::warn!(error = %e, backlog = pending.len(), "ClickHouse CDR insert failed; will retry");
                        let excess = pending.len().saturating_sub(CLICKHOUSE_BACKLOG);
                        pending.drain(..excess);
                    }
                }
            }
        }
    })?;
    Ok((
        Box::new(move |record| {
            let _ = tx.send(record);
        }),
        writer,
    ))
}

/// `/metrics` on axum, on a small runtime of its own (the SIP core and
/// the relay run on their own threads).
fn serve_metrics(
    listener: TcpListener,
    driver: Arc<Driver>,
    control: UdpControl,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let body = render(&driver.snapshot(), &control);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        body,
                    )
                }
            }),
        );
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

/// The Prometheus text exposition of the SIP counters.
fn render(s: &Snapshot, control: &UdpControl) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP voxplane_sip_requests_total SIP requests received, by method.\n# TYPE voxplane_sip_requests_total counter"
    );
    for (m, v) in COUNTED_METHODS.iter().zip(s.sip.requests) {
        let _ = writeln!(out, "voxplane_sip_requests_total{{method=\"{m}\"}} {v}");
    }
    for (name, help, values) in [
        (
            "voxplane_sip_responses_received_total",
            "SIP responses received, by class.",
            s.sip.responses_in,
        ),
        (
            "voxplane_sip_responses_sent_total",
            "SIP responses sent, by class.",
            s.sip.responses_out,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (i, v) in values.iter().enumerate() {
            let _ = writeln!(out, "{name}{{class=\"{}xx\"}} {v}", i + 1);
        }
    }
    let (_, io) = control.counters();
    for (name, kind, help, v) in [
        (
            "voxplane_sip_malformed_total",
            "counter",
            "SIP messages that failed to parse.",
            s.sip.malformed,
        ),
        (
            "voxplane_sip_calls_total",
            "counter",
            "Calls routed.",
            s.sip.calls,
        ),
        (
            "voxplane_sip_calls_answered_total",
            "counter",
            "Calls answered.",
            s.sip.answered,
        ),
        (
            "voxplane_sip_auth_failures_total",
            "counter",
            "Digest authentication failures.",
            s.sip.auth_failures,
        ),
        (
            "voxplane_sip_rate_limited_total",
            "counter",
            "Requests refused by the rate limit.",
            s.sip.rate_limited,
        ),
        (
            "voxplane_sip_scanners_total",
            "counter",
            "Requests from scanner user agents.",
            s.sip.scanners,
        ),
        (
            "voxplane_sip_transactions_client_total",
            "counter",
            "Client transactions created.",
            s.txn.client_created,
        ),
        (
            "voxplane_sip_transactions_server_total",
            "counter",
            "Server transactions created.",
            s.txn.server_created,
        ),
        (
            "voxplane_sip_retransmissions_total",
            "counter",
            "Retransmissions sent.",
            s.txn.retransmissions,
        ),
        (
            "voxplane_sip_transaction_timeouts_total",
            "counter",
            "Timer B/F expiries.",
            s.txn.timeouts,
        ),
        (
            "voxplane_sip_transactions",
            "gauge",
            "Transactions alive.",
            s.transactions as u64,
        ),
        (
            "voxplane_sip_calls",
            "gauge",
            "Calls held (any phase).",
            s.calls as u64,
        ),
        (
            "voxplane_sip_dialogs",
            "gauge",
            "Confirmed dialogs.",
            s.dialogs as u64,
        ),
        (
            "voxplane_sip_registrations",
            "gauge",
            "Registered contacts.",
            s.registrations as u64,
        ),
        (
            "voxplane_sip_send_errors_total",
            "counter",
            "Messages the transports could not send.",
            s.send_errors,
        ),
        (
            "voxplane_sip_connections",
            "gauge",
            "TCP and TLS connections open.",
            s.connections as u64,
        ),
        (
            "voxplane_relay_sessions",
            "gauge",
            "Relay sessions.",
            io.sessions,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    out
}
