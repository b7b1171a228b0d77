/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Add to the 8-byte correctionField of a packet at tc and keep the UDP checksum valid.
 * The correctionField is rewritten with a direct packet store (the verifier's tc prologue
 * un-clones a cloned skb first, so a flooded copy never writes into data another copy shares).
 *   L2     nothing else to do
 *   UDPv4  checksum 0 (none) stays 0, no helper call; else incremental update (below)
 *   UDPv6  with the IEEE 1588 Annex E checksum-compensation trailer (2 bytes right after the PTP
 *          message inside the UDP payload, even messageLength): the trailer absorbs the change, the
 *          UDP checksum and the packet's one's-complement sum stay as they are
 *   UDPv4/UDPv6 incremental update through bpf_l4_csum_replace(diff): the one helper on this path,
 *          because only the kernel knows skb->ip_summed — a CHECKSUM_PARTIAL skb (a local stack's
 *          packet, e.g. forwarded from a veth) holds the pseudo-header seed in the field and must be
 *          left to the stack; anything else gets the RFC 1624 update; a result of 0 is sent as 0xffff.
 * Field and checksum change by opposite one's-complement amounts, so a CHECKSUM_COMPLETE skb->csum
 * stays valid too.
 */
#ifndef PTP_CSUM_H
#define PTP_CSUM_H

/* one's-complement sum of the four 16-bit words of v, in memory order (byte-order independent) */
static __always_inline __u32 ptp_csum64(__u64 v)
{
	return (__u32)(v & 0xffff) + (__u32)((v >> 16) & 0xffff) + (__u32)((v >> 32) & 0xffff) + (__u32)(v >> 48);
}

/* the one's-complement difference new - old of two 64-bit fields as a 32-bit partial sum (__wsum) for
 * bpf_l4_csum_replace: the 32-bit halves of ~old and new (< 2^34 in all), folded once at bit 16 into
 * < 2^19. Any value congruent mod 0xffff (2^16 == 1) does: the helper's csum_add + csum_fold see only
 * that. */
static __always_inline __u32 ptp_csum_diff64(__u64 old_be, __u64 new_be)
{
	__u64 s = (~old_be & 0xffffffff) + (~old_be >> 32) + (new_be & 0xffffffff) + (new_be >> 32);

	return (__u32)((s & 0xffff) + (s >> 16));
}

static __always_inline __u16 ptp_csum_fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)c;
}

/* 0 = done, 1 = done via trailer, <0 = not done (packet unchanged) or checksum helper error */
static __always_inline int ptp_add_correction(struct __sk_buff *skb, struct ptp_pkt *p, __s64 add_scaled)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = p->ptp_off & 0xff;
	__u64 *field = data + off + PTP_OFF_CORRECTION;
	__u64 old_be, new_be;

	if ((void *)(field + 1) > data_end)
		return -1;
	old_be = *field;
	new_be = bpf_cpu_to_be64(bpf_be64_to_cpu(old_be) + (__u64)add_scaled);   /* two's complement wrap */
	if (p->transport == PTP_TR_UDP6 && !(p->msg_len & 1) &&
	    p->payload_len >= (__u32)p->msg_len + 2) {
		__u32 toff = off + p->msg_len;
		__u16 *trailer;
		__u16 t;

		if (toff > 0x3ff)               /* bounded for the verifier; frames here are < 1 KiB of PTP */
			return -1;
		trailer = data + toff;
		if ((void *)(trailer + 1) > data_end)
			return -1;
		t = *trailer;
		/* trailer' = trailer + old - new (one's complement): the UDP sum is unchanged */
		t = ptp_csum_fold((__u32)t + ptp_csum64(old_be) + ptp_csum64(~new_be));
		*trailer = t;
		*field = new_be;
		return 1;
	}
	if (p->transport == PTP_TR_L2) {
		*field = new_be;
		return 0;
	}
	{
		__u32 coff = (p->l4_off & 0xff) + offsetof(struct udphdr, check);
		__u16 *check = data + coff;

		if ((void *)(check + 1) > data_end)
			return -1;
		*field = new_be;
		if (p->transport == PTP_TR_UDP4 && *check == 0)
			return 0;               /* IPv4 without a checksum: keep it that way */
		if (bpf_l4_csum_replace(skb, coff, 0, ptp_csum_diff64(old_be, new_be), BPF_F_MARK_MANGLED_0) < 0)
			return -2;
	}
	return 0;
}

#endif /* PTP_CSUM_H */
