#!/usr/bin/env bash
# vtepd in two minutes: two "nodes" (network namespaces joined by a veth
# underlay, 192.0.2.1 <-> 192.0.2.2), each with a cni0 bridge and one pod,
# connected by vtepd's userspace VXLAN overlay exactly where Flannel would put
# its kernel flannel.1 device. Pings pod->pod both ways, runs a 5 s iperf3,
# prints vtepd's counters, removes everything.
#
# Usage: sudo scripts/demo.sh [--kernel] [--no-build] [--time S] [--keep-tmp]
#   --kernel    same topology with the kernel's flannel.1 instead of vtepd
#               (the reference vtepd must match)
#   --no-build  use the existing target/release/vtepd
#   --time S    iperf3 duration (default 5)
#   --keep-tmp  keep the temp dir (configs, vtepd logs) for inspection
# Exit status: 0 when every step passed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"

MODE=vtepd BUILD=1 SECS=5
VTEPD=${VTEPD:-$ROOT/target/release/vtepd}
while (( $# )); do
    case $1 in
        --kernel) MODE=kernel ;;
        --no-build) BUILD=0 ;;
        --time) SECS=$2; shift ;;
        --keep-tmp) VT_KEEP_TMP=1 ;;  # read by vt_cleanup
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

if (( EUID != 0 )); then
    echo "vtepd demo needs root (network namespaces): run with sudo" >&2
    exit 2
fi

# ---- output helpers ---------------------------------------------------------
if [[ -t 1 ]]; then G=$'\e[32m' R=$'\e[31m' B=$'\e[1m' D=$'\e[2m' N=$'\e[0m'; else G='' R='' B='' D='' N=''; fi
STEP=0 NSTEPS=6 FAILED=0
step() { STEP=$((STEP + 1)); printf '[%d/%d] %-34s ' "$STEP" "$NSTEPS" "$1"; }
sub()  { printf '      %-34s ' "$1"; }
ok()   { printf '%sok%s%s\n' "$G" "$N" "${1:+  $1}"; }
bad()  { printf '%sFAILED%s%s\n' "$R" "$N" "${1:+  $1}"; FAILED=1; }
fatal() { bad "$1"; shift; [[ $# -gt 0 ]] && printf '%s\n' "$@" | sed 's/^/      | /' | tail -n 25; exit 1; }
# show the tail of a file, indented
tailf() { [[ -s "$1" ]] && tail -n "${2:-15}" "$1" | sed 's/^/      | /'; }

printf '%svtepd demo%s: pods 10.244.1.2 (node A 192.0.2.1) <-> 10.244.2.2 (node B 192.0.2.2), VXLAN VNI 1 port 8472, %s\n' \
    "$B" "$N" "$([[ $MODE == kernel ]] && echo 'kernel flannel.1' || echo 'userspace vtepd')"

# ---- 1. packages ------------------------------------------------------------
step "dependencies (scripts/deps.sh)"
if out=$("$ROOT/scripts/deps.sh" 2>&1); then ok "${out:+$(tail -n1 <<<"$out" | sed 's/^deps: //')}"; else fatal "" "$out"; fi

# ---- 2. build -----------------------------------------------------------------
step "cargo build --release"
if [[ $MODE == kernel ]]; then
    ok "skipped (--kernel)"
elif (( ! BUILD )); then
    if [[ -x "$VTEPD" ]]; then ok "skipped, using $VTEPD"; else fatal "no $VTEPD (drop --no-build)"; fi
else
    CARGO=$(command -v cargo || true)
    for c in "$HOME/.cargo/bin/cargo" ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin/cargo"}; do
        [[ -z "$CARGO" && -x "$c" ]] && CARGO=$c
    done
    [[ -n "$CARGO" ]] || fatal "cargo not found (install a Rust toolchain)"
    # Under sudo, build as the invoking user so target/ does not become root's.
    AS=()
    [[ -n "${SUDO_USER:-}" && "$SUDO_USER" != root ]] && AS=(sudo -u "$SUDO_USER" --preserve-env=PATH)
    t0=$SECONDS
    if out=$(cd "$ROOT" && "${AS[@]}" "$CARGO" build --release --quiet 2>&1); then
        [[ -x "$VTEPD" ]] || fatal "build succeeded but $VTEPD is missing"
        ok "$((SECONDS - t0)) s"
    else
        fatal "" "$out"
    fi
fi

# ---- 3. namespaces ------------------------------------------------------------
step "namespaces: 2 nodes + 2 pods"
vt_init vtepd-demo
{
    vt_host A 192.0.2.1/24 && vt_host B 192.0.2.2/24 && vt_link_underlay A B &&
    vt_pod A 10.244.1.1/24 10.244.1.2/24 1450 && vt_pod B 10.244.2.1/24 10.244.2.2/24 1450
} >"$VT_TMP/setup.log" 2>&1 || fatal "" "$(cat "$VT_TMP/setup.log")"
vt_wait_for 5 vt_exec A ping -c1 -W1 192.0.2.2 || fatal "underlay 192.0.2.1 -> 192.0.2.2 does not answer"
ok "$(vt_ns A), $(vt_ns B), $(vt_ns A-pod), $(vt_ns B-pod)"

# ---- 4. overlay -------------------------------------------------------------------
MAC_A=02:00:00:00:00:01 MAC_B=02:00:00:00:00:02
write_config() { # node_ip subnet mac peer_ip peer_subnet peer_mac
    cat <<EOF
[node]
public_ip = "$1"
subnet = "$2"
backend = "vxlan"

[vxlan]
device = "vtep0"
vni = 1
port = 8472
mac = "$3"
mtu = 1450

[[peer]]
public_ip = "$4"
subnet = "$5"
vtep_mac = "$6"
EOF
}
if [[ $MODE == kernel ]]; then
    step "kernel flannel.1 on both nodes"
    {
        vt_kernel_vxlan A 192.0.2.1 1 $MAC_A 1450 10.244.1.0/24 &&
        vt_kernel_vxlan_peer A 10.244.2.0/24 $MAC_B 192.0.2.2 &&
        vt_kernel_vxlan B 192.0.2.2 1 $MAC_B 1450 10.244.2.0/24 &&
        vt_kernel_vxlan_peer B 10.244.1.0/24 $MAC_A 192.0.2.1
    } >"$VT_TMP/kernel.log" 2>&1 || fatal "" "$(cat "$VT_TMP/kernel.log")"
    ok "flannel.1 10.244.1.0/32, 10.244.2.0/32"
else
    step "vtepd on both nodes"
    write_config 192.0.2.1 10.244.1.0/24 $MAC_A 192.0.2.2 10.244.2.0/24 $MAC_B >"$VT_TMP/a.toml"
    write_config 192.0.2.2 10.244.2.0/24 $MAC_B 192.0.2.1 10.244.1.0/24 $MAC_A >"$VT_TMP/b.toml"
    vt_bg A vtepd-a -- "$VTEPD" run --config "$VT_TMP/a.toml" --log-level info
    vt_bg B vtepd-b -- "$VTEPD" run --config "$VT_TMP/b.toml" --log-level info
    # Ready when both have put the peer route on vtep0 (or one has died).
    # shellcheck disable=SC2317  # called through vt_wait_for
    ready() { vt_alive vtepd-a && vt_alive vtepd-b &&
              [[ -n "$(ip -n "$(vt_ns A)" route show 10.244.2.0/24 dev vtep0 2>/dev/null)" ]] &&
              [[ -n "$(ip -n "$(vt_ns B)" route show 10.244.1.0/24 dev vtep0 2>/dev/null)" ]]; }
    if ! vt_wait_for 10 ready; then
        bad "not ready after 10 s"
        for t in vtepd-a vtepd-b; do
            vt_alive $t && echo "      $t: running" || echo "      $t: exited"
            tailf "$VT_TMP/$t.err"; tailf "$VT_TMP/$t.out"
        done
        exit 1
    fi
    ok "pids ${VT_BG_PID[vtepd-a]}, ${VT_BG_PID[vtepd-b]}; vtep0 10.244.1.0/32, 10.244.2.0/32"
fi

# ---- 5. ping ------------------------------------------------------------------------
# $1 from-pod $2 to-ip; prints "3/3, rtt avg X ms"
ping_pods() {
    local out
    vt_wait_for 5 vt_exec "$1" ping -c1 -W1 "$2" || return 1   # first packet resolves ARP
    out=$(vt_exec "$1" ping -c 5 -i 0.2 -W 2 "$2" 2>&1) || { echo "$out" | tail -n3; return 1; }
    awk -F'[ /]+' '/packets transmitted/ {tx=$1; rx=$4} /^rtt/ {avg=$8} END {printf "%s/%s replies, rtt avg %s ms", rx, tx, avg}' <<<"$out"
}
step "ping pod A -> pod B (10.244.2.2)"
if r=$(ping_pods A-pod 10.244.2.2); then ok "$r"; else bad "$r"; fi
sub "ping pod B -> pod A (10.244.1.2)"
if r=$(ping_pods B-pod 10.244.1.2); then ok "$r"; else bad "$r"; fi

# ---- 6. iperf3 --------------------------------------------------------------------------
step "iperf3 TCP ${SECS} s pod A -> pod B"
vt_bg B-pod iperf3-s -- iperf3 -s -1 -B 10.244.2.2
# shellcheck disable=SC2317  # called through vt_wait_for
listening() { [[ -n "$(vt_exec B-pod ss -Htln 'sport = :5201')" ]]; }
vt_wait_for 5 listening
if vt_exec A-pod iperf3 -c 10.244.2.2 -t "$SECS" -J >"$VT_TMP/iperf3.json" 2>"$VT_TMP/iperf3.err"; then
    if r=$(python3 - "$VT_TMP/iperf3.json" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))["end"]
rx, tx = e["sum_received"], e["sum_sent"]
print(f"{rx['bits_per_second']/1e9:.2f} Gbit/s  ({rx['bytes']/1e9:.2f} GB received, {tx.get('retransmits', 0)} retransmits)")
EOF
    ); then ok "$r"; else bad "cannot parse iperf3 output"; fi
else
    bad "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error",""))' "$VT_TMP/iperf3.json" 2>/dev/null || tail -n1 "$VT_TMP/iperf3.err")"
fi
vt_stop iperf3-s 2 >/dev/null 2>&1 || true

# ---- counters -------------------------------------------------------------------------------
if [[ $MODE == vtepd ]]; then
    rca=0 rcb=0
    vt_stop vtepd-a || rca=$?
    vt_stop vtepd-b || rcb=$?
    (( rca == 0 && rcb == 0 )) || { bad "vtepd exit status: A=$rca B=$rcb"; tailf "$VT_TMP/vtepd-a.err" 8; tailf "$VT_TMP/vtepd-b.err" 8; }
    # leftovers after vtepd's own cleanup?
    for h in A B; do
        ip -n "$(vt_ns $h)" link show vtep0 >/dev/null 2>&1 && bad "node $h: vtep0 still exists after vtepd exited"
    done
    echo "${D}vtepd counters (stdout after SIGTERM):${N}"
    awk -v D="$D" -v N="$N" '
        FNR == 1 { f++ }
        NF == 2 && $2 ~ /^[0-9.]+$/ { if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } v[f, $1] = $2; if ($2 + 0 != 0) nz[$1] = 1 }
        END {
            if (!n) { print "      (none printed)"; exit }
            printf "      %-28s %14s %14s\n", "counter", "node A", "node B"
            for (i = 1; i <= n; i++) {
                k = order[i]
                if (!(k in nz)) { zero++; continue }
                printf "      %-28s %14s %14s\n", k, ((1, k) in v ? v[1, k] : "-"), ((2, k) in v ? v[2, k] : "-")
            }
            if (zero) printf "      (%d more counters are 0 on both nodes)\n", zero
        }' "$VT_TMP/vtepd-a.out" "$VT_TMP/vtepd-b.out"
else
    echo "${D}flannel.1 counters (ip -s link):${N}"
    for h in A B; do
        printf '      node %s: ' "$h"
        ip -n "$(vt_ns $h)" -s -j link show flannel.1 | python3 -c '
import json, sys
s = json.load(sys.stdin)[0]["stats64"]
print("rx %d pkts %d bytes, tx %d pkts %d bytes, drops rx %d tx %d" % (s["rx"]["packets"], s["rx"]["bytes"], s["tx"]["packets"], s["tx"]["bytes"], s["rx"]["dropped"], s["tx"]["dropped"]))'
    done
fi

if (( FAILED )); then
    echo "${R}demo FAILED${N} (re-run with --keep-tmp to inspect configs and logs)"
    exit 1
fi
echo "${G}demo passed${N}; all namespaces removed"
exit 0
