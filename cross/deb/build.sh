#!/usr/bin/env bash
# Builds the edgecsm Debian package from an already built binary, then checks it with lintian:
#   cross/deb/build.sh arm64 [BINARY]   (default target/dist/edgecsm-generic: cross/build.sh)
#   cross/deb/build.sh amd64 [BINARY]   (default target/release/edgecsm: cargo build --release)
# Output: target/dist/edgecsm_VERSION-REV_ARCH.deb (REV: $DEB_REVISION, default 1).
#
# Contents: /usr/bin/edgecsm (stripped), /lib/systemd/system/edgecsm.service,
# /etc/edgecsm/serve.conf (a conffile), the empty models directory /var/lib/edgecsm/models,
# /usr/share/doc/edgecsm/{README.md,copyright,changelog.Debian.gz,examples/realtime.conf}, and
# the maintainer scripts in cross/deb/ (user edgecsm; nothing enabled or started).
# Depends: what dpkg-shlibdeps finds the binary needs (libc6, libgcc-s1, libasound2), adduser.
# Needs dpkg-dev and lintian (installed when missing, as root or through sudo); the arm64
# dependencies are read from the arm64 multiarch packages cross/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/../.."

arch=${1:-}
case "$arch" in
    arm64) bin=${2:-target/dist/edgecsm-generic} machine=AArch64 strip=aarch64-linux-gnu-strip ;;
    amd64) bin=${2:-target/release/edgecsm} machine="Advanced Micro Devices X86-64" strip=strip ;;
    *)
        echo "usage: cross/deb/build.sh arm64|amd64 [BINARY]" >&2
        exit 2
        ;;
esac
fail() { echo "deb/build.sh: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

for p in dpkg-dev lintian; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            dpkg-dev lintian >/dev/null
        break
    fi
done

[ -f "$bin" ] || fail "no binary $bin"
got=$(LC_ALL=C readelf -h "$bin" | sed -n 's/^ *Machine: *//p')
[ "$got" = "$machine" ] || fail "$bin is for '$got', not $arch"
# dynamic, libasound, nothing unexpected, glibc floor 2.35
cross/check-binary.sh "$bin"

upstream=$(sed -n '/^\[package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$upstream" ] || fail "no version in Cargo.toml"
version="$upstream-${DEB_REVISION:-1}"
maintainer=${DEB_MAINTAINER:-"edgecsm developers <edgecsm@example.org>"}
# reproducible: file times and the changelog date from the last commit
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/debian/edgecsm" # dpkg-shlibdeps wants the debian/PACKAGE layout
doc="$root/usr/share/doc/edgecsm"
umask 022
install -D -m 0755 "$bin" "$root/usr/bin/edgecsm"
"$strip" --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/edgecsm"
install -D -m 0644 cross/systemd/edgecsm.service "$root/lib/systemd/system/edgecsm.service"
install -D -m 0644 cross/deb/serve.conf "$root/etc/edgecsm/serve.conf"
install -d -m 0755 "$root/var/lib/edgecsm/models"
install -D -m 0644 cross/README.md "$doc/README.md"
install -D -m 0644 cross/systemd/realtime.conf "$doc/examples/realtime.conf"
install -D -m 0644 cross/deb/copyright "$doc/copyright"
cat >"$stage/changelog" <<EOF
edgecsm ($version) unstable; urgency=medium

  * Package built from the edgecsm repository (cross/deb/build.sh).

 -- $maintainer  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF
gzip -9n <"$stage/changelog" >"$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"

install -d -m 0755 "$root/DEBIAN"
for s in postinst prerm postrm; do install -m 0755 "cross/deb/$s" "$root/DEBIAN/$s"; done
echo /etc/edgecsm/serve.conf >"$root/DEBIAN/conffiles"

# the binary's library dependencies, with the versions its symbols need
touch "$stage/debian/control"
shlibs=$(cd "$stage" && dpkg-shlibdeps -O debian/edgecsm/usr/bin/edgecsm | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || fail "dpkg-shlibdeps found no dependencies"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: edgecsm
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $shlibs, adduser
Section: sound
Priority: optional
Description: CPU speech runtime for ARM boards: Mimi codec and CSM voice daemon
 edgecsm runs Kyutai's Mimi audio codec and Sesame's CSM speech model on the
 CPU from memory-mapped int8/fp16 weights, with a fixed-size ALSA audio loop,
 for Raspberry Pi 4/5 and Jetson Orin class boards.
 .
 The package installs the edgecsm command, the systemd unit edgecsm.service
 ("edgecsm serve" as the system user edgecsm, in group audio), its
 configuration /etc/edgecsm/serve.conf and the models directory
 /var/lib/edgecsm/models. No model is included and the service is neither
 enabled nor started: see /usr/share/doc/edgecsm/README.md.
EOF
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) \
    >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

mkdir -p target/dist
deb="target/dist/edgecsm_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "built $deb ($(du -h "$deb" | cut -f1)); Depends: $shlibs, adduser"

# lintian: errors fail the build; warnings are printed
echo "lintian $deb:"
status=0
lintian --fail-on error --tag-display-limit 0 "$deb" >"$stage/lintian" 2>&1 || status=$?
grep -v "^running with root privileges" "$stage/lintian" | sed 's/^/  /' || true
[ "$status" -eq 0 ] || fail "lintian reports errors (or failed, status $status)"
echo "lintian: no errors"
