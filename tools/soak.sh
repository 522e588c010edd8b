#!/usr/bin/env bash
# Soak test of the real-time audio loop on real ALSA without sound hardware: `edgecsm loop`
# (release build) runs capture -> Mimi encode -> decode -> playback for N minutes on a private
# PulseAudio null sink (ALSA `pulse` plugin, clocked in real time; the sink's monitor is the
# capture, so the loop hears what it plays), optionally against a competing CPU load, while
# its resident memory is sampled. Prints xruns, late and dropped frames, p50/p99/max frame
# time, the latency bound, allocations on the loop's threads after warm-up, and RSS at 1 minute
# vs at the end ("memory use after 10 minutes equals memory use after 1 minute").
#
#   tools/soak.sh [--minutes 10] [--load] [--cpu 0|none] [--model DIR] [--threads 1]
#                 [--sample 5] [--out DIR] [--bin PATH]
#
#   --load      one busy loop on every CPU but the loop's (`sh -c 'while :; do :; done'`,
#               pinned with taskset), killed by PID at the end
#   --cpu N     pin the loop to CPU N (default 0, as an appliance's CPUAffinity would);
#               `none` leaves it to the scheduler
#   --out DIR   keep the loop's log, the RSS samples and the JSON summary there
#               (default: a new directory under /tmp)
#
# Exit status 0 only if, after the warm-up, there were no xruns, no late or dropped frames and
# no allocations, and RSS at the end equals RSS at 1 minute. Needs the packages of
# `tools/audio-test-setup.sh --packages` (installed when missing) and python3 or jq for the
# JSON. Everything it starts (PulseAudio, its monitor readers, the load) is stopped by PID.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MINUTES=10
LOAD=0
CPU=0
MODEL="$ROOT/models/mimi-tiny"
THREADS=1
SAMPLE=5
OUT=""
BIN="$ROOT/target/release/edgecsm"
WARMUP=3

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES="$2"; shift 2 ;;
    --load) LOAD=1; shift ;;
    --cpu) CPU="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --sample) SAMPLE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "soak.sh: unknown argument '$1'" >&2; usage 2 >&2 ;;
  esac
done
case "$MINUTES" in ''|*[!0-9.]*) echo "soak.sh: --minutes must be a number, got '$MINUTES'" >&2; exit 2 ;; esac
SECONDS_TOTAL=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')
if [ "$SECONDS_TOTAL" -lt 70 ]; then
  echo "soak.sh: --minutes must be at least 70 s worth (RSS is compared at 1 minute and the end)" >&2
  exit 2
fi
NCPU=$(nproc)
if [ "$CPU" != none ] && ! [ "$CPU" -lt "$NCPU" ] 2>/dev/null; then
  echo "soak.sh: --cpu must be none or a CPU number below $NCPU, got '$CPU'" >&2
  exit 2
fi

"$ROOT/tools/audio-test-setup.sh" --packages >/dev/null
if [ ! -x "$BIN" ]; then
  echo "soak.sh: building the release binary ($BIN)"
  (cd "$ROOT" && cargo build --release --bin edgecsm)
fi

[ -n "$OUT" ] || OUT="$(mktemp -d /tmp/edgecsm-soak.XXXXXX)"
mkdir -p "$OUT"
RIG="$(mktemp -d /tmp/edgecsm-soak-rig.XXXXXX)"
LOAD_PIDS=()
LOOP_PID=""
SAMPLER_PID=""

cleanup() {
  local p
  for p in "$SAMPLER_PID" "$LOOP_PID" "${LOAD_PIDS[@]}"; do
    if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi
  done
  for p in "$SAMPLER_PID" "$LOOP_PID" "${LOAD_PIDS[@]}"; do
    if [ -n "$p" ]; then wait "$p" 2>/dev/null || true; fi
  done
  # the rig's PulseAudio and its monitor readers, by the PIDs it recorded
  "$ROOT/tools/audio-test-setup.sh" --stop "$RIG" >/dev/null 2>&1 || true
  rm -rf "$RIG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# a private PulseAudio with null sinks; the loop uses edgecsm_loop (play into the sink,
# capture from its monitor)
"$ROOT/tools/audio-test-setup.sh" "$RIG" >/dev/null
# shellcheck disable=SC1091
. "$RIG/env.sh"

if [ "$LOAD" = 1 ]; then
  for c in $(seq 0 $((NCPU - 1))); do
    [ "$c" = "$CPU" ] && continue
    taskset -c "$c" sh -c 'while :; do :; done' &
    LOAD_PIDS+=("$!")
  done
  [ "$CPU" = none ] && { sh -c 'while :; do :; done' & LOAD_PIDS+=("$!"); }
fi

PIN=()
[ "$CPU" = none ] || PIN=(taskset -c "$CPU")
echo "soak: ${MINUTES} min of edgecsm loop on PulseAudio null sink edgecsm_loop;" \
  "model $MODEL, $THREADS compute thread(s), loop CPU $CPU, load: ${#LOAD_PIDS[@]} busy loop(s);" \
  "output in $OUT"
"${PIN[@]}" "$BIN" --threads "$THREADS" loop --capture edgecsm_loop --playback edgecsm_loop \
  --model "$MODEL" --seconds "$SECONDS_TOTAL" --report-every 60 --warmup "$WARMUP" --json \
  >"$OUT/loop.log" 2>&1 &
LOOP_PID=$!

# sampler, every $SAMPLE s while the loop lives: seconds since start, VmRSS, RssAnon (heap,
# stacks), RssFile (mapped files: binary, libraries, the model), RssShmem (shared memory: the
# PulseAudio client's memory pool) in kB, and the process's CPU time so far (utime + stime, in
# clock ticks)
(
  t0=$(date +%s.%N)
  while [ -r "/proc/$LOOP_PID/status" ]; do
    rss=$(awk '/^(VmRSS|RssAnon|RssFile|RssShmem):/ { printf "%s ", $2 }' \
      "/proc/$LOOP_PID/status" 2>/dev/null || true)
    # fields after the ")" that ends the command name: utime and stime are the 12th and 13th
    cpu=$(sed 's/.*) //' "/proc/$LOOP_PID/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true)
    if [ -n "$rss" ] && [ -n "$cpu" ]; then
      echo "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }') $rss$cpu"
    fi
    sleep "$SAMPLE"
  done
) >"$OUT/rss.txt" &
SAMPLER_PID=$!

STATUS=0
wait "$LOOP_PID" || STATUS=$?
LOOP_PID=""
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""

if [ "$STATUS" -ne 0 ] || ! grep -q '^{"loop_summary"' "$OUT/loop.log"; then
  echo "soak: edgecsm loop failed (exit $STATUS); its output:" >&2
  cat "$OUT/loop.log" >&2
  exit 1
fi
grep '^{"loop_summary"' "$OUT/loop.log" | tail -n 1 >"$OUT/summary.json"

# memory at 1 minute: the first sample at or after 60 s; at the end: the last sample (the loop
# still running). Columns: 1 t, 2 VmRSS, 3 RssAnon, 4 RssFile, 5 RssShmem, 6 CPU ticks
at_1m() { awk -v c="$1" '$1 >= 60 { print $c; exit }' "$OUT/rss.txt"; }
at_end() { tail -n 1 "$OUT/rss.txt" | awk -v c="$1" '{ print $c }'; }
RSS_1M_T=$(at_1m 1)
RSS_END_T=$(at_end 1)
RSS_1M=$(at_1m 2)
RSS_END=$(at_end 2)
RSS_MIN=$(awk 'NR == 1 || $2 < m { m = $2 } END { print m }' "$OUT/rss.txt")
RSS_MAX=$(awk '$2 > m { m = $2 } END { print m }' "$OUT/rss.txt")
RSS_AFTER_1M_MAX=$(awk '$1 >= 60 && $2 > m { m = $2 } END { print m }' "$OUT/rss.txt")
# where VmRSS changed after 1 minute: "t kB" steps
RSS_STEPS=$(awk '$1 >= 60 { if (p != "" && $2 != p) { printf "%s%s s: %+d kB", sep, $1, $2 - p; sep = ", " } p = $2 }' "$OUT/rss.txt")
# CPU use of the loop process, in % of one core, from its first to its last sample
CPU_PCT=$(awk -v hz="$(getconf CLK_TCK)" 'NR == 1 { t0 = $1; c0 = $6 } { t = $1; c = $6 }
  END { if (t > t0) printf "%.1f", 100 * (c - c0) / hz / (t - t0); else print "?" }' "$OUT/rss.txt")

j() { jq -r "$1" "$OUT/summary.json"; }
if ! command -v jq >/dev/null; then
  j() { python3 -c 'import json,sys
v=json.load(open(sys.argv[2]))
for k in sys.argv[1].lstrip(".").split("."):
    v=v[k]
print("null" if v is None else v)' "$1" "$OUT/summary.json"; }
fi
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }

S=.loop_summary
W=$S.after_warmup
echo
echo "=== edgecsm loop soak: $(j $S.elapsed_s | awk '{ printf "%.1f", $1 }') s, load: $([ "$LOAD" = 1 ] && echo "${#LOAD_PIDS[@]} busy loop(s) on the other CPU(s)" || echo none) ==="
echo "frames: captured $(j $S.frames.captured), processed $(j $S.frames.processed), played $(j $S.frames.played)"
echo "xruns (whole run): $(j $S.xruns.total) (capture $(j $S.xruns.capture), playback $(j $S.xruns.playback), unreported capture backlogs $(j $S.xruns.capture_backlog_drops))"
echo "late frames (silence played, whole run): $(j $S.late)"
echo "dropped frames (whole run): $(j $S.dropped.total) (capture ring full $(j $S.dropped.capture_ring_full), compute catch-up $(j $S.dropped.compute_skipped), playback ring full $(j $S.dropped.playback_ring_full), stale $(j $S.dropped.playback_stale))"
echo "after warm-up (from $(j $W.from_s | awk '{ printf "%.1f", $1 }') s, $(j $W.processed) frames): xruns $(j $W.xruns), late $(j $W.late), dropped $(j $W.dropped), allocations $(j $W.allocations)"
echo "frame compute time: p50 $(ms "$(j $S.frame_time_us.p50)") ms, p99 $(ms "$(j $S.frame_time_us.p99)") ms, max $(ms "$(j $S.frame_time_us.max)") ms (n=$(j $S.frame_time_us.count))"
echo "capture -> codes:   p50 $(ms "$(j $S.capture_to_codes_us.p50)") ms, p99 $(ms "$(j $S.capture_to_codes_us.p99)") ms, max $(ms "$(j $S.capture_to_codes_us.max)") ms"
echo "capture -> playback write: p50 $(ms "$(j $S.capture_to_playback_write_us.p50)") ms, p99 $(ms "$(j $S.capture_to_playback_write_us.p99)") ms, max $(ms "$(j $S.capture_to_playback_write_us.max)") ms"
echo "configured latency bound (playback buffer + one period): $(j $S.latency_bound_ms | awk '{ printf "%.1f", $1 }') ms"
echo "allocations on the loop's capture/compute/playback threads: $(j $S.allocations.loop_threads) in the whole run (start-up included), $(j $W.allocations) after warm-up"
echo "CPU use of the edgecsm loop process: $CPU_PCT % of one core (all its threads)"
echo "RSS (VmRSS, sampled every ${SAMPLE} s, $(wc -l <"$OUT/rss.txt") samples): at ${RSS_1M_T} s ${RSS_1M} kB, at end (${RSS_END_T} s) ${RSS_END} kB; min $RSS_MIN kB, max $RSS_MAX kB, max after 1 min $RSS_AFTER_1M_MAX kB"
echo "  of which at 1 min / at end: anon $(at_1m 3) / $(at_end 3) kB, file $(at_1m 4) / $(at_end 4) kB, shmem $(at_1m 5) / $(at_end 5) kB"
echo "  VmRSS changes after 1 min: ${RSS_STEPS:-none}"
if [ "$(at_1m 3)" = "$(at_end 3)" ] && [ "$(at_1m 4)" = "$(at_end 4)" ]; then
  echo "  anon and file memory unchanged after 1 min$([ "$(at_1m 5)" = "$(at_end 5)" ] || echo "; the change is shared memory (with PulseAudio: its client memory pool)")"
fi

FAIL=()
[ "$(j $W.xruns)" = 0 ] || FAIL+=("xruns after warm-up")
[ "$(j $W.late)" = 0 ] || FAIL+=("late frames after warm-up")
[ "$(j $W.dropped)" = 0 ] || FAIL+=("dropped frames after warm-up")
[ "$(j $W.allocations)" = 0 ] || FAIL+=("allocations after warm-up")
[ "$RSS_1M" = "$RSS_END" ] && [ "$RSS_AFTER_1M_MAX" = "$RSS_1M" ] || FAIL+=("RSS changed after 1 minute")
if [ ${#FAIL[@]} -eq 0 ]; then
  echo "verdict: PASS (no xruns, late/dropped frames or allocations after warm-up; RSS after 1 minute constant)"
else
  echo "verdict: FAIL: $(IFS=,; echo "${FAIL[*]}")"
  exit 1
fi
