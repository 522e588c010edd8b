#!/usr/bin/env bash
# Shows why a dynamically linked aarch64 program "hangs at its first thread" under qemu-user on
# a Debian x86_64 machine with the cross toolchain (cross/README.md, "Dynamic binaries under
# qemu-user"): a 10-line C program that starts one thread is run with four library set-ups,
# each for at most 5 s, and the two glibc builds involved are compared.
#   cross/qemu-glibc-mix.sh          (after cross/setup.sh; changes nothing on the system)
set -uo pipefail

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/t.c" <<'EOF'
#include <pthread.h>
#include <stdio.h>
static void *f(void *a) { return a; }
int main(void) {
    pthread_t t;
    if (pthread_create(&t, 0, f, 0) || pthread_join(t, 0)) return 1;
    puts("thread started and joined");
    return 0;
}
EOF
aarch64-linux-gnu-gcc -O1 -pthread "$work/t.c" -o "$work/t" || exit 1

cross=/usr/aarch64-linux-gnu/lib # libc6-arm64-cross: the cross compiler's sysroot
multi=/lib/aarch64-linux-gnu     # libc6:arm64: Debian's multiarch package
ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }
qemu-aarch64-static --version | head -1
echo "libc6-arm64-cross $(ver libc6-arm64-cross) in $cross; libc6:arm64 $(ver libc6:arm64) in $multi"
for d in "$cross" "$multi"; do
    size=$(aarch64-linux-gnu-readelf --dyn-syms -W "$d/ld-linux-aarch64.so.1" \
        | awk '$NF ~ /^_rtld_global@@/ { print $3 }')
    echo "  $d/ld-linux-aarch64.so.1: _rtld_global is $size bytes"
done

try() { # LABEL QEMU-ARGS...
    local label=$1
    shift
    local out rc
    out=$(timeout 5 qemu-aarch64-static "$@" "$work/t" 2>&1)
    rc=$?
    if [ $rc -eq 124 ]; then out="HANGS (killed after 5 s)"; fi
    printf '%-58s %s\n' "$label" "$out"
}
echo
try "-L /usr/aarch64-linux-gnu: ld.so cross, libc.so.6 multiarch" -L /usr/aarch64-linux-gnu
try "-L /: ld.so and libc.so.6 both multiarch" -L /
try "-L /usr/aarch64-linux-gnu + LD_LIBRARY_PATH: both cross" \
    -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH="$cross"
try "-L / + LD_LIBRARY_PATH: ld.so multiarch, libc.so.6 cross" -L / -E LD_LIBRARY_PATH="$cross"
echo
echo "qemu -L is an overlay: each path is looked up under the prefix first, then on the host."
echo "The cross sysroot has ld.so in lib/ but no lib/aarch64-linux-gnu/, the directory ld.so"
echo "searches, so libc.so.6 comes from the host's multiarch package: two glibc builds whose"
echo "private ld.so/libc.so.6 interface (_rtld_global) differs, in one process."
