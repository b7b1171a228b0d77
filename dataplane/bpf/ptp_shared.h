/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Structs shared between the BPF programs and user space (dataplane/maps.py mirrors each one with
 * ctypes; the loader checks the sizes against what BCC derives at load time).
 * Every field is fixed-width; sizes are asserted so a change on one side fails loudly.
 */
#ifndef PTP_SHARED_H
#define PTP_SHARED_H

#define PTP_MAX_PORTS       64      /* port slots (counters are indexed slot * PTP_NSLOTS + type) */
#define PTP_NSLOTS          17      /* 16 messageType values + 1 for unparseable/unknown */
#define PTP_SLOT_MALFORMED  16
#define PTP_MAX_IFINDEX     8192    /* port_cfg is an array indexed by ifindex (one load, no hashing) */
#define PTP_STAMP_SLOTS     4096    /* ingress stamp ring (power of two): slot = hash(message) */
#define PTP_TWOSTEP_SLOTS   4096    /* two-step ring (power of two): slot = hash(message, port) */

/* port_cfg.flags */
#define PTP_PORT_ENABLED    0x1
#define PTP_PORT_PRESENT    0x2     /* the entry was written by user space (array entries always exist) */
/* stamp.flags */
#define PTP_STAMP_VALID     0x1
#define PTP_STAMP_LOCAL     0x2     /* written by user space for its own one-step send (see ptp_egress.c) */
/* port_cfg.mode */
#define PTP_MODE_E2E        0
#define PTP_MODE_P2P        1
/* global_cfg.flags */
#define PTP_G_DOMAIN_FILTER 0x1     /* only global_cfg.domain is handled; others pass untouched */
#define PTP_G_TWO_STEP_TC   0x2     /* Delay_Req residence goes into the Delay_Resp, not the Delay_Req */
#define PTP_G_RX_TSTAMP     0x4     /* tc_ingress back-dates to skb->tstamp (tai_minus_rt_ns is valid) */
/* twostep_val.flags */
#define PTP_TS_RESIDENCE    0x1     /* corr_scaled holds an event's residence, waiting for its general message */
#define PTP_TS_GENERAL_PASSED 0x2   /* the general message left first, uncorrected: fix the late event in place */
/* twostep_val.flags == 0: free or consumed */

/* counter indices (struct ptp_counters.v[]) */
enum ptp_counter {
	PTP_C_RX = 0,           /* seen at ingress (XDP / tc ingress) */
	PTP_C_TX,               /* seen at egress (tc egress) */
	PTP_C_CORRECTED,        /* correctionField updated (in place or via the two-step general message) */
	PTP_C_TS_STORED,        /* two-step event residence stored for its general message */
	PTP_C_TS_MATCHED,       /* general message got its event's residence */
	PTP_C_TS_MISSED,        /* general message found no residence (passed uncorrected) */
	PTP_C_TS_LATE,          /* event left after its general message: corrected the event in place */
	PTP_C_MALFORMED,        /* looked like PTP (ethertype / UDP port) but failed validation; passed unchanged */
	PTP_C_STALE,            /* ingress stamp older than stale_age_ns: passed uncorrected */
	PTP_C_DROPPED,          /* dropped: P2P mode, forwarded Pdelay_* / Delay_Req */
	PTP_C_NO_INGRESS,       /* forwarded event with no ingress stamp (ingress port not attached / ring slot taken by a newer message) */
	PTP_C_FILTERED,         /* other domain (domain filter on): passed unchanged */
	PTP_C_LOCAL,            /* locally originated (skb ingress_ifindex 0): passed uncorrected */
	PTP_C_TRAILER,          /* IPv6 checksum-compensation trailer adjusted instead of the UDP checksum */
	PTP_C_PRIO,             /* skb->priority set for an event message */
	PTP_C_ERROR,            /* a helper failed (store / csum); packet passed */
	PTP_C_BACKDATED,        /* tc ingress: stamp taken from skb->tstamp (the RX stamp before the backlog) */
	PTP_NCOUNTERS
};

/* Identity of one PTP message instance (compared as two 64-bit words: pad must be zero). */
struct ptp_key {
	__u8  domain;           /* domainNumber */
	__u8  msg_type;         /* messageType of the EVENT message (Follow_Up looks up SYNC, ...) */
	__u16 seq;              /* sequenceId, network byte order as on the wire */
	__u8  port_id[10];      /* sourcePortIdentity (requestingPortIdentity for Delay_Resp lookups) */
	__u16 pad;
} __attribute__((aligned(8)));
_Static_assert(sizeof(struct ptp_key) == 16, "ptp_key size");

/* One slot of the ingress stamp ring (ptp_ingress[ptp_stamp_slot(key)]): the newest event message
 * that hashed here. Egress trusts it only if the whole key matches and it is not stale.
 * The ingress port's rate ratio and (P2P Sync) link delay travel with the stamp, copied from port_cfg
 * at ingress, so that egress needs no second port lookup: a control-plane update that lands while a
 * frame is inside the switch applies from the next frame (both change slowly). */
struct ptp_stamp {
	struct ptp_key key;
	__u64 t_ns;             /* CLOCK_TAI at ingress (bpf_ktime_get_tai_ns() or the back-dated RX stamp) */
	__u32 ifindex;          /* ingress port */
	__u32 flags;            /* PTP_STAMP_VALID, PTP_STAMP_LOCAL */
	__u64 rate_ratio_q32;   /* the ingress port's rate ratio at ingress, 1.0 == 1 << 32 (never 0) */
	__s64 link_delay_scaled; /* P2P Sync: the ingress port's meanLinkDelay + delayAsymmetry, ns << 16; else 0 */
	__u64 pad[2];           /* 64 bytes: a slot is one cache line, and its index a shift, not a multiply */
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct ptp_stamp) == 64, "ptp_stamp size");

struct ptp_twostep_key {
	struct ptp_key k;
	__u32 ifindex;          /* port where the general message will leave */
	__u32 pad;
};
_Static_assert(sizeof(struct ptp_twostep_key) == 24, "ptp_twostep_key size");

/* One slot of the two-step ring (ptp_twostep[ptp_twostep_slot(tk)]). */
struct ptp_twostep_val {
	struct ptp_twostep_key tk;
	__s64 corr_scaled;      /* residence (+ link delay in P2P) in scaled ns (ns << 16) */
	__u64 t_ns;             /* when stored */
	__u32 flags;            /* PTP_TS_*; 0 = free / consumed */
	__u32 pad;
};
_Static_assert(sizeof(struct ptp_twostep_val) == 48, "ptp_twostep_val size");

struct ptp_port_cfg {
	__u32 flags;            /* PTP_PORT_ENABLED | PTP_PORT_PRESENT */
	__u32 mode;             /* PTP_MODE_E2E / PTP_MODE_P2P */
	__u32 slot;             /* counter slot, < PTP_MAX_PORTS */
	__u32 pad;
	__s64 mean_link_delay_scaled;   /* P2P: this port's measured meanLinkDelay, ns << 16 */
	__s64 delay_asymmetry_scaled;   /* P2P: this port's delayAsymmetry, ns << 16 */
	__u64 rate_ratio_q32;           /* residence multiplier, 1.0 == 1 << 32 */
};
_Static_assert(sizeof(struct ptp_port_cfg) == 40, "ptp_port_cfg size");

struct ptp_global_cfg {
	__u32 flags;            /* PTP_G_* */
	__u32 domain;           /* domainNumber handled when PTP_G_DOMAIN_FILTER */
	__u64 stale_age_ns;     /* ingress stamps older than this are stale */
	__u32 egress_priority;  /* skb->priority for event messages at egress; 0 = leave alone */
	__u32 pad;
	__s64 tai_minus_rt_ns;  /* CLOCK_TAI - CLOCK_REALTIME, a whole number of seconds in ns (the kernel's
				 * TAI offset; changes only when someone sets it): skb->tstamp (the stack's
				 * RX stamp, realtime) + this = the dataplane's clock (CLOCK_TAI) */
	__u64 build_id;         /* user space only: hash of the C sources that built the programs
				 * (Dataplane.adopt refuses a dataplane of another build) */
};
_Static_assert(sizeof(struct ptp_global_cfg) == 40, "ptp_global_cfg size");

struct ptp_counters {
	__u64 v[PTP_NCOUNTERS];
};
_Static_assert(sizeof(struct ptp_counters) == 8 * 17, "ptp_counters size");

#endif /* PTP_SHARED_H */
