#!/usr/bin/env bash
# Soak test (not in CI): two namespace hosts joined by a veth underlay
# (192.0.2.1 <-> 192.0.2.2), vtepd on both (VXLAN, or IPIP with --backend
# ipip), iperf3 through the overlay
# (10.244.1.0 <-> 10.244.2.0, both directions at once) for N minutes. Every
# interval it prints the VmRSS of both vtepd processes and their non-zero drop
# counters -- live from `vtepd stats` when this vtepd has that command,
# otherwise (counters are only printed at exit) the underlay's packet and drop
# counters instead. At the end: each vtepd's final counters (SIGTERM), RSS
# growth, iperf3's summary. Everything is removed on exit or Ctrl-C.
#
# Usage: sudo scripts/soak.sh [--minutes N] [--interval S] [--parallel P]
#                             [--backend vxlan|ipip] [--no-build] [--keep-tmp]
#   --minutes N   how long iperf3 runs (default 10)
#   --interval S  seconds between reports (default 10)
#   --parallel P  iperf3 streams per direction (default 4)
#   --backend B   vxlan (default) or ipip
#   --no-build    use the existing target/release/vtepd (or $VTEPD)
#   --keep-tmp    keep the temp dir (configs, logs) for inspection
# Exit status: 0 when iperf3 ran to the end and both vtepd exited 0 on SIGTERM.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"

MINUTES=10 INTERVAL=10 PARALLEL=4 BUILD=1 BACKEND=vxlan
VTEPD=${VTEPD:-$ROOT/target/release/vtepd}
while (( $# )); do
    case $1 in
        --minutes) MINUTES=$2; shift ;;
        --interval) INTERVAL=$2; shift ;;
        --parallel) PARALLEL=$2; shift ;;
        --backend) BACKEND=$2; shift ;;
        --no-build) BUILD=0 ;;
        --keep-tmp) VT_KEEP_TMP=1 ;;  # read by vt_cleanup
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
for v in MINUTES INTERVAL PARALLEL; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "--${v,,} wants a positive integer, got '${!v}'" >&2; exit 2; }
done
[[ $BACKEND == vxlan || $BACKEND == ipip ]] || { echo "--backend wants vxlan or ipip, got '$BACKEND'" >&2; exit 2; }
if (( EUID != 0 )); then
    echo "soak needs root (network namespaces): run with sudo" >&2
    exit 2
fi
command -v iperf3 >/dev/null || { echo "iperf3 not found: run scripts/deps.sh" >&2; exit 2; }

if (( BUILD )); then
    CARGO=$(command -v cargo || true)
    for c in "$HOME/.cargo/bin/cargo" ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin/cargo"}; do
        [[ -z "$CARGO" && -x "$c" ]] && CARGO=$c
    done
    [[ -n "$CARGO" ]] || { echo "cargo not found (or use --no-build)" >&2; exit 2; }
    # Under sudo, build as the invoking user so target/ does not become root's.
    AS=()
    [[ -n "${SUDO_USER:-}" && "$SUDO_USER" != root ]] && AS=(sudo -u "$SUDO_USER" --preserve-env=PATH)
    echo "building vtepd (cargo build --release)..." >&2
    (cd "$ROOT" && "${AS[@]}" "$CARGO" build --release --quiet) || exit 1
fi
[[ -x "$VTEPD" ]] || { echo "no vtepd at $VTEPD" >&2; exit 2; }

# Live counters need `vtepd stats` (the control API); older builds print them only at exit.
LIVE=0
"$VTEPD" stats --help >/dev/null 2>&1 && LIVE=1

vt_init vtepd-soak
vt_host A 192.0.2.1/24
vt_host B 192.0.2.2/24
vt_link_underlay A B

# write_config ME PEER: host ME (1 or 2) with the other as its peer.
write_config() {
    cat <<EOF
[node]
public_ip = "192.0.2.$1"
subnet = "10.244.$1.0/24"
backend = "$BACKEND"

EOF
    if [[ $BACKEND == vxlan ]]; then
        cat <<EOF
[vxlan]
device = "vtep0"
vni = 1
port = 8472
mac = "02:00:00:00:00:0$1"
mtu = 1450

EOF
    else
        cat <<EOF
[ipip]
device = "tunl0"
mtu = 1480

EOF
    fi
    cat <<EOF
[[peer]]
public_ip = "192.0.2.$2"
subnet = "10.244.$2.0/24"
EOF
    [[ $BACKEND == vxlan ]] && echo "vtep_mac = \"02:00:00:00:00:0$2\""
    return 0
}
write_config 1 2 >"$VT_TMP/a.toml"
write_config 2 1 >"$VT_TMP/b.toml"

vt_bg A vtepd-a -- "$VTEPD" run --config "$VT_TMP/a.toml"
vt_bg B vtepd-b -- "$VTEPD" run --config "$VT_TMP/b.toml"
# shellcheck disable=SC2317  # called through vt_wait_for
route_up() { ip -n "$(vt_ns "$1")" route show "$2" | grep -q .; }
vt_wait_for 10 route_up A 10.244.2.0/24 || { tail -n 20 "$VT_TMP/vtepd-a.err" >&2; vt_die "vtepd A did not come up"; }
vt_wait_for 10 route_up B 10.244.1.0/24 || { tail -n 20 "$VT_TMP/vtepd-b.err" >&2; vt_die "vtepd B did not come up"; }
vt_wait_for 10 vt_exec A ping -c 1 -W 1 -I 10.244.1.0 10.244.2.0 || vt_die "no overlay ping A -> B"

PID_A=${VT_BG_PID[vtepd-a]} PID_B=${VT_BG_PID[vtepd-b]}
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo "?"; }
RSS0_A=$(rss "$PID_A") RSS0_B=$(rss "$PID_B")

# nonzero_drops: "name value" lines on stdin -> "name=value ..." for drop_* counters that are not 0.
nonzero_drops() { awk '$1 ~ /^drop_/ && $2 != "0" { printf "%s%s=%s", sep, $1, $2; sep = " " }'; }

# report HOST PID: one line for one host.
report() {
    local h=$1 pid=$2 line
    line="vtepd $h rss=$(rss "$pid")KiB"
    if (( LIVE )); then
        local drops
        drops=$(vt_exec "$h" "$VTEPD" stats 2>/dev/null | nonzero_drops)
        line+=" drops: ${drops:-none}"
    else
        local s=() st
        for st in rx_packets tx_packets rx_dropped tx_dropped rx_errors tx_errors; do
            s+=("$st=$(vt_exec "$h" cat "/sys/class/net/veth0/statistics/$st")")
        done
        line+=" underlay veth0: ${s[*]}"
    fi
    printf '%s\n' "$line"
}

SECS=$((MINUTES * 60))
vt_bg B iperf3-s -- iperf3 -s -B 10.244.2.0 -1
vt_wait_for 5 vt_exec B sh -c "ss -Hltn 'sport = :5201' | grep -q ." || vt_die "iperf3 server did not start"
vt_bg A iperf3-c -- iperf3 -c 10.244.2.0 -B 10.244.1.0 --bidir -P "$PARALLEL" -t "$SECS" -i "$INTERVAL" --forceflush

echo "soak: ${MINUTES} min of iperf3 --bidir -P $PARALLEL through vtepd ($BACKEND); report every ${INTERVAL} s" \
     "($( ((LIVE)) && echo 'live drop counters from vtepd stats' || echo 'no vtepd stats in this build: underlay counters instead; vtepd counters at the end'))"
echo "start: vtepd A rss=${RSS0_A}KiB, vtepd B rss=${RSS0_B}KiB"
FAILED=0
T0=$SECONDS
while vt_alive iperf3-c; do
    sleep "$INTERVAL"
    vt_alive iperf3-c || break
    printf -- '--- t=%ds\n' $((SECONDS - T0))
    for h in A B; do
        pid=$PID_A; [[ $h == B ]] && pid=$PID_B
        if vt_alive "vtepd-${h,,}"; then report "$h" "$pid"; else echo "vtepd $h is not running"; FAILED=1; fi
    done
    grep -F '[SUM]' "$VT_TMP/iperf3-c.out" | tail -n 2 | sed 's/^/iperf3: /'
done

vt_stop iperf3-c 5; IPERF_RC=$?
vt_stop iperf3-s 5 || true
RSS1_A=$(rss "$PID_A") RSS1_B=$(rss "$PID_B")
echo "--- done after $((SECONDS - T0)) s"
echo "iperf3 summary:"
grep -F '[SUM]' "$VT_TMP/iperf3-c.out" | grep -E 'sender|receiver' | sed 's/^/  /'
(( IPERF_RC == 0 )) || { echo "iperf3 failed (exit $IPERF_RC):"; tail -n 5 "$VT_TMP/iperf3-c.out" "$VT_TMP/iperf3-c.err"; FAILED=1; }
echo "vtepd A rss ${RSS0_A} -> ${RSS1_A} KiB; vtepd B rss ${RSS0_B} -> ${RSS1_B} KiB"
for h in A B; do
    tag=vtepd-${h,,}
    if vt_stop "$tag" 10; then
        drops=$(nonzero_drops <"$VT_TMP/$tag.out")
        echo "vtepd $h final: $(awk '$1 ~ /^(rx|tx)_packets$/ { printf "%s=%s ", $1, $2 }' "$VT_TMP/$tag.out")drops: ${drops:-none}"
    else
        echo "vtepd $h did not exit 0 on SIGTERM; last log lines:"
        tail -n 10 "$VT_TMP/$tag.err"
        FAILED=1
    fi
    grep -E 'WARN|ERROR' "$VT_TMP/$tag.err" | tail -n 5 | sed "s/^/  vtepd $h log: /"
done
exit "$FAILED"
