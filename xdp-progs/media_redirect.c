// SPDX-License-Identifier: Apache-2.0 OR MIT OR GPL-2.0
/* media_redirect: the AF_XDP steering program of Voxplane's dataplane.
 *
 * Redirects UDP datagrams whose destination port is in the configured media
 * range (map `media_config`) into the AF_XDP socket bound to the frame's rx
 * queue (map `xsks`); passes everything else to the kernel stack, so ARP,
 * ICMP, SIP (UDP or TCP), SSH and any UDP outside the range keep working.
 * Malformed or truncated frames are passed too: the kernel drops and counts
 * them, and no media socket ever sees a frame it cannot parse.
 *
 * Every header access is preceded by a bounds check against data_end.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "voxplane_xdp.h"

#define MAX_QUEUES 64
#define MAX_VLAN_TAGS 2

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct media_config);
} media_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MC_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

static __always_inline int count(__u32 which, int verdict)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);

	if (c)
		*c += 1;
	return verdict;
}

SEC("xdp")
int media_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *cursor;
	struct udphdr *udp;
	__u16 proto;
	__u16 port;
	__u32 zero = 0;
	struct media_config *cfg;
	int i;

	if ((void *)(eth + 1) > data_end)
		return count(MC_PASS_MALFORMED, XDP_PASS);
	proto = eth->h_proto;
	cursor = eth + 1;

	/* 802.1Q / 802.1ad tags, at most two (QinQ). */
#pragma unroll
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_hdr *vlan = cursor;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > data_end)
			return count(MC_PASS_MALFORMED, XDP_PASS);
		proto = vlan->encapsulated_proto;
		cursor = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip4 = cursor;
		__u32 ihl;

		if ((void *)(ip4 + 1) > data_end)
			return count(MC_PASS_MALFORMED, XDP_PASS);
		ihl = ip4->ihl * 4;
		if (ip4->version != 4 || ihl < sizeof(*ip4))
			return count(MC_PASS_MALFORMED, XDP_PASS);
		if (ip4->protocol != IPPROTO_UDP)
			return count(MC_PASS_NOT_UDP, XDP_PASS);
		/* MF set or a fragment offset: not a whole datagram. */
		if (ip4->frag_off & bpf_htons(0x3fff))
			return count(MC_PASS_FRAGMENT, XDP_PASS);
		cursor = (void *)ip4 + ihl;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cursor;

		if ((void *)(ip6 + 1) > data_end)
			return count(MC_PASS_MALFORMED, XDP_PASS);
		if (ip6->version != 6)
			return count(MC_PASS_MALFORMED, XDP_PASS);
		/* Media never carries extension headers; anything but UDP is
		 * the kernel's. */
		if (ip6->nexthdr != IPPROTO_UDP)
			return count(MC_PASS_NOT_UDP, XDP_PASS);
		cursor = ip6 + 1;
	} else {
		return count(MC_PASS_NOT_IP, XDP_PASS);
	}

	udp = cursor;
	if ((void *)(udp + 1) > data_end)
		return count(MC_PASS_MALFORMED, XDP_PASS);
	if (bpf_ntohs(udp->len) < sizeof(*udp) ||
	    (void *)udp + bpf_ntohs(udp->len) > data_end)
		return count(MC_PASS_MALFORMED, XDP_PASS);

	cfg = bpf_map_lookup_elem(&media_config, &zero);
	if (!cfg)
		return count(MC_PASS_PORT, XDP_PASS);
	port = bpf_ntohs(udp->dest);
	if (port < cfg->port_lo || port > cfg->port_hi)
		return count(MC_PASS_PORT, XDP_PASS);

	/* No socket on this queue: the flags' low bits are the fallback
	 * verdict, so the kernel keeps the datagram. */
	if (bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS) == XDP_REDIRECT)
		return count(MC_REDIRECTED, XDP_REDIRECT);
	return count(MC_NO_SOCKET, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
