//! `voxplane nqs` (the live quality service) and `voxplane token` (bearer
//! tokens for its API). The driver only wires I/O: the capture (a pcap file
//! with `--read`, then HEP3 over UDP with `--hep-listen`) feeds [`nqs::service::Pipeline`], whose rows go
//! to the sink workers (SQLite always, ClickHouse with `--clickhouse`); the
//! HTTP API serves from SQLite and the pcap spool.
//!
//! Data directory layout: `secret` (token signing key, 0600), `nqs.sqlite`,
//! `pcaps/YYYY/MM/DD/<call>.pcap`, `spool/<sink>/` (rows a sink could not
//! take yet).

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use nqs::api::auth::{Keyring, Scope};
use nqs::api::{ApiState, Metrics, Objects};
use nqs::capture::{Capture, CaptureConfig};
use nqs::live::LiveConfig;
use nqs::pcap_spool::{PcapSpool, PcapSpoolConfig};
use nqs::service::Pipeline;
use nqs::sink::clickhouse::ClickHouseSink;
use nqs::sink::spool::RowSpool;
use nqs::sink::sqlite::SqliteSink;
use nqs::sink::worker::{self, SinkHandle, WorkerConfig};
use wire::capture::{Decoder, FileReader};

/// Arguments of `voxplane nqs`.
#[derive(clap::Args, Debug)]
pub struct NqsArgs {
    /// Where the database, pcaps, spools and token secret live.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// Analyse this capture file (pcap or pcapng) through the live pipeline.
    #[arg(long, value_name = "FILE")]
    read: Option<PathBuf>,
    /// Receive HEP3 over UDP on this address (heplify, Kamailio/OpenSIPS
    /// siptrace, the dataplane's mirror).
    #[arg(long, value_name = "ADDR:PORT")]
    hep_listen: Option<SocketAddr>,
    /// Capture promiscuously on this interface (AF_PACKET TPACKET_V3 ring;
    /// repeatable). Needs CAP_NET_RAW.
    #[arg(long, value_name = "IFACE")]
    capture: Vec<String>,
    /// Capture threads; an interface's traffic is spread over them by flow
    /// (PACKET_FANOUT_HASH) and merged into the one analyser.
    #[arg(long, value_name = "N", default_value_t = 1)]
    capture_workers: usize,
    /// Size of each kernel capture ring (per interface and thread), in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    capture_ring_mb: usize,
    /// Also write rows to ClickHouse at this HTTP URL.
    #[arg(long, value_name = "URL")]
    clickhouse: Option<String>,
    /// ClickHouse database.
    #[arg(long, default_value = "nqs")]
    clickhouse_database: String,
    /// Have ClickHouse drop rows older than this many days (TTL; servers
    /// from 20.1 on).
    #[arg(long, value_name = "DAYS")]
    clickhouse_ttl_days: Option<u32>,
    /// Keep only the headers of RTP packets in the per-call pcaps.
    #[arg(long)]
    rtp_header_only: bool,
    /// Finish a call after this many seconds without SIP or media.
    #[arg(long, default_value_t = 60)]
    media_timeout_secs: u64,
    /// Hold at most this many calls (open, or finished within the 10 s
    /// late window); further new calls are not analysed and are counted
    /// (`nqs_calls_dropped_total`).
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    max_calls: usize,
    /// Hold at most this many RTP streams; further new streams are not
    /// analysed and are counted (`nqs_streams_dropped_total`).
    #[arg(long, value_name = "N", default_value_t = 500_000)]
    max_streams: usize,
    /// Remove per-call pcaps older than this many hours.
    #[arg(long)]
    pcap_max_age_hours: Option<u64>,
    /// Keep the pcap spool below this many megabytes.
    #[arg(long)]
    pcap_max_mb: Option<u64>,
    /// Offload per-call pcaps to this S3-compatible endpoint (credentials
    /// from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, region from
    /// `AWS_REGION`, default us-east-1).
    #[arg(long, value_name = "URL", requires = "s3_bucket")]
    s3_endpoint: Option<String>,
    /// Bucket for `--s3-endpoint`.
    #[arg(long, value_name = "BUCKET", requires = "s3_endpoint")]
    s3_bucket: Option<String>,
    /// Key prefix of offloaded pcaps.
    #[arg(long, value_name = "PREFIX", default_value = "pcaps/")]
    s3_prefix: String,
    /// Exit once the `--read` file is analysed and its rows are written
    /// (instead of serving the API until interrupted).
    #[arg(long)]
    exit_after_read: bool,
}

/// Arguments of `voxplane token`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Print a new bearer token.
    Create(TokenCreate),
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct TokenScopeArgs {
    /// A token that sees every call.
    #[arg(long)]
    admin: bool,
    /// A token that sees only calls of this domain (repeatable).
    #[arg(long, value_name = "DOMAIN")]
    reseller: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct TokenCreate {
    #[command(flatten)]
    scope: TokenScopeArgs,
    /// The service's data directory (holds the signing secret).
    #[arg(long, value_name = "DIR", default_value = "nqs-data")]
    data_dir: PathBuf,
}

/// Runs `voxplane token`.
pub fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let TokenCommand::Create(create) = &args.command;
    let keyring = keyring(&create.data_dir)?;
    let scope = if create.scope.admin {
        Scope::Admin
    } else {
        let domains: Vec<String> = create
            .scope
            .reseller
            .iter()
            .map(|d| d.trim().to_ascii_lowercase())
            .collect();
        if domains.iter().any(|d| d.is_empty()) {
            bail!("--reseller needs a domain");
        }
        Scope::Reseller { domains }
    };
    println!("{}", keyring.issue(&scope));
    Ok(())
}

/// Runs `voxplane nqs`.
pub fn run(args: &NqsArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: &NqsArgs) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let keyring = keyring(dir)?;
    let store = SqliteSink::open(&dir.join("nqs.sqlite"))?;
    let metrics = Arc::new(Metrics::default());
    let mut sinks: Vec<(String, SinkHandle, tokio::task::JoinHandle<()>)> = Vec::new();
    let (h, t) = worker::spawn(
        store.clone(),
        RowSpool::open(&dir.join("spool/sqlite"))?,
        WorkerConfig::default(),
    );
    sinks.push(("sqlite".into(), h, t));
    if let Some(url) = &args.clickhouse {
        let db = &args.clickhouse_database;
        if db.is_empty() || !db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("--clickhouse-database {db:?}: only letters, digits and _");
        }
        let mut sink = ClickHouseSink::new(url, &args.clickhouse_database);
        if let Some(days) = args.clickhouse_ttl_days {
            sink = sink.with_ttl_days(days);
        }
        let (h, t) = worker::spawn(
            sink,
            RowSpool::open(&dir.join("spool/clickhouse"))?,
            WorkerConfig::default(),
        );
        sinks.push(("clickhouse".into(), h, t));
    }
    let pcap_config = PcapSpoolConfig {
        dir: dir.join("pcaps"),
        rtp_header_only: args.rtp_header_only,
        max_age: args
            .pcap_max_age_hours
            .map(|h| Duration::from_secs(h * 3600)),
        max_bytes: args.pcap_max_mb.map(|m| m * 1_000_000),
    };
    // With S3 offload, retention removes only pcaps already uploaded.
    let mut removable = None;
    let (offload, objects) = match (&args.s3_endpoint, &args.s3_bucket) {
        (Some(endpoint), Some(bucket)) => {
            let config = nqs::offload::S3Config {
                endpoint: endpoint.clone(),
                bucket: bucket.clone(),
                prefix: args.s3_prefix.clone(),
            };
            let bucket: Arc<dyn object_store::ObjectStore> =
                Arc::new(nqs::offload::s3_store(&config).context("--s3-endpoint")?);
            let stats = Arc::new(nqs::offload::OffloadStats::default());
            let uploader = nqs::offload::PcapOffload {
                store: bucket.clone(),
                prefix: config.prefix,
                index: store.clone(),
                pcap_dir: pcap_config.dir.clone(),
                retry: nqs::offload::RetryConfig::default(),
                scan_interval: Duration::from_secs(1),
                stats: stats.clone(),
                clock: Arc::new(wall_now),
            };
            removable = Some(nqs::offload::PcapOffload::removable(store.clone()));
            (
                Some(uploader),
                Some(Objects {
                    store: bucket,
                    stats,
                }),
            )
        }
        _ => (None, None),
    };
    let state = ApiState {
        store,
        keyring,
        pcap_dir: pcap_config.dir.clone(),
        clock: Arc::new(unix_now),
        metrics: metrics.clone(),
        sinks: sinks
            .iter()
            .map(|(n, h, _)| (n.clone(), h.stats().clone()))
            .collect(),
        share_ttl_secs: 7 * 86_400,
        objects,
    };
    let listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("listening on {}", args.http_listen))?;
    let local = listener.local_addr()?;
    eprintln!("voxplane nqs: API on http://{local}/api/calls");
    let _ = std::io::stderr().flush();

    let handles: Vec<SinkHandle> = sinks.iter().map(|(_, h, _)| h.clone()).collect();
    let hep = match args.hep_listen {
        Some(addr) => {
            let socket = std::net::UdpSocket::bind(addr)
                .with_context(|| format!("HEP3 listener on {addr}"))?;
            eprintln!("voxplane nqs: HEP3 on udp://{}", socket.local_addr()?);
            Some(socket)
        }
        None => None,
    };
    let promiscuous = if args.capture.is_empty() {
        None
    } else {
        let config = CaptureConfig {
            interfaces: args.capture.clone(),
            workers: args.capture_workers,
            block_count: (args.capture_ring_mb.max(1) << 20) / CaptureConfig::default().block_size,
            ..CaptureConfig::default()
        };
        let capture = Capture::start(&config)?;
        eprintln!(
            "voxplane nqs: capturing on {} ({} thread(s))",
            args.capture.join(", "),
            args.capture_workers
        );
        Some(capture)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let live_hep = hep.is_some() || promiscuous.is_some();
    let capture = if args.read.is_some() || live_hep {
        let source = Source {
            read: args.read.clone(),
            hep,
            promiscuous,
            stop: stop.clone(),
        };
        let mut live = LiveConfig {
            media_timeout_ns: args.media_timeout_secs.saturating_mul(1_000_000_000),
            ..LiveConfig::default()
        };
        live.analyzer.max_calls = args.max_calls;
        live.analyzer.max_streams = args.max_streams;
        let mut spool = PcapSpool::new(pcap_config.clone())?;
        if let Some(removable) = &removable {
            spool = spool.with_removable(removable.clone());
        }
        let metrics = metrics.clone();
        Some(tokio::task::spawn_blocking(move || {
            capture(source, live, spool, metrics, &handles)
        }))
    } else {
        tracing::warn!(
            "no capture source (--read, --hep-listen, --capture); serving stored calls only"
        );
        drop(handles);
        None
    };

    let app = nqs::api::router(state);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    // With a capture running, retention runs in the capture thread, which
    // knows the files of open calls; otherwise here.
    let retention = tokio::spawn(retention_loop(pcap_config, removable, capture.is_some()));
    // The uploader finds pending pcaps in the index, so stopping it at any
    // point loses nothing: the next run carries on.
    let offload = offload.map(|o| {
        eprintln!("voxplane nqs: offloading pcaps to S3 ({})", o.prefix);
        tokio::spawn(o.run(std::future::pending()))
    });

    let report = |(calls, packets): (u64, u64)| {
        eprintln!("voxplane nqs: read {packets} packets, {calls} calls finished");
    };
    if args.exit_after_read && !live_hep {
        if let Some(capture) = capture {
            report(capture.await.context("capture task")??);
        }
        server.abort();
    } else {
        if let Err(e) = server.await.context("HTTP server")? {
            bail!("HTTP server: {e}");
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(capture) = capture {
            report(capture.await.context("capture task")??);
        }
    }
    retention.abort();
    if let Some(o) = offload {
        o.abort();
    }
    // Every handle gone: the workers write (or spool) what they hold.
    for (name, handle, task) in sinks {
        drop(handle);
        task.await.with_context(|| format!("{name} sink worker"))?;
    }
    Ok(())
}

/// The capture sources of one run.
struct Source {
    read: Option<PathBuf>,
    hep: Option<std::net::UdpSocket>,
    promiscuous: Option<Capture>,
    stop: Arc<AtomicBool>,
}

/// Runs the capture sources through one pipeline (a file first, then HEP3
/// and the promiscuous capture until `stop`); returns (calls finished,
/// packets).
fn capture(
    source: Source,
    live: LiveConfig,
    spool: PcapSpool,
    metrics: Arc<Metrics>,
    sinks: &[SinkHandle],
) -> anyhow::Result<(u64, u64)> {
    let mut pipeline = Pipeline::new(live, Some(spool), metrics);
    let mut out = Output {
        sinks,
        calls: 0,
        packets: 0,
        next_retention: std::time::Instant::now(),
    };
    let mut last = wire::Timestamp(0);
    if let Some(path) = &source.read {
        last = read_file(path, &mut pipeline, &mut out)?;
    }
    if source.hep.is_some() || source.promiscuous.is_some() {
        last = run_live(source, &mut pipeline, &mut out)?;
    }
    pipeline.finish_all(last);
    out.send(pipeline.take_batch())?;
    out.next_retention = std::time::Instant::now();
    out.retention(&mut pipeline);
    Ok((out.calls, out.packets))
}

/// Runs the live sources (HEP3, promiscuous capture) until `stop`; returns
/// the time they ended.
fn run_live(
    mut source: Source,
    pipeline: &mut Pipeline,
    out: &mut Output<'_>,
) -> anyhow::Result<wire::Timestamp> {
    if let Some(socket) = &source.hep {
        socket.set_nonblocking(true).context("HEP3 socket")?;
    }
    let mut buf = vec![0u8; 65_536];
    let mut decoder = Decoder::new();
    let mut idle_since = std::time::Instant::now();
    while !source.stop.load(Ordering::Relaxed) {
        let before = out.packets;
        let mut dropped = 0u64;
        if let Some(capture) = source.promiscuous.as_mut() {
            capture.drain(4096, |frame| match decoder.decode(frame) {
                Some(packet) => {
                    out.packets += 1;
                    pipeline.handle_packet(&packet);
                }
                None => dropped += 1,
            });
            let s = capture.stats();
            let m = pipeline.metrics();
            for (from, to) in [
                (&s.kernel_packets, &m.capture_packets),
                (&s.kernel_drops, &m.capture_kernel_drops),
                (&s.freeze_q, &m.capture_freeze_q),
                (&s.handoff_drops, &m.capture_handoff_drops),
            ] {
                to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        if let Some(socket) = &source.hep {
            for _ in 0..256 {
                match socket.recv(&mut buf) {
                    Ok(n) => match wire::hep::Hep3Repr::parse(&buf[..n]) {
                        Ok(Some(hep)) => {
                            out.packets += 1;
                            pipeline.handle_packet(&hep.to_packet());
                        }
                        // Not HEP3, or unusable: dropped and counted.
                        Ok(None) | Err(_) => dropped += 1,
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("receiving HEP3"),
                }
            }
        }
        for _ in 0..dropped {
            pipeline.frame_dropped();
        }
        if out.packets == before && dropped == 0 {
            // Idle: after 200 ms without input the lifecycle timers run on
            // the wall clock.
            if idle_since.elapsed() >= Duration::from_millis(200) {
                idle_since = std::time::Instant::now();
                pipeline.handle_timeout(wall_now());
                out.send(pipeline.take_batch())?;
                out.retention(pipeline);
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        idle_since = std::time::Instant::now();
        out.send(pipeline.take_batch())?;
        out.retention(pipeline);
    }
    if let Some(capture) = source.promiscuous.take() {
        capture.stop();
    }
    Ok(wall_now())
}

/// Where the capture's rows go.
struct Output<'a> {
    sinks: &'a [SinkHandle],
    calls: u64,
    packets: u64,
    next_retention: std::time::Instant,
}

impl Output<'_> {
    /// Runs the pcap retention at most once a minute.
    fn retention(&mut self, pipeline: &mut Pipeline) {
        let now = std::time::Instant::now();
        if now < self.next_retention {
            return;
        }
        self.next_retention = now + Duration::from_secs(60);
        match pipeline.enforce_retention(SystemTime::now()) {
            Ok(Some(r)) if r.expired + r.evicted > 0 => {
                tracing::info!(
                    "pcap retention: {} expired, {} evicted",
                    r.expired,
                    r.evicted
                );
            }
            Err(e) => tracing::warn!("pcap retention: {e}"),
            _ => {}
        }
    }

    fn send(&mut self, batch: nqs::sink::Batch) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.calls += batch.calls.len() as u64;
        for sink in self.sinks {
            if sink.blocking_send(batch.clone()).is_err() {
                bail!("a sink worker stopped");
            }
        }
        Ok(())
    }
}

/// Reads a capture file through the pipeline; returns its last frame time.
fn read_file(
    path: &Path,
    pipeline: &mut Pipeline,
    out: &mut Output<'_>,
) -> anyhow::Result<wire::Timestamp> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = FileReader::new(std::io::BufReader::with_capacity(1 << 16, file))
        .with_context(|| format!("reading {}", path.display()))?;
    let mut decoder = Decoder::new();
    let mut last = wire::Timestamp(0);
    while let Some(frame) = reader.next_frame() {
        let frame = frame.with_context(|| format!("reading {}", path.display()))?;
        last = last.max(frame.ts);
        match decoder.decode(&frame) {
            Some(packet) => {
                out.packets += 1;
                pipeline.handle_packet(&packet);
            }
            None => pipeline.frame_dropped(),
        }
        // Rows leave in batches of a few hundred, not per packet.
        if out.packets.is_multiple_of(256) {
            out.send(pipeline.take_batch())?;
            out.retention(pipeline);
        }
    }
    // Calls still open are finished at the end of the input only when no
    // live source follows; the caller decides.
    Ok(last)
}

fn wall_now() -> wire::Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    wire::Timestamp::from_secs_nanos(d.as_secs(), d.subsec_nanos())
}

async fn retention_loop(
    config: PcapSpoolConfig,
    removable: Option<nqs::pcap_spool::Removable>,
    capturing: bool,
) {
    if capturing || (config.max_age.is_none() && config.max_bytes.is_none()) {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let config = config.clone();
        let removable = removable.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut spool = PcapSpool::new(config)?;
            if let Some(r) = removable {
                spool = spool.with_removable(r);
            }
            spool.enforce_retention(SystemTime::now())
        })
        .await;
        match result {
            Ok(Ok(r)) if r.expired + r.evicted > 0 => {
                tracing::info!(
                    "pcap retention: {} expired, {} evicted",
                    r.expired,
                    r.evicted
                );
            }
            Ok(Err(e)) => tracing::warn!("pcap retention: {e}"),
            _ => {}
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The data directory's signing secret, created (32 random bytes, mode
/// 0600) on first use (NQS and MIS data directories alike).
pub(crate) fn keyring(dir: &Path) -> anyhow::Result<Keyring> {
    use rand::RngCore;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("secret");
    match fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => return Ok(Keyring::new(&secret)),
        Ok(_) => bail!("{}: secret shorter than 32 bytes", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&secret)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Keyring::new(&secret))
}
