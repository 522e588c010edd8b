#!/usr/bin/env bash
# Builds the test suite for aarch64 once and runs all of it under qemu-user, emulating each
# board's CPU (Pi 4 = cortex-a72, Pi 5 = cortex-a76, and qemu's `max`), checking that kernel
# detection picks the expected set on each. See cross/README.md.
#
# On a fresh Debian 12 (bookworm) machine it first installs the cross toolchain from Debian
# packages (cross/setup.sh: as root, or through sudo). Extra arguments go to the test binaries
# (e.g. `cross/test.sh gemm_q8` to run only matching tests).
set -euo pipefail

cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
# Debian's rustc (1.96, with the aarch64 std) builds; cargo stays whichever is on PATH.
# A separate target dir keeps its artifacts (and host build scripts compiled by a different
# rustc) from invalidating the host build's in target/.
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR="${CROSS_TARGET_DIR:-target/cross}"
# CROSS_RELEASE=1 builds and runs the tests with optimizations (the codegen that ships, and
# faster under emulation). PROPTEST_CASES from the environment is passed through (it only
# affects properties without their own `ProptestConfig::with_cases`).
profile=()
if [ "${CROSS_RELEASE:-0}" = 1 ]; then profile=(--release); fi

# The suite is linked statically (cross/static.toml: +crt-static; no `alsa` feature, there is no
# static arm64 libasound), so it runs under qemu-user with no target libraries at all. RUSTFLAGS
# (e.g. a CI's `-D warnings`) replaces the config's target rustflags: keep static
if [ -n "${RUSTFLAGS:-}" ]; then
    export RUSTFLAGS="$RUSTFLAGS -C target-feature=+crt-static"
fi

cross/setup.sh

echo "== building tests for $TARGET ($(cargo --version), $($RUSTC --version))"
# the linker and runner come from .cargo/config.toml, +crt-static from cross/static.toml;
# --message-format lists the test executables so they can be run directly under each CPU
# (only test-profile artifacts: the crate's own binary is built too but is not a test)
bins=$(cargo test "${profile[@]}" --target "$TARGET" --config cross/static.toml --no-default-features --no-run --message-format=json-render-diagnostics \
        | grep '"reason":"compiler-artifact"' | grep -E '"profile":\{[^}]*"test":true' \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
[ -n "$bins" ] || { echo "no test executables built"; exit 1; }

# seconds per test binary and CPU (the slowest, mimi_stream, takes about 170 s)
LIMIT=${CROSS_TEST_LIMIT:-600}
status=0
summary=""
for pair in cortex-a72:neon cortex-a76:neon-dotprod max:neon-dotprod; do
    cpu=${pair%%:*}
    want=${pair#*:}
    echo "== QEMU_CPU=$cpu, expecting kernel set $want"
    start=$SECONDS
    ok=1
    reruns=""
    for b in $bins; do
        echo "-- $(basename "$b")"
        # A binary that runs past its limit is killed and run once more: the suite has hung
        # once under qemu-user (in CI; never reproduced here), and one hang must not eat the
        # whole CI budget. A second hang, or any failure, fails the CPU; a rerun is reported.
        for attempt in 1 2; do
            rc=0
            QEMU_CPU=$cpu EDGECSM_EXPECT_KERNELS=$want EDGECSM_TEST_RUNNER=qemu-aarch64-static \
                timeout -k 10 "$LIMIT" qemu-aarch64-static "$b" "$@" || rc=$?
            if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
                echo "!! $(basename "$b") under $cpu: no result within $LIMIT s (attempt $attempt), killed"
                reruns+=" $(basename "$b")"
                continue
            fi
            break
        done
        [ $rc -eq 0 ] || ok=0
    done
    if [ $ok -eq 1 ]; then
        summary+="$cpu ($want): ok in $((SECONDS - start)) s${reruns:+ (killed after $LIMIT s and rerun:$reruns)}"$'\n'
    else
        summary+="$cpu ($want): FAILED"$'\n'
        status=1
    fi
done
echo "== summary"
printf '%s' "$summary"
exit $status
