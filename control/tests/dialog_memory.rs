//! Heap held per established call by the SIP core: 2,000 calls set up
//! through the B2BUA (INVITE → 200 → ACK, media anchored on a real relay
//! shard), their transactions left to finish on virtual time, then the
//! live heap is counted by a counting allocator. The goal is
//! ≤ 4 KiB per held dialog; this asserts it for the core (B2BUA call,
//! both dialogs, relay session, indexes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use control::b2bua::{B2bua, Config};
use control::transport::Peer;
use dataplane::relay::{Relay, RelayConfig};
use wire::sip::Message;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CALLS: usize = 2_000;

#[test]
fn a_held_call_costs_less_than_4_kib() {
    #[expect(clippy::disallowed_methods, reason = "the origin of virtual time")]
    let mut now = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let policy = control::policy::demo_policy(dir.path(), "198.18.0.10").unwrap();
    let relay = Relay::new(RelayConfig {
        media_v4: Some("192.0.2.1".parse().unwrap()),
        ports: 20000..=40000,
        ..RelayConfig::default()
    })
    .unwrap();
    let mut config = Config::new("m".into(), [1; 32]);
    config.local.udp = Some("192.0.2.1:5060".parse().unwrap());
    config.guard.rate_per_s = 1e9;
    config.guard.burst = 1e9;
    let mut b2bua = B2bua::new(config, relay, Box::new(policy), now);
    let caller = Peer::udp("198.18.0.10:5060".parse().unwrap());
    let callee = Peer::udp("198.18.0.20:5060".parse().unwrap());
    register(&mut b2bua, now, callee);
    let drain = |b: &mut B2bua<Relay>| std::iter::from_fn(|| b.poll_transmit()).collect::<Vec<_>>();
    drain(&mut b2bua);
    // Warm up one call so one-time allocations (table growth) are not counted per call.
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..CALLS {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio {} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n",
            4000 + 2 * i
        );
        let invite = format!(
            "INVITE sip:bob@voxplane.local SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-{i}-1;rport\r\n\
             From: \"Alice\" <sip:alice@voxplane.local>;tag=caller-{i}-7f3a9c\r\nTo: <sip:bob@voxplane.local>\r\n\
             Call-ID: {i}-4f1e8a2b9c0d@198.18.0.10\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@198.18.0.10:5060>\r\n\
             Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        b2bua.handle_datagram(now, caller, invite.as_bytes());
        let out = drain(&mut b2bua);
        let fork = out
            .iter()
            .find(|t| t.bytes.starts_with(b"INVITE"))
            .expect("forked");
        let ok = answer(&fork.bytes, &sdp.replace("198.18.0.10", "198.18.0.20"));
        b2bua.handle_datagram(now, callee, ok.as_bytes());
        let out = drain(&mut b2bua);
        let to_caller = out
            .iter()
            .find(|t| t.bytes.starts_with(b"SIP/2.0 200"))
            .expect("200 to the caller");
        let m = Message::parse(&to_caller.bytes).unwrap();
        let ack = format!(
            "ACK sip:voxplane@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-{i}-2\r\n\
             From: \"Alice\" <sip:alice@voxplane.local>;tag=caller-{i}-7f3a9c\r\nTo: {}\r\nCall-ID: {i}-4f1e8a2b9c0d@198.18.0.10\r\n\
             CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            m.header("To").unwrap()
        );
        b2bua.handle_datagram(now, caller, ack.as_bytes());
        drain(&mut b2bua);
    }
    // Let every transaction finish (timers D, K, L, M ≤ 64·T1).
    now += Duration::from_secs(40);
    b2bua.handle_timeout(now);
    while b2bua.poll_event().is_some() {}
    drain(&mut b2bua);
    assert_eq!(b2bua.dialogs(), CALLS);
    assert_eq!(b2bua.transactions().len(), 0, "only dialogs are held");
    let per_call = (LIVE.load(Ordering::Relaxed) - before) as usize / CALLS;
    eprintln!("heap per held call (B2BUA + relay session): {per_call} bytes");
    assert!(per_call <= 4096, "{per_call} bytes per held call");
}

fn register(b2bua: &mut B2bua<Relay>, now: Instant, callee: Peer) {
    let reg = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:voxplane.local SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.20:5060;branch=z9hG4bKreg{cseq}\r\n\
             From: <sip:bob@voxplane.local>;tag=r\r\nTo: <sip:bob@voxplane.local>\r\nCall-ID: reg\r\n\
             CSeq: {cseq} REGISTER\r\nContact: <sip:bob@198.18.0.20:5060>\r\nExpires: 3600\r\n{auth}\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    b2bua.handle_datagram(now, callee, reg(1, "").as_bytes());
    let challenge = b2bua.poll_transmit().unwrap();
    let m = Message::parse(&challenge.bytes).unwrap();
    let www = m.header("WWW-Authenticate").unwrap();
    let nonce = www
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let alg = control::auth::Algorithm::Sha256;
    let ha1 = control::auth::ha1(alg, "bob", "voxplane.local", "bpw");
    let response = control::auth::digest_response(
        alg,
        &ha1,
        nonce,
        Some(("00000001", "c", "auth")),
        "REGISTER",
        "sip:voxplane.local",
    );
    let auth = format!(
        "Authorization: Digest username=\"bob\", realm=\"voxplane.local\", nonce=\"{nonce}\", uri=\"sip:voxplane.local\", \
         response=\"{response}\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"c\"\r\n"
    );
    b2bua.handle_datagram(now, callee, reg(2, &auth).as_bytes());
    let ok = b2bua.poll_transmit().unwrap();
    assert!(
        ok.bytes.starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&ok.bytes)
    );
}

fn answer(invite: &[u8], sdp: &str) -> String {
    let m = Message::parse(invite).unwrap();
    format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=callee-5d2e\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:bob@198.18.0.20:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        m.header("Via").unwrap(),
        m.header("From").unwrap(),
        m.header("To").unwrap(),
        m.call_id().unwrap(),
        sdp.len()
    )
}
