#!/usr/bin/env bash
# Checks that an edgecsm binary can be deployed on the boards' distributions:
#   cross/check-binary.sh BINARY
# - dynamically linked (an ELF interpreter), for aarch64 or x86_64;
# - needs no shared library beyond glibc's (libc, libm, ld.so), libgcc_s and libasound.so.2;
# - no versioned glibc symbol newer than GLIBC_FLOOR (default 2.35: Ubuntu 22.04 under
#   JetPack 6 has 2.35, Raspberry Pi OS bookworm and Debian 12 have 2.36): the dynamic loader
#   refuses to start a binary that asks for a newer GLIBC_x.y than the system's.
set -euo pipefail

bin=${1:?usage: cross/check-binary.sh BINARY}
floor=${GLIBC_FLOOR:-2.35}
fail() { echo "check-binary: $bin: $*" >&2; exit 1; }
[ -f "$bin" ] || fail "no such file"

machine=$(LC_ALL=C readelf -h "$bin" 2>/dev/null | sed -n 's/^ *Machine: *//p') \
    || fail "not an ELF file"
case "$machine" in
    AArch64) objdump=aarch64-linux-gnu-objdump ;;
    "Advanced Micro Devices X86-64") objdump=objdump ;;
    *) fail "unexpected machine '$machine'" ;;
esac
command -v "$objdump" >/dev/null || fail "$objdump is missing (binutils for the target)"

interp=$(LC_ALL=C readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ -n "$interp" ] || fail "statically linked: the deployable build links glibc and libasound dynamically"

needed=$(LC_ALL=C readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort)
for lib in $needed; do
    case "$lib" in
        libc.so.6 | libm.so.6 | libgcc_s.so.1 | libasound.so.2 | ld-linux-aarch64.so.1 | ld-linux-x86-64.so.2) ;;
        *) fail "needs $lib, which is not expected on a board (only glibc, libgcc_s, libasound)" ;;
    esac
done
grep -qx libasound.so.2 <<<"$needed" || fail "does not link libasound.so.2: built without the alsa feature?"

# the highest GLIBC_x.y[.z] version any imported symbol asks for
newest=$("$objdump" -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
[ -n "$newest" ] || fail "no versioned glibc symbols found (objdump -T)"
newer() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1)" = "$1" ]; }
if newer "$newest" "$floor"; then
    echo "symbols asking for a glibc newer than $floor:" >&2
    for v in $("$objdump" -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV); do
        if newer "$v" "$floor"; then "$objdump" -T "$bin" | grep -F "(GLIBC_$v)" | awk '{ print "  " $NF " GLIBC_'"$v"'" }' >&2; fi
    done
    fail "needs GLIBC_$newest, newer than the floor $floor"
fi
echo "check-binary: $bin: $machine, dynamic ($interp), needs $(paste -sd, <<<"$needed"), newest glibc symbol version $newest (floor $floor): ok"
