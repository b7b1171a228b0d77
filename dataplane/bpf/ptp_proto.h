/* SPDX-License-Identifier: GPL-2.0 */
/* IEEE 1588-2019 wire constants and header offsets used by the dataplane. */
#ifndef PTP_PROTO_H
#define PTP_PROTO_H

#define ETH_P_PTP       0x88F7
#define ETH_P_8021Q_    0x8100
#define ETH_P_8021AD_   0x88A8
#define ETH_P_IP_       0x0800
#define ETH_P_IPV6_     0x86DD
#define PTP_EVENT_PORT  319
#define PTP_GENERAL_PORT 320

/* messageType */
#define PTP_SYNC                  0x0
#define PTP_DELAY_REQ             0x1
#define PTP_PDELAY_REQ            0x2
#define PTP_PDELAY_RESP           0x3
#define PTP_FOLLOW_UP             0x8
#define PTP_DELAY_RESP            0x9
#define PTP_PDELAY_RESP_FOLLOW_UP 0xA
#define PTP_ANNOUNCE              0xB
#define PTP_SIGNALING             0xC
#define PTP_MANAGEMENT            0xD

/* common header (34 bytes) offsets */
#define PTP_HDR_LEN         34
#define PTP_OFF_TYPE        0   /* majorSdoId:4 | messageType:4 */
#define PTP_OFF_VERSION     1   /* minorVersionPTP:4 | versionPTP:4 */
#define PTP_OFF_LENGTH      2
#define PTP_OFF_DOMAIN      4
#define PTP_OFF_FLAGS0      6
#define PTP_OFF_CORRECTION  8
#define PTP_OFF_SPI         20
#define PTP_OFF_SEQ         30
#define PTP_OFF_REQ_PORT_ID 44  /* Delay_Resp / Pdelay_Resp / Pdelay_Resp_Follow_Up requestingPortIdentity */
#define PTP_FLAG0_TWO_STEP  0x02

/* Smallest legal messageLength per messageType; 0 = reserved type (malformed). */
static __always_inline __u32 ptp_min_len(__u8 t)
{
	switch (t) {
	case PTP_SYNC: case PTP_DELAY_REQ: case PTP_FOLLOW_UP: return 44;
	case PTP_PDELAY_REQ: case PTP_PDELAY_RESP: case PTP_DELAY_RESP:
	case PTP_PDELAY_RESP_FOLLOW_UP: return 54;
	case PTP_ANNOUNCE: return 64;
	case PTP_SIGNALING: return 44;
	case PTP_MANAGEMENT: return 48;
	default: return 0;
	}
}

static __always_inline int ptp_is_event(__u8 t)
{
	return t <= PTP_PDELAY_RESP;
}

#endif /* PTP_PROTO_H */
