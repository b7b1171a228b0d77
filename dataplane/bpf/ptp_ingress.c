/* SPDX-License-Identifier: GPL-2.0 */
/*
 * INGRESS hook: stamp each PTP event message as early as the kernel allows.
 *   xdp_ingress    XDP on each switch port (before skb allocation on real NICs; on veth it runs in
 *                  the NAPI poll, before the stack's RX timestamp). Preferred.
 *   tc_ingress     tc ingress (tcx / clsact) when XDP cannot attach or is not wanted (--ingress-hook tc).
 * Both only read the packet; verdict is always PASS.
 */
int xdp_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	int r = ptp_ingress_stamp(data, data_end, ctx->ingress_ifindex, 0);

#ifdef PTP_BENCH_STAGE
	return r == PTP_OK ? XDP_PASS : XDP_DROP;  /* keeps the cut-off's work observable */
#endif
	return XDP_PASS;
}

int tc_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	/* skb->tstamp here is the stack's RX stamp (realtime), taken when the packet was queued to this
	 * port (netif_rx: on veth, inside the sender's xmit), i.e. before the backlog wait this hook would
	 * otherwise add to the link delay; a delivery time (mono, tstamp_type != 0) is not an RX stamp. */
	ptp_ingress_stamp(data, data_end, skb->ifindex, skb->tstamp_type == 0 ? skb->tstamp : 0);
	return TC_ACT_OK;
}
