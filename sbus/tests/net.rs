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
    start_in(data, files, listener, peers, None).await
}

async fn start_in(
    data: &Path,
    files: &TlsFiles,
    listener: TcpListener,
    peers: Vec<SocketAddr>,
    region: Option<&str>,
) -> Running {
    let tls = Tls::load(files).unwrap();
    let store =
        Arc::new(Store::open_in_region(data, tls.member, region.map(str::to_owned)).unwrap());
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

/// Certificates of members 1..=n from one CA (in `dir`), listeners on loopback, their
/// addresses, and the CA file.
struct Cluster {
    files: Vec<TlsFiles>,
    listeners: Vec<TcpListener>,
    addrs: Vec<SocketAddr>,
    ca_file: PathBuf,
}

async fn cluster(dir: &Path, n: u32) -> Cluster {
    let ca = cert::generate_ca().unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let mut files = Vec::new();
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for id in 1..=n {
        let p = cert::generate_member(&ca.key_pem, MemberId(id)).unwrap();
        let (cert, key) = write_pair(dir, &format!("m{id}"), &p);
        files.push(TlsFiles {
            cert,
            key,
            ca: ca_file.clone(),
        });
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        listeners.push(l);
    }
    Cluster {
        files,
        listeners,
        addrs,
        ca_file,
    }
}

/// Starts every member of `c` in `regions` (data in `d1`, `d2`, … under `dir`).
async fn start_all(dir: &Path, c: &mut Cluster, regions: &[Option<&str>]) -> Vec<Option<Running>> {
    let mut members = Vec::new();
    for (i, l) in std::mem::take(&mut c.listeners).into_iter().enumerate() {
        let peers = c
            .addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| *a)
            .collect();
        let data = dir.join(format!("d{}", i + 1));
        members.push(Some(
            start_in(&data, &c.files[i], l, peers, regions[i]).await,
        ));
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_converge_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path(), 3).await;
    let mut members = start_all(dir.path(), &mut c, &[None, None, None]).await;
    let Cluster {
        files,
        addrs,
        ca_file,
        ..
    } = c;
    let data: Vec<PathBuf> = (1..=3).map(|i| dir.path().join(format!("d{i}"))).collect();
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

/// Data sovereignty over the real driver: an EU domain's subscriber, CDR and voicemail
/// reach the other EU member and never the US member, while a global trunk reaches all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eu_domain_never_reaches_a_us_member() {
    use sbus::record::{BlobTable, Cdr, Credentials, Domain, Placement, Subscriber, Trunk};
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path(), 3).await;
    let regions = [Some("eu-west"), Some("eu-west"), Some("us-east")];
    let members = start_all(dir.path(), &mut c, &regions).await;
    let store = |i: usize| Arc::clone(&members[i].as_ref().unwrap().store);
    let trunk = |name: &str| Trunk {
        name: name.into(),
        host: "192.0.2.10".into(),
        port: 5060,
        transport: "udp".into(),
        allow_ips: Vec::new(),
        auth: None,
        codecs: Vec::new(),
        options_ping_s: 0,
    };
    let eu = store(0);
    tokio::task::spawn_blocking(move || {
        eu.put(&Domain {
            name: "eu.example".into(),
            placement: Placement::Regions(vec!["eu-west".into()]),
            description: String::new(),
        })
        .unwrap();
        eu.put(&trunk("t1")).unwrap();
        eu.put(&Subscriber {
            domain: "eu.example".into(),
            user: "alice".into(),
            display_name: String::new(),
            credentials: Credentials {
                realm: "eu.example".into(),
                ha1: "0".repeat(32),
                ha1_sha256: String::new(),
            },
            voicemail: true,
        })
        .unwrap();
        eu.append_cdr(&Cdr {
            call_id: "c1".into(),
            domain: "eu.example".into(),
            from: "sip:bob@eu.example".into(),
            to: "sip:alice@eu.example".into(),
            start_ms: 1,
            answer_ms: None,
            end_ms: 2,
            status: 486,
            disconnect_cause: "busy".into(),
            legs: Vec::new(),
        })
        .unwrap();
        eu.put_blob(
            BlobTable::Voicemails,
            "eu.example/alice/1",
            &vec![7u8; 200_000],
        )
        .unwrap();
        eu.put(&trunk("t2")).unwrap();
    })
    .await
    .unwrap();
    // Every member holds everything member 1 wrote, as data or placeholders.
    let want = store(0).status().applied;
    let t0 = Instant::now();
    while !(store(1).status().applied.dominates(&want)
        && store(2).status().applied.dominates(&want))
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "no convergence");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..3 {
        assert!(
            store(i).get::<Trunk>("t1").unwrap().is_some(),
            "trunk on {i}"
        );
        assert!(store(i).get::<Domain>("eu.example").unwrap().is_some());
    }
    let eu2 = store(1);
    assert!(eu2.get::<Subscriber>("eu.example/alice").unwrap().is_some());
    assert_eq!(eu2.cdrs(None, 10).unwrap().len(), 1);
    let vm = eu2
        .blob(BlobTable::Voicemails, "eu.example/alice/1")
        .unwrap();
    assert_eq!(vm.map(|v| v.len()), Some(200_000));
    let us = store(2);
    assert!(us.get::<Subscriber>("eu.example/alice").unwrap().is_none());
    assert!(us.cdrs(None, 10).unwrap().is_empty());
    assert!(
        us.blob(BlobTable::Voicemails, "eu.example/alice/1")
            .unwrap()
            .is_none()
    );
    assert!(us.list::<Subscriber>("eu.example/").unwrap().is_empty());
    let st = us.status();
    assert_eq!(st.region.as_deref(), Some("us-east"));
    // Subscriber, CDR, and the voicemail's 4 chunks of 64 KiB.
    assert!(st.stats.placeholders_stored >= 6, "{:?}", st.stats);
    assert_eq!(st.stats.placement_refused, 0, "{:?}", st.stats);
    let text = net::metrics_text(&us);
    assert!(text.contains("sbus_placeholders_stored_total"), "{text}");
    // Nor may the US member write the domain's data.
    let err = us.append_cdr(&Cdr {
        call_id: "c2".into(),
        domain: "eu.example".into(),
        from: String::new(),
        to: String::new(),
        start_ms: 1,
        answer_ms: None,
        end_ms: 2,
        status: 200,
        disconnect_cause: String::new(),
        legs: Vec::new(),
    });
    assert!(err.is_err(), "{err:?}");
    assert_eq!(eu2.status().stats.placeholders_stored, 0);
    for m in members.into_iter().flatten() {
        let _ = m.stop.send(());
        m.task.await.unwrap();
    }
}
