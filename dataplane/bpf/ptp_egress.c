/* SPDX-License-Identifier: GPL-2.0 */
/*
 * EGRESS hook: tc egress (tcx, or clsact on kernels before 6.6) on each switch port. Runs after the bridge's forwarding decision,
 * once per egress copy (a flooded frame is one skb per port; the verifier's tc prologue un-clones a
 * cloned skb before this program's direct packet writes, so each copy carries its own residence,
 * never an accumulated one).
 *
 * Per PTP message (port enabled, domain accepted, forwarded i.e. skb->ingress_ifindex != 0):
 *   event (Sync, Delay_Req, Pdelay_Req, Pdelay_Resp): residence = now - ingress stamp, x rate ratio,
 *     in scaled ns; P2P: + the ingress port's meanLinkDelay + delayAsymmetry (Sync only); the rate
 *     ratio and link delay are the ingress port's at ingress time, carried in the stamp (ptp_shared.h).
 *       one-step                    -> added to its own correctionField here
 *       two-step Sync / Pdelay_Resp -> stored for {message, this port}; the Follow_Up /
 *                                      Pdelay_Resp_Follow_Up leaving this port adds it
 *       Delay_Req with two-step TC  -> stored for {message, its ingress port}: the Delay_Resp that
 *                                      leaves through that port adds it
 *   general (Follow_Up, Delay_Resp, Pdelay_Resp_Follow_Up): add the stored residence; if none is
 *     stored yet (it left before its event), leave a marker so the late event is corrected in place.
 *   P2P egress port: forwarded Pdelay_* and Delay_Req are dropped (locally originated ones pass).
 *   Locally sent one-step event messages with a PTP_STAMP_LOCAL record: + the time since that record
 *     (ptp_local_one_step).
 *   Every event message leaving gets skb->priority = egress_priority (strict-priority qdisc band).
 */
static __always_inline __u8 ptp_event_of(__u8 general)
{
	switch (general) {
	case PTP_FOLLOW_UP: return PTP_SYNC;
	case PTP_DELAY_RESP: return PTP_DELAY_REQ;
	case PTP_PDELAY_RESP_FOLLOW_UP: return PTP_PDELAY_RESP;
	default: return 0xff;
	}
}

static __always_inline void ptp_correct(struct __sk_buff *skb, struct ptp_pkt *p,
					__s64 corr, struct ptp_counters *pc)
{
	int r = ptp_add_correction(skb, p, corr);

	if (r < 0) {
		PTP_COUNT(pc, PTP_C_ERROR);
		return;
	}
	PTP_COUNT(pc, PTP_C_CORRECTED);
	if (r == 1)
		PTP_COUNT(pc, PTP_C_TRAILER);
}

/*
 * A ONE-STEP message this host sends itself (a one-step GM/BC/OC port, a P2P TC's Pdelay_Resp): user
 * space read its clock, wrote the time into the message, and left a stamp record for it (flag
 * PTP_STAMP_LOCAL, CLOCK_TAI of that clock read, this port) just before the send. The time from that
 * read to here goes into the message's correctionField, as a one-step PHC adds its fixed delay: the
 * sender's jitter (tens of us in user space and the socket layer) becomes part of the corrected
 * path. Without such a record the message passes untouched.
 */
static __always_inline void ptp_local_one_step(struct __sk_buff *skb, struct ptp_pkt *p, __u32 ifindex,
					       __u64 stale, struct ptp_counters *pc)
{
	struct ptp_stamp *s;
	__u32 slot = ptp_stamp_slot(&p->key);
	__u64 now, age;

	s = ptp_ingress.lookup(&slot);
	if (!s || (s->flags & (PTP_STAMP_VALID | PTP_STAMP_LOCAL)) != (PTP_STAMP_VALID | PTP_STAMP_LOCAL) ||
	    s->ifindex != ifindex || !ptp_key_eq(&s->key, &p->key))
		return;
	now = bpf_ktime_get_tai_ns();
	age = now - s->t_ns;                    /* a record from the future wraps to a huge age */
	s->flags = 0;                           /* once: a second copy of the frame is not the same send */
	if (age > stale) {
		PTP_COUNT(pc, PTP_C_STALE);
		return;
	}
	ptp_correct(skb, p, (__s64)(age << 16), pc);
}

/* A forwarded event message leaves: counted (TX) and, when configured, put in the strict-priority band. */
static __always_inline struct ptp_counters *ptp_event_leaves(struct __sk_buff *skb, struct ptp_port_cfg *ecfg,
							  __u8 msg_type, struct ptp_global_cfg *g)
{
	struct ptp_counters *pc = ptp_ctr(ecfg->slot, msg_type);
	__u32 prio;

	if (!pc)
		return NULL;                    /* never (ptp_ctr) */
	PTP_COUNT(pc, PTP_C_TX);
	prio = g->egress_priority;
	if (prio) {
		skb->priority = prio;
		PTP_COUNT(pc, PTP_C_PRIO);
	}
	return pc;
}

/*
 * A FORWARDED EVENT message (port enabled, domain accepted, not dropped by a P2P port): residence from
 * its ingress stamp. Only what decides whether the clock is read comes before the read (the ring
 * lookup and key compare: no read for a miss); the rest — counters, priority, stale check, the
 * correction and its checksum — comes after it. Measured (bench/dataplane.py, interleaved A/B): 3 ns
 * less per event than counting before the read; reading the clock any earlier (before the port and
 * global lookups) or moving the domain filter after it was no better.
 */
static __always_inline int ptp_egress_event(struct __sk_buff *skb, struct ptp_pkt *p, struct ptp_port_cfg *ecfg,
					    struct ptp_global_cfg *g, __u32 ifindex)
{
	struct ptp_twostep_key tk;
	struct ptp_twostep_val *tv;
	struct ptp_counters *pc;
	struct ptp_stamp *ing;
	__u64 now, age, stale;
	__u32 slot;
	__s64 corr;

	slot = ptp_stamp_slot(&p->key);
	ing = ptp_ingress.lookup(&slot);
	/* a LOCAL record is this host's own send (ptp_local_one_step), never a forwarded frame's ingress stamp */
	if (!ing || (ing->flags & (PTP_STAMP_VALID | PTP_STAMP_LOCAL)) != PTP_STAMP_VALID || !ptp_key_eq(&ing->key, &p->key)) {
		pc = ptp_event_leaves(skb, ecfg, p->msg_type, g);
		if (pc)
			PTP_COUNT(pc, PTP_C_NO_INGRESS);
		return TC_ACT_OK;
	}
	/* the dataplane's clock (CLOCK_TAI, the ingress stamps' clock: ptp_common.h) */
	now = bpf_ktime_get_tai_ns();
	pc = ptp_event_leaves(skb, ecfg, p->msg_type, g);
	if (!pc)
		return TC_ACT_OK;               /* never (ptp_ctr) */
	stale = g->stale_age_ns;
	age = now - ing->t_ns;                  /* a stamp from the future wraps to a huge age (stale <= 1 s) */
	if (age > stale) {
		PTP_COUNT(pc, PTP_C_STALE);
		return TC_ACT_OK;
	}
	PTP_STAGE(3, TC_ACT_OK);
	/* the ingress port's rate ratio and (P2P Sync) link delay, copied into the stamp at ingress */
	corr = (__s64)((age * ing->rate_ratio_q32) >> 16) + ing->link_delay_scaled;

	if ((p->msg_type == PTP_SYNC || p->msg_type == PTP_PDELAY_RESP) && (p->flags0 & PTP_FLAG0_TWO_STEP))
		tk.ifindex = ifindex;
	else if (p->msg_type == PTP_DELAY_REQ && (g->flags & PTP_G_TWO_STEP_TC))
		tk.ifindex = ing->ifindex;
	else {
		ptp_correct(skb, p, corr, pc);
		return TC_ACT_OK;
	}
	__builtin_memcpy(&tk.k, &p->key, sizeof(tk.k));
	tk.pad = 0;
	slot = ptp_twostep_slot(&tk.k, tk.ifindex);
	tv = ptp_twostep.lookup(&slot);
	if (!tv)
		return TC_ACT_OK;
	if ((tv->flags & PTP_TS_GENERAL_PASSED) && tv->tk.ifindex == tk.ifindex &&
	    ptp_key_eq(&tv->tk.k, &tk.k) && now - tv->t_ns <= stale) {
		/* its general message already left uncorrected: the slave sums both fields */
		tv->flags = 0;
		PTP_COUNT(pc, PTP_C_TS_LATE);
		ptp_correct(skb, p, corr, pc);
		return TC_ACT_OK;
	}
	tv->corr_scaled = corr;
	tv->t_ns = now;
	tv->flags = PTP_TS_RESIDENCE;
	__builtin_memcpy(&tv->tk, &tk, sizeof(tk));
	PTP_COUNT(pc, PTP_C_TS_STORED);
	return TC_ACT_OK;
}

int tc_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ptp_port_cfg *ecfg;
	struct ptp_global_cfg *g;
	struct ptp_counters *pc;
	struct ptp_twostep_key tk;
	struct ptp_twostep_val *tv;
	struct ptp_pkt p;
	__u64 now, stale;
	__u32 ifindex, iif, slot;
	__s64 corr;
	int r;

	r = ptp_parse(data, data_end, &p);
	if (r == PTP_NOT)
		return TC_ACT_OK;
	if (r != PTP_OK && skb->len > (__u32)(data_end - data)) {
		/* headers or payload outside the linear area: pull and parse again */
		if (bpf_skb_pull_data(skb, skb->len > 256 ? 256 : skb->len) < 0)
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		r = ptp_parse(data, data_end, &p);
	}
	PTP_STAGE(1, r == PTP_OK ? TC_ACT_OK : TC_ACT_UNSPEC);
	if (r != PTP_OK && r != PTP_BAD)
		return TC_ACT_OK;
	ifindex = skb->ifindex;
	ecfg = ptp_port(ifindex);
	if (!ecfg)
		return TC_ACT_OK;
	g = ptp_global();
	if (!g)
		return TC_ACT_OK;               /* never (an array's entry 0) */
	iif = skb->ingress_ifindex;
	if (r == PTP_OK && iif && ptp_is_event(p.msg_type) &&
	    !((g->flags & PTP_G_DOMAIN_FILTER) && (__u8)p.kw[0] != g->domain) &&
	    !(ecfg->mode == PTP_MODE_P2P && (p.msg_type == PTP_PDELAY_REQ || p.msg_type == PTP_PDELAY_RESP ||
					     p.msg_type == PTP_DELAY_REQ))) {
		PTP_STAGE(2, TC_ACT_OK);
		return ptp_egress_event(skb, &p, ecfg, g, ifindex);
	}
	pc = ptp_ctr(ecfg->slot, p.msg_type);
	if (!pc)
		return TC_ACT_OK;               /* never (ptp_ctr) */
	if (r == PTP_BAD) {
		PTP_COUNT(pc, PTP_C_MALFORMED);
		return TC_ACT_OK;
	}
	PTP_COUNT(pc, PTP_C_TX);
	if ((g->flags & PTP_G_DOMAIN_FILTER) && (__u8)p.kw[0] != g->domain) {
		PTP_COUNT(pc, PTP_C_FILTERED);
		return TC_ACT_OK;
	}
	if (ptp_is_event(p.msg_type) && g->egress_priority) {
		skb->priority = g->egress_priority;
		PTP_COUNT(pc, PTP_C_PRIO);
	}
	if (!iif) {
		PTP_COUNT(pc, PTP_C_LOCAL);
		if (ptp_is_event(p.msg_type) && !(p.flags0 & PTP_FLAG0_TWO_STEP))
			ptp_local_one_step(skb, &p, ifindex, g->stale_age_ns, pc);
		return TC_ACT_OK;
	}
	if (ecfg->mode == PTP_MODE_P2P &&
	    (p.msg_type == PTP_PDELAY_REQ || p.msg_type == PTP_PDELAY_RESP ||
	     p.msg_type == PTP_PDELAY_RESP_FOLLOW_UP || p.msg_type == PTP_DELAY_REQ)) {
		PTP_COUNT(pc, PTP_C_DROPPED);
		return TC_ACT_SHOT;
	}
	/* a forwarded general message (its event went through ptp_egress_event) */
	stale = g->stale_age_ns;

	tk.k.msg_type = ptp_event_of(p.msg_type);
	if (tk.k.msg_type == 0xff)
		return TC_ACT_OK;                       /* Announce, Signaling, Management */
	if (p.msg_type == PTP_DELAY_RESP && !(g->flags & PTP_G_TWO_STEP_TC))
		return TC_ACT_OK;                       /* one-step TC: Delay_Req was corrected itself */
	tk.k.domain = p.key.domain;
	tk.k.seq = p.key.seq;
	tk.k.pad = 0;
	tk.pad = 0;
	if (p.msg_type == PTP_DELAY_RESP) {
		/* requestingPortIdentity (the parser checked messageLength >= 54 for Delay_Resp) */
		__u8 *h = (void *)(long)skb->data + (p.ptp_off & 0xff);

		if ((void *)(h + PTP_OFF_REQ_PORT_ID + 10) > (void *)(long)skb->data_end)
			return TC_ACT_OK;
		__builtin_memcpy(tk.k.port_id, h + PTP_OFF_REQ_PORT_ID, 10);
	} else {
		__builtin_memcpy(tk.k.port_id, p.key.port_id, 10);
	}
	tk.ifindex = ifindex;
	slot = ptp_twostep_slot(&tk.k, ifindex);
	tv = ptp_twostep.lookup(&slot);
	if (!tv)
		return TC_ACT_OK;
	now = bpf_ktime_get_tai_ns();
	if ((tv->flags & PTP_TS_RESIDENCE) && tv->tk.ifindex == ifindex && ptp_key_eq(&tv->tk.k, &tk.k) &&
	    now - tv->t_ns <= stale) {
		corr = tv->corr_scaled;
		tv->flags = 0;                          /* consumed: a second copy finds nothing */
		PTP_COUNT(pc, PTP_C_TS_MATCHED);
		ptp_correct(skb, &p, corr, pc);
		return TC_ACT_OK;
	}
	PTP_COUNT(pc, PTP_C_TS_MISSED);
	tv->corr_scaled = 0;
	tv->t_ns = now;
	tv->flags = PTP_TS_GENERAL_PASSED;
	__builtin_memcpy(&tv->tk, &tk, sizeof(tk));
	return TC_ACT_OK;
}
