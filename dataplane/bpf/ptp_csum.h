/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Rewrite the 8-byte correctionField of a packet at tc and keep the UDP checksum valid.
 *   UDPv4  incremental update; a zero checksum (none) stays zero (BPF_F_MARK_MANGLED_0)
 *   UDPv6  incremental update; a result of zero is written as 0xffff (BPF_F_MARK_MANGLED_0)
 *   UDPv6 with the IEEE 1588 Annex E checksum-compensation trailer (2 bytes right after the PTP
 *          message inside the UDP payload, even messageLength): the trailer absorbs the change and
 *          the UDP checksum is left as it is
 *   CHECKSUM_PARTIAL skbs: bpf_l4_csum_replace (pseudohdr=0) leaves the field to the stack, which
 *          computes the final checksum over the rewritten bytes
 */
#ifndef PTP_CSUM_H
#define PTP_CSUM_H

static __always_inline __u16 ptp_csum_fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)c;
}

/* 0 = done, 1 = done via trailer, <0 = helper error (packet possibly unchanged) */
static __always_inline int ptp_add_correction(struct __sk_buff *skb, struct ptp_pkt *p, __s64 add_scaled)
{
	__u32 coff = p->ptp_off + PTP_OFF_CORRECTION;
	__u64 old_be, new_be;
	__s64 v;

	if (bpf_skb_load_bytes(skb, coff, &old_be, 8) < 0)
		return -1;
	v = (__s64)bpf_be64_to_cpu(old_be);
	v = (__s64)((__u64)v + (__u64)add_scaled);      /* two's complement wrap, no UB */
	new_be = bpf_cpu_to_be64((__u64)v);
	if (bpf_skb_store_bytes(skb, coff, &new_be, 8, BPF_F_RECOMPUTE_CSUM) < 0)
		return -1;
	if (p->transport == PTP_TR_L2)
		return 0;

	if (p->transport == PTP_TR_UDP6 && !(p->msg_len & 1) &&
	    p->payload_len >= (__u32)p->msg_len + 2) {
		__u32 toff = p->ptp_off + p->msg_len;
		__u16 trailer;
		__s64 c;

		if (bpf_skb_load_bytes(skb, toff, &trailer, 2) < 0)
			return -1;
		/* trailer' = trailer + old - new (one's complement), so the sum is unchanged */
		c = bpf_csum_diff((__be32 *)&new_be, 8, (__be32 *)&old_be, 8, trailer);
		if (c < 0)
			return -1;
		trailer = ptp_csum_fold((__u32)c);
		if (bpf_skb_store_bytes(skb, toff, &trailer, 2, BPF_F_RECOMPUTE_CSUM) < 0)
			return -1;
		return 1;
	}
	{
		__s64 diff = bpf_csum_diff((__be32 *)&old_be, 8, (__be32 *)&new_be, 8, 0);
		if (diff < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, p->l4_off + offsetof(struct udphdr, check), 0, diff,
					BPF_F_MARK_MANGLED_0) < 0)
			return -1;
	}
	return 0;
}

#endif /* PTP_CSUM_H */
