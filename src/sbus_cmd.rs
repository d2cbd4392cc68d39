//! `voxplane sbus …` (run a member; talk to a running one) and `voxplane cert …`
//! (cluster CA and member certificates). The member is `sbus::net::run`; the other
//! commands speak JSON lines to its control socket `DATA_DIR/sbus.sock`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use sbus::net::{CONTROL_SOCKET, Tls, TlsFiles};
use sbus::store::Store;
use sbus::types::MemberId;

/// Arguments of `voxplane sbus`: without a subcommand, run a member.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SbusArgs {
    #[command(subcommand)]
    cmd: Option<SbusCmd>,
    #[command(flatten)]
    run: RunArgs,
}

/// Arguments of a running member.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Data directory (the SQLite store and the control socket).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to accept peer links on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:443")]
    listen: String,
    /// This member's region (data sovereignty): it holds only the data of domains whose
    /// placement names it, and global data. Without it, only global data.
    #[arg(long, value_name = "NAME")]
    region: Option<String>,
    /// Serve Prometheus `/metrics` on this address.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<String>,
    /// A peer to link to (repeat for each). With `ID@`, the peer counts as a member from
    /// the start (tombstones and log entries are kept for it before its first contact).
    #[arg(long = "peer", value_name = "[ID@]ADDR:PORT")]
    peers: Vec<String>,
    /// This member's certificate (PEM; names `m<ID>.sbus.voxplane`).
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The cluster CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum SbusCmd {
    /// Write a row (the value is stored as given, UTF-8).
    Put {
        /// Data directory of the running member.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Table: domains, subscribers, dialplans, routing_rules, trunks, greetings, voicemails.
        table: String,
        /// Row key.
        key: String,
        /// Value.
        value: String,
    },
    /// Read a row (from the running member, or from the store file if none runs).
    Get {
        /// Data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Table.
        table: String,
        /// Row key.
        key: String,
    },
    /// Delete a row.
    Delete {
        /// Data directory of the running member.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Table.
        table: String,
        /// Row key.
        key: String,
    },
    /// Status as JSON: version vector, counters, peers.
    Status {
        /// Data directory of the running member.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Per-peer replication lag (changes queued for each peer).
    Lag {
        /// Data directory of the running member.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Peers: id, link state, what each has acknowledged.
    Peers {
        /// Data directory of the running member.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Every live row and CDR as JSON lines, read from the store file (a running member
    /// may keep running: WAL readers see its last commit).
    Export {
        /// Data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
}

/// Arguments of `voxplane cert`.
#[derive(clap::Args, Debug)]
pub struct CertArgs {
    #[command(subcommand)]
    cmd: CertCmd,
}

#[derive(clap::Subcommand, Debug)]
enum CertCmd {
    /// Create a cluster CA: DIR/ca.pem and DIR/ca.key.
    Ca {
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Create a member certificate signed by the CA: DIR/member.pem and DIR/member.key.
    Member {
        /// The CA's private key.
        #[arg(long, value_name = "FILE")]
        ca_key: PathBuf,
        /// Member id (a positive integer, unique in the cluster).
        #[arg(long)]
        id: u32,
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Runs `voxplane sbus …`.
///
/// # Errors
/// Bad arguments, files, or an unreachable member.
pub fn run(args: &SbusArgs) -> Result<()> {
    match &args.cmd {
        None => run_member(&args.run),
        Some(SbusCmd::Put {
            data_dir,
            table,
            key,
            value,
        }) => {
            let r = request(
                data_dir,
                &serde_json::json!({"op": "put", "table": table, "key": key, "value": value}),
            )?;
            println!("{}", r["seq"]);
            Ok(())
        }
        Some(SbusCmd::Delete {
            data_dir,
            table,
            key,
        }) => {
            let r = request(
                data_dir,
                &serde_json::json!({"op": "delete", "table": table, "key": key}),
            )?;
            println!("{}", r["seq"]);
            Ok(())
        }
        Some(SbusCmd::Get {
            data_dir,
            table,
            key,
        }) => {
            let value = if data_dir.join(CONTROL_SOCKET).exists() {
                let r = request(
                    data_dir,
                    &serde_json::json!({"op": "get", "table": table, "key": key}),
                )?;
                r["value"].as_str().map(str::to_owned)
            } else {
                get_offline(data_dir, table, key)?
            };
            match value {
                Some(v) => {
                    println!("{v}");
                    Ok(())
                }
                None => bail!("{table}/{key}: not found"),
            }
        }
        Some(SbusCmd::Status { data_dir }) => {
            let r = request(data_dir, &serde_json::json!({"op": "status"}))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Some(SbusCmd::Peers { data_dir }) => {
            let r = request(data_dir, &serde_json::json!({"op": "status"}))?;
            for p in r["peers"].as_array().into_iter().flatten() {
                println!(
                    "{} connected={} acked={}",
                    p["member"], p["connected"], p["acked"]
                );
            }
            Ok(())
        }
        Some(SbusCmd::Export { data_dir }) => export(data_dir),
        Some(SbusCmd::Lag { data_dir }) => {
            let r = request(data_dir, &serde_json::json!({"op": "status"}))?;
            println!(
                "{:>8} {:>9} {:>10} {:>10}",
                "peer", "connected", "lag", "inflight"
            );
            for p in r["peers"].as_array().into_iter().flatten() {
                println!(
                    "{:>8} {:>9} {:>10} {:>10}",
                    p["member"].to_string(),
                    p["connected"].to_string(),
                    p["lag"].to_string(),
                    p["inflight"].to_string()
                );
            }
            Ok(())
        }
    }
}

/// Runs `voxplane cert …`.
///
/// # Errors
/// Key generation failed or files cannot be written.
pub fn cert(args: &CertArgs) -> Result<()> {
    match &args.cmd {
        CertCmd::Ca { out } => {
            let p = sbus::cert::generate_ca()?;
            write_pair(out, "ca", &p)
        }
        CertCmd::Member { ca_key, id, out } => {
            if *id == 0 {
                bail!("member ids start at 1");
            }
            let key = std::fs::read_to_string(ca_key)
                .with_context(|| format!("reading {}", ca_key.display()))?;
            let p = sbus::cert::generate_member(&key, MemberId(*id))?;
            write_pair(out, "member", &p)
        }
    }
}

fn write_pair(dir: &Path, name: &str, p: &sbus::cert::Pair) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &p.cert_pem).with_context(|| format!("writing {}", cert.display()))?;
    write_private(&key, &p.key_pem)?;
    println!("{}\n{}", cert.display(), key.display());
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn run_member(a: &RunArgs) -> Result<()> {
    let (Some(data_dir), Some(cert), Some(key), Some(ca)) = (&a.data_dir, &a.cert, &a.key, &a.ca)
    else {
        bail!("a member needs --data-dir, --cert, --key and --ca (or use a subcommand)");
    };
    let tls = Tls::load(&TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        ca: ca.clone(),
    })?;
    let listen = resolve(&a.listen)?;
    let mut peers = Vec::new();
    let mut ids = Vec::new();
    for p in &a.peers {
        let addr = match p.split_once('@') {
            Some((id, addr)) => {
                ids.push(MemberId(
                    id.parse()
                        .with_context(|| format!("--peer {p}: bad member id"))?,
                ));
                addr
            }
            None => p.as_str(),
        };
        peers.push(resolve(addr)?);
    }
    let store = Arc::new(Store::open_in_region(
        data_dir,
        tls.member,
        a.region.clone(),
    )?);
    store.with_replica(|r, _| ids.iter().for_each(|&id| r.add_peer(id)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let metrics = match &a.metrics {
            Some(m) => {
                let addr = resolve(m)?;
                Some(
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("binding {addr}"))?,
                )
            }
            None => None,
        };
        tracing::info!(member = %tls.member, %listen, "sbus member running");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        sbus::net::run(store, tls, listener, peers, data_dir, metrics, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
        Ok(())
    })
}

fn resolve(s: &str) -> Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("resolving {s}"))?
        .next()
        .with_context(|| format!("{s}: no address"))
}

fn request(data_dir: &Path, req: &serde_json::Value) -> Result<serde_json::Value> {
    let path = data_dir.join(CONTROL_SOCKET);
    let mut sock = UnixStream::connect(&path)
        .with_context(|| format!("no running member at {} ", path.display()))?;
    writeln!(sock, "{req}")?;
    let mut line = String::new();
    BufReader::new(sock).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line).context("bad reply")?;
    if let Some(e) = v.get("error") {
        bail!("{}", e.as_str().unwrap_or("error"));
    }
    Ok(v)
}

fn export(data_dir: &Path) -> Result<()> {
    use sbus::storage::Storage;
    let path = data_dir.join(sbus::store::DB_FILE);
    if !path.exists() {
        bail!("no store at {}", path.display());
    }
    let mut s = sbus::sqlite::SqliteStorage::open_reader(&path)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    for t in sbus::types::Table::ALL {
        for (key, row) in s.scan(t, "")? {
            let Some(v) = row.value else { continue };
            let line = serde_json::json!({
                "table": t.name(),
                "key": key,
                "value": String::from_utf8_lossy(&v),
                "origin": row.version.origin.0,
                "hlc": [row.version.hlc.wall, row.version.hlc.logical],
            });
            writeln!(out, "{line}")?;
        }
    }
    let mut after = None;
    loop {
        let page = s.cdrs(after, 4_096)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for c in &page {
            let line = serde_json::json!({
                "table": "cdrs",
                "origin": c.id.origin.0,
                "seq": c.id.seq.0,
                "record": String::from_utf8_lossy(&c.record),
            });
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

fn get_offline(data_dir: &Path, table: &str, key: &str) -> Result<Option<String>> {
    use sbus::storage::Storage;
    let t = sbus::types::Table::from_name(table).with_context(|| format!("no table {table}"))?;
    let path = data_dir.join(sbus::store::DB_FILE);
    if !path.exists() {
        bail!("no store at {}", path.display());
    }
    let mut s = sbus::sqlite::SqliteStorage::open_reader(&path)?;
    Ok(s.row(t, key)?
        .and_then(|r| r.value)
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}
