#!/usr/bin/env bash
# Runs the deployable (dynamically linked, ALSA) aarch64 edgecsm under qemu-user against this
# machine's arm64 multiarch libraries (libc6:arm64, libasound2:arm64 in /lib/aarch64-linux-gnu):
#   --version; `devices`; `loop` over alsa-lib's file plugin with models/mimi-tiny; `serve` with
#   models/csm-tiny answering `status` and a `say` on its socket.
#
#   cross/qemu-smoke.sh [BINARY]     (default target/dist/edgecsm-generic, from cross/build.sh)
#
# QEMU_CPU (default cortex-a72, the Pi 4: the smallest feature set of the boards) picks the
# emulated CPU. The qemu runner is given `-L /`: one consistent glibc (see cross/README.md,
# "Dynamic binaries under qemu-user", for why `-L /usr/aarch64-linux-gnu` hangs).
# Installs what it needs (cross/setup.sh, socat) as root or through sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target/dist/edgecsm-generic}
[ -f "$BIN" ] || { echo "no binary $BIN (cross/build.sh generic makes it)" >&2; exit 1; }
BIN=$(realpath "$BIN")
export QEMU_CPU=${QEMU_CPU:-cortex-a72}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
cross/setup.sh
if ! command -v socat >/dev/null; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null
fi

run() { qemu-aarch64-static -L / "$BIN" "$@"; }
fail() { echo "qemu-smoke: FAILED: $*" >&2; exit 1; }

work=$(mktemp -d)
serve_pid=""
cleanup() {
    if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then kill -KILL "$serve_pid"; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== $BIN under qemu-aarch64-static (QEMU_CPU=$QEMU_CPU)"
v=$(run --version) || fail "--version"
echo "$v"
[[ "$v" == "edgecsm "* ]] || fail "--version printed '$v'"

echo "== devices (the stock ALSA configuration)"
run devices >"$work/devices" || fail "devices"
grep -qx "null" "$work/devices" || fail "devices does not list the null PCM: $(head -5 "$work/devices")"
echo "$(grep -c '^[^ ]' "$work/devices") PCMs listed, null among them"

# A configuration of our own only (ALSA_CONFIG_PATH replaces the stock one): the stock one
# loads the x86_64 pulse plugin's hooks from /usr/share/alsa/alsa.conf.d, which an arm64
# process cannot load (on a board the plugins match the binary).
frames=30
frame_bytes=$((1920 * 2))
# raw S16_LE input, longer than the run (the file plugin repeats stale data past its end)
for _ in 1 2 3; do tail -c +45 models/mimi-tiny/sample.wav; done >"$work/in.raw"
cat >"$work/asound.conf" <<EOF
pcm.smoke_cap { type file slave.pcm { type null } file "/dev/null" infile "$work/in.raw" format "raw" }
pcm.smoke_play { type file slave.pcm { type null } file "$work/out.raw" format "raw" }
pcm.serve_cap { type file slave.pcm { type null } file "/dev/null" infile "/dev/zero" format "raw" }
pcm.serve_play { type file slave.pcm { type null } file "/dev/null" format "raw" }
EOF
export ALSA_CONFIG_PATH="$work/asound.conf"

echo "== loop: file plugin -> Mimi (models/mimi-tiny, 4 threads) -> file plugin, $frames frames"
seconds=$(awk "BEGIN { print ($frames - 0.5) * 0.08 }")
run --threads 4 loop --capture smoke_cap --playback smoke_play --model models/mimi-tiny \
    --seconds "$seconds" --lossless --report-every 0 >"$work/loop.out" 2>&1 \
    || { cat "$work/loop.out"; fail "loop"; }
grep -q "played $frames" "$work/loop.out" || { cat "$work/loop.out"; fail "loop did not play $frames frames"; }
want=$(((1 + frames) * frame_bytes)) # one period of prefill silence, then the frames
got=$(stat -c %s "$work/out.raw")
[ "$got" -eq "$want" ] || fail "loop wrote $got bytes, expected $want"
# the decoded frames are sound, not silence
if cmp -s <(tail -c $((frames * frame_bytes)) "$work/out.raw") <(head -c $((frames * frame_bytes)) /dev/zero); then
    fail "loop played only silence"
fi
grep -E "^(frames|xruns):" "$work/loop.out"

echo "== serve: models/csm-tiny on file-plugin devices, status and say over the socket"
sock="$work/edgecsm.sock"
# not through run(): $! must be qemu's own PID, so that SIGTERM reaches the daemon
qemu-aarch64-static -L / "$BIN" --threads 2 serve --capture serve_cap --playback serve_play --model models/csm-tiny \
    --socket "$sock" --report-every 0 >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 300); do
    [ -S "$sock" ] && break
    kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log"; fail "serve exited at start-up"; }
    sleep 0.1
done
[ -S "$sock" ] || { cat "$work/serve.log"; fail "serve made no socket in 30 s"; }
status=$(echo '{"op":"status"}' | timeout 20 socat -t 10 - "UNIX-CONNECT:$sock")
echo "${status:0:160}..."
[[ "$status" == *'"ok":true'* && "$status" == *'"op":"status"'* && "$status" == *'csm-tiny'* ]] \
    || fail "status answered: $status"
said=$(echo '{"op":"say","text":"hello from the board"}' | timeout 60 socat -t 50 - "UNIX-CONNECT:$sock" \
       | grep -m1 '"event":"done"' || true)
echo "$said"
[[ "$said" =~ \"played\":[1-9] ]] || { cat "$work/serve.log"; fail "say: no done event with frames played"; }
kill -TERM "$serve_pid"
for _ in $(seq 100); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$serve_pid" 2>/dev/null; then
    # Known, not qemu's: with a capture PCM that never makes it wait (the file plugin), the
    # capture thread checks the stop flag only when a read would block (src/stream), so serve
    # does not stop on SIGTERM; the same happens natively on x86_64. Real devices are clocked.
    echo "note: serve did not stop within 10 s of SIGTERM (always-ready file-plugin capture; known): killed"
    kill -KILL "$serve_pid"
    wait "$serve_pid" 2>/dev/null || true
else
    rc=0; wait "$serve_pid" || rc=$?
    [ "$rc" -eq 0 ] || { cat "$work/serve.log"; fail "serve exited with status $rc after SIGTERM"; }
    [ ! -e "$sock" ] || fail "serve left its socket behind"
fi
serve_pid=""
echo "qemu-smoke: ok"
