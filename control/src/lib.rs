//! The SIP control plane: transports, sans-IO transactions (RFC 3261 §17)
//! and dialogs under a tokio driver, and a B2BUA that anchors every call's
//! media on the dataplane through its control API.
//!
//! ```text
//!  UDP / TCP / TLS ──driver (tokio)──> B2bua::handle_datagram(now, peer, bytes)
//!                                        ├─ Transactions (RFC 3261 §17 + RFC 6026), timers A–M
//!                                        ├─ calls: A dialog (UAS) ⇄ B dialog (UAC, parallel forks)
//!                                        └─ dataplane::relay::Control: offer / answer / delete
//!  driver <── poll_transmit / poll_event / poll_timeout
//! ```
//!
//! The cores ([`transaction`], [`b2bua`], [`msg`]) never read the clock or
//! touch a socket; [`driver`] owns both.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod b2bua;
pub mod driver;
pub mod msg;
mod stream;
pub mod transaction;
pub mod transport;
