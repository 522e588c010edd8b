#!/usr/bin/env bash
# Builds the test suite for aarch64 once and runs all of it under qemu-user, emulating each
# board's CPU (Pi 4 = cortex-a72, Pi 5 = cortex-a76, and qemu's `max`), checking that kernel
# detection picks the expected set on each. See cross/README.md.
#
# On a fresh Debian 12 (bookworm) machine it first installs the cross toolchain from Debian
# packages (as root, or through sudo). Extra arguments go to the test binaries
# (e.g. `cross/test.sh gemm_q8` to run only matching tests).
set -euo pipefail

cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
# Debian's rustc (1.96, with the aarch64 std) builds; cargo stays whichever is on PATH.
# A separate target dir keeps its artifacts (and host build scripts compiled by a different
# rustc) from invalidating the host build's in target/.
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR="${CROSS_TARGET_DIR:-target/cross}"
# proptest cases per property under emulation (tests that set their own count keep it)
export PROPTEST_CASES="${PROPTEST_CASES:-64}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_toolchain() {
    local pkgs=(rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu
                libc6-dev-arm64-cross qemu-user-static)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "cross toolchain already installed"
        return
    fi
    echo "installing: ${missing[*]}"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        as_root dpkg --add-architecture arm64
    fi
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}"
}

install_toolchain
command -v cargo >/dev/null || { echo "no cargo on PATH (install cargo-web or rustup)"; exit 1; }
[ -d /usr/lib/rustlib/$TARGET ] || { echo "no aarch64 std in /usr/lib/rustlib"; exit 1; }

echo "== building tests for $TARGET ($(cargo --version), $($RUSTC --version))"
# the linker, runner and +crt-static come from .cargo/config.toml; --message-format lists the
# test executables so they can be run directly under each emulated CPU
# (only test-profile artifacts: the crate's own binary is built too but is not a test)
bins=$(cargo test --target "$TARGET" --no-run --message-format=json-render-diagnostics \
        | grep '"reason":"compiler-artifact"' | grep -E '"profile":\{[^}]*"test":true' \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
[ -n "$bins" ] || { echo "no test executables built"; exit 1; }

status=0
summary=""
for pair in cortex-a72:neon cortex-a76:neon-dotprod max:neon-dotprod; do
    cpu=${pair%%:*}
    want=${pair#*:}
    echo "== QEMU_CPU=$cpu, expecting kernel set $want"
    start=$SECONDS
    ok=1
    for b in $bins; do
        echo "-- $(basename "$b")"
        if ! QEMU_CPU=$cpu EDGECSM_EXPECT_KERNELS=$want qemu-aarch64-static "$b" "$@"; then
            ok=0
        fi
    done
    if [ $ok -eq 1 ]; then
        summary+="$cpu ($want): ok in $((SECONDS - start)) s"$'\n'
    else
        summary+="$cpu ($want): FAILED"$'\n'
        status=1
    fi
done
echo "== summary"
printf '%s' "$summary"
exit $status
