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
 */
#ifdef PTP_BENCH_STAGE
#define PTP_STAGE(n, ret) do { if (PTP_BENCH_STAGE == (n)) return (ret); } while (0)
#else
#define PTP_STAGE(n, ret) do { } while (0)
#endif

static __always_inline struct ptp_counters *ptp_ctr(__u32 slot, __u32 type)
{
	__u32 idx;

	if (slot >= PTP_MAX_PORTS || type >= PTP_NSLOTS)
		return NULL;
	idx = slot * PTP_NSLOTS + type;
	return counters.lookup(&idx);
}

#define PTP_COUNT(pc, c) do { if (pc) (pc)->v[(c)] += 1; } while (0)

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
	const __u32 *w = (const void *)k;       /* w[1], w[2]: port_id[0..8]; w[3]: port_id[8..10] + pad */
	__u32 h;

	h = w[1] ^ (w[2] * 0x9E3779B1u) ^ (w[3] * 0x85EBCA6Bu) ^ ((__u32)k->domain << 8) ^ k->msg_type;
	h *= 0xC2B2AE35u;
	return h ^ (h >> 16);
}

static __always_inline __u32 ptp_stamp_slot(const struct ptp_key *k)
{
	return (ptp_key_mix(k) + bpf_ntohs(k->seq)) & (PTP_STAMP_SLOTS - 1);
}

static __always_inline __u32 ptp_twostep_slot(const struct ptp_key *k, __u32 ifindex)
{
	return (ptp_key_mix(k) + ifindex * 0x61C88647u + bpf_ntohs(k->seq)) & (PTP_TWOSTEP_SLOTS - 1);
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
	if (r == PTP_BAD) {
		PTP_COUNT(pc, PTP_C_MALFORMED);
		return r;
	}
	PTP_COUNT(pc, PTP_C_RX);
	g = ptp_global();
	if (g && (g->flags & PTP_G_DOMAIN_FILTER) && p.key.domain != g->domain) {
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
