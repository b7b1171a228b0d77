#!/usr/bin/env bash
# ptp-switch setup: prepares a Debian 12 machine (as root) to build, test and run ptp-switch.
# Idempotent: every step checks first and says what it did or why it skipped.
#   - Debian packages (BCC, clang, bpftool, linuxptp, tshark, iproute2, mininet, ...)
#   - kernel headers linked at /lib/modules/$(uname -r)/{build,source} when the kernel ships none
#   - bpffs mounted at /sys/fs/bpf (pinned programs and maps)
#   - a venv from /usr/bin/python3 --system-site-packages (so Debian's BCC imports) with the
#     project in editable mode and its PyPI dependencies
#   - a final probe: BCC compiles and loads an XDP program in this kernel
set -u
set -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
STAMP=$VENV/.ptp-switch-setup

say()  { printf 'setup: %s\n' "$*"; }
fail() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# ---- 0. preconditions: a clear error, never a traceback -------------------------------------
[ "$(uname -s)" = "Linux" ] || fail "ptp-switch needs Linux (this is $(uname -s)): it loads eBPF programs into the kernel."
[ "$(id -u)" = "0" ] || fail "run as root (sudo make setup): installing packages, kernel headers, loading BPF and building network namespaces need it."
[ -r /etc/debian_version ] || fail "this setup installs Debian packages with apt-get; $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-this distribution}") is not Debian. Install the packages listed in scripts/setup.sh by hand."
[ -x /usr/bin/python3 ] || fail "/usr/bin/python3 is missing; Debian's python3 is needed because python3-bpfcc installs there."

# ---- 1. Debian packages ---------------------------------------------------------------------
PKGS="python3-bpfcc bpfcc-tools clang llvm bpftool libbpf1 linuxptp tshark iproute2 ethtool
iputils-ping python3-venv python3-dev python3-pip mininet bridge-utils tcpdump ptpd gcc make
procps psmisc kmod"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer no (we capture as root).
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -q >/dev/null || fail "apt-get update failed (no network or no Debian mirror reachable)."
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/tmp/ptp-switch-apt.log 2>&1 \
        || fail "apt-get install failed for:$missing (log: /tmp/ptp-switch-apt.log)"
    say "installed:$missing"
else
    say "Debian packages: all present"
fi

# ---- 2. kernel headers for BCC --------------------------------------------------------------
KREL=$(uname -r)
MODDIR=/lib/modules/$KREL
if [ -e "$MODDIR/build/include" ] || [ -e "$MODDIR/build/Makefile" ]; then
    say "kernel headers: $MODDIR/build exists ($(readlink -f "$MODDIR/build"))"
else
    say "kernel headers: $MODDIR/build is missing: this kernel ($KREL) ships no headers, and BCC compiles only with them."
    # The closest Debian cloud headers: the highest version not above the running kernel,
    # else the lowest above it. Networking programs use UAPI headers only, which are stable.
    kver_num() { echo "$1" | sed -E 's/^([0-9]+)\.([0-9]+)(\.([0-9]+))?.*/\1 \2 \4/' | awk '{printf "%d%04d%04d\n",$1,$2,($3==""?0:$3)}'; }
    have=$(ls -d /usr/src/linux-headers-*-cloud-amd64 2>/dev/null | sed 's#.*/linux-headers-##' || true)
    cand=$(apt-cache search --names-only '^linux-headers-[0-9].*-cloud-amd64$' 2>/dev/null | awk '{print $1}' | sed 's/^linux-headers-//')
    if [ -z "$cand" ] && [ -z "$have" ]; then
        apt-get update -q >/dev/null || true
        cand=$(apt-cache search --names-only '^linux-headers-[0-9].*-cloud-amd64$' 2>/dev/null | awk '{print $1}' | sed 's/^linux-headers-//')
    fi
    want=$(kver_num "$KREL")
    best=""; bestn=0; above=""; aboven=99999999999
    for v in $have $cand; do
        n=$(kver_num "$v")
        if [ "$n" -le "$want" ]; then
            if [ "$n" -gt "$bestn" ] || { [ "$n" -eq "$bestn" ] && [ -d "/usr/src/linux-headers-$v" ]; }; then best=$v; bestn=$n; fi
        elif [ "$n" -lt "$aboven" ]; then above=$v; aboven=$n; fi
    done
    [ -n "$best" ] || best=$above
    [ -n "$best" ] || fail "no Debian linux-headers-*-cloud-amd64 package found to stand in for $KREL."
    if [ ! -d "/usr/src/linux-headers-$best" ]; then
        say "installing linux-headers-$best (closest to $KREL)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "linux-headers-$best" >/tmp/ptp-switch-apt.log 2>&1 \
            || fail "could not install linux-headers-$best (log: /tmp/ptp-switch-apt.log)"
    fi
    common=$(echo "/usr/src/linux-headers-$best" | sed 's/-cloud-amd64$/-common/')
    [ -d "$common" ] || common=/usr/src/linux-headers-$best
    mkdir -p "$MODDIR"
    ln -sfn "/usr/src/linux-headers-$best" "$MODDIR/build"
    ln -sfn "$common" "$MODDIR/source"
    say "linked $MODDIR/build -> /usr/src/linux-headers-$best and $MODDIR/source -> $common"
    say "  (why: BCC needs kernel headers; eBPF networking programs use only UAPI definitions, which these provide)"
fi

# ---- 3. bpffs for pinned programs and maps ---------------------------------------------------
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null && say "mounted bpffs at /sys/fs/bpf" \
        || say "warning: could not mount bpffs at /sys/fs/bpf (pinning disabled)"
else
    say "bpffs: mounted at /sys/fs/bpf"
fi

# ---- 4. the virtual environment --------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating venv $VENV from /usr/bin/python3 --system-site-packages (so Debian's BCC imports)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV" || fail "venv creation failed"
fi
hash_now=$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$hash_now" ] && "$VENV/bin/python" -c 'import controlplane, dataplane, topologies, pyroute2, scapy, grpc, hypothesis' 2>/dev/null; then
    say "venv: up to date ($VENV)"
else
    say "installing ptp-switch (editable) and its PyPI dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/tmp/ptp-switch-pip.log 2>&1 || true
    "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]" >>/tmp/ptp-switch-pip.log 2>&1 \
        || fail "pip install failed (log: /tmp/ptp-switch-pip.log)"
    echo "$hash_now" >"$STAMP"
    say "venv: ready"
fi
"$VENV/bin/python" -c 'import bcc' 2>/dev/null || fail "BCC does not import in $VENV (python3-bpfcc missing for /usr/bin/python3?)"

# ---- 5. generated gRPC code ------------------------------------------------------------------
if [ -f "$ROOT/controlplane/services/proto/ptpswitch.proto" ]; then
    "$VENV/bin/python" -m controlplane.services.proto.build >/dev/null || fail "protobuf code generation failed"
fi

# ---- 6. probe: can this kernel run our BPF? ---------------------------------------------------
if ! out=$("$VENV/bin/python" - <<'EOF' 2>&1
import sys
from bcc import BPF
b = BPF(text="int probe(struct xdp_md *ctx) { return XDP_PASS; }", cflags=["-w"])
b.load_func("probe", BPF.XDP)
print("ok")
EOF
); then
    echo "$out" | tail -5 >&2
    fail "BPF is unavailable: BCC could not compile and load an XDP program (no CAP_BPF/CAP_SYS_ADMIN, BPF disabled, or unusable kernel headers)."
fi
say "BPF: BCC compiles and loads XDP programs on $KREL"
say "done. Python: $VENV/bin/python; console script: $VENV/bin/ptp-switch"
