#!/usr/bin/env bash
# Release build of the deployable edgecsm binary for a board, with ALSA:
#   cross/build.sh generic|pi4|pi5|orin
# Dynamically linked against the board's glibc and libasound.so.2 (built here against Debian's
# arm64 multiarch libasound2-dev, found through aarch64-linux-gnu-pkg-config: see
# .cargo/config.toml), and checked by cross/check-binary.sh: aarch64, only the expected
# libraries, no glibc symbol newer than 2.35 (Ubuntu 22.04 / JetPack 6; Raspberry Pi OS
# bookworm has 2.36).
# `generic` (no target-cpu: ARMv8.0 + run-time kernel dispatch) runs on every board; the others
# tune codegen with cross/boards/BOARD.toml. Output: target/dist/edgecsm-BOARD.
set -euo pipefail

cd "$(dirname "$0")/.."

board=${1:-}
case "$board" in
    generic) cfg=() ;;
    pi4 | pi5 | orin) cfg=(--config "cross/boards/$board.toml") ;;
    *)
        echo "usage: cross/build.sh generic|pi4|pi5|orin" >&2
        exit 2
        ;;
esac
if [ -n "${RUSTFLAGS:-}${CARGO_ENCODED_RUSTFLAGS:-}" ]; then
    echo "RUSTFLAGS is set: it would replace the board's flags from cross/boards; unset it" >&2
    exit 2
fi

cross/setup.sh

TARGET=aarch64-unknown-linux-gnu
export RUSTC=/usr/bin/rustc
# one target dir per board: the flags differ, so sharing one would rebuild everything each time
export CARGO_TARGET_DIR="target/cross-$board"
cargo build --release --target "$TARGET" --bin edgecsm "${cfg[@]}"

out="$CARGO_TARGET_DIR/$TARGET/release/edgecsm"
cross/check-binary.sh "$out"
mkdir -p target/dist
cp "$out" "target/dist/edgecsm-$board"
echo "built target/dist/edgecsm-$board ($(du -h "$out" | cut -f1))"
