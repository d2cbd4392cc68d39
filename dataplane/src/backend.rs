//! What every packet I/O backend provides, and the relay tests they all
//! run (`conformance`, in test builds).
//!
//! A backend runs relay shards on worker threads and offers a [`Control`]
//! handle that routes each call to its shard. The conformance scenarios
//! drive a backend through that handle (via the ng protocol, in-process)
//! and check, with real sockets, that media flows both ways, that RTP bleed
//! is dropped, that bad input is dropped and counted, and that a deleted
//! session stops forwarding. A backend plugs in by implementing
//! [`Backend`] and calling `conformance::run_all` with a network that
//! makes endpoints able to reach it (loopback for `udp`; network
//! namespaces for `afxdp`).

use std::thread::JoinHandle;

use crate::mirror::MirrorConsumer;
use crate::relay::{Control, RelayCounters};
use crate::udp::{IoCounters, UdpControl};

/// A running relay backend.
pub trait Backend {
    /// A handle for control commands, routed to the owning worker.
    fn control(&self) -> Box<dyn Control + Send>;
    /// The sum of all workers' relay counters.
    fn counters(&self) -> RelayCounters;
}

/// A running backend of any kind (`udp`, `uring`, `afxdp`): its worker
/// threads, the control handle that routes commands to them, the consumer
/// ends of their mirror rings, and `K`, what that kind of backend owns
/// besides (the XDP programs for `afxdp`). Dropping it stops and joins the
/// workers, then drops `K`.
#[derive(Debug)]
pub struct Running<K> {
    pub(crate) control: UdpControl,
    pub(crate) threads: Vec<JoinHandle<()>>,
    pub(crate) consumers: Vec<MirrorConsumer>,
    #[cfg_attr(
        not(feature = "afxdp"),
        expect(dead_code, reason = "read by the afxdp backend")
    )]
    pub(crate) kind: K,
}

impl<K> Running<K> {
    /// No workers yet.
    #[cfg_attr(
        not(feature = "afxdp"),
        expect(dead_code, reason = "used by the afxdp backend")
    )]
    pub(crate) fn new(kind: K) -> Self {
        Self {
            control: UdpControl::new(Vec::new()),
            threads: Vec::new(),
            consumers: Vec::new(),
            kind,
        }
    }

    /// The consumer ends of the workers' mirror rings (once; empty without
    /// [`crate::udp::MirrorConfig::ring_bytes`]).
    pub fn take_mirror_consumers(&mut self) -> Vec<MirrorConsumer> {
        std::mem::take(&mut self.consumers)
    }

    /// A control handle (cheap to clone, usable from any thread).
    pub fn control(&self) -> UdpControl {
        self.control.clone()
    }

    /// The sum of all workers' counters.
    pub fn counters(&self) -> (RelayCounters, IoCounters) {
        self.control.counters()
    }
}

impl<K> Backend for Running<K> {
    fn control(&self) -> Box<dyn Control + Send> {
        Box::new(Running::control(self))
    }

    fn counters(&self) -> RelayCounters {
        Running::counters(self).0
    }
}

impl<K> Drop for Running<K> {
    fn drop(&mut self) {
        self.control.shutdown();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
pub(crate) mod conformance {
    #![expect(
        clippy::disallowed_types,
        reason = "tests drive the backend with real sockets"
    )]
    #![expect(
        clippy::disallowed_methods,
        reason = "tests against real backends use real time"
    )]

    use std::net::{IpAddr, SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};

    use wire::bencode::Value;

    use super::Backend;
    use crate::ng::NgServer;
    use crate::relay::DropReason;

    /// Where test endpoints live.
    pub(crate) trait TestNet {
        /// A UDP socket for a caller, callee or attacker.
        fn endpoint(&self, role: Role) -> UdpSocket;
        /// The relay's media address as endpoints reach it.
        fn relay_ip(&self) -> IpAddr;
        /// Whether a datagram larger than the MTU (sent as IP fragments)
        /// reaches the relay core. Not on AF_XDP: `media_redirect` leaves
        /// fragments to the kernel, which has no socket on media ports.
        fn fragments_reach_relay(&self) -> bool {
            true
        }
    }

    /// Which endpoint.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Role {
        Caller,
        Callee,
        Attacker,
    }

    /// Everything on 127.0.0.1.
    pub(crate) struct Loopback;

    impl TestNet for Loopback {
        fn endpoint(&self, _: Role) -> UdpSocket {
            UdpSocket::bind("127.0.0.1:0").expect("bind a loopback test socket")
        }

        fn relay_ip(&self) -> IpAddr {
            "127.0.0.1".parse().unwrap()
        }
    }

    /// Everything on ::1.
    pub(crate) struct LoopbackV6;

    impl TestNet for LoopbackV6 {
        fn endpoint(&self, _: Role) -> UdpSocket {
            UdpSocket::bind("[::1]:0").expect("bind an IPv6 loopback test socket")
        }

        fn relay_ip(&self) -> IpAddr {
            "::1".parse().unwrap()
        }
    }

    /// Runs every scenario.
    pub(crate) fn run_all(backend: &dyn Backend, net: &dyn TestNet) {
        media_flows_both_ways(backend, net);
        rtp_bleed_is_dropped(backend, net);
        bad_input_is_dropped(backend, net);
        delete_stops_forwarding(backend, net);
    }

    pub(crate) struct Call {
        pub(crate) id: String,
        pub(crate) caller: UdpSocket,
        pub(crate) callee: UdpSocket,
        /// The relay address the caller sends to (from the answer).
        pub(crate) to_relay_from_caller: SocketAddr,
        /// The relay address the callee sends to (from the offer).
        pub(crate) to_relay_from_callee: SocketAddr,
    }

    pub(crate) fn ng_request(
        backend: &dyn Backend,
        entries: Vec<(&'static str, Value<'_>)>,
    ) -> Vec<u8> {
        let mut req = b"t1 ".to_vec();
        Value::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (k.as_bytes(), v))
                .collect(),
        )
        .emit(&mut req);
        let mut control = backend.control();
        let resp = NgServer::new()
            .handle_request(Instant::now(), control.as_mut(), &req)
            .expect("a response");
        resp[3..].to_vec()
    }

    fn sdp_for(sock: &UdpSocket) -> String {
        let a = sock.local_addr().unwrap();
        let fam = if a.is_ipv6() { "IP6" } else { "IP4" };
        format!(
            "v=0\r\no=- 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtcp-mux\r\n",
            ip = a.ip(),
            port = a.port()
        )
    }

    fn relay_addr(net: &dyn TestNet, sdp: &[u8]) -> SocketAddr {
        let v = Value::parse(sdp).expect("bencode response");
        assert_eq!(
            v.get(b"result").and_then(Value::as_str),
            Some("ok"),
            "{v:?}"
        );
        let text = v.get(b"sdp").and_then(Value::as_str).unwrap();
        let parsed = wire::sdp::SessionDescription::parse(text).unwrap();
        let m = parsed.media(0).unwrap();
        assert_eq!(m.connection().and_then(|c| c.ip()), Some(net.relay_ip()));
        SocketAddr::new(net.relay_ip(), m.port())
    }

    pub(crate) fn setup(backend: &dyn Backend, net: &dyn TestNet, id: &str) -> Call {
        let caller = net.endpoint(Role::Caller);
        let callee = net.endpoint(Role::Callee);
        for s in [&caller, &callee] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        let offer_sdp = sdp_for(&caller);
        let offer = ng_request(
            backend,
            vec![
                ("command", Value::str("offer")),
                ("call-id", Value::str(id)),
                ("from-tag", Value::str("caller-tag")),
                ("sdp", Value::str(&offer_sdp)),
            ],
        );
        let answer_sdp = sdp_for(&callee);
        let answer = ng_request(
            backend,
            vec![
                ("command", Value::str("answer")),
                ("call-id", Value::str(id)),
                ("from-tag", Value::str("caller-tag")),
                ("to-tag", Value::str("callee-tag")),
                ("sdp", Value::str(&answer_sdp)),
            ],
        );
        Call {
            id: id.to_owned(),
            caller,
            callee,
            to_relay_from_callee: relay_addr(net, &offer),
            to_relay_from_caller: relay_addr(net, &answer),
        }
    }

    fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0x08];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    /// Everything that arrives until a read times out.
    pub(crate) fn drain(sock: &UdpSocket) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            got.push((buf[..n].to_vec(), from));
        }
        got
    }

    pub(crate) fn exchange(call: &Call, n: u16) {
        for seq in 0..n {
            call.caller
                .send_to(&rtp(0xA, seq), call.to_relay_from_caller)
                .unwrap();
            call.callee
                .send_to(&rtp(0xB, seq), call.to_relay_from_callee)
                .unwrap();
            if seq % 10 == 9 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn media_flows_both_ways(backend: &dyn Backend, net: &dyn TestNet) {
        let call = setup(backend, net, "flow-1");
        exchange(&call, 50);
        let at_callee = drain(&call.callee);
        let at_caller = drain(&call.caller);
        assert_eq!(at_callee.len(), 50, "caller -> callee");
        assert_eq!(at_caller.len(), 50, "callee -> caller");
        for (i, (pkt, from)) in at_callee.iter().enumerate() {
            assert_eq!(pkt, &rtp(0xA, i as u16), "bytes unchanged, in order");
            assert_eq!(
                *from, call.to_relay_from_callee,
                "sent from the callee-facing port"
            );
        }
        for (pkt, from) in &at_caller {
            assert_eq!(&pkt[8..12], &0xBu32.to_be_bytes());
            assert_eq!(*from, call.to_relay_from_caller);
        }
    }

    fn rtp_bleed_is_dropped(backend: &dyn Backend, net: &dyn TestNet) {
        let call = setup(backend, net, "bleed-1");
        exchange(&call, 5);
        drain(&call.callee);
        drain(&call.caller);
        let before = backend.counters().drops.get(DropReason::SpoofedSource);
        let attacker = net.endpoint(Role::Attacker);
        attacker
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        for seq in 0..20 {
            attacker
                .send_to(&rtp(0xBAD, seq), call.to_relay_from_caller)
                .unwrap();
            attacker
                .send_to(&rtp(0xBAD, seq), call.to_relay_from_callee)
                .unwrap();
        }
        // The call goes on; the attacker gets none of it.
        exchange(&call, 5);
        assert!(
            drain(&attacker).is_empty(),
            "RTP bleed: media leaked to a third party"
        );
        for (pkt, _) in drain(&call.callee).iter().chain(drain(&call.caller).iter()) {
            assert_ne!(
                &pkt[8..12],
                &0xBADu32.to_be_bytes(),
                "attacker media injected"
            );
        }
        let after = backend.counters().drops.get(DropReason::SpoofedSource);
        assert_eq!(after - before, 40, "every spoofed packet counted");
    }

    fn bad_input_is_dropped(backend: &dyn Backend, net: &dyn TestNet) {
        let call = setup(backend, net, "bad-1");
        exchange(&call, 1);
        drain(&call.callee);
        drain(&call.caller);
        let before = backend.counters().drops;
        let junk: [&[u8]; 4] = [b"", &[0x80], b"GET / HTTP/1.0\r\n\r\n", &[0x40; 40]];
        for j in junk {
            call.caller.send_to(j, call.to_relay_from_caller).unwrap();
        }
        call.caller
            .send_to(&[0x80; 1800], call.to_relay_from_caller)
            .unwrap();
        assert!(drain(&call.callee).is_empty(), "junk forwarded");
        let after = backend.counters().drops;
        assert_eq!(
            after.get(DropReason::Malformed) - before.get(DropReason::Malformed),
            4
        );
        assert_eq!(
            after.get(DropReason::Oversized) - before.get(DropReason::Oversized),
            u64::from(net.fragments_reach_relay())
        );
        // Still alive and forwarding.
        exchange(&call, 3);
        assert_eq!(drain(&call.callee).len(), 3);
    }

    fn delete_stops_forwarding(backend: &dyn Backend, net: &dyn TestNet) {
        let call = setup(backend, net, "del-1");
        exchange(&call, 3);
        assert_eq!(drain(&call.callee).len(), 3);
        let resp = ng_request(
            backend,
            vec![
                ("command", Value::str("delete")),
                ("call-id", Value::str(&call.id)),
            ],
        );
        let v = Value::parse(&resp).unwrap();
        assert_eq!(v.get(b"result").and_then(Value::as_str), Some("ok"));
        let rtp_totals = v.get(b"totals").and_then(|t| t.get(b"RTP")).unwrap();
        assert_eq!(rtp_totals.get(b"packets").and_then(Value::as_int), Some(6));
        exchange(&call, 3);
        assert!(drain(&call.callee).is_empty(), "forwarded after delete");
        let again = ng_request(
            backend,
            vec![
                ("command", Value::str("delete")),
                ("call-id", Value::str(&call.id)),
            ],
        );
        let v = Value::parse(&again).unwrap();
        assert_eq!(
            v.get(b"error-reason").and_then(Value::as_str),
            Some("Unknown call-id")
        );
    }

    /// A measurement, not a check of speed: one caller bursting 300,000
    /// 172-octet packets through one call over loopback; prints what the
    /// callee received per second. The std-socket sender and receiver share
    /// the machine's cores with the relay.
    pub(crate) fn measure_loopback(backend: &dyn Backend, label: &str) {
        let call = setup(backend, &Loopback, "measure-1");
        call.callee
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let total = 300_000u32;
        let to = call.to_relay_from_caller;
        let caller = call.caller.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            for seq in 0..total {
                let _ = caller.send_to(&rtp(1, seq as u16), to);
            }
        });
        let mut buf = [0u8; 2048];
        let mut got = 0u32;
        let begin = Instant::now();
        while call.callee.recv(&mut buf).is_ok() {
            got += 1;
        }
        let elapsed = begin.elapsed().saturating_sub(Duration::from_millis(500));
        sender.join().unwrap();
        let c = backend.counters();
        println!(
            "{label} loopback, 1 worker: sent {total}, relay received {}, forwarded {}, callee got {got} in {elapsed:?}: {:.3} Mpps",
            c.rx_packets,
            c.forwarded,
            f64::from(got) / elapsed.as_secs_f64() / 1e6
        );
        assert!(got > 0);
    }
}
