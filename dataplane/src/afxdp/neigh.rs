//! Next-hop MAC addresses from the kernel's neighbour table, so the AF_XDP
//! path addresses frames exactly as the kernel would. Read from
//! `/proc/net/arp` (IPv4); the relay refreshes it when a next hop is
//! missing rather than resolving addresses itself.

use std::net::Ipv4Addr;

/// One complete entry of the neighbour table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's address.
    pub ip: Ipv4Addr,
    /// Its link-layer address.
    pub mac: [u8; 6],
    /// The interface it was learnt on.
    pub interface: String,
}

/// A snapshot of the kernel's IPv4 neighbour table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Neighbours {
    entries: Vec<Neighbour>,
}

/// ATF_COM: the entry is complete (linux/if_arp.h).
const ATF_COM: u32 = 0x02;

impl Neighbours {
    /// Reads `/proc/net/arp` of the calling thread's network namespace.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn read() -> std::io::Result<Neighbours> {
        // /proc/self/net follows the thread's namespace only for the main
        // thread; /proc/thread-self/net is the calling thread's.
        let text = std::fs::read_to_string("/proc/thread-self/net/arp")
            .or_else(|_| std::fs::read_to_string("/proc/net/arp"))?;
        Ok(Neighbours::parse(&text))
    }

    /// Parses the text of `/proc/net/arp`, keeping complete entries only;
    /// malformed lines are skipped.
    pub fn parse(text: &str) -> Neighbours {
        let entries = text
            .lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let [ip, _hw_type, flags, mac, _mask, interface] = f.as_slice() else {
                    return None;
                };
                let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
                if flags & ATF_COM == 0 {
                    return None;
                }
                Some(Neighbour {
                    ip: ip.parse().ok()?,
                    mac: parse_mac(mac)?,
                    interface: (*interface).to_owned(),
                })
            })
            .collect();
        Neighbours { entries }
    }

    /// The MAC of `ip`, if the kernel has resolved it.
    pub fn mac(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.entries.iter().find(|n| n.ip == ip).map(|n| n.mac)
    }

    /// Every complete entry.
    pub fn entries(&self) -> &[Neighbour] {
        &self.entries
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP: &str = "\
IP address       HW type     Flags       HW address            Mask     Device
198.19.0.1       0x1         0x2         9a:1b:2c:3d:4e:5f     *        rel1
198.18.0.1       0x1         0x0         00:00:00:00:00:00     *        rel0
192.0.2.9        0x1         0x6         02:00:00:00:00:09     *        eth0
garbage line
192.0.2.10       0x1         0x2         02:00:zz:00:00:09     *        eth0
";

    #[test]
    fn keeps_complete_entries_only() {
        let n = Neighbours::parse(ARP);
        assert_eq!(n.entries().len(), 2);
        assert_eq!(
            n.mac("198.19.0.1".parse().unwrap()),
            Some([0x9a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
        assert_eq!(n.entries()[0].interface, "rel1");
        // Incomplete (flags 0x0): not a usable next hop.
        assert_eq!(n.mac("198.18.0.1".parse().unwrap()), None);
        // Permanent entries (ATF_PERM | ATF_COM) count.
        assert_eq!(
            n.mac("192.0.2.9".parse().unwrap()),
            Some([2, 0, 0, 0, 0, 9])
        );
        // A bad MAC is skipped, not a panic.
        assert_eq!(n.mac("192.0.2.10".parse().unwrap()), None);
    }

    #[test]
    fn empty_and_header_only_tables() {
        assert!(Neighbours::parse("").entries().is_empty());
        assert!(
            Neighbours::parse(ARP.lines().next().unwrap())
                .entries()
                .is_empty()
        );
    }

    #[test]
    fn reads_this_namespace() {
        // Whatever it holds, reading never fails on Linux.
        assert!(Neighbours::read().is_ok());
    }
}
