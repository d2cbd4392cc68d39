// SPDX-License-Identifier: Apache-2.0 OR MIT OR GPL-2.0
/* media_reflect: the relay benchmark's ceiling. A bare in-kernel program
 * that does the per-packet work of a relay for IPv4 UDP datagrams to the
 * configured media port range (map `media_config`) and nothing more: it
 * rewrites the frame (MACs, addresses and ports swapped, TTL decremented,
 * IPv4 header checksum updated incrementally) and sends it back out of the
 * interface it came in on (XDP_TX). No session lookup, no latching, no
 * counters per call: the fastest any relay on this host can be. Everything
 * else (ARP, other ports, IPv6, fragments, options) goes to the kernel.
 *
 * Every header access is preceded by a bounds check against data_end.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "voxplane_xdp.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct media_config);
} media_config SEC(".maps");

/* Key 0: frames reflected; key 1: frames passed to the kernel. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} reflect_counters SEC(".maps");

static __always_inline int count(__u32 which, int verdict)
{
	__u64 *c = bpf_map_lookup_elem(&reflect_counters, &which);

	if (c)
		*c += 1;
	return verdict;
}

SEC("xdp")
int media_reflect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip4;
	struct udphdr *udp;
	struct media_config *cfg;
	unsigned char mac[ETH_ALEN];
	__u32 zero = 0;
	__u32 check;
	__be32 addr;
	__be16 port;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return count(1, XDP_PASS);
	ip4 = (void *)(eth + 1);
	/* No IP options: the UDP header follows a 20-byte header. */
	if ((void *)(ip4 + 1) > data_end || ip4->version != 4 || ip4->ihl != 5 ||
	    ip4->protocol != IPPROTO_UDP || (ip4->frag_off & bpf_htons(0x3fff)) ||
	    ip4->ttl <= 1)
		return count(1, XDP_PASS);
	udp = (void *)(ip4 + 1);
	if ((void *)(udp + 1) > data_end)
		return count(1, XDP_PASS);
	cfg = bpf_map_lookup_elem(&media_config, &zero);
	if (!cfg || bpf_ntohs(udp->dest) < cfg->port_lo ||
	    bpf_ntohs(udp->dest) > cfg->port_hi)
		return count(1, XDP_PASS);

	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	/* Swapping addresses and ports leaves both checksums unchanged (a
	 * one's complement sum does not depend on the order of its words). */
	addr = ip4->saddr;
	ip4->saddr = ip4->daddr;
	ip4->daddr = addr;
	port = udp->source;
	udp->source = udp->dest;
	udp->dest = port;
	/* RFC 1141 incremental update for TTL - 1, as the kernel's
	 * ip_decrease_ttl() does. */
	check = ip4->check;
	check += bpf_htons(0x0100);
	ip4->check = (__sum16)(check + (check >= 0xffff));
	ip4->ttl--;
	return count(0, XDP_TX);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
