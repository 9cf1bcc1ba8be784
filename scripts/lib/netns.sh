# shellcheck shell=bash
# Shared helpers for building throw-away two-host testbeds out of network
# namespaces. Source it; it defines functions only (plus a few variables).
#
#   source scripts/lib/netns.sh
#   vt_init                          # unique prefix, temp dir, cleanup trap
#   vt_host  A 192.0.2.1/24          # host netns "$(vt_ns A)"
#   vt_host  B 192.0.2.2/24
#   vt_link_underlay A B             # veth0 <-> veth0 with the addresses above
#   vt_pod   A 10.244.1.1/24 10.244.1.2/24 1450   # cni0 bridge + pod netns "$(vt_ns A-pod)"
#   vt_bg    A vtepd -- target/release/vtepd run --config "$VT_TMP/a.toml"
#   ...                              # everything is deleted on exit / Ctrl-C
#
# Rules it enforces: every netns name contains the pid of the script
# ("vt<pid>-<name>"), only namespaces created here are deleted, and only the
# processes started here (or running inside our own namespaces) are killed,
# each by pid.

VT_PREFIX=""
VT_TMP=""
VT_NS=()          # namespaces we created, in creation order
VT_PIDS=()        # background processes we started
declare -A VT_HOST_ADDR=()
declare -A VT_BG_PID=()
VT_CLEANED=0
VT_KEEP_TMP=${VT_KEEP_TMP:-0}

vt_log()  { printf '%s\n' "$*" >&2; }
vt_die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

# vt_init [tag]: prefix "vt<pid>", temp dir, trap that cleans up.
vt_init() {
    (( EUID == 0 )) || vt_die "needs root (network namespaces): run with sudo"
    VT_PREFIX="vt$$"
    VT_TMP=$(mktemp -d "/tmp/${1:-vtepd}.XXXXXX")
    trap vt_cleanup EXIT
    trap 'vt_log "interrupted"; exit 130' INT
    trap 'vt_log "terminated"; exit 143' TERM
}

# vt_ns NAME: full netns name for a short name.
vt_ns() { printf '%s-%s' "$VT_PREFIX" "$1"; }

# vt_exec NAME cmd...: run a command inside netns NAME.
vt_exec() { local n; n=$(vt_ns "$1"); shift; ip netns exec "$n" "$@"; }

# vt_netns_add NAME: create netns, loopback up.
vt_netns_add() {
    local n; n=$(vt_ns "$1")
    ip netns add "$n" || vt_die "cannot create netns $n"
    VT_NS+=("$n")
    ip -n "$n" link set lo up
}

# vt_host NAME UNDERLAY_CIDR: a "node" netns with IP forwarding on.
vt_host() {
    vt_netns_add "$1"
    VT_HOST_ADDR[$1]=$2
    vt_exec "$1" sysctl -qw net.ipv4.ip_forward=1
}

# vt_link_underlay A B: veth pair "veth0" in both, addressed from vt_host.
vt_link_underlay() {
    local a=$1 b=$2 na nb
    na=$(vt_ns "$a"); nb=$(vt_ns "$b")
    # Created directly inside the namespaces: no name ever exists in the root netns.
    ip link add veth0 netns "$na" type veth peer name veth0 netns "$nb" \
        || vt_die "cannot create underlay veth"
    ip -n "$na" addr add "${VT_HOST_ADDR[$a]}" dev veth0
    ip -n "$nb" addr add "${VT_HOST_ADDR[$b]}" dev veth0
    ip -n "$na" link set veth0 up
    ip -n "$nb" link set veth0 up
}

# vt_pod HOST BRIDGE_CIDR POD_CIDR [MTU]: bridge cni0 on HOST, pod netns
# "HOST-pod" behind a veth (eth0 in the pod), default route via the bridge.
vt_pod() {
    local h=$1 br=$2 pod=$3 mtu=${4:-1450} nh np
    nh=$(vt_ns "$h"); vt_netns_add "$h-pod"; np=$(vt_ns "$h-pod")
    ip -n "$nh" link add cni0 type bridge
    ip -n "$nh" link set cni0 mtu "$mtu"
    ip -n "$nh" addr add "$br" dev cni0
    ip -n "$nh" link set cni0 up
    ip link add veth-pod netns "$nh" mtu "$mtu" type veth peer name eth0 netns "$np" mtu "$mtu" \
        || vt_die "cannot create pod veth"
    ip -n "$nh" link set veth-pod master cni0 up
    ip -n "$np" addr add "$pod" dev eth0
    ip -n "$np" link set eth0 up
    ip -n "$np" route add default via "${br%/*}"
}

# vt_kernel_vxlan HOST LOCAL_IP VNI MAC MTU SUBNET: flannel.1 exactly as Flannel
# builds it (device address = network address of SUBNET, /32).
vt_kernel_vxlan() {
    local h=$1 local_ip=$2 vni=$3 mac=$4 mtu=$5 subnet=$6 n
    n=$(vt_ns "$h")
    ip -n "$n" link add flannel.1 type vxlan id "$vni" dstport 8472 local "$local_ip" dev veth0 nolearning
    ip -n "$n" link set flannel.1 address "$mac" mtu "$mtu" up
    ip -n "$n" addr add "${subnet%/*}/32" dev flannel.1
}

# vt_kernel_vxlan_peer HOST PEER_SUBNET PEER_MAC PEER_IP
vt_kernel_vxlan_peer() {
    local n net; n=$(vt_ns "$1"); net=${2%/*}
    ip -n "$n" route add "$2" via "$net" dev flannel.1 onlink
    ip -n "$n" neigh add "$net" lladdr "$3" dev flannel.1 nud permanent
    bridge -n "$n" fdb append "$3" dev flannel.1 dst "$4"
}

# vt_bg HOST TAG -- cmd...: start cmd in netns HOST in the background,
# stdout/stderr to $VT_TMP/TAG.out / TAG.err; remembers pid as VT_BG_PID[TAG].
vt_bg() {
    local h=$1 tag=$2; shift 2; [[ "$1" == "--" ]] && shift
    ip netns exec "$(vt_ns "$h")" "$@" >"$VT_TMP/$tag.out" 2>"$VT_TMP/$tag.err" &
    VT_BG_PID[$tag]=$!
    VT_PIDS+=("$!")
}

# vt_stop TAG [timeout_s]: SIGTERM the background process TAG, wait for it
# (SIGKILL after the timeout). Returns its exit status.
vt_stop() {
    local tag=$1 t=${2:-10} pid rc=0 i
    pid=${VT_BG_PID[$tag]:-}
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for (( i = 0; i < t * 10; i++ )); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            vt_log "$tag did not exit after SIGTERM in ${t}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || rc=$?
    unset "VT_BG_PID[$tag]"
    return "$rc"
}

# vt_alive TAG: is the background process TAG still running?
vt_alive() { local pid=${VT_BG_PID[$1]:-}; [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; }

# vt_wait_for SECONDS cmd...: retry cmd every 0.1 s until it succeeds.
vt_wait_for() {
    local t=$1 i; shift
    for (( i = 0; i < t * 10; i++ )); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# vt_cleanup: kill what we started and what runs in our namespaces (by pid),
# delete our namespaces, remove the temp dir. Safe to call twice.
vt_cleanup() {
    local rc=$? n p pids
    (( VT_CLEANED )) && return "$rc"
    VT_CLEANED=1
    trap - INT TERM
    for p in "${VT_PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null
    done
    for n in "${VT_NS[@]}"; do
        pids=$(ip netns pids "$n" 2>/dev/null || true)
        for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    done
    for (( p = 0; p < 20; p++ )); do
        local left=0
        for n in "${VT_NS[@]}"; do [[ -n "$(ip netns pids "$n" 2>/dev/null)" ]] && left=1; done
        (( left )) || break
        sleep 0.1
    done
    for n in "${VT_NS[@]}"; do
        for p in $(ip netns pids "$n" 2>/dev/null || true); do kill -KILL "$p" 2>/dev/null || true; done
    done
    for p in "${VT_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for n in "${VT_NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    if [[ -n "$VT_TMP" && -d "$VT_TMP" ]]; then
        if (( VT_KEEP_TMP )); then vt_log "kept $VT_TMP"; else rm -rf "$VT_TMP"; fi
    fi
    return "$rc"
}
