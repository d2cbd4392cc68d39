//! A test network: caller, relay and callee network namespaces joined by
//! veth pairs, for tests that need real interfaces (AF_XDP, XDP) or
//! separate hosts. Torn down when dropped, even when the test panics.
//!
//! ```text
//!  caller ns            relay ns                      callee ns
//!  c0 198.18.1.2/24 ── r0 198.18.1.1/24  r1 198.18.2.1/24 ── e0 198.18.2.2/24
//! ```
//!
//! The caller and callee route everything via the relay namespace, which
//! forwards between its two interfaces. TX checksum offload is turned off on
//! every veth (`ethtool -K … tx off`) so AF_XDP sees real UDP checksums.
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and `ip` (iproute2);
//! [`TestNet::create`] says which is missing so tests can skip.

use std::fs::File;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

mod sys;

/// Why the network could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestNetError {
    /// Not running with the privileges namespaces need.
    #[error("network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)")]
    Unprivileged,
    /// `ip` (iproute2) is not installed.
    #[error("`ip` (iproute2) not found")]
    NoIproute,
    /// A setup command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its standard error.
        stderr: String,
    },
    /// Entering a namespace failed.
    #[error("entering namespace {ns}: {source}")]
    Enter {
        /// The namespace.
        ns: String,
        /// The error.
        source: std::io::Error,
    },
}

/// One of the three hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// The caller, 198.18.1.2.
    Caller,
    /// The relay, 198.18.1.1 (caller side) and 198.18.2.1 (callee side).
    Relay,
    /// The callee, 198.18.2.2.
    Callee,
}

/// Three namespaces and two veth pairs; deleted on drop.
#[derive(Debug)]
pub struct TestNet {
    names: [String; 3],
    offloads_off: bool,
}

impl TestNet {
    /// Builds the network with fresh namespace names.
    ///
    /// # Errors
    ///
    /// [`TestNetError`]; whatever was created is deleted again.
    pub fn create() -> Result<Self, TestNetError> {
        if !Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Err(TestNetError::NoIproute);
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Self {
            names: [
                format!("vxc-{id}"),
                format!("vxr-{id}"),
                format!("vxe-{id}"),
            ],
            offloads_off: false,
        };
        // If a step fails, `net` is dropped and deletes what exists.
        for ns in net.names.clone() {
            if let Err(e) = ip(&["netns", "add", &ns]) {
                return Err(match e {
                    TestNetError::Command { stderr, .. }
                        if stderr.contains("Permission denied")
                            || stderr.contains("Operation not permitted") =>
                    {
                        TestNetError::Unprivileged
                    }
                    e => e,
                });
            }
        }
        let [c, r, e] = net.names.clone();
        ip(&[
            "link", "add", "c0", "netns", &c, "type", "veth", "peer", "name", "r0", "netns", &r,
        ])?;
        ip(&[
            "link", "add", "e0", "netns", &e, "type", "veth", "peer", "name", "r1", "netns", &r,
        ])?;
        for (ns, dev, addr) in [
            (&c, "c0", "198.18.1.2/24"),
            (&r, "r0", "198.18.1.1/24"),
            (&r, "r1", "198.18.2.1/24"),
            (&e, "e0", "198.18.2.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        for ns in [&c, &r, &e] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", &c, "route", "add", "default", "via", "198.18.1.1"])?;
        ip(&["-n", &e, "route", "add", "default", "via", "198.18.2.1"])?;
        // /proc/sys/net is the namespace of the thread that writes it.
        net.run_in(Host::Relay, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })?
        .map_err(|e| TestNetError::Command {
            command: "echo 1 > /proc/sys/net/ipv4/ip_forward (relay ns)".into(),
            stderr: e.to_string(),
        })?;
        net.offloads_off = [(&c, "c0"), (&r, "r0"), (&r, "r1"), (&e, "e0")]
            .iter()
            .all(|(ns, dev)| ip(&["netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]).is_ok());
        Ok(net)
    }

    /// The namespace name of `host` (for `ip netns exec`).
    pub fn namespace(&self, host: Host) -> &str {
        &self.names[host as usize]
    }

    /// Whether TX checksum offload could be turned off (needs `ethtool`).
    pub fn offloads_off(&self) -> bool {
        self.offloads_off
    }

    /// The address of `host` (the relay's caller-side address for
    /// [`Host::Relay`]; both sides reach it).
    pub fn addr(host: Host) -> IpAddr {
        match host {
            Host::Caller => IpAddr::from([198, 18, 1, 2]),
            Host::Relay => IpAddr::from([198, 18, 1, 1]),
            Host::Callee => IpAddr::from([198, 18, 2, 2]),
        }
    }

    /// Runs `f` on a thread inside `host`'s namespace (threads it spawns
    /// and sockets it opens stay there) and returns its result.
    ///
    /// # Errors
    ///
    /// [`TestNetError::Enter`] if the namespace cannot be entered.
    ///
    /// # Panics
    ///
    /// If `f` panics.
    pub fn run_in<T: Send>(
        &self,
        host: Host,
        f: impl FnOnce() -> T + Send,
    ) -> Result<T, TestNetError> {
        let ns = self.namespace(host).to_owned();
        thread::scope(|s| {
            s.spawn(move || {
                let enter =
                    File::open(format!("/var/run/netns/{ns}")).and_then(|file| sys::enter(&file));
                match enter {
                    Ok(()) => Ok(f()),
                    Err(source) => Err(TestNetError::Enter { ns, source }),
                }
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends (and their peers).
        for ns in &self.names {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), TestNetError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|_| TestNetError::NoIproute)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestNetError::Command {
            command: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![expect(
        clippy::disallowed_types,
        reason = "real sockets inside the namespaces"
    )]
    use super::*;
    use crate::backend::conformance::{self, Role};
    use crate::relay::RelayConfig;
    use crate::udp::{UdpBackend, UdpConfig};
    use std::net::UdpSocket;

    /// Endpoints in the caller and callee namespaces; the attacker shares
    /// the caller's host (another port).
    struct Netns<'a>(&'a TestNet);

    impl conformance::TestNet for Netns<'_> {
        fn endpoint(&self, role: Role) -> UdpSocket {
            let host = match role {
                Role::Caller | Role::Attacker => Host::Caller,
                Role::Callee => Host::Callee,
            };
            self.0
                .run_in(host, || UdpSocket::bind((TestNet::addr(host), 0)))
                .expect("enter namespace")
                .expect("bind in namespace")
        }

        fn relay_ip(&self) -> IpAddr {
            TestNet::addr(Host::Relay)
        }
    }

    /// The relay shard(s) every backend's scenarios run with.
    fn relay_config() -> RelayConfig {
        RelayConfig {
            media_v4: Some(TestNet::addr(Host::Relay)),
            media_v6: None,
            ports: 30000..=30399,
            max_sessions: 100,
            ..RelayConfig::default()
        }
    }

    fn net() -> Option<TestNet> {
        match TestNet::create() {
            Ok(n) => Some(n),
            Err(e) => {
                if std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_some() {
                    panic!("test network: {e}");
                }
                eprintln!("SKIP: test network unavailable: {e}");
                None
            }
        }
    }

    #[test]
    fn namespaces_route_and_are_torn_down() {
        let Some(net) = net() else { return };
        let names: Vec<String> = net.names.to_vec();
        // The callee reaches the caller through the relay namespace.
        let rx = net
            .run_in(Host::Caller, || UdpSocket::bind("198.18.1.2:5000"))
            .unwrap()
            .unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        net.run_in(Host::Callee, || {
            UdpSocket::bind("198.18.2.2:0")
                .and_then(|s| s.send_to(b"through the relay ns", "198.18.1.2:5000"))
        })
        .unwrap()
        .unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"through the relay ns");
        assert_eq!(from.ip(), TestNet::addr(Host::Callee));
        drop(net);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        for n in names {
            assert!(!list.contains(&n), "{n} left behind");
        }
    }

    #[test]
    fn torn_down_after_a_panic() {
        let Some(net) = net() else { return };
        let name = net.namespace(Host::Relay).to_owned();
        let r = std::panic::catch_unwind(move || {
            let _net = net;
            panic!("a failing test");
        });
        assert!(r.is_err());
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
    }

    /// The backend conformance scenarios with the relay in its own
    /// namespace and the endpoints on other hosts.
    #[test]
    fn conformance_udp_across_namespaces() {
        let Some(net) = net() else { return };
        let backend = net
            .run_in(Host::Relay, || {
                UdpBackend::start(UdpConfig {
                    relay: relay_config(),
                    workers: 2,
                    ..UdpConfig::default()
                })
            })
            .unwrap()
            .unwrap();
        conformance::run_all(&backend, &Netns(&net));
        drop(backend);
    }

    #[test]
    fn conformance_uring_across_namespaces() {
        let Some(net) = net() else { return };
        let backend = net
            .run_in(Host::Relay, || {
                crate::uring::UringBackend::start(UdpConfig {
                    relay: relay_config(),
                    workers: 2,
                    ..UdpConfig::default()
                })
            })
            .unwrap();
        match backend {
            Ok(b) => conformance::run_all(&b, &Netns(&net)),
            Err(e) => eprintln!("SKIP: io_uring unavailable: {e}"),
        }
    }

    /// The scenarios against the AF_XDP backend on the relay's two veths.
    /// The relay resolves its neighbours first, as any host would once
    /// signalling has flowed: the backend takes next hops from the kernel's
    /// neighbour table and drops (and counts) media to unresolved peers.
    #[cfg(feature = "afxdp")]
    #[test]
    fn conformance_afxdp_across_namespaces() {
        use crate::afxdp::{AfXdpBackend, AfXdpConfig, Neighbours};
        let Some(net) = net() else { return };
        for peer in [Host::Caller, Host::Callee] {
            let ip = TestNet::addr(peer);
            let resolved = net
                .run_in(Host::Relay, move || {
                    let probe = UdpSocket::bind("0.0.0.0:0").unwrap();
                    (0..200).any(|_| {
                        probe.send_to(b"arp", (ip, 9)).unwrap();
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        matches!(ip, IpAddr::V4(v4) if Neighbours::read().unwrap().mac(v4).is_some())
                    })
                })
                .unwrap();
            assert!(resolved, "the relay never resolved {ip}");
        }
        let started = net
            .run_in(Host::Relay, || {
                AfXdpBackend::start(AfXdpConfig {
                    relay: relay_config(),
                    interfaces: vec!["r0".into(), "r1".into()],
                    workers: 1,
                    ..AfXdpConfig::default()
                })
            })
            .unwrap();
        let backend = match started {
            Ok(b) => b,
            Err(e) if std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_none() => {
                eprintln!("SKIP: AF_XDP unavailable: {e}");
                return;
            }
            Err(e) => panic!("AF_XDP backend: {e}"),
        };
        /// The namespaces, where fragments stay with the relay's kernel.
        struct Xdp<'a>(Netns<'a>);
        impl conformance::TestNet for Xdp<'_> {
            fn endpoint(&self, role: Role) -> UdpSocket {
                self.0.endpoint(role)
            }
            fn relay_ip(&self) -> IpAddr {
                self.0.relay_ip()
            }
            fn fragments_reach_relay(&self) -> bool {
                false
            }
        }
        conformance::run_all(&backend, &Xdp(Netns(&net)));
        let (_, io) = backend.counters();
        assert_eq!(
            io.tx_errors, 0,
            "every forward had a next hop and a TX slot"
        );
        drop(backend);
    }
}
