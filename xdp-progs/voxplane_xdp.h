/* Types shared between the XDP programs and user space. Mirrored, field for
 * field, by the `xdp-common` crate (`#[repr(C)]`, no implicit padding);
 * xdp-common's tests check sizes and offsets, keep both in step. */
#ifndef VOXPLANE_XDP_H
#define VOXPLANE_XDP_H

#include <linux/types.h>

/* Value of `media_config` (an ARRAY with one entry, key 0), filled by the
 * loader. UDP datagrams whose destination port is in [port_lo, port_hi]
 * (host byte order, inclusive) are redirected to the XSK of their rx queue.
 * port_lo > port_hi (e.g. the all-zero default) redirects nothing. */
struct media_config {
	__u16 port_lo;
	__u16 port_hi;
	__u32 flags; /* reserved, 0 */
};

/* Keys of the per-CPU `counters` array (one __u64 packet count each). */
enum media_counter {
	MC_REDIRECTED = 0,     /* media datagram handed to an XSK */
	MC_NO_SOCKET = 1,      /* media datagram, no XSK on its queue: passed */
	MC_PASS_NOT_IP = 2,    /* ARP, LLDP, ... */
	MC_PASS_NOT_UDP = 3,   /* ICMP, TCP (SIP over TCP, SSH), IPv6 ext. headers */
	MC_PASS_PORT = 4,      /* UDP outside the media range (SIP, DNS, ...) */
	MC_PASS_FRAGMENT = 5,  /* IPv4 fragment: the kernel reassembles */
	MC_PASS_MALFORMED = 6, /* truncated or inconsistent headers */
	MC_COUNT = 7,
};

#endif
