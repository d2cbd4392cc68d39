//! `bench-relay-gen`: the relay benchmark's AF_XDP traffic generator. Sends
//! N synthetic G.711 calls (50 packets/s per stream, real RTP sequence
//! numbers and timestamps, send time in the payload) from one interface to
//! the relay, and measures what comes back to the same interface: loss and
//! added latency (hdrhistogram percentiles). Run it inside the generator's
//! network namespace (`ip netns exec`); needs CAP_NET_ADMIN and CAP_BPF.
//!
//! One instance drives one leg; run a second on the other leg's interface
//! for traffic both ways.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, bail};
use bench::relaygen::Leg;
use bench::relaygen::afxdp::{RunConfig, run};
use clap::Parser;
use dataplane::afxdp::Neighbours;

/// AF_XDP RTP load generator for the relay benchmark.
#[derive(Parser, Debug)]
#[command(name = "bench-relay-gen", about)]
struct Args {
    /// Interface to send on and receive from.
    #[arg(long)]
    iface: String,
    /// Our IPv4 address on that interface.
    #[arg(long)]
    src_ip: Ipv4Addr,
    /// The relay's media address.
    #[arg(long)]
    dst_ip: Ipv4Addr,
    /// Our first RTP port (stream i uses +2i; replies must come back here).
    #[arg(long, default_value_t = 20000)]
    src_port: u16,
    /// The relay's first RTP port for this leg (stream i uses +2i).
    #[arg(long, default_value_t = 30000)]
    dst_port: u16,
    /// The relay's MAC; by default from the neighbour table (ARP the relay first).
    #[arg(long)]
    dst_mac: Option<String>,
    /// Concurrent calls.
    #[arg(long, default_value_t = 100)]
    calls: u32,
    /// Seconds of traffic (50 packets per second per call).
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// SSRC of the first stream.
    #[arg(long, default_value_t = 0x5650_0000)]
    ssrc: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let src_mac = read_mac(&args.iface)?;
    let dst_mac = match &args.dst_mac {
        Some(text) => parse_mac(text).with_context(|| format!("bad --dst-mac {text}"))?,
        None => Neighbours::read()?.mac(args.dst_ip).with_context(|| {
            format!(
                "{} not in the neighbour table; ping it or pass --dst-mac",
                args.dst_ip
            )
        })?,
    };
    let cfg = RunConfig {
        iface: args.iface.clone(),
        leg: Leg {
            src_mac,
            dst_mac,
            src_ip: args.src_ip,
            dst_ip: args.dst_ip,
            src_port: args.src_port,
            dst_port: args.dst_port,
        },
        calls: args.calls,
        packets_per_stream: args.seconds * 50,
        drain: Duration::from_millis(500),
        ssrc_base: args.ssrc,
        epoch: std::time::Instant::now(),
        barrier: None,
    };
    let r = run(&cfg).context("AF_XDP generator")?;
    let [p50, p99, p999, max] = r.rx.latency_us;
    let pps = r.sent as f64 / r.send_secs;
    if args.json {
        println!(
            "{{\"calls\":{},\"sent\":{},\"received\":{},\"duplicates\":{},\"foreign\":{},\"loss_pct\":{:.4},\
             \"send_pps\":{:.0},\"latency_p50_us\":{p50},\"latency_p99_us\":{p99},\"latency_p999_us\":{p999},\
             \"latency_max_us\":{max}}}",
            args.calls, r.sent, r.rx.received, r.rx.duplicates, r.rx.foreign, r.loss_pct, pps
        );
    } else {
        println!(
            "calls {}  sent {} ({pps:.0} pps)  received {}  loss {:.4} %  latency µs p50 {p50} p99 {p99} p99.9 {p999} max {max}",
            args.calls, r.sent, r.rx.received, r.loss_pct
        );
    }
    if r.sent < r.scheduled {
        bail!("only {} of {} packets could be sent", r.sent, r.scheduled);
    }
    Ok(())
}

fn read_mac(iface: &str) -> anyhow::Result<[u8; 6]> {
    let path = format!("/sys/class/net/{iface}/address");
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    parse_mac(text.trim()).with_context(|| format!("{path}: not a MAC"))
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
