#!/usr/bin/env bash
# Release build of the static edgecsm binary for a board:
#   cross/build.sh generic|pi4|pi5|orin
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
    echo "RUSTFLAGS is set: it would replace the static-linking and board flags; unset it" >&2
    exit 2
fi

cross/setup.sh

TARGET=aarch64-unknown-linux-gnu
export RUSTC=/usr/bin/rustc
# one target dir per board: the flags differ, so sharing one would rebuild everything each time
export CARGO_TARGET_DIR="target/cross-$board"
cargo build --release --target "$TARGET" --bin edgecsm "${cfg[@]}"

out="$CARGO_TARGET_DIR/$TARGET/release/edgecsm"
if aarch64-linux-gnu-readelf -l "$out" | grep -q INTERP; then
    echo "$out is dynamically linked (expected +crt-static from .cargo/config.toml)" >&2
    exit 1
fi
mkdir -p target/dist
cp "$out" "target/dist/edgecsm-$board"
echo "built target/dist/edgecsm-$board (static, $(du -h "$out" | cut -f1))"
