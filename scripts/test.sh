#!/usr/bin/env bash
# The test suite, as CI runs it: installs what the tests need, then `cargo test --release`.
#
# Needs root (the integration tests build network namespaces, TAP devices and a kernel VXLAN peer)
# and a Rust toolchain (rustup's, root's or the sudo user's; scripts/deps.sh does not install one).
# Throughput-heavy tests serialise themselves with a lock file, so the default test threading is fine.
# Usage: sudo scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $EUID -ne 0 ]]; then
    echo "scripts/test.sh needs root (network namespaces, TAP devices): run it with sudo" >&2
    exit 2
fi
# Under sudo, Debian's secure_path leaves out ~/.cargo/bin, where rustup puts cargo, so look there
# too: root's own, then the invoking user's (as scripts/demo.sh does). The demo then builds as that
# user; the tests cannot, as they must run as root, so root runs that user's toolchain instead.
CARGO=$(command -v cargo || true)
for c in "$HOME/.cargo/bin/cargo" ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin/cargo"}; do
    if [[ -z "$CARGO" && -x "$c" ]]; then CARGO=$c; fi
done
if [[ -n "$CARGO" ]]; then
    cargo_bin=$(dirname "$CARGO")
    # On PATH, so that cargo's own subprocesses (rustc, build scripts) and deps.sh's check find it.
    export PATH="$cargo_bin:$PATH"
    # A rustup cargo is a proxy that looks for its toolchain under RUSTUP_HOME, by default ~/.rustup
    # of the running user (root's, which may have none): point both homes at the one it came from.
    if [[ $cargo_bin == */.cargo/bin ]]; then
        owner_home=${cargo_bin%/.cargo/bin}
        if [[ -z "${CARGO_HOME:-}" && -d "$owner_home/.cargo" ]]; then export CARGO_HOME="$owner_home/.cargo"; fi
        if [[ -z "${RUSTUP_HOME:-}" && -d "$owner_home/.rustup" ]]; then export RUSTUP_HOME="$owner_home/.rustup"; fi
    fi
fi
# deps.sh installs Debian packages only; a Rust toolchain is not one of them (rustup, per user).
scripts/deps.sh
if [[ -z "$CARGO" ]]; then
    echo "scripts/test.sh: cargo is not on PATH, in $HOME/.cargo/bin or in the sudo user's ~/.cargo/bin: install a Rust toolchain (rustup, https://rustup.rs)" >&2
    exit 2
fi
# Namespaces and devices are named per test and removed by the tests themselves; this only
# reports leftovers from an earlier, killed run.
leftover=$(ip netns list | grep -c '^vt' || true)
[[ "$leftover" -eq 0 ]] || echo "test.sh: $leftover namespaces from an earlier run (ip netns list | grep ^vt)" >&2
"$CARGO" build --release --all-targets
"$CARGO" test --release "$@"
