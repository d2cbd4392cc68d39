//! Loopback addresses for the SIP harness tests.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use bench::sip::campaign::Settings;
use bench::sip::sipp::Endpoint;

/// A free UDP address on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A sipp endpoint on free loopback ports.
pub fn endpoint() -> Endpoint {
    // sipp binds its media port and the next one; take two free ports apart.
    let sip = free_addr();
    let media = loop {
        let p = free_addr().port();
        if p.is_multiple_of(2) && p < 65000 {
            break p;
        }
    };
    Endpoint {
        sip,
        media_port: media,
    }
}

/// A low-rate campaign (20 then 40 calls/s, 2 s steps, calls held 200 ms)
/// that holds `dialogs` for the memory measurement.
pub fn low_rate(uac: Endpoint, uas: Endpoint, dialogs: u64) -> Settings {
    Settings {
        start_rate: 20,
        max_rate: 40,
        resolution: 0.1,
        step: Duration::from_secs(2),
        hold_ms: 200,
        recv_timeout_ms: 5_000,
        dialogs,
        dialog_rate: 100,
        uac,
        uas,
    }
}
