//! A fuzz smoke run on the stable toolchain: every harness in `wire::fuzz`
//! over a corpus seeded from the fixtures (RFC 4475 messages, the SDP, RTP
//! and RTCP payloads and the files of every capture) and seeded mutations of
//! it. cargo-fuzz (`wire/fuzz`) explores further where a fuzz toolchain
//! exists; this run keeps the harnesses honest in CI.
#![cfg(feature = "fuzzing")]

use testkit::fixtures;

/// Mutations per corpus entry (more on small corpora).
const MUTATIONS: usize = 400;

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = [
                    0, 0xFF, b'\r', b'\n', b' ', b':', b';', b'"', b'<', b'%', b',',
                ][rng.below(11)];
            }
            2 => {
                let i = rng.below(out.len() + 1);
                out.insert(i, rng.next() as u8);
            }
            3 if !out.is_empty() => {
                let i = rng.below(out.len());
                out.remove(i);
            }
            4 => {
                let keep = rng.below(out.len() + 1);
                out.truncate(keep);
            }
            5 if !other.is_empty() => {
                let a = rng.below(other.len());
                let b = a + rng.below(other.len() - a);
                let i = rng.below(out.len() + 1);
                out.splice(i..i, other[a..b].iter().copied());
            }
            _ if out.len() > 4 => {
                // Large numbers in length/count fields.
                let i = rng.below(out.len() - 3);
                out[i..i + 4].copy_from_slice(&u32::MAX.to_be_bytes());
            }
            _ => {}
        }
    }
    out
}

fn run(name: &str, corpus: &[Vec<u8>], harness: fn(&[u8])) {
    assert!(!corpus.is_empty(), "{name}: empty corpus");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    let mut runs = 0usize;
    for (i, input) in corpus.iter().enumerate() {
        harness(input);
        let other = &corpus[(i + 1) % corpus.len()];
        for _ in 0..MUTATIONS {
            harness(&mutate(&mut rng, input, other));
            runs += 1;
        }
    }
    for len in 0..64 {
        let random: Vec<u8> = (0..len * 7).map(|_| rng.next() as u8).collect();
        harness(&random);
        runs += 1;
    }
    eprintln!(
        "{name}: {} corpus entries, {runs} mutated/random inputs, no panic",
        corpus.len()
    );
}

struct Corpus {
    sip: Vec<Vec<u8>>,
    sdp: Vec<Vec<u8>>,
    rtp: Vec<Vec<u8>>,
    rtcp: Vec<Vec<u8>>,
    files: Vec<Vec<u8>>,
}

fn corpus(fx: &std::path::Path) -> Corpus {
    let mut c = Corpus {
        sip: vec![],
        sdp: vec![],
        rtp: vec![],
        rtcp: vec![],
        files: vec![],
    };
    for dir in ["rfc4475/valid", "rfc4475/invalid", "rfc4475/semantic"] {
        for e in std::fs::read_dir(fx.join(dir)).unwrap() {
            c.sip.push(std::fs::read(e.unwrap().path()).unwrap());
        }
    }
    for name in [
        "ws_SIP_DTMF2.pcap",
        "ws_SIP_CALL_RTP_G711.pcap",
        "sipnab_codec-reinvite.pcap",
        "ws_DTMFsipinfo.pcap",
    ] {
        let bytes = std::fs::read(fx.join("pcaps").join(name)).unwrap();
        // Capture files: the head of each file is plenty for the reader.
        c.files.push(bytes[..bytes.len().min(8 * 1024)].to_vec());
        let mut reader = wire::capture::FileReader::new(&bytes[..]).unwrap();
        let mut decoder = wire::capture::Decoder::new();
        let (mut rtp, mut rtcp) = (0, 0);
        while let Some(Ok(frame)) = reader.next_frame() {
            let Some(p) = decoder.decode(&frame) else {
                continue;
            };
            let payload = p.payload.to_vec();
            match wire::rtp::classify(&payload) {
                Some(wire::rtp::Kind::Rtp) if rtp < 20 => {
                    rtp += 1;
                    c.rtp.push(payload);
                }
                Some(wire::rtp::Kind::Rtcp) if rtcp < 20 => {
                    rtcp += 1;
                    c.rtcp.push(payload);
                }
                _ if payload.starts_with(b"INVITE") || payload.starts_with(b"SIP/2.0") => {
                    if let Ok(m) = wire::sip::Message::parse(&payload)
                        && let Some(sdp) = m.sdp_body()
                    {
                        c.sdp.push(sdp.to_vec());
                    }
                    c.sip.push(payload);
                }
                _ => {}
            }
        }
    }
    c
}

#[test]
fn every_harness_survives_the_corpus_and_its_mutations() {
    let Some(fx) = fixtures() else { return };
    let c = corpus(&fx);
    run("sip", &c.sip, wire::fuzz::sip);
    run("sdp", &c.sdp, wire::fuzz::sdp);
    run("rtp", &c.rtp, wire::fuzz::rtp);
    run("rtcp", &c.rtcp, wire::fuzz::rtcp);
    run("capture", &c.files, wire::fuzz::capture);
    // HEP3: the SIP and RTP corpus, each wrapped as a capture agent would.
    let hep: Vec<Vec<u8>> = c
        .sip
        .iter()
        .chain(&c.rtp)
        .take(60)
        .map(|payload| {
            let repr = wire::hep::Hep3Repr {
                transport: wire::capture::Transport::Udp,
                src: "192.0.2.1:5060".parse().unwrap(),
                dst: "192.0.2.2:5060".parse().unwrap(),
                ts: wire::Timestamp::from_secs_nanos(1_700_000_000, 1_000),
                proto_type: 1,
                capture_id: Some(1),
                payload,
            };
            let mut out = Vec::new();
            repr.emit(&mut out).unwrap();
            out
        })
        .collect();
    run("hep", &hep, wire::fuzz::hep);
}

/// Bencode needs no capture fixtures: its seeds are ng messages as
/// Kamailio's rtpengine module and our responses write them.
#[test]
fn bencode_harness_survives_ng_messages_and_their_mutations() {
    let seeds: Vec<Vec<u8>> = [
        &b"d7:command4:pinge"[..],
        b"d6:result4:ponge",
        b"d3:sdp29:v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n7:call-id8:abc@host8:from-tag3:ft17:command5:offer5:flagsl13:trust-addresse7:replacel6:origin18:session-connectione9:directionl8:external8:externalee",
        b"d6:result5:error12:error-reason15:Unknown call-ide",
        b"d7:createdi12e6:totalsd3:RTPd7:packetsi100e5:bytesi17200e6:errorsi0eeee",
        b"li-42ei0e0:lee",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    for s in &seeds {
        assert!(
            wire::bencode::Value::parse(s).is_ok(),
            "seed is valid bencode"
        );
    }
    run("bencode", &seeds, wire::fuzz::bencode);
}
