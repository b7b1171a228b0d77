/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Bounds-checked parser shared by the ingress (XDP / tc) and egress (tc) programs: works on a
 * [data, data_end) window, never reads past data_end, never writes.
 *   Ethernet, 0..2 VLAN tags (0x8100 / 0x88A8)
 *     -> 0x88F7 (PTP over IEEE 802.3, any destination)
 *     -> IPv4 (options via ihl; fragments are not PTP) / UDP dport 319|320
 *     -> IPv6 with next header UDP directly (extension headers: treated as non-PTP) / UDP dport 319|320
 *   PTP: versionPTP 2, minorVersionPTP 0|1, known messageType, messageLength >= the type's minimum
 *   and within the frame / UDP payload.
 */
#ifndef PTP_PARSE_H
#define PTP_PARSE_H

#include "ptp_proto.h"

#define PTP_TR_L2   1
#define PTP_TR_UDP4 2
#define PTP_TR_UDP6 3

enum ptp_parse_res {
	PTP_NOT = 0,            /* not PTP: pass, count nothing */
	PTP_BAD,                /* looked like PTP but is malformed: pass unchanged, count */
	PTP_OK,
	PTP_SHORT,              /* the window ended before we knew: at tc, pull non-linear data and retry */
};

struct ptp_pkt {
	__u32 ptp_off;          /* offset of the PTP header from data */
	__u32 l4_off;           /* UDP header offset (0 for L2) */
	__u32 payload_len;      /* bytes from ptp_off to the end of the UDP payload / frame */
	__u16 msg_len;          /* messageLength */
	__u8  transport;        /* PTP_TR_* */
	__u8  msg_type;         /* messageType (PTP_SLOT_MALFORMED when unknown) */
	__u8  flags0;           /* flagField[0] */
	union {
		struct ptp_key key;     /* domain, type, seq, sourcePortIdentity */
		__u64 kw[2];            /* the same 16 bytes as two words: kept whole in registers */
	};
};

#define PTP_MAX_L4_OFF 128      /* eth(14) + 2 tags(8) + IPv4 with options(60) fits; keeps offsets bounded */

static __always_inline int ptp_parse(void *data, void *data_end, struct ptp_pkt *p)
{
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	__u16 proto;
	__u32 avail;

	p->msg_type = PTP_SLOT_MALFORMED;       /* the counter slot of a frame that fails below */
	if ((void *)(eth + 1) > data_end)
		return PTP_SHORT;
	proto = *(__be16 *)(data + 12);    /* one 16-bit load (struct ethhdr is packed: byte loads) */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
			__be16 *inner = data + off + 2;
			if ((void *)(inner + 1) > data_end)
				return PTP_SHORT;
			proto = *inner;
			off += 4;
		}
	}

	if (proto == bpf_htons(ETH_P_PTP)) {
		p->transport = PTP_TR_L2;
		p->l4_off = 0;
		p->ptp_off = off;
		avail = (__u32)(data_end - data) - off;
		p->payload_len = avail;
	} else if (proto == bpf_htons(ETH_P_IP_)) {
		struct iphdr *ip = data + off;
		__u32 ihl;
		if ((void *)(ip + 1) > data_end)
			return PTP_SHORT;
		if (ip->version != 4 || ip->protocol != IPPROTO_UDP)
			return PTP_NOT;
		if (ip->frag_off & bpf_htons(0x3fff))   /* MF or offset: not a whole datagram */
			return PTP_NOT;
		ihl = ip->ihl * 4;
		if (ihl < 20)
			return PTP_NOT;
		off += ihl;
		p->transport = PTP_TR_UDP4;
	} else if (proto == bpf_htons(ETH_P_IPV6_)) {
		struct ipv6hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > data_end)
			return PTP_SHORT;
		if (ip6->nexthdr != IPPROTO_UDP)
			return PTP_NOT;
		off += sizeof(*ip6);
		p->transport = PTP_TR_UDP6;
	} else {
		return PTP_NOT;
	}

	if (p->transport != PTP_TR_L2) {
		struct udphdr *udp;
		__u16 dport, ulen;
		off &= 0xff;                    /* bounded for the verifier; real max is 82 */
		if (off > PTP_MAX_L4_OFF)
			return PTP_NOT;
		udp = data + off;
		if ((void *)(udp + 1) > data_end)
			return PTP_SHORT;
		dport = bpf_ntohs(udp->dest);
		if (dport != PTP_EVENT_PORT && dport != PTP_GENERAL_PORT)
			return PTP_NOT;
		p->l4_off = off;
		ulen = bpf_ntohs(udp->len);
		off += sizeof(*udp);
		p->ptp_off = off;
		avail = (__u32)(data_end - data);
		if (ulen < sizeof(*udp) || off - sizeof(*udp) + ulen > avail)
			return PTP_BAD;         /* UDP length beyond the frame: truncated */
		p->payload_len = ulen - sizeof(*udp);
	}

	{
		__u8 *h;
		__u32 mlen, minlen;
		off &= 0xff;
		h = data + off;
		if ((void *)(h + PTP_HDR_LEN) > data_end || p->payload_len < PTP_HDR_LEN)
			return PTP_BAD;
		if ((h[PTP_OFF_VERSION] & 0x0f) != 2 || (h[PTP_OFF_VERSION] >> 4) > 1)
			return PTP_BAD;
		minlen = ptp_min_len(h[PTP_OFF_TYPE] & 0x0f);
		if (!minlen)
			return PTP_BAD;
		p->msg_type = h[PTP_OFF_TYPE] & 0x0f;
		mlen = ((__u32)h[PTP_OFF_LENGTH] << 8) | h[PTP_OFF_LENGTH + 1];
		if (mlen < minlen || mlen > p->payload_len)
			return PTP_BAD;
		if ((void *)(h + 44) > data_end)
			return PTP_BAD;         /* minlen >= 44 (the verifier needs to see it) */
		p->msg_len = mlen;
		p->flags0 = h[PTP_OFF_FLAGS0];
		/* the key as two 64-bit words straight from the header's words (packet loads may be
		 * unaligned on x86; the bound h + 44 was checked above):
		 * {domain, type, sequenceId, sourcePortIdentity[0..4]}, {sourcePortIdentity[4..10], pad 0} */
		p->kw[0] = (__u64)h[PTP_OFF_DOMAIN] | ((__u64)p->msg_type << 8) |
			   ((__u64)*(__u16 *)(h + PTP_OFF_SEQ) << 16) | ((__u64)*(__u32 *)(h + PTP_OFF_SPI) << 32);
		p->kw[1] = (__u64)*(__u32 *)(h + PTP_OFF_SPI + 4) | ((__u64)*(__u16 *)(h + PTP_OFF_SPI + 8) << 32);
	}
	return PTP_OK;
}

#endif /* PTP_PARSE_H */
