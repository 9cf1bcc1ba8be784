#!/usr/bin/env bash
# Install every Debian package that vtepd's tests, demo and benchmark need.
#
# Idempotent and quiet: when everything is already installed it prints
# nothing and touches nothing (no `apt-get update`). Non-interactive: debconf
# questions (tshark's "may non-root users capture?", iperf3's "start as a
# daemon?") are pre-answered "no".
#
# Usage: sudo scripts/deps.sh [-v]     (-v: say what is already there)
# Exit status: 0 when all packages are installed afterwards.
set -euo pipefail

PACKAGES=(
    iproute2        # ip, bridge, ip netns
    iputils-ping    # ping -i 0.01 (root)
    iperf3          # throughput / packet-rate
    tcpdump         # captures in tests
    tshark          # VXLAN dissection in interop tests
    ethtool         # offload toggles
    socat           # ad-hoc UDP/TCP endpoints in tests
    python3         # scripts/bench.py (stdlib only)
    python3-scapy   # crafted VXLAN frames in tests
    procps          # ps, sysctl
    kmod            # modprobe vxlan/bridge/veth/tun when they are modules
    build-essential # cc/ld for cargo build
    pkg-config
    git             # bench.json records the commit
    etcd-server     # the cluster datastore the etcd tests start (etcd 3.4)
    etcd-client     # etcdctl, which the etcd tests use to seed and inspect it (etcd-server only suggests it)
    protobuf-compiler # protoc, for the etcd-client crate's build
    libprotobuf-dev # google/protobuf/*.proto that etcd-client's protos import (protoc only recommends it)
)

verbose=0
[[ "${1:-}" == "-v" ]] && verbose=1

say() { echo "deps: $*" >&2; }

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == "installed" ]]
}

missing=()
for p in "${PACKAGES[@]}"; do
    if is_installed "$p"; then
        (( verbose )) && say "ok $p"
    else
        missing+=("$p")
    fi
done

if (( ${#missing[@]} == 0 )); then
    (( verbose )) && say "all ${#PACKAGES[@]} packages present"
    # cargo is not a Debian package here (rustup toolchain): only warn.
    command -v cargo >/dev/null || say "warning: cargo not on PATH (install a Rust toolchain)"
    exit 0
fi

if (( EUID != 0 )); then
    say "missing packages: ${missing[*]}"
    say "run as root: sudo $0"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_MODE=a
say "installing: ${missing[*]}"

# Pre-answer debconf questions so nothing ever prompts.
if command -v debconf-set-selections >/dev/null; then
    debconf-set-selections <<'EOF'
wireshark-common wireshark-common/install-setuid boolean false
iperf3 iperf3/start_daemon boolean false
EOF
fi

# Another apt/dpkg (e.g. a provisioning job) may hold the locks: wait for it.
# DPkg::Lock::Timeout covers the dpkg frontend lock; `apt-get update`'s lists
# lock has no timeout option, so retry that ourselves.
APT_OPTS=(-q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef
          -o Dpkg::Options::=--force-confold)

retry() {
    local tries=60 out
    while :; do
        if out=$("$@" 2>&1); then return 0; fi
        if (( --tries > 0 )) && grep -qiE 'lock|Could not get|temporarily unavailable' <<<"$out"; then
            sleep 5; continue
        fi
        printf '%s\n' "$out" | tail -n 20 >&2
        return 1
    done
}

retry apt-get "${APT_OPTS[@]}" update
retry apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}"

still=()
for p in "${missing[@]}"; do is_installed "$p" || still+=("$p"); done
if (( ${#still[@]} )); then
    say "failed to install: ${still[*]}"
    exit 1
fi
say "installed ${#missing[@]} package(s)"
