#!/usr/bin/env bash
# Real-size numbers in one command, measured as a user runs the program: makes the synthetic
# full-size models if missing (`edgecsm synth`, under target/real; random weights at the
# published shapes: speed is real, sound is not), then prints one table:
#
#   generate   ms per frame and prefill tokens/s (difference of a 31- and a 95-token prompt),
#              csm-1b q8, per thread count
#   say        per-frame time and real-time factor per thread count, quiet and beside one
#              normal-priority busy process (`sh -c 'while :; do :; done'`)
#   serve      csm-1b q8 on a private PulseAudio null sink: ready time, a 10 s utterance's text
#              to first sound, playback wait, generation_frame_ms p50, underruns (frame thread
#              late), speech underruns, rebuffers, dropped periods
#   loop       kyutai/mimi q8, --threads 1, 60 s on the null sink: frame p50/p99, late periods
#   Mimi       streaming encode+decode per frame (cargo bench --bench mimi, interleaved)
#   PyTorch    with --torch VENV (a virtualenv with torch + transformers, tools/README.md):
#              the same CSM and Mimi in transformers, same machine, same run
#
# The prefill's peer is llama.cpp at the backbone's shape: tools/peer-llamacpp.sh builds it and
# prints llama-bench pp32 beside the same prefill measurement, interleaved in one run.
#
#   tools/bench-real.sh [--torch VENV] [--threads "1 2"] [--say-frames 60] [--skip-serve]
#                       [--skip-loop] [--skip-mimi] [--models DIR] [--dtype q8]
#                       [--codebooks N]
#
# --dtype picks the csm-1b conversion (any `quantize --dtype` policy: q8, q4, q4-q8heads, ...);
# --codebooks N is passed to generate, say and serve (the depth decoder runs N-1 passes).
#
# Everything it starts (PulseAudio, the daemon, the busy process) is stopped by PID. Needs the
# packages of tools/install-deps.sh and python3 (stdlib only) for the socket client.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/release/edgecsm"
MODELS="${EDGECSM_REAL_MODELS:-$ROOT/target/real}"
TORCH=""
THREADS="1 $(nproc)"
SAY_FRAMES=60
SKIP_SERVE=0
SKIP_LOOP=0
SKIP_MIMI=0
DTYPE=q8
CODEBOOKS=()

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --torch) TORCH="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --say-frames) SAY_FRAMES="$2"; shift 2 ;;
    --skip-serve) SKIP_SERVE=1; shift ;;
    --skip-loop) SKIP_LOOP=1; shift ;;
    --skip-mimi) SKIP_MIMI=1; shift ;;
    --models) MODELS="$2"; shift 2 ;;
    --dtype) DTYPE="$2"; shift 2 ;;
    --codebooks) CODEBOOKS=(--codebooks "$2"); shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "bench-real.sh: unknown argument '$1'" >&2; usage 2 >&2 ;;
  esac
done
THREADS=$(echo "$THREADS" | tr ',' ' ' | tr ' ' '\n' | sort -nu | tr '\n' ' ')

WORK=$(mktemp -d /tmp/edgecsm-bench-real.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -d "$WORK/audio" ] && "$ROOT/tools/audio-test-setup.sh" --stop "$WORK/audio" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== build" >&2
(cd "$ROOT" && cargo build --release --quiet)

# the on-disk format this build writes: a model made by an older build is made again
FORMAT=$(sed -n 's/^pub const FORMAT_VERSION: u32 = \([0-9]*\);/\1/p' "$ROOT/src/weights/mod.rs")
model() { # preset dtype -> dir (made if missing or of another format, as the benches do)
  local dir="$MODELS/$1-$2"
  if ! grep -q "format $FORMAT\$" "$dir/synth.stamp" 2>/dev/null; then
    rm -rf "$dir"
    mkdir -p "$MODELS"
    echo "== making the synthetic $1 ($2) in $dir" >&2
    "$BIN" synth "$1" --dtype "$2" --out "$dir" >&2
  fi
  echo "$dir"
}
CSM=$(model csm-1b "$DTYPE")
MIMI=$(model mimi q8)

# int64 .npy of token ids: bos, n-2 text ids, eos (the bundled tokenizer's range)
ids_npy() {
  python3 - "$1" "$2" <<'PY'
import struct, sys
n, path = int(sys.argv[1]), sys.argv[2]
ids = [480] + [(i * 37 + 11) % 470 for i in range(n - 2)] + [481]
hdr = "{'descr': '<i8', 'fortran_order': False, 'shape': (%d,), }" % len(ids)
hdr += " " * (63 - (len(hdr) + 10) % 64) + "\n"
with open(path, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    f.write(struct.pack("<%dq" % len(ids), *ids))
PY
}
ids_npy 31 "$WORK/ids31.npy"
ids_npy 95 "$WORK/ids95.npy"
ids_npy 20 "$WORK/ids20.npy"

# seconds to the first frame of a `generate` summary line
first_frame() { sed -n 's/.*first frame after \([0-9.]*\) s.*/\1/p'; }
per_frame() { sed -n 's/.*then \([0-9.]*\) ms per frame.*/\1/p'; }

echo
echo "# $("$BIN" --version) at real size ($(date -u +%Y-%m-%d), $(nproc) CPUs); synthetic \
csm-1b $DTYPE${CODEBOOKS[1]:+, ${CODEBOOKS[1]} codebooks} ($CSM)"
echo
echo "| what | threads | beside | result |"
echo "|---|---|---|---|"

# one run first so the timed ones find the weights in the page cache (a model just made or
# converted is not, and the first prompt would pay for it)
"$BIN" generate --model "$CSM" --input-ids "$WORK/ids31.npy" --max-frames 2 "${CODEBOOKS[@]}" \
  --out "$WORK/c.npy" >/dev/null
for t in $THREADS; do
  a=$("$BIN" --threads "$t" generate --model "$CSM" --input-ids "$WORK/ids31.npy" \
      --max-frames 1 "${CODEBOOKS[@]}" --out "$WORK/c.npy" | first_frame)
  b=$("$BIN" --threads "$t" generate --model "$CSM" --input-ids "$WORK/ids95.npy" \
      --max-frames 1 "${CODEBOOKS[@]}" --out "$WORK/c.npy" | first_frame)
  g=$("$BIN" --threads "$t" generate --model "$CSM" --input-ids "$WORK/ids20.npy" \
      --max-frames 20 --top-k 50 --temperature 0.9 "${CODEBOOKS[@]}" --out "$WORK/c.npy" | per_frame)
  pf=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", 64 / (b - a) }')
  echo "| generate (20 frames) | $t | nothing | $g ms/frame; prefill $pf tokens/s |"
done

busy_start() { sh -c 'while :; do :; done' & BUSY=$!; PIDS+=("$BUSY"); }
busy_stop() { kill "$BUSY" 2>/dev/null || true; wait "$BUSY" 2>/dev/null || true; }
say_row() { # threads beside
  local line ms rtf
  line=$("$BIN" --threads "$1" say "Real size, frame after frame, as a user runs it." \
        --model "$CSM" "${CODEBOOKS[@]}" --out "$WORK/s.wav" --max-seconds "$(awk -v f="$SAY_FRAMES" \
        'BEGIN { print f * 0.08 }')" 2>&1 | grep 'say: done')
  ms=$(echo "$line" | per_frame)
  rtf=$(awk -v m="$ms" 'BEGIN { printf "%.2f", m / 80 }')
  echo "| say ($SAY_FRAMES frames) | $1 | $2 | $ms ms/frame after the first (RTF $rtf) |"
}
for beside in nothing "a busy process"; do
  [ "$beside" = nothing ] || busy_start
  for t in $THREADS; do say_row "$t" "$beside"; done
  [ "$beside" = nothing ] || busy_stop
done

if [ "$SKIP_SERVE" = 0 ] || [ "$SKIP_LOOP" = 0 ]; then
  "$ROOT/tools/audio-test-setup.sh" "$WORK/audio" >/dev/null
  # shellcheck disable=SC1091
  . "$WORK/audio/env.sh"
fi

if [ "$SKIP_SERVE" = 0 ]; then
  st=$(echo "$THREADS" | awk '{ print $NF }')
  "$BIN" --threads "$st" serve --capture edgecsm_cap --playback edgecsm_play --model "$CSM" "${CODEBOOKS[@]}" \
    --socket "$WORK/s.sock" --barge-in off --max-seconds 10 >"$WORK/serve.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 600); do grep -q "ready in" "$WORK/serve.log" && break; sleep 0.1; done
  python3 - "$WORK/s.sock" "$st" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
def send(o):
    f.write(json.dumps(o) + "\n"); f.flush()
def recv():
    return json.loads(f.readline())
# the counters over the utterance only (the stream's start-up is not part of it)
send({"op": "status"}); c0 = recv()["status"]["counters"]
send({"op": "say", "text": "A ten second utterance from the daemon at real size.",
      "max_seconds": 10}); recv()
started = recv(); done = recv()
send({"op": "status"}); st = recv()["status"]
l = st["latency"]
c = {k: v - c0.get(k, 0) for k, v in st["counters"].items() if isinstance(v, (int, float))}
print("| serve (10 s utterance) | %s | nothing | ready %.0f ms; text to first sound %.0f ms "
      "(expected wait %s, playback wait %.0f ms); generation_frame_ms p50 %.0f p99 %.0f; "
      "played %d/%d; underruns %d, speech underruns %d, rebuffers %d, dropped %d, xruns %d |"
      % (sys.argv[2], st["ready_ms"], done["text_to_first_sound_ms"] or -1,
         started.get("expected_wait_ms"), l["playback_wait_ms"]["max"],
         l["generation_frame_ms"]["p50"], l["generation_frame_ms"]["p99"], done["played"],
         done["frames"], c["underruns"], c["speech_underruns"], c["rebuffers"], c["dropped"],
         c["xruns"]))
PY
fi

if [ "$SKIP_LOOP" = 0 ]; then
  j=$("$BIN" --threads 1 loop --capture edgecsm_cap --playback edgecsm_play --model "$MIMI" \
      --seconds 60 --json 2>/dev/null | tail -1)
  python3 - "$j" <<'PY'
import json, sys
j = json.loads(sys.argv[1])["loop_summary"]
w, ft = j["after_warmup"] or {}, j["frame_time_us"]
print("| loop (kyutai/mimi q8, 60 s) | 1 | nothing | frame p50 %.1f ms, p99 %.1f ms, max %.1f ms; "
      "after warm-up: late %s, dropped %s, xruns %s |"
      % (ft["p50"] / 1e3, ft["p99"] / 1e3, ft["max"] / 1e3, w.get("late"), w.get("dropped"),
         w.get("xruns")))
PY
fi

if [ "$SKIP_MIMI" = 0 ]; then
  echo
  echo "Mimi streaming (cargo bench --bench mimi -- --dtype q8 --threads 1):"
  (cd "$ROOT" && cargo bench --quiet --bench mimi -- --dtype q8 --threads 1 2>/dev/null) \
    | grep -E "interleaved|streaming|p50" | sed 's/^/    /' || true
fi

if [ -n "$TORCH" ]; then
  echo
  echo "PyTorch (transformers) on the same machine, same run:"
  for t in $THREADS; do
    "$TORCH/bin/python" "$ROOT/tools/bench_csm_torch.py" --threads "$t" --frames 6
  done
  "$TORCH/bin/python" "$ROOT/tools/bench_mimi_torch.py" --threads $THREADS --seconds 10
fi
