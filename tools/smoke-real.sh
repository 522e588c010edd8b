#!/usr/bin/env bash
# Real-size smoke test (a step of .ci/run; not timed, a few minutes): makes the synthetic
# csm-1b (q8, its Mimi codec inside; `edgecsm synth`), has `say` generate two frames and decode
# them, and starts `serve` on it (private PulseAudio null sink) and asks for `status`, so that a
# failure only real sizes show (position limits, buffer sizes, start-up memory, the on-disk
# format) breaks CI. Everything it starts is stopped by PID; the model is made in a temporary
# directory and removed (set EDGECSM_SMOKE_MODEL to reuse one).
#
#   tools/smoke-real.sh            (after `cargo build --release`; needs socat and the packages
#                                   of tools/install-deps.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/release/edgecsm"
WORK=$(mktemp -d /tmp/edgecsm-smoke.XXXXXX)
SERVE_PID=""
cleanup() {
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
  "$ROOT/tools/audio-test-setup.sh" --stop "$WORK/audio" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "smoke-real: FAILED: $*" >&2; [ -f "$WORK/serve.log" ] && cat "$WORK/serve.log" >&2; exit 1; }

[ -x "$BIN" ] || fail "$BIN missing (cargo build --release first)"
command -v socat >/dev/null || fail "socat is not installed"

MODEL="${EDGECSM_SMOKE_MODEL:-$WORK/csm-1b-q8}"
if ! [ -f "$MODEL/config.json" ]; then
  "$BIN" synth csm-1b --dtype q8 --out "$MODEL" || fail "synth"
fi

# two frames generated and decoded (0.16 s of audio)
out=$("$BIN" --threads 2 say "Real size smoke test." --model "$MODEL" --out "$WORK/s.wav" \
      --max-seconds 0.16 2>&1) || fail "say: $out"
echo "$out" | grep -q "2 frames" || fail "say did not make 2 frames: $out"
[ "$(stat -c %s "$WORK/s.wav")" -gt 7000 ] || fail "say wrote no audio"
echo "smoke-real: say: $(echo "$out" | grep 'say: done')"

# the daemon starts on it and answers status
"$ROOT/tools/audio-test-setup.sh" "$WORK/audio" >/dev/null
# shellcheck disable=SC1091
. "$WORK/audio/env.sh"
"$BIN" --threads 2 serve --capture edgecsm_cap --playback edgecsm_play --model "$MODEL" \
  --socket "$WORK/s.sock" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 600); do
  grep -q "ready in" "$WORK/serve.log" && break
  kill -0 "$SERVE_PID" 2>/dev/null || fail "serve exited"
  sleep 0.1
done
grep -q "ready in" "$WORK/serve.log" || fail "serve did not get ready in 60 s"
reply=$(echo '{"op":"status"}' | socat -t 10 - "UNIX-CONNECT:$WORK/s.sock") || fail "socket"
echo "$reply" | grep -q '"ok":true' || fail "status: $reply"
echo "$reply" | grep -q '"max_positions":2048' || fail "status is not csm-1b's: $reply"
echo "smoke-real: serve: $(grep -o 'ready in [0-9]* ms' "$WORK/serve.log"), status answered"
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || fail "serve did not stop cleanly on SIGTERM"
SERVE_PID=""
echo "smoke-real: ok"
