/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every map of the dataplane, declared once (BCC syntax). Included by ptp_switch.c only.
 * The per-packet maps are arrays: a lookup is inlined by the verifier (no hashing, no allocation,
 * no lock), which is what keeps an event message near 80 ns per hook (bench/dataplane.py).
 */
#ifndef PTP_MAPS_H
#define PTP_MAPS_H

#include "ptp_shared.h"

/* ring of ingress stamps, slot = ptp_stamp_slot(message key); written at ingress, read by each egress copy.
 * BPF_F_MMAPABLE only for its layout: the values start page-aligned, so each 64-byte slot is exactly one
 * cache line (a plain array's values follow its header, 8-byte aligned: a slot would straddle two). */
BPF_F_TABLE("array", int, struct ptp_stamp, ptp_ingress, PTP_STAMP_SLOTS, BPF_F_MMAPABLE);
/* ring of two-step residences / "general passed first" markers, slot = ptp_twostep_slot({key, port}) */
BPF_ARRAY(ptp_twostep, struct ptp_twostep_val, PTP_TWOSTEP_SLOTS);
/* [ifindex] -> port configuration written by the control plane; flags 0 = not a dataplane port */
BPF_ARRAY(port_cfg, struct ptp_port_cfg, PTP_MAX_IFINDEX);
/* [0] -> global configuration (domain filter, two-step TC, stale age, egress priority) */
BPF_ARRAY(global_cfg, struct ptp_global_cfg, 1);
/* [slot * PTP_NSLOTS + messageType] -> per-CPU counters; user space sums the CPUs */
BPF_PERCPU_ARRAY(counters, struct ptp_counters, PTP_MAX_PORTS * PTP_NSLOTS);

#endif /* PTP_MAPS_H */
