#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages edgecsm needs to build and test on this machine (x86_64 or
# a board): a C toolchain and pkg-config (linking, build scripts), libasound2-dev (the ALSA
# audio I/O), and for the real-time ALSA tests alsa-utils, libasound2-plugins (the `pulse` PCM),
# pulseaudio and pulseaudio-utils (the tests start and kill a private PulseAudio themselves).
# Skips the install when everything is present; uses sudo when not run as root.
set -euo pipefail

PKGS="build-essential pkg-config libasound2-dev alsa-utils libasound2-plugins pulseaudio pulseaudio-utils"

# shellcheck disable=SC2086
if dpkg -s $PKGS >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
echo "installed: $PKGS" >&2
