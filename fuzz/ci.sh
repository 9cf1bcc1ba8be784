#!/usr/bin/env bash
# Builds every fuzz target and runs each for FUZZ_SECONDS (default 30), one after the other.
# Exits non-zero if a target finds a crash (the input is left in fuzz/artifacts/<target>/; see
# fuzz/README.md for how to turn it into a regression test).
#
# Usage (from anywhere): fuzz/ci.sh [target...]
#   FUZZ_SECONDS=N   time per target (default 30)
#   FUZZ_LOG_DIR=D   keep each target's libFuzzer output in D/<target>.log
# Needs: the stable toolchain, a C++ compiler (libfuzzer-sys builds libFuzzer), crates.io.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECONDS:-30}
# No sanitizer: the only unsafe code the targets reach is the call into the AVX2 build of the
# checksum loop (src/wire/checksum.rs: safe Rust compiled for that feature, called once the CPU is
# found to have it); the rest, src/io's syscalls, no target reaches. So ASan would find nothing
# Rust's bounds checks don't, at half the speed. This also keeps every flag stable: only
# -s address/leak/memory/thread need RUSTC_BOOTSTRAP=1 on a stable toolchain.
fuzz=(cargo fuzz)
opts=(--sanitizer none)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/ci.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi

mapfile -t all < <("${fuzz[@]}" list --fuzz-dir fuzz)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")

start=$SECONDS
"${fuzz[@]}" build "${opts[@]}" --fuzz-dir fuzz
echo "fuzz/ci.sh: built ${#all[@]} targets in $((SECONDS - start)) s"

# FUZZ_LOG_DIR keeps libFuzzer's full output per target.
if [[ -n ${FUZZ_LOG_DIR:-} ]]; then
    logs=$FUZZ_LOG_DIR
    mkdir -p "$logs"
else
    logs=$(mktemp -d)
    trap 'rm -rf "$logs"' EXIT
fi
summary=()
failed=()
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus"
    extra=()
    [[ -f fuzz/dicts/$t.dict ]] && extra+=("-dict=fuzz/dicts/$t.dict")
    dirs=("$corpus")
    for d in fuzz/seeds/$t tests/fuzz-regressions/$t; do
        [[ -d $d ]] && dirs+=("$d")
    done
    echo "fuzz/ci.sh: $t for ${secs} s"
    if "${fuzz[@]}" run "${opts[@]}" --fuzz-dir fuzz "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -print_final_stats=1 "${extra[@]}" >"$logs/$t.log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$t")
        grep -E -A12 "panicked at|ERROR: libFuzzer|Test unit written" "$logs/$t.log" | head -40 >&2 || true
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    summary+=("$(printf '%-14s %-6s execs=%-10s cov=%-6s ft=%s' "$t" "$status" "${execs:-?}" "${cov:-?}" "${ft:-?}")")
done

echo "fuzz/ci.sh: done in $((SECONDS - start)) s"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz/ci.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
