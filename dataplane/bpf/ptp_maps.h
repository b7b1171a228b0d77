/* SPDX-License-Identifier: GPL-2.0 */
/* Every map of the dataplane, declared once (BCC syntax). Included by ptp_switch.c only. */
#ifndef PTP_MAPS_H
#define PTP_MAPS_H

#include "ptp_shared.h"

/* event message -> its ingress time and port (written at ingress, read at each egress copy) */
BPF_TABLE("lru_hash", struct ptp_key, struct ptp_ingress_val, ptp_ingress, PTP_INGRESS_ENTRIES);
/* {event key, port of the general message} -> two-step residence or "general passed first" marker */
BPF_TABLE("lru_hash", struct ptp_twostep_key, struct ptp_twostep_val, ptp_twostep, PTP_TWOSTEP_ENTRIES);
/* ifindex -> port configuration written by the control plane; absent or disabled = not handled */
BPF_HASH(port_cfg, __u32, struct ptp_port_cfg, PTP_MAX_PORTS);
/* [0] -> global configuration (domain filter, two-step TC, stale age, egress priority) */
BPF_ARRAY(global_cfg, struct ptp_global_cfg, 1);
/* [slot * PTP_NSLOTS + messageType] -> per-CPU counters; user space sums the CPUs */
BPF_PERCPU_ARRAY(counters, struct ptp_counters, PTP_MAX_PORTS * PTP_NSLOTS);

#endif /* PTP_MAPS_H */
