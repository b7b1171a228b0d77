/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the ingress and egress programs: counters, configuration, ingress stamping. */
#ifndef PTP_COMMON_H
#define PTP_COMMON_H

#include "ptp_maps.h"
#include "ptp_parse.h"

#define PTP_RATE_ONE (1ULL << 32)

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
	struct ptp_port_cfg *cfg = port_cfg.lookup(&ifindex);

	if (!cfg || !(cfg->flags & PTP_PORT_ENABLED))
		return NULL;
	return cfg;
}

static __always_inline struct ptp_global_cfg *ptp_global(void)
{
	__u32 zero = 0;

	return global_cfg.lookup(&zero);
}

/* The common ingress action: validate, count, and stamp event messages. Never modifies the packet. */
static __always_inline void ptp_ingress_stamp(void *data, void *data_end, __u32 ifindex)
{
	struct ptp_pkt p;
	struct ptp_port_cfg *cfg;
	struct ptp_global_cfg *g;
	struct ptp_counters *pc;
	struct ptp_ingress_val val = {};
	int r;

	__builtin_memset(&p, 0, sizeof(p));
	r = ptp_parse(data, data_end, &p);
	if (r != PTP_OK && r != PTP_BAD)
		return;
	cfg = ptp_port(ifindex);
	if (!cfg)
		return;
	pc = ptp_ctr(cfg->slot, p.msg_type);
	if (r == PTP_BAD) {
		PTP_COUNT(pc, PTP_C_MALFORMED);
		return;
	}
	PTP_COUNT(pc, PTP_C_RX);
	g = ptp_global();
	if (g && (g->flags & PTP_G_DOMAIN_FILTER) && p.key.domain != g->domain) {
		PTP_COUNT(pc, PTP_C_FILTERED);
		return;
	}
	if (!ptp_is_event(p.msg_type))
		return;
	val.t_ns = bpf_ktime_get_ns();
	val.ifindex = ifindex;
	ptp_ingress.update(&p.key, &val);
}

#endif /* PTP_COMMON_H */
