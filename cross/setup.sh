#!/usr/bin/env bash
# Installs the aarch64 cross toolchain from Debian 12 packages (skipped when already there):
# Debian's rustc 1.96 with the aarch64 std, the aarch64 gcc as linker and libc, the arm64
# libasound (libasound2-dev:arm64, multiarch) with the cross pkg-config that finds it
# (pkgconf:arm64 provides aarch64-linux-gnu-pkg-config), and qemu-user-static to run the
# binaries. Runs apt as root, or through sudo.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

pkgs=(rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
      libasound2-dev:arm64 pkgconf:arm64 qemu-user-static)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        as_root dpkg --add-architecture arm64
    fi
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}"
fi

# rustc-web recommends cargo-web (Debian's cargo); a rustup cargo on PATH works as well
command -v cargo >/dev/null || { echo "no cargo on PATH (install cargo-web or rustup)" >&2; exit 1; }
[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] \
    || { echo "no aarch64 std in /usr/lib/rustlib (libstd-rust-web-dev:arm64)" >&2; exit 1; }
