#!/usr/bin/env bash
# A longer fuzzing run by hand: the property-based fuzz tests of every parser of outside input
# (tests/fuzz_parsers.rs: .npy, WAV, safetensors, config.json, the say --context file, control
# socket lines) run again and again with fresh random seeds and EDGECSM_FUZZ_SCALE times the
# CI case counts, until the time is up or a run fails. A failing input is shrunk and printed
# by proptest and saved in tests/fuzz_parsers.regressions (commit it: every later run, CI's
# included, replays it first).
#
#   tools/fuzz.sh [--minutes 10] [--scale 20] [--filter NAME]
#
#   --minutes M   how long to keep starting runs (default 10)
#   --scale S     case-count multiplier of each run (default 10: a few minutes per run on 2 cores)
#   --filter F    only the tests whose name contains F (e.g. `safetensors`, `wav`)
#
# Exit status 0 when every run passed. The log of a failed run is kept in a file whose name
# is printed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MINUTES=10
SCALE=10
FILTER=""
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES="$2"; shift 2 ;;
        --scale) SCALE="$2"; shift 2 ;;
        --filter) FILTER="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (see tools/fuzz.sh --help)" >&2; exit 2 ;;
    esac
done
case "$MINUTES$SCALE" in
    *[!0-9]*) echo "error: --minutes and --scale take whole numbers" >&2; exit 2 ;;
esac

cd "$ROOT"
# build once; the JSON messages name the test executable
BIN="$(cargo test --release --test fuzz_parsers --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*fuzz_parsers[^"]*\)".*/\1/p' | tail -n 1)"
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
    echo "error: could not build the fuzz tests (cargo test --release --test fuzz_parsers)" >&2
    exit 1
fi

end=$(( $(date +%s) + MINUTES * 60 ))
run=0
while [ "$(date +%s)" -lt "$end" ]; do
    run=$((run + 1))
    log="$(mktemp -t edgecsm-fuzz-XXXXXX.log)"
    start=$(date +%s)
    # the test binary looks for its regressions file relative to the source tree
    if EDGECSM_FUZZ_SCALE="$SCALE" "$BIN" $FILTER >"$log" 2>&1; then
        echo "run $run: passed ($(( $(date +%s) - start )) s, scale $SCALE)"
        rm -f "$log"
    else
        echo "run $run: FAILED after $(( $(date +%s) - start )) s; log: $log" >&2
        grep -E "minimal failing input|panicked at|Test failed|memory allocation" "$log" >&2 || true
        exit 1
    fi
done
echo "fuzz: $run run(s) of scale $SCALE passed in $MINUTES minute(s)"
