/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the ingress and egress programs: counters, configuration, rings, ingress stamping. */
#ifndef PTP_COMMON_H
#define PTP_COMMON_H

#include "ptp_maps.h"
#include "ptp_parse.h"

#define PTP_RATE_ONE (1ULL << 32)

/*
 * Profiling cut-offs for bench/dataplane.py only (compiled with -DPTP_BENCH_STAGE=n; never in a
 * normal build): the program returns right after stage n so the bench can attribute the cost.
 *   1 parse   2 + port/global config and counters   3 + clock and ring lookup   (4 = full program)
 * (tc egress, forwarded event messages: their counters come after the clock read, in stage 3)
 */
#ifdef PTP_BENCH_STAGE
#define PTP_STAGE(n, ret) do { if (PTP_BENCH_STAGE == (n)) return (ret); } while (0)
#else
#define PTP_STAGE(n, ret) do { } while (0)
#endif

/* The counters of {port slot, message type}. The index is in range by construction (the slot masked to
 * PTP_MAX_PORTS, a power of two that dataplane/maps.py already enforces; type <= PTP_SLOT_MALFORMED from
 * the parser), so the lookup never fails: callers return on NULL once (the verifier wants the check) and
 * then count without a NULL test per counter. */
_Static_assert((PTP_MAX_PORTS & (PTP_MAX_PORTS - 1)) == 0, "PTP_MAX_PORTS power of two");
static __always_inline struct ptp_counters *ptp_ctr(__u32 slot, __u32 type)
{
	__u32 idx = (slot & (PTP_MAX_PORTS - 1)) * PTP_NSLOTS + (type > PTP_SLOT_MALFORMED ? PTP_SLOT_MALFORMED : type);

	return counters.lookup(&idx);
}

#define PTP_COUNT(pc, c) do { (pc)->v[(c)] += 1; } while (0)

static __always_inline struct ptp_port_cfg *ptp_port(__u32 ifindex)
{
	struct ptp_port_cfg *cfg;

	if (ifindex >= PTP_MAX_IFINDEX)
		return NULL;
	cfg = port_cfg.lookup(&ifindex);
	if (!cfg || !(cfg->flags & PTP_PORT_ENABLED))
		return NULL;
	return cfg;
}

static __always_inline struct ptp_global_cfg *ptp_global(void)
{
	__u32 zero = 0;

	return global_cfg.lookup(&zero);
}

/*
 * Ring slots. A message's identity (sourcePortIdentity, domain, type) picks an offset and its
 * sequenceId walks from there, so the consecutive messages of one source never share a slot within
 * PTP_STAMP_SLOTS sequence numbers. dataplane/maps.py (stamp_slot, twostep_slot) computes the same
 * numbers for tests and diagnostics (little-endian host, like the BPF target here).
 */
static __always_inline __u32 ptp_key_mix(const struct ptp_key *k)
{
	/* the key as its two 64-bit words (ptp_key_eq reads it the same way): w0 = {domain, type, seq,
	 * port_id[0..4]}, w1 = {port_id[4..10], pad}; the 32-bit words hashed are port_id[0..4],
	 * port_id[4..8], port_id[8..10] + pad */
	const __u64 *w = (const void *)k;
	__u64 w0 = w[0], w1 = w[1];
	__u32 h;

	h = (__u32)(w0 >> 32) ^ ((__u32)w1 * 0x9E3779B1u) ^ ((__u32)(w1 >> 32) * 0x85EBCA6Bu) ^
	    (((__u32)w0 & 0xff) << 8) ^ (((__u32)w0 >> 8) & 0xff);
	h *= 0xC2B2AE35u;
	return h ^ (h >> 16);
}

/* sequenceId in host order, from the key's first word */
static __always_inline __u32 ptp_key_seq(const struct ptp_key *k)
{
	return bpf_ntohs((__u16)(((const __u64 *)(const void *)k)[0] >> 16));
}

static __always_inline __u32 ptp_stamp_slot(const struct ptp_key *k)
{
	return (ptp_key_mix(k) + ptp_key_seq(k)) & (PTP_STAMP_SLOTS - 1);
}

static __always_inline __u32 ptp_twostep_slot(const struct ptp_key *k, __u32 ifindex)
{
	return (ptp_key_mix(k) + ifindex * 0x61C88647u + ptp_key_seq(k)) & (PTP_TWOSTEP_SLOTS - 1);
}

static __always_inline int ptp_key_eq(const struct ptp_key *a, const struct ptp_key *b)
{
	const __u64 *x = (const void *)a, *y = (const void *)b;

	return x[0] == y[0] && x[1] == y[1];
}

/* Latest plausible age of a back-dated ingress stamp (tc_ingress with skb->tstamp); anything older or
 * in the future is a bad conversion (the TAI offset changed since it was written, a stamp of another
 * clock) and is ignored. */
#define PTP_BACKDATE_MAX_NS 5000000ULL

/*
 * The dataplane's clock is CLOCK_TAI (bpf_ktime_get_tai_ns(), kernel >= 6.1) at ingress and at egress:
 * one clock read per hook, and skb->tstamp (the stack's RX stamp, CLOCK_REALTIME) converts to it by
 * adding TAI - REALTIME, a whole number of seconds that changes only when someone sets the kernel's TAI
 * offset - immune to slews, and to steps before or after the packet's stay (a step of the realtime
 * clock *while* a frame is inside the switch moves that frame's residence by the step, as it moves
 * ptp4l's software-stamped residence; the egress discards residences that are negative or above
 * stale_age_ns). Returns the back-dated stamp, or tai_now when the conversion is implausible (in the
 * future, or older than PTP_BACKDATE_MAX_NS: an offset that changed since it was written).
 */
static __always_inline __u64 ptp_backdate(__u64 tai_now, __u64 rx_rt_ns, __s64 tai_minus_rt_ns, int *used)
{
	__u64 t = rx_rt_ns + (__u64)tai_minus_rt_ns;

	if (t > tai_now || tai_now - t > PTP_BACKDATE_MAX_NS)
		return tai_now;
	*used = 1;
	return t;
}

/* The common ingress action: validate, count, and stamp event messages. Never modifies the packet.
 * rx_rt_ns: the stack's realtime RX stamp of the packet (skb->tstamp at tc ingress), 0 when none; when
 * it converts to a plausible TAI time, that time is the ingress stamp instead of "now".
 * Returns the parse result (only the bench's stage cut-offs use it). */
static __always_inline int ptp_ingress_stamp(void *data, void *data_end, __u32 ifindex, __u64 rx_rt_ns)
{
	struct ptp_pkt p;
	struct ptp_port_cfg *cfg;
	struct ptp_global_cfg *g;
	struct ptp_counters *pc;
	struct ptp_stamp *s;
	__u64 now;
	__u32 slot;
	int r;

	r = ptp_parse(data, data_end, &p);
	PTP_STAGE(1, r);
	if (r != PTP_OK && r != PTP_BAD)
		return r;
	cfg = ptp_port(ifindex);
	if (!cfg)
		return r;
	pc = ptp_ctr(cfg->slot, p.msg_type);
	if (!pc)
		return r;                       /* never (ptp_ctr) */
	if (r == PTP_BAD) {
		PTP_COUNT(pc, PTP_C_MALFORMED);
		return r;
	}
	PTP_COUNT(pc, PTP_C_RX);
	g = ptp_global();
	if (g && (g->flags & PTP_G_DOMAIN_FILTER) && (__u8)p.kw[0] != g->domain) {
		PTP_COUNT(pc, PTP_C_FILTERED);
		return r;
	}
	if (!ptp_is_event(p.msg_type))
		return r;
	PTP_STAGE(2, r);
	slot = ptp_stamp_slot(&p.key);
	s = ptp_ingress.lookup(&slot);
	if (!s)
		return r;
	now = bpf_ktime_get_tai_ns();
	if (rx_rt_ns && g && (g->flags & PTP_G_RX_TSTAMP)) {
		int used = 0;

		now = ptp_backdate(now, rx_rt_ns, g->tai_minus_rt_ns, &used);
		if (used)
			PTP_COUNT(pc, PTP_C_BACKDATED);
	}
	s->t_ns = now;
	s->ifindex = ifindex;
	s->flags = PTP_STAMP_VALID;
	s->rate_ratio_q32 = cfg->rate_ratio_q32 ? cfg->rate_ratio_q32 : PTP_RATE_ONE;
	s->link_delay_scaled = p.msg_type == PTP_SYNC && cfg->mode == PTP_MODE_P2P ?
			       cfg->mean_link_delay_scaled + cfg->delay_asymmetry_scaled : 0;
	__builtin_memcpy(&s->key, &p.key, sizeof(s->key));
	return r;
}

#endif /* PTP_COMMON_H */
