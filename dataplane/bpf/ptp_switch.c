/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The prelude of the one BPF module BCC loads (one module, so ingress and egress share the maps).
 * BCC only turns functions of its main file into programs, so dataplane/loader.py compiles the
 * concatenation ptp_switch.c + ptp_ingress.c + ptp_egress.c (one C file per attach point).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/udp.h>
#include <linux/stddef.h>

/* correctionField is big-endian on the wire; BPF targets here are little-endian (x86-64). */
#define bpf_be64_to_cpu(x) __builtin_bswap64(x)
#define bpf_cpu_to_be64(x) __builtin_bswap64(x)

#include "ptp_common.h"
#include "ptp_csum.h"
