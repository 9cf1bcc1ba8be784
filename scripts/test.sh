#!/usr/bin/env bash
# The test suite, as CI runs it: installs what the tests need, then `cargo test --release`.
#
# Needs root (the integration tests build network namespaces, TAP devices and a kernel VXLAN peer).
# Throughput-heavy tests serialise themselves with a lock file, so the default test threading is fine.
# Usage: sudo scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $EUID -ne 0 ]]; then
    echo "scripts/test.sh needs root (network namespaces, TAP devices): run it with sudo" >&2
    exit 2
fi
scripts/deps.sh
# Namespaces and devices are named per test and removed by the tests themselves; this only
# reports leftovers from an earlier, killed run.
leftover=$(ip netns list | grep -c '^vt' || true)
[[ "$leftover" -eq 0 ]] || echo "test.sh: $leftover namespaces from an earlier run (ip netns list | grep ^vt)" >&2
cargo build --release --all-targets
cargo test --release "$@"
