//! Three members on loopback over mutual TLS (the real driver, in one process): writes on
//! any member reach the others; a member stopped while writes continue catches up when it
//! returns (flush measured); a member whose certificate comes from another CA gets
//! nothing.
#![expect(
    clippy::disallowed_methods,
    reason = "a real-time test of the driver measures wall time"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use sbus::cert::{self, Pair};
use sbus::net::{self, Tls, TlsFiles};
use sbus::store::Store;
use sbus::types::{MemberId, Table};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Running {
    store: Arc<Store>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn write_pair(dir: &Path, name: &str, p: &Pair) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}.key"));
    std::fs::write(&c, &p.cert_pem).unwrap();
    std::fs::write(&k, &p.key_pem).unwrap();
    (c, k)
}

async fn start(
    data: &Path,
    files: &TlsFiles,
    listener: TcpListener,
    peers: Vec<SocketAddr>,
) -> Running {
    let tls = Tls::load(files).unwrap();
    let store = Arc::new(Store::open(data, tls.member).unwrap());
    let (stop, rx) = oneshot::channel::<()>();
    let (s, d) = (Arc::clone(&store), data.to_owned());
    let task = tokio::spawn(async move {
        net::run(s, tls, listener, peers, &d, None, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Running { store, stop, task }
}

async fn put(store: &Arc<Store>, key: &str, value: &str) {
    let (s, k, v) = (Arc::clone(store), key.to_owned(), value.as_bytes().to_vec());
    tokio::task::spawn_blocking(move || s.put_raw(Table::Domains, &k, v).unwrap())
        .await
        .unwrap();
}

async fn wait_for(store: &Arc<Store>, key: &str, value: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if store.get_raw(Table::Domains, key).unwrap().as_deref() == Some(value.as_bytes()) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{key}={value} did not arrive within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_converge_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = cert::generate_ca().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let mut files = Vec::new();
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for id in 1..=3u32 {
        let p = cert::generate_member(&ca.key_pem, MemberId(id)).unwrap();
        let (cert, key) = write_pair(dir.path(), &format!("m{id}"), &p);
        files.push(TlsFiles {
            cert,
            key,
            ca: ca_file.clone(),
        });
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        listeners.push(l);
    }
    let data: Vec<PathBuf> = (1..=3).map(|i| dir.path().join(format!("d{i}"))).collect();
    let mut members = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let peers = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| *a)
            .collect();
        members.push(Some(start(&data[i], &files[i], l, peers).await));
    }
    let store = |m: &Vec<Option<Running>>, i: usize| Arc::clone(&m[i].as_ref().unwrap().store);

    // A write on any member reaches the others.
    put(&store(&members, 0), "a.example", "1").await;
    put(&store(&members, 2), "c.example", "3").await;
    for i in 0..3 {
        wait_for(
            &store(&members, i),
            "a.example",
            "1",
            Duration::from_secs(10),
        )
        .await;
        wait_for(
            &store(&members, i),
            "c.example",
            "3",
            Duration::from_secs(10),
        )
        .await;
    }

    // Stop member 2; write while it is away; it catches up when it returns.
    let m2 = members[1].take().unwrap();
    let _ = m2.stop.send(());
    m2.task.await.unwrap();
    drop(m2.store);
    let queued = 2_000u32;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let s1 = store(&members, 0);
            tokio::task::spawn_blocking(move || {
                for k in (w..queued).step_by(8) {
                    s1.put_raw(Table::Domains, &format!("q{k}"), b"x".to_vec())
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    put(&store(&members, 0), "last", "yes").await;
    // The queue for the absent member is observable in /metrics.
    let text = net::metrics_text(&store(&members, 0));
    let lag: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("sbus_peer_lag_changes{peer=\"2\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no lag for member 2 in:\n{text}"));
    assert!(lag > u64::from(queued), "lag {lag}");
    assert!(text.contains("sbus_peer_connected{peer=\"2\"} 0"), "{text}");
    let peers = vec![addrs[0], addrs[2]];
    let l = TcpListener::bind(addrs[1]).await.unwrap();
    let t0 = Instant::now();
    members[1] = Some(start(&data[1], &files[1], l, peers).await);
    // Caught up when its durable version vector holds all of member 1's changes (a
    // snapshot delivers rows in key order, so one key arriving proves nothing).
    let want = store(&members, 0).status().applied;
    loop {
        if store(&members, 1).status().applied.dominates(&want) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "member 2 did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let flush = t0.elapsed();
    wait_for(&store(&members, 1), "last", "yes", Duration::from_secs(1)).await;
    eprintln!(
        "flush of {queued} queued changes after restart: {flush:?} ({:.0} changes/s)",
        f64::from(queued) / flush.as_secs_f64()
    );
    for k in (0..queued).step_by(97) {
        assert_eq!(
            store(&members, 1)
                .get_raw(Table::Domains, &format!("q{k}"))
                .unwrap(),
            Some(b"x".to_vec()),
            "q{k} missing on member 2: {:?} / member 1: {:?} / member 3: {:?}",
            store(&members, 1).status(),
            store(&members, 0).status(),
            store(&members, 2).status()
        );
    }

    // A client without a certificate gets nothing: no frame, the link is closed.
    {
        use tokio::io::AsyncReadExt;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&ca_file).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addrs[0]).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(cert::CLUSTER_NAME).unwrap();
        if let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
        {
            let mut buf = [0u8; 4];
            let read = tokio::time::timeout(Duration::from_secs(3), tls.read_exact(&mut buf)).await;
            assert!(
                matches!(read, Ok(Err(_))),
                "a client without a certificate read {read:?}"
            );
        }
    }

    // A member certified by another CA gets nothing, and is not a peer.
    let foreign_ca = cert::generate_ca().unwrap();
    let foreign_ca_file = dir.path().join("foreign-ca.pem");
    std::fs::write(&foreign_ca_file, &foreign_ca.cert_pem).unwrap();
    let p = cert::generate_member(&foreign_ca.key_pem, MemberId(0)).unwrap();
    let (cert, key) = write_pair(dir.path(), "foreign", &p);
    let foreign_files = TlsFiles {
        cert,
        key,
        ca: foreign_ca_file,
    };
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let foreign = start(&dir.path().join("d0"), &foreign_files, l, addrs.clone()).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        foreign.store.get_raw(Table::Domains, "a.example").unwrap(),
        None
    );
    assert!(foreign.store.status().applied.0.is_empty());
    for i in 0..3 {
        let st = store(&members, i).status();
        assert!(
            st.peers.iter().all(|(m, _)| *m != MemberId(0)),
            "member {i} accepted the foreign member"
        );
    }
    let _ = foreign.stop.send(());
    foreign.task.await.unwrap();
    for m in members.into_iter().flatten() {
        let _ = m.stop.send(());
        m.task.await.unwrap();
    }
    // Peer ids learned from links are kept: a member started with no --peer at all
    // still counts both as members.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let alone = start(&data[0], &files[0], l, Vec::new()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut peers: Vec<MemberId> = alone.store.status().peers.iter().map(|(p, _)| *p).collect();
    peers.sort();
    assert_eq!(peers, vec![MemberId(2), MemberId(3)]);
    let _ = alone.stop.send(());
    alone.task.await.unwrap();
}
