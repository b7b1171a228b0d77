#!/usr/bin/env bash
# Capture golden PTP traffic from real linuxptp for the codec tests (run as root, once; the
# resulting *.pcap files are checked in). Builds two network namespaces joined by a veth pair
# with fixed MACs, runs ptp4l (both free_running 1, each with its own uds_address) and pmc,
# records with tcpdump, and removes everything it made, also on failure or Ctrl-C.
#
#   udpv4_e2e.pcap  ptp4l -4 GM <-> slave, E2E, two-step; pmc -4 GETs (zero-filled dataField), a SET, and the RESPONSEs / MANAGEMENT_ERROR_STATUS
#   l2_e2e.pcap     ptp4l -2 GM <-> slave, E2E, two-step
#   l2_p2p.pcap     ptp4l -2 -P GM <-> slave, peer delay; pmc -2 -z GETs (empty dataField)
#   udpv6_e2e.pcap  ptp4l -6 GM <-> slave, E2E
#   unicast.pcap    ptp4l -4 unicast_listen server <-> client with a unicast_master_table
#                   (REQUEST/GRANT_UNICAST_TRANSMISSION signaling, then unicast Announce/Sync/...)
#
# Usage: sudo tests/data/golden/capture.sh [SECONDS_PER_SCENARIO]   (default 6)
set -euo pipefail
DUR=${1:-6}
OUT=$(cd "$(dirname "$0")" && pwd)
PFX="pcodec-$$"
NA="$PFX-a"; NB="$PFX-b"
TMP=$(mktemp -d "/tmp/$PFX.XXXX")
PIDS=()
DOMAIN=24
MAC_A=02:00:5e:77:00:01   # GM / unicast server  -> clock identity 02005e.fffe.770001
MAC_B=02:00:5e:77:00:02   # slave / client       -> clock identity 02005e.fffe.770002

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    ip netns del "$NA" 2>/dev/null; ip netns del "$NB" 2>/dev/null
    if [ -n "${KEEP:-}" ]; then echo "logs kept in $TMP" >&2; else rm -rf "$TMP"; fi
    rm -f /var/run/"$PFX"-*
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || { echo "capture.sh: needs root (network namespaces)" >&2; exit 2; }
for t in ptp4l pmc tcpdump; do command -v $t >/dev/null || { echo "capture.sh: $t not installed" >&2; exit 2; }; done

ip netns add "$NA"; ip netns add "$NB"
ip -n "$NA" link add va address $MAC_A type veth peer name vb netns "$NB" address $MAC_B
ip -n "$NA" addr add 10.77.0.1/24 dev va; ip -n "$NB" addr add 10.77.0.2/24 dev vb
ip -n "$NA" addr add fd77::1/64 dev va nodad; ip -n "$NB" addr add fd77::2/64 dev vb nodad
for n in "$NA" "$NB"; do ip -n "$n" link set lo up; done
ip -n "$NA" link set va up; ip -n "$NB" link set vb up
sleep 1

conf() {  # conf NAME EXTRA... -> path of a ptp4l config
    local f="$TMP/$1.cfg"; shift
    { echo "[global]"; echo "free_running 1"; echo "uds_address /var/run/$PFX-$(basename "$f" .cfg)"
      echo "domainNumber $DOMAIN"; echo "logSyncInterval -2"; echo "logMinDelayReqInterval -2"
      echo "logMinPdelayReqInterval -2"; echo "logAnnounceInterval -1"; echo "announceReceiptTimeout 2"; echo "tx_timestamp_timeout 50"; echo "summary_interval 10"
      for l in "$@"; do echo "$l"; done; } > "$f"
    echo "$f"
}

start() {  # start NS LOG CMD...
    local ns=$1 log=$2; shift 2
    ip netns exec "$ns" "$@" >"$TMP/$log.log" 2>&1 &
    PIDS+=($!)
}

stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

capture() {  # capture NAME -- tcpdump in B on vb
    start "$NB" "tcpdump-$1" tcpdump -i vb -n -U -s 0 -w "$OUT/$1.pcap" \
        "udp port 319 or udp port 320 or ether proto 0x88f7"
    sleep 1
}

PMC_IDS=(DEFAULT_DATA_SET CURRENT_DATA_SET PARENT_DATA_SET TIME_PROPERTIES_DATA_SET PORT_DATA_SET
         CLOCK_DESCRIPTION USER_DESCRIPTION PRIORITY1 PRIORITY2 DOMAIN SLAVE_ONLY LOG_ANNOUNCE_INTERVAL
         ANNOUNCE_RECEIPT_TIMEOUT LOG_SYNC_INTERVAL VERSION_NUMBER TIME DELAY_MECHANISM
         LOG_MIN_PDELAY_REQ_INTERVAL NULL_MANAGEMENT TRANSPARENT_CLOCK_DEFAULT_DATA_SET)
pmc_gets() {  # pmc_gets "-4|-2 [-z]" : one GET per ID from the slave namespace, over the network
    # (-z: GETs with an empty dataField; without it pmc sends a zero-filled dataField of full size)
    local args=()
    for id in "${PMC_IDS[@]}"; do args+=("GET $id"); done
    args+=("SET PRIORITY2 127")
    # shellcheck disable=SC2086  # $1 holds several options on purpose
    ip netns exec "$NB" pmc $1 -i vb -d $DOMAIN -b 0 "${args[@]}" >"$TMP/pmc.log" 2>&1 || true
    grep -c RESPONSE "$TMP/pmc.log" | sed 's/^/    pmc responses: /' || true
}

scenario() {  # scenario NAME TRANSPORT_OPTS... ; uses $GM_EXTRA/$SL_EXTRA arrays and $PMC
    local name=$1; shift
    echo "capture.sh: $name"
    capture "$name"
    start "$NA" "$name-gm" ptp4l -S -i va -m "$@" -f "$(conf "$name-gm" "${GM_EXTRA[@]}")"
    sleep 0.5
    start "$NB" "$name-sl" ptp4l -S -i vb -m -s "$@" -f "$(conf "$name-sl" "${SL_EXTRA[@]}")"
    sleep "$DUR"
    if [ -n "${PMC:-}" ]; then pmc_gets "$PMC"; sleep 0.5; fi
    stop_all
    grep -h -m3 -E "offset|UNCALIBRATED|SLAVE" "$TMP/$name-sl.log" | sed "s/^/    slave: /" || true
}

GM_EXTRA=("priority1 10"); SL_EXTRA=()
PMC=-4 scenario udpv4_e2e -4
PMC= scenario l2_e2e -2
PMC="-2 -z" scenario l2_p2p -2 -P
PMC= scenario udpv6_e2e -6

# unicast negotiation: server listens, client asks for Announce, then Sync and Delay_Resp
GM_EXTRA=("priority1 10" "unicast_listen 1")
SL_EXTRA=("unicast_req_duration 30" "" "[unicast_master_table]" "table_id 1" "logQueryInterval 0"
          "UDPv4 10.77.0.1" "" "[vb]" "unicast_master_table 1")
PMC= scenario unicast -4

ls -l "$OUT"/*.pcap
