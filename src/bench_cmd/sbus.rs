//! `voxplane bench sbus` (issue #4): three SBUS members under a write load on all of
//! them, then a member cut off while ≥ 500k changes land on the others and the flush
//! when it returns; beside a three-node NATS JetStream cluster (3-replica file stream)
//! taking the same number of messages of the same size, in the same run.
//!
//! The members are in-process drivers (`sbus::net::run`, the code `voxplane sbus`
//! runs) over real mutual-TLS TCP on loopback, each with its own SQLite store in a
//! temporary directory. One process gives one clock, so the lag from a change's
//! commit at its origin to its commit at each peer is measured directly (both ends are
//! timestamped by the same `Instant`), not through CLI polling.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sbus::cert;
use sbus::net::{self, Tls, TlsFiles};
use sbus::store::{Notice, Store};
use sbus::types::{MemberId, Op, Table, VersionVector};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Arguments of `voxplane bench sbus`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// Changes written under steady load, in all (a third on each member); also the
    /// number of messages published to NATS.
    #[arg(long, default_value_t = 60_000)]
    changes: u32,
    /// Concurrent writers per member (and concurrent publishers per NATS client).
    #[arg(long, default_value_t = 64)]
    writers: u32,
    /// Changes per write call (`Store::write_batch`; NATS: messages published before
    /// awaiting their acks). 1: every change is its own acknowledged write.
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Value (payload) size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Changes written while member 1 is cut off.
    #[arg(long, default_value_t = 500_000)]
    flush: u32,
    /// The NATS server binary.
    #[arg(long, default_value = "nats-server")]
    nats_server: PathBuf,
}

/// What one run measured.
#[derive(Debug, Serialize)]
struct Report {
    members: u32,
    changes: u32,
    writers_per_member: u32,
    batch: u32,
    value_bytes: usize,
    changes_per_sec: f64,
    commit_p50_ms: f64,
    commit_p99_ms: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
    commits: u64,
    flush_changes: u32,
    flush_secs: f64,
    flush_changes_per_sec: f64,
    nats_version: String,
    nats_msgs: u32,
    nats_msgs_per_sec: f64,
    nats_ack_p50_ms: f64,
    nats_ack_p99_ms: f64,
    // The names issue #4 uses for the same figures.
    changes_per_s: f64,
    lag_ms_p99: f64,
    flush_changes_per_s: f64,
    nats_changes_per_s: f64,
}

/// Runs the benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.writers == 0 || args.batch == 0 || args.changes < 3 {
        bail!("--writers and --batch must be at least 1, --changes at least 3");
    }
    let nats_version = nats_version(&args.nats_server)?;
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = rt.block_on(bench_sbus(args, dir.path()))?;
    let (msgs_per_sec, p50, p99) = rt.block_on(bench_nats(args, &dir.path().join("nats")))?;
    report.nats_version = nats_version;
    report.nats_msgs = args.changes;
    report.nats_msgs_per_sec = msgs_per_sec;
    report.nats_ack_p50_ms = p50;
    report.nats_ack_p99_ms = p99;
    report.changes_per_s = report.changes_per_sec;
    report.lag_ms_p99 = report.lag_p99_ms;
    report.flush_changes_per_s = report.flush_changes_per_sec;
    report.nats_changes_per_s = msgs_per_sec;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "SBUS: {} members, {} changes of {} B, {} writers per member, {} change(s) per write",
        r.members, r.changes, r.value_bytes, r.writers_per_member, r.batch
    );
    println!(
        "  replicated to every member   {:>10.0} changes/s",
        r.changes_per_sec
    );
    println!(
        "  commit at origin (fsync)     p50 {:.1} ms  p99 {:.1} ms  ({} commits)",
        r.commit_p50_ms, r.commit_p99_ms, r.commits
    );
    println!(
        "  lag origin commit -> peer    p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        r.lag_p50_ms, r.lag_p99_ms, r.lag_max_ms
    );
    println!(
        "  flush after cut              {} changes in {:.2} s = {:.0} changes/s",
        r.flush_changes, r.flush_secs, r.flush_changes_per_sec
    );
    println!(
        "NATS JetStream {} (3 nodes, R3 file stream): {} msgs",
        r.nats_version, r.nats_msgs
    );
    println!(
        "  published and acknowledged   {:>10.0} msgs/s",
        r.nats_msgs_per_sec
    );
    println!(
        "  publish -> ack               p50 {:.1} ms  p99 {:.1} ms",
        r.nats_ack_p50_ms, r.nats_ack_p99_ms
    );
}

// ---- SBUS ---------------------------------------------------------------------------

struct Member {
    store: Arc<Store>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), net::NetError>>,
}

struct Cluster {
    data: Vec<PathBuf>,
    files: Vec<TlsFiles>,
    addrs: Vec<SocketAddr>,
    members: Vec<Option<Member>>,
}

impl Cluster {
    async fn new(dir: &Path) -> anyhow::Result<Cluster> {
        let ca = cert::generate_ca()?;
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca.cert_pem)?;
        let mut c = Cluster {
            data: Vec::new(),
            files: Vec::new(),
            addrs: Vec::new(),
            members: Vec::new(),
        };
        let mut listeners = Vec::new();
        for id in 1..=3u32 {
            let pair = cert::generate_member(&ca.key_pem, MemberId(id))?;
            let (cert, key) = (
                dir.join(format!("m{id}.pem")),
                dir.join(format!("m{id}.key")),
            );
            std::fs::write(&cert, &pair.cert_pem)?;
            std::fs::write(&key, &pair.key_pem)?;
            c.files.push(TlsFiles {
                cert,
                key,
                ca: ca_file.clone(),
            });
            c.data.push(dir.join(format!("d{id}")));
            let l = TcpListener::bind("127.0.0.1:0").await?;
            c.addrs.push(l.local_addr()?);
            listeners.push(l);
        }
        for (i, l) in listeners.into_iter().enumerate() {
            let m = c.start(i, l)?;
            c.members.push(Some(m));
        }
        Ok(c)
    }

    fn start(&self, i: usize, listener: TcpListener) -> anyhow::Result<Member> {
        let tls = Tls::load(&self.files[i])?;
        let store = Arc::new(Store::open(&self.data[i], tls.member)?);
        let peers = (0..self.addrs.len())
            .filter(|&j| j != i)
            .map(|j| self.addrs[j])
            .collect();
        let (stop, rx) = oneshot::channel::<()>();
        let (s, d) = (Arc::clone(&store), self.data[i].clone());
        let task = tokio::spawn(async move {
            net::run(s, tls, listener, peers, &d, None, async {
                let _ = rx.await;
            })
            .await
        });
        Ok(Member { store, stop, task })
    }

    fn store(&self, i: usize) -> anyhow::Result<Arc<Store>> {
        self.members[i]
            .as_ref()
            .map(|m| Arc::clone(&m.store))
            .context("member is down")
    }

    /// Stops member `i` and waits until its store is closed.
    async fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(m) = self.members[i].take() {
            let _ = m.stop.send(());
            m.task.await??;
            drop(m.store);
        }
        Ok(())
    }

    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addrs[i]).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "rebinding");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.members[i] = Some(self.start(i, listener)?);
        Ok(())
    }

    /// Waits until every running member holds `want`; gives up after `limit`.
    async fn converge(&self, want: &VersionVector, limit: Duration) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            let done = self
                .members
                .iter()
                .flatten()
                .all(|m| m.store.status().applied.dominates(want));
            if done {
                return Ok(());
            }
            if t0.elapsed() > limit {
                bail!("members did not converge within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The union of the running members' version vectors.
    fn vector(&self) -> VersionVector {
        let mut v = VersionVector::default();
        for m in self.members.iter().flatten() {
            v.merge(&m.store.status().applied);
        }
        v
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            self.stop(i).await?;
        }
        Ok(())
    }
}

async fn bench_sbus(args: &Args, dir: &Path) -> anyhow::Result<Report> {
    let mut cluster = Cluster::new(dir).await?;
    let n = 3usize;
    // Warm up: every link up, every member holding a write from every member.
    for i in 0..n {
        let s = cluster.store(i)?;
        tokio::task::spawn_blocking(move || {
            s.put_raw(Table::Trunks, &format!("warmup{i}"), vec![0])
        })
        .await??;
    }
    cluster
        .converge(&cluster.vector(), Duration::from_secs(30))
        .await?;

    // Steady load on all three members.
    let per = args.changes / 3;
    let total = per * 3;
    let base = Instant::now();
    let acked: Arc<Vec<Vec<AtomicU64>>> = Arc::new(
        (0..n)
            .map(|_| (0..per).map(|_| AtomicU64::new(0)).collect())
            .collect(),
    );
    let mut watchers = Vec::new();
    for i in 0..n {
        let rx = cluster.store(i)?.subscribe(&[Table::Trunks]);
        let expect = (per as usize) * (n - 1);
        watchers.push(std::thread::spawn(move || {
            let mut seen: Vec<(usize, usize, u64)> = Vec::with_capacity(expect);
            while seen.len() < expect {
                match rx.recv_timeout(Duration::from_secs(60)) {
                    Ok(Notice::Changed { key, .. }) => {
                        if let Some((o, k)) = parse_key(&key)
                            && o != i
                        {
                            seen.push((o, k, micros(base)));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            seen
        }));
    }
    let before = cluster.vector();
    let t0 = Instant::now();
    let mut writers = Vec::new();
    for i in 0..n {
        for w in 0..args.writers {
            let (s, acked, size, step) = (
                cluster.store(i)?,
                Arc::clone(&acked),
                args.size,
                args.writers,
            );
            let batch = args.batch as usize;
            writers.push(std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
                let mut commit = Vec::new();
                let mine: Vec<u32> = (w..per).step_by(step as usize).collect();
                for keys in mine.chunks(batch) {
                    let ops = puts(keys, &format!("L{i}-"), size);
                    let start = micros(base);
                    s.write_batch(ops)?;
                    let end = micros(base);
                    for &k in keys {
                        acked[i][k as usize].store(end, Ordering::Relaxed);
                    }
                    commit.push(end - start);
                }
                Ok(commit)
            }));
        }
    }
    let mut commit_lat = Vec::new();
    for w in writers {
        commit_lat.extend(w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??);
    }
    let mut want = before;
    want.merge(&cluster.vector());
    cluster.converge(&want, Duration::from_secs(300)).await?;
    let load_secs = t0.elapsed().as_secs_f64();
    let mut lags = Vec::new();
    for w in watchers {
        let seen = w.join().map_err(|_| anyhow::anyhow!("watcher panicked"))?;
        for (o, k, at) in seen {
            lags.push(at.saturating_sub(acked[o][k].load(Ordering::Relaxed)));
        }
    }
    if lags.len() != (total as usize) * (n - 1) {
        bail!(
            "saw {} of {} changes arrive at peers",
            lags.len(),
            (total as usize) * (n - 1)
        );
    }
    lags.sort_unstable();
    commit_lat.sort_unstable();
    let commits = (0..n)
        .map(|i| cluster.store(i).map(|s| s.status().stats.commits))
        .sum::<anyhow::Result<u64>>()?;

    // Cut member 1 (the lowest id: it dials the others when it returns, so the flush
    // does not wait for their reconnect backoff), write on members 2 and 3, heal.
    cluster.stop(0).await?;
    let flush = args.flush;
    let mut loaders = Vec::new();
    for i in 1..n {
        for t in 0..4u32 {
            let (s, size) = (cluster.store(i)?, args.size);
            let mine: Vec<u32> = (0..flush)
                .filter(|k| k % 8 == (i as u32 - 1) * 4 + t)
                .collect();
            loaders.push(tokio::task::spawn_blocking(
                move || -> anyhow::Result<()> {
                    for chunk in mine.chunks(1_000) {
                        s.write_batch(puts(chunk, "F", size))?;
                    }
                    Ok(())
                },
            ));
        }
    }
    for l in loaders {
        l.await??;
    }
    let want = cluster.vector();
    cluster.converge(&want, Duration::from_secs(300)).await?;
    let t0 = Instant::now();
    cluster.restart(0).await?;
    cluster.converge(&want, Duration::from_secs(600)).await?;
    let flush_secs = t0.elapsed().as_secs_f64();
    cluster.shutdown().await?;

    Ok(Report {
        members: 3,
        changes: total,
        writers_per_member: args.writers,
        batch: args.batch,
        value_bytes: args.size,
        changes_per_sec: f64::from(total) / load_secs,
        commit_p50_ms: percentile_ms(&commit_lat, 0.5),
        commit_p99_ms: percentile_ms(&commit_lat, 0.99),
        lag_p50_ms: percentile_ms(&lags, 0.5),
        lag_p99_ms: percentile_ms(&lags, 0.99),
        lag_max_ms: percentile_ms(&lags, 1.0),
        commits,
        flush_changes: flush,
        flush_secs,
        flush_changes_per_sec: f64::from(flush) / flush_secs,
        nats_version: String::new(),
        nats_msgs: 0,
        nats_msgs_per_sec: 0.0,
        nats_ack_p50_ms: 0.0,
        nats_ack_p99_ms: 0.0,
        changes_per_s: 0.0,
        lag_ms_p99: 0.0,
        flush_changes_per_s: 0.0,
        nats_changes_per_s: 0.0,
    })
}

/// A put of `size` bytes to `{prefix}{k}` in `trunks` for each `k`.
fn puts(keys: &[u32], prefix: &str, size: usize) -> Vec<Op> {
    keys.iter()
        .map(|k| Op::Put {
            table: Table::Trunks,
            key: format!("{prefix}{k}"),
            value: vec![7u8; size],
        })
        .collect()
}

/// `L{origin}-{index}` → (origin, index).
fn parse_key(key: &str) -> Option<(usize, usize)> {
    let (o, k) = key.strip_prefix('L')?.split_once('-')?;
    Some((o.parse().ok()?, k.parse().ok()?))
}

fn micros(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The `q` quantile of sorted microseconds, in ms (0 when empty).
fn percentile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a non-empty slice, and a duration for display"
    )]
    let v = sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64;
    v / 1000.0
}

// ---- NATS JetStream -------------------------------------------------------------------

/// A `nats-server` process, killed when dropped.
struct NatsNode(Child);

impl Drop for NatsNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin).arg("--version").output().with_context(|| {
        format!(
            "`{}` not found: install Debian's nats-server (apt-get install nats-server) or pass --nats-server",
            bin.display()
        )
    })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("nats-server: ")
        .to_owned())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts three clustered JetStream servers on loopback; returns them and their client
/// ports.
fn start_nats(bin: &Path, dir: &Path) -> anyhow::Result<(Vec<NatsNode>, Vec<u16>)> {
    std::fs::create_dir_all(dir)?;
    let clients = (0..3)
        .map(|_| free_port())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let routes = (0..3)
        .map(|_| free_port())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let route_list = routes
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut nodes = Vec::new();
    for i in 0..3 {
        let store = dir.join(format!("n{i}"));
        let conf = dir.join(format!("n{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{}\nserver_name: n{i}\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: vxbench, listen: 127.0.0.1:{}, routes: [{route_list}] }}\n",
                clients[i],
                store.display(),
                routes[i]
            ),
        )?;
        let log = std::fs::File::create(dir.join(format!("n{i}.log")))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        nodes.push(NatsNode(child));
    }
    Ok((nodes, clients))
}

async fn bench_nats(args: &Args, dir: &Path) -> anyhow::Result<(f64, f64, f64)> {
    use async_nats::jetstream;
    let (_nodes, ports) = start_nats(&args.nats_server, dir)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut clients = Vec::new();
    for p in &ports {
        let client = loop {
            match async_nats::connect(format!("127.0.0.1:{p}")).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "nats not up yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).context("connecting to nats-server"),
            }
        };
        clients.push(client);
    }
    let js = jetstream::new(clients[0].clone());
    let config = jetstream::stream::Config {
        name: "SBUS".into(),
        subjects: vec!["sbus.>".into()],
        num_replicas: 3,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    // The stream can be created once the cluster elected a meta leader.
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "jetstream not ready");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e).context("creating the JetStream stream"),
        }
    }
    // Warm-up publish through every server.
    for c in &clients {
        jetstream::new(c.clone())
            .publish("sbus.warmup", vec![0u8; args.size].into())
            .await?
            .await?;
    }
    let per = args.changes / 3;
    let base = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in clients.iter().enumerate() {
        for w in 0..args.writers {
            let (js, size, step) = (jetstream::new(c.clone()), args.size, args.writers);
            let batch = args.batch as usize;
            tasks.spawn(async move {
                let mut lat = Vec::new();
                let mine: Vec<u32> = (w..per).step_by(step as usize).collect();
                for keys in mine.chunks(batch) {
                    let start = micros(base);
                    let mut acks = Vec::with_capacity(keys.len());
                    for k in keys {
                        acks.push(
                            js.publish(format!("sbus.m{i}.{k}"), vec![7u8; size].into())
                                .await?,
                        );
                    }
                    for ack in acks {
                        ack.await?;
                    }
                    lat.push(micros(base) - start);
                }
                anyhow::Ok(lat)
            });
        }
    }
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.extend(r??);
    }
    let secs = micros(base) as f64 / 1e6;
    lat.sort_unstable();
    Ok((
        f64::from(per * 3) / secs,
        percentile_ms(&lat, 0.5),
        percentile_ms(&lat, 0.99),
    ))
}
