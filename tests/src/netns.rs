//! Network-namespace test harness: caller / relay / callee namespaces joined
//! by veth pairs in 198.18.0.0/15, built per test and torn down on drop.
//!
//! ```text
//!  caller ns                relay ns                       callee ns
//!  cal0 198.18.0.1/24 ──── rel0 198.18.0.2/24
//!                           rel1 198.19.0.2/24 ──── cle0 198.19.0.1/24
//! ```
//!
//! IPv6 beside each: 2001:db8:18::1/64 ↔ ::2 on the caller link,
//! 2001:db8:19::2/64 ↔ ::1 on the callee link.
//!
//! Every [`Topology`] gets namespaces with unique names (`vxt-<pid>-<n>-…`), so
//! tests in one process or in several can run in parallel; interface names
//! and addresses repeat, which is harmless because each namespace is its own
//! stack. TX checksum offload is turned off on every veth so that frames seen
//! by XDP and AF_XDP carry real UDP checksums (design.md, machine facts).
//!
//! Closures run inside a namespace on a dedicated thread that `setns(2)`s
//! into it ([`Netns::run`]); commands run through `ip netns exec`
//! ([`Netns::exec`]). Namespaces are deleted on drop — also while a test
//! unwinds from a panic — and namespaces left behind by a process that was
//! killed are removed the next time a topology is built.
//!
//! Without CAP_NET_ADMIN or without `ip`/`ethtool`, [`Topology::new`] prints a
//! `SKIP:` line and returns `None`, unless `VOXPLANE_REQUIRE_TOOLS` is set, in
//! which case it panics (CI sets it).
//!
//! ```no_run
//! let Some(topo) = tests::netns::Topology::new() else { return };
//! let out = topo.caller.exec(&["ping", "-c1", "-W1", "198.18.0.2"]);
//! assert!(out.status.success());
//! ```

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// Prefix of every namespace this harness creates.
const PREFIX: &str = "vxt-";

/// Caller side of the caller↔relay link.
pub const CALLER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Relay side of the caller↔relay link.
pub const RELAY_CALLER_SIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Relay side of the relay↔callee link.
pub const RELAY_CALLEE_SIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
/// Callee side of the relay↔callee link.
pub const CALLEE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// IPv6 (documentation range) beside [`CALLER_IP`].
pub const CALLER_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 1);
/// IPv6 beside [`RELAY_CALLER_SIDE_IP`].
pub const RELAY_CALLER_SIDE_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 2);
/// IPv6 beside [`RELAY_CALLEE_SIDE_IP`].
pub const RELAY_CALLEE_SIDE_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 2);
/// IPv6 beside [`CALLEE_IP`].
pub const CALLEE_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 1);
/// The caller's veth (in the caller namespace).
pub const CALLER_IF: &str = "cal0";
/// The relay's veth towards the caller.
pub const RELAY_CALLER_IF: &str = "rel0";
/// The relay's veth towards the callee.
pub const RELAY_CALLEE_IF: &str = "rel1";
/// The callee's veth (in the callee namespace).
pub const CALLEE_IF: &str = "cle0";

/// Why the harness cannot run here, or `None` when it can: CAP_NET_ADMIN
/// and the `ip` and `ethtool` tools are needed.
pub fn unavailable() -> Option<String> {
    if !has_cap_net_admin() {
        return Some("no CAP_NET_ADMIN (run as root to test in network namespaces)".into());
    }
    for tool in ["ip", "ethtool"] {
        if !tool_exists(tool) {
            return Some(format!(
                "`{tool}` not found (apt-get install iproute2 ethtool)"
            ));
        }
    }
    None
}

/// Returns `true` when the harness can run; otherwise prints `SKIP: <why>`
/// and returns `false`, or panics when `VOXPLANE_REQUIRE_TOOLS` is set.
pub fn available(test: &str) -> bool {
    match unavailable() {
        None => true,
        Some(why) if std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_some() => {
            panic!("{test}: {why}, and VOXPLANE_REQUIRE_TOOLS is set")
        }
        Some(why) => {
            eprintln!("SKIP: {test}: {why}");
            false
        }
    }
}

/// One network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `name` with its loopback up.
    ///
    /// # Panics
    /// When `ip netns add` fails (a test harness: failing loudly is right).
    pub fn create(name: &str) -> Netns {
        ip(&["netns", "add", name]);
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> args…`, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Runs a command inside the namespace (`ip netns exec`) and returns its
    /// output, whatever its exit status.
    ///
    /// # Panics
    /// When the command cannot be started at all.
    pub fn exec(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {argv:?}: {e}", self.name))
    }

    /// Runs `f` on a new thread that has joined this namespace, and returns
    /// its result. Sockets `f` creates belong to the namespace for their whole
    /// life. A panic in `f` is resumed on the calling thread.
    ///
    /// # Panics
    /// When `setns(2)` fails, or when `f` panics.
    pub fn run<R: Send, F: FnOnce() -> R + Send>(&self, f: F) -> R {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
                f()
            });
            match handle.join() {
                Ok(r) => r,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }

    /// Spawns `f` on a thread inside this namespace and returns at once; the
    /// caller joins it. For servers that must run while another namespace
    /// sends.
    pub fn spawn<R: Send + 'static, F: FnOnce() -> R + Send + 'static>(
        &self,
        f: F,
    ) -> std::thread::JoinHandle<R> {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            setns(&file, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
            f()
        })
    }

    /// Attaches the trivial `XDP_PASS` program (`xdp-progs/pass.o`) to
    /// `iface` in native mode. A veth drops frames redirected or `XDP_TX`ed
    /// into it unless its peer has an XDP program (design.md, pitfalls).
    ///
    /// # Panics
    /// When the object is missing or `ip link set xdp` fails.
    pub fn attach_xdp_pass(&self, iface: &str) {
        let obj = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xdp-progs/pass.o");
        let obj = obj.to_str().expect("UTF-8 path");
        self.ip(&[
            "link", "set", "dev", iface, "xdpdrv", "obj", obj, "sec", "xdp",
        ]);
    }

    /// Waits until `iface` is operationally up (`state UP`).
    ///
    /// # Panics
    /// When it is not within `timeout`.
    pub fn wait_operational(&self, iface: &str, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let out = Command::new("ip")
                .args(["-n", &self.name, "-o", "link", "show", iface])
                .output()
                .unwrap_or_else(|e| panic!("ip link show: {e}"));
            if String::from_utf8_lossy(&out.stdout).contains("state UP") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{iface} in {} not up after {timeout:?}",
                self.name
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The MAC address of `iface` in this namespace.
    pub fn mac(&self, iface: &str) -> [u8; 6] {
        let out = self.exec(&["cat", &format!("/sys/class/net/{iface}/address")]);
        assert!(
            out.status.success(),
            "no interface {iface} in {}",
            self.name
        );
        parse_mac(String::from_utf8_lossy(&out.stdout).trim())
            .unwrap_or_else(|| panic!("bad MAC for {iface}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also destroys the veth ends inside it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Caller, relay and callee namespaces joined by two veth pairs.
#[derive(Debug)]
pub struct Topology {
    /// The caller: `cal0` = [`CALLER_IP`].
    pub caller: Netns,
    /// The relay: `rel0` = [`RELAY_CALLER_SIDE_IP`], `rel1` = [`RELAY_CALLEE_SIDE_IP`].
    pub relay: Netns,
    /// The callee: `cle0` = [`CALLEE_IP`].
    pub callee: Netns,
}

impl Topology {
    /// Builds the three namespaces and links, or returns `None` after
    /// printing `SKIP:` when the harness cannot run here (see [`available`]).
    ///
    /// Routes: the caller reaches 198.19.0.0/24 and the callee 198.18.0.0/24
    /// through the relay, which does not forward in the kernel (its
    /// `ip_forward` is 0), so only a userspace or XDP relay carries traffic
    /// between them.
    ///
    /// # Panics
    /// When a setup command fails although the harness is available.
    pub fn new() -> Option<Topology> {
        if !available("netns topology") {
            return None;
        }
        remove_stale();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{}-{n}", std::process::id());
        // Each namespace is owned as soon as it exists, so a failure below
        // still deletes those already made.
        let caller = Netns::create(&format!("{base}-caller"));
        let relay = Netns::create(&format!("{base}-relay"));
        let callee = Netns::create(&format!("{base}-callee"));
        let topo = Topology {
            caller,
            relay,
            callee,
        };
        topo.link(
            (&topo.caller, CALLER_IF, CALLER_IP, CALLER_IP6),
            (
                &topo.relay,
                RELAY_CALLER_IF,
                RELAY_CALLER_SIDE_IP,
                RELAY_CALLER_SIDE_IP6,
            ),
        );
        topo.link(
            (&topo.callee, CALLEE_IF, CALLEE_IP, CALLEE_IP6),
            (
                &topo.relay,
                RELAY_CALLEE_IF,
                RELAY_CALLEE_SIDE_IP,
                RELAY_CALLEE_SIDE_IP6,
            ),
        );
        for (ns, net4, via4, net6, via6) in [
            (
                &topo.caller,
                "198.19.0.0/24",
                RELAY_CALLER_SIDE_IP,
                "2001:db8:19::/64",
                RELAY_CALLER_SIDE_IP6,
            ),
            (
                &topo.callee,
                "198.18.0.0/24",
                RELAY_CALLEE_SIDE_IP,
                "2001:db8:18::/64",
                RELAY_CALLEE_SIDE_IP6,
            ),
        ] {
            ns.ip(&["route", "add", net4, "via", &via4.to_string()]);
            ns.ip(&["-6", "route", "add", net6, "via", &via6.to_string()]);
        }
        // A veth sends nothing until the kernel's link watcher has marked it
        // operational (up to a second after `link set up`): wait for it, so
        // the first packets of a test are not silently dropped.
        for (ns, iface) in [
            (&topo.caller, CALLER_IF),
            (&topo.relay, RELAY_CALLER_IF),
            (&topo.relay, RELAY_CALLEE_IF),
            (&topo.callee, CALLEE_IF),
        ] {
            ns.wait_operational(iface, std::time::Duration::from_secs(3));
        }
        Some(topo)
    }

    /// Creates a veth pair between two (namespace, interface, IPv4, IPv6)
    /// ends, addresses them (/24, /64 without duplicate address detection so
    /// they are usable at once), turns TX checksum offload off on both and
    /// brings them up.
    fn link(&self, a: End<'_>, b: End<'_>) {
        a.0.ip(&[
            "link",
            "add",
            a.1,
            "type",
            "veth",
            "peer",
            "name",
            b.1,
            "netns",
            b.0.name(),
        ]);
        for (ns, iface, v4, v6) in [a, b] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", iface]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", iface, "nodad"]);
            let out = ns.exec(&["ethtool", "-K", iface, "tx", "off"]);
            assert!(
                out.status.success(),
                "ethtool -K {iface} tx off: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            ns.ip(&["link", "set", iface, "up"]);
        }
    }
}

/// One end of a link: namespace, interface, IPv4 and IPv6 address.
type End<'a> = (&'a Netns, &'a str, Ipv4Addr, Ipv6Addr);

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Runs `ip args…`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn tool_exists(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|dir| dir.join(tool).is_file())
    })
}

/// CAP_NET_ADMIN (bit 12) in the effective set, from `/proc/self/status`.
fn has_cap_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Deletes `vxt-<pid>-…` namespaces whose process no longer exists (left by
/// a test run that was killed before its destructors ran).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn parses_macs() {
        assert_eq!(parse_mac("02:00:0a:ff:00:01"), Some([2, 0, 10, 255, 0, 1]));
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:0a:ff:00:01"), None);
    }

    /// Sends one datagram from `from` (bound to `src`) to `dst` in `to`
    /// and reports whether it arrived within 300 ms.
    fn udp_reaches(from: &Netns, src: Ipv4Addr, to: &Netns, dst: Ipv4Addr) -> bool {
        let listener = to.run(|| UdpSocket::bind((dst, 0)).expect("bind listener"));
        let port = listener.local_addr().unwrap().port();
        from.run(|| {
            let sock = UdpSocket::bind((src, 0)).expect("bind sender");
            let _ = sock.send_to(b"probe", (dst, port));
        });
        listener
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        listener.recv_from(&mut [0u8; 16]).is_ok()
    }

    fn udp_reaches6(from: &Netns, src: Ipv6Addr, to: &Netns, dst: Ipv6Addr) -> bool {
        let listener = to.run(|| UdpSocket::bind((dst, 0)).expect("bind listener"));
        let port = listener.local_addr().unwrap().port();
        from.run(|| {
            let sock = UdpSocket::bind((src, 0)).expect("bind sender");
            let _ = sock.send_to(b"probe", (dst, port));
        });
        listener
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        listener.recv_from(&mut [0u8; 16]).is_ok()
    }

    #[test]
    fn links_reach_the_relay_and_not_through_it() {
        let Some(t) = Topology::new() else { return };
        assert!(udp_reaches(
            &t.caller,
            CALLER_IP,
            &t.relay,
            RELAY_CALLER_SIDE_IP
        ));
        assert!(udp_reaches(
            &t.callee,
            CALLEE_IP,
            &t.relay,
            RELAY_CALLEE_SIDE_IP
        ));
        assert!(udp_reaches(
            &t.relay,
            RELAY_CALLEE_SIDE_IP,
            &t.callee,
            CALLEE_IP
        ));
        // The relay does not forward in the kernel: only our relay carries media.
        assert!(!udp_reaches(&t.caller, CALLER_IP, &t.callee, CALLEE_IP));
        // IPv6 works on both links at once (no DAD wait).
        assert!(udp_reaches6(
            &t.caller,
            CALLER_IP6,
            &t.relay,
            RELAY_CALLER_SIDE_IP6
        ));
        assert!(udp_reaches6(
            &t.relay,
            RELAY_CALLEE_SIDE_IP6,
            &t.callee,
            CALLEE_IP6
        ));
        // TX checksum offload is off on the veths.
        let out = t.caller.exec(&["ethtool", "-k", CALLER_IF]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("tx-checksumming: off"), "{text}");
    }

    #[test]
    fn xdp_pass_attaches_and_traffic_still_flows() {
        let Some(t) = Topology::new() else { return };
        t.caller.attach_xdp_pass(CALLER_IF);
        let out = t.caller.exec(&["ip", "link", "show", CALLER_IF]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("xdp"));
        assert!(udp_reaches(
            &t.relay,
            RELAY_CALLER_SIDE_IP,
            &t.caller,
            CALLER_IP
        ));
    }

    #[test]
    fn closures_run_inside_the_namespace() {
        let Some(topo) = Topology::new() else { return };
        let server = topo.relay.spawn(|| {
            let sock = UdpSocket::bind((RELAY_CALLER_SIDE_IP, 40000)).expect("bind in relay ns");
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = sock.recv_from(&mut buf).expect("datagram from caller");
            sock.send_to(&buf[..n], from).unwrap();
            from
        });
        let reply = topo.caller.run(|| {
            let sock = UdpSocket::bind((CALLER_IP, 0)).expect("bind in caller ns");
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 64];
            // Retry while the server thread is still binding.
            for _ in 0..25 {
                sock.send_to(b"hello", (RELAY_CALLER_SIDE_IP, 40000))
                    .unwrap();
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    return buf[..n].to_vec();
                }
            }
            panic!("no echo from the relay namespace");
        });
        assert_eq!(reply, b"hello");
        assert_eq!(server.join().unwrap().ip(), CALLER_IP);
        // The host namespace has no such address: the closure really ran inside.
        assert!(UdpSocket::bind((CALLER_IP, 0)).is_err());
    }

    #[test]
    fn namespaces_are_removed_even_when_the_test_panics() {
        if !available("namespaces_are_removed_even_when_the_test_panics") {
            return;
        }
        let mut names = Vec::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let topo = Topology::new().expect("available");
            names = [&topo.caller, &topo.relay, &topo.callee]
                .iter()
                .map(|n| n.name().to_owned())
                .collect();
            assert!(
                names
                    .iter()
                    .all(|n| Path::new("/run/netns").join(n).exists())
            );
            panic!("test failure inside the topology");
        }));
        assert!(result.is_err());
        assert_eq!(names.len(), 3);
        for name in names {
            assert!(
                !Path::new("/run/netns").join(&name).exists(),
                "{name} left behind"
            );
        }
    }

    #[test]
    fn two_topologies_coexist() {
        let (Some(a), Some(b)) = (Topology::new(), Topology::new()) else {
            return;
        };
        assert_ne!(a.relay.name(), b.relay.name());
        assert_ne!(a.relay.mac(RELAY_CALLER_IF), [0; 6]);
    }
}
