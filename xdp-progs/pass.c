// SPDX-License-Identifier: Apache-2.0 OR MIT OR GPL-2.0
/* pass: a trivial XDP_PASS program. Attached to the peer of a veth so that
 * frames redirected or XDP_TX'ed into that veth are accepted (a veth drops
 * them when its peer runs no XDP program). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
