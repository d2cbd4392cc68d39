//! The RTP relay: media sessions with two legs, latching that resists RTP
//! bleed, and the packet I/O backends that execute the relay core's
//! decisions.
//!
//! | module | what |
//! |---|---|
//! | [`relay`] | the sans-IO core: one shard of the session table, forwarding verdicts, control API |
//! | [`frame`] | applying a verdict to a whole Ethernet frame (AF_XDP), RFC 1624 checksums |
//! | [`ng`] | rtpengine's ng control protocol, sans-IO (request bytes in, response bytes out) |
//! | [`mirror`] | copies of recorded sessions' packets: in-process SPSC rings and HEP3 |
//! | [`mis_sink`] | recorded sessions to a `voxplane mis` recorder (metadata on TCP, RTP copies on UDP) |
//! | [`backend`] | the backend contract and the relay tests every backend runs |
//! | [`udp`] | the embedded default backend: `recvmmsg`/`sendmmsg`, a worker per core |
//! | [`testnet`] | caller / relay / callee network namespaces joined by veth pairs, for tests |
//! | [`uring`] | io_uring: multishot `recvmsg` into provided buffers, sends from the same buffers |
//!
//! The core never reads a clock or touches a socket (`clippy.toml` forbids
//! both); backends own those. A driver feeds the core like this:
//!
//! ```no_run
//! use std::time::Instant;
//! use dataplane::relay::{Relay, RelayConfig, RxMeta, Verdict};
//! # fn recv(_: &mut [u8]) -> (usize, RxMeta) { unimplemented!() }
//! # fn send(_: &[u8], _: std::net::SocketAddr, _: std::net::SocketAddr) {}
//! # fn open_ports(_: u16) {}
//! # #[expect(clippy::disallowed_methods, reason = "a driver owns the clock")]
//! # fn now() -> Instant { Instant::now() }
//! let mut relay = Relay::new(RelayConfig::default())?;
//! let mut buf = [0u8; 2048];
//! loop {
//!     let (len, meta) = recv(&mut buf);
//!     if let Verdict::Forward(f) = relay.handle_datagram(now(), meta, &mut buf[..len]) {
//!         send(&buf[..len], f.src, f.dst);
//!     }
//!     relay.handle_timeout(now());
//!     while let Some(event) = relay.poll_event() {
//!         if let dataplane::relay::RelayEvent::PortsOpened { rtp } = event {
//!             open_ports(rtp);
//!         }
//!     }
//! }
//! # Ok::<(), dataplane::relay::ControlError>(())
//! ```
#![deny(missing_docs)]
// Unsafe code lives only in the backends' `sys` modules (FFI to
// recvmmsg/sendmmsg, io_uring, AF_XDP rings), each opting out with an
// `expect`/`allow` and a SAFETY comment on every block.
#![deny(unsafe_code)]

#[cfg(feature = "afxdp")]
pub mod afxdp;
pub mod backend;
pub mod frame;
pub mod mirror;
pub mod mis_sink;
pub mod ng;
pub mod relay;
pub mod testnet;
pub mod udp;
pub mod uring;
