#!/usr/bin/env bash
# The prefill peer in one command: llama.cpp's `llama-bench` pp32 on a Llama of exactly the CSM-1B
# backbone's shape in Q8_0, against edgecsm's backbone prefill on the synthetic csm-1b q8, on the
# same machine and threads, interleaved in the same run. Prints one Markdown table:
#
#   | threads | llama.cpp pp32 tokens/s | edgecsm prefill tokens/s | ratio |
#
# Steps (each skipped when its result is already in the cache directory):
#   1. a venv with cmake, gguf and numpy from PyPI (pinned below)
#   2. llama.cpp from the `llama-cpp-python` sdist (it vendors llama.cpp; `pip download`), built
#      with cmake: llama-bench and llama-quantize only, -march=native with AMX switched off (this
#      kind of VM advertises AMX without the OS enabling its tile state, and ggml's AMX mat-mul
#      then dies with SIGILL; edgecsm does not use AMX either). 6-10 minutes on 2 cores.
#   3. backbone-f16.gguf (tools/make_llama_gguf.py: random weights, the backbone's dimensions),
#      quantized with llama-quantize to backbone-q8_0.gguf (the f16 file is then deleted)
#   4. edgecsm (cargo build --release) and the synthetic csm-1b q8 (edgecsm synth, under
#      target/real as tools/bench-real.sh makes it)
# Then, for each repetition and each thread count T, alternating which side goes first:
#   llama.cpp  `llama-bench -m backbone-q8_0.gguf -p 32 -n 0 -t T -r 3` (its mean of 3 runs)
#   edgecsm    64 / (first-frame time of a 95-token prompt - that of a 31-token prompt), each from
#              `edgecsm --threads T generate --max-frames 1` (tools/bench-real.sh's definition)
# Each cell is the median over the repetitions (min-max in brackets); ratio = edgecsm / llama.cpp.
#
#   tools/peer-llamacpp.sh [--threads "1 2"] [--reps 3] [--cache DIR] [--models DIR]
#                          [--version 0.3.36] [--prepare-only]
#
#   --cache DIR      where llama.cpp, its venv and the GGUFs live (default target/peers/llama.cpp,
#                    or $EDGECSM_PEER_CACHE); binaries in DIR/build-VERSION/bin, GGUFs in DIR/models
#   --models DIR     edgecsm's synthetic models (default target/real, or $EDGECSM_REAL_MODELS)
#   --prepare-only   build and make everything, measure nothing
#
# Builds and model-making run under `nice -n 10`; the measurements run at the caller's priority
# (start the script under nice to keep both sides there). Starts no background process; its
# temporary files are removed on exit. Needs python3 with venv, a C/C++ toolchain and make
# (tools/install-deps.sh), cargo, and PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${EDGECSM_PEER_CACHE:-$ROOT/target/peers/llama.cpp}"
MODELS="${EDGECSM_REAL_MODELS:-$ROOT/target/real}"
VERSION=0.3.36
THREADS="1 2"
REPS=3
PREPARE_ONLY=0
PY_PKGS="cmake==4.4.5 gguf==0.19.0 numpy==2.4.6"
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit "${1:-0}"; }
die() { echo "error: $*" >&2; exit 1; }
need_value() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value"; fi; }
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) need_value "$@"; THREADS="$2"; shift 2 ;;
    --reps) need_value "$@"; REPS="$2"; shift 2 ;;
    --cache) need_value "$@"; CACHE="$2"; shift 2 ;;
    --models) need_value "$@"; MODELS="$2"; shift 2 ;;
    --version) need_value "$@"; VERSION="$2"; shift 2 ;;
    --prepare-only) PREPARE_ONLY=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
THREADS=$(echo "$THREADS" | tr ',' ' ' | tr ' ' '\n' | sed '/^$/d' | sort -nu | paste -sd ' ')
for t in $THREADS; do
  [[ "$t" =~ ^[1-9][0-9]*$ ]] || die "--threads takes positive integers, got '$t'"
done
[ -n "$THREADS" ] || die "--threads is empty"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "--reps takes a positive integer, got '$REPS'"
[[ "$VERSION" =~ ^[0-9]+(\.[0-9]+)*$ ]] || die "--version takes a version like 0.3.36, got '$VERSION'"

for tool in python3 cc c++ make cargo tar; do
  command -v "$tool" >/dev/null || die "'$tool' not found (tools/install-deps.sh installs the C \
toolchain and make; cargo comes with rustup)"
done

mkdir -p "$CACHE" 2>/dev/null || die "cannot create the cache directory $CACHE"
CACHE="$(cd "$CACHE" && pwd)"
WORK=$(mktemp -d /tmp/edgecsm-peer-llamacpp.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
NICE=(nice -n 10)
NPROC=$(nproc)
log() { echo "== $*" >&2; }
# run a step with its output in a log; on failure show the log's tail and stop
quiet() { # name cmd...
  local name="$1"; shift
  if ! "$@" >"$WORK/$name.log" 2>&1; then
    tail -n 25 "$WORK/$name.log" >&2
    die "$name failed: $*"
  fi
}

# --- 1. venv ----------------------------------------------------------------------------------
VENV="$CACHE/venv"
if [ "$(cat "$VENV/edgecsm-packages" 2>/dev/null)" != "$PY_PKGS" ]; then
  log "venv with $PY_PKGS in $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >"$WORK/venv.log" 2>&1 \
    || die "python3 -m venv failed ($(tail -n 1 "$WORK/venv.log")); on Debian: apt-get install python3-venv"
  # shellcheck disable=SC2086
  quiet pip-install "$VENV/bin/pip" install --disable-pip-version-check $PY_PKGS
  echo "$PY_PKGS" >"$VENV/edgecsm-packages"
fi
export PATH="$VENV/bin:$PATH" # the venv's cmake first

# --- 2. llama.cpp -----------------------------------------------------------------------------
SRC="$CACHE/src-$VERSION"
BUILD="$CACHE/build-$VERSION"
LLAMA_BENCH="$BUILD/bin/llama-bench"
LLAMA_QUANTIZE="$BUILD/bin/llama-quantize"
if ! [ -x "$LLAMA_BENCH" ] || ! [ -x "$LLAMA_QUANTIZE" ]; then
  if ! [ -f "$SRC/CMakeLists.txt" ]; then
    log "llama.cpp source from the llama-cpp-python $VERSION sdist"
    quiet pip-download "$VENV/bin/pip" download --disable-pip-version-check --no-deps \
      --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$WORK/dl"
    sdist="$WORK/dl/llama_cpp_python-$VERSION.tar.gz"
    [ -f "$sdist" ] || die "pip download left no $sdist"
    name="llama_cpp_python-$VERSION"
    tar -xzf "$sdist" -C "$WORK" "$name/vendor/llama.cpp" \
      || die "the sdist has no vendor/llama.cpp"
    rm -rf "$SRC.partial"
    mv "$WORK/$name/vendor/llama.cpp" "$SRC.partial"
    # the vendored commit, from the submodule's git HEAD the sdist carries (its build-info
    # would otherwise say "unknown": there is no git repository to ask)
    tar -xzf "$sdist" -O "$name/.git/modules/vendor/llama.cpp/HEAD" 2>/dev/null \
      | grep -E '^[0-9a-f]{40}$' >"$SRC.partial/EDGECSM_COMMIT" || rm -f "$SRC.partial/EDGECSM_COMMIT"
    mv "$SRC.partial" "$SRC"
  fi
  log "building llama-bench and llama-quantize in $BUILD (6-10 min on 2 cores)"
  commit=$(cut -c1-9 "$SRC/EDGECSM_COMMIT" 2>/dev/null || echo unknown)
  quiet cmake-configure "${NICE[@]}" cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF "-DLLAMA_BUILD_COMMIT=$commit" \
    "-DCMAKE_C_FLAGS=$NO_AMX" "-DCMAKE_CXX_FLAGS=$NO_AMX"
  quiet cmake-build "${NICE[@]}" cmake --build "$BUILD" --target llama-bench llama-quantize -j "$NPROC"
fi

# --- 3. the backbone-shaped GGUF --------------------------------------------------------------
GGUF_DIR="$CACHE/models"
F16="$GGUF_DIR/backbone-f16.gguf"
Q8="$GGUF_DIR/backbone-q8_0.gguf"
# remade when the generator changes
STAMP="$(sha256sum "$ROOT/tools/make_llama_gguf.py" | cut -c1-16) llama.cpp $VERSION"
if ! [ -f "$Q8" ] || [ "$(cat "$GGUF_DIR/backbone.stamp" 2>/dev/null)" != "$STAMP" ]; then
  mkdir -p "$GGUF_DIR"
  rm -f "$Q8" "$GGUF_DIR/backbone.stamp"
  log "backbone-shaped GGUF: f16 (about 2 GB), then Q8_0 in $GGUF_DIR"
  quiet make-gguf "${NICE[@]}" "$VENV/bin/python" "$ROOT/tools/make_llama_gguf.py" --out "$F16" --type f16
  quiet quantize "${NICE[@]}" "$LLAMA_QUANTIZE" "$F16" "$GGUF_DIR/backbone-q8_0.partial.gguf" Q8_0 "$NPROC"
  mv "$GGUF_DIR/backbone-q8_0.partial.gguf" "$Q8"
  rm -f "$F16"
  echo "$STAMP" >"$GGUF_DIR/backbone.stamp"
fi

# --- 4. edgecsm and its synthetic csm-1b q8 ---------------------------------------------------
log "cargo build --release"
(cd "$ROOT" && "${NICE[@]}" cargo build --release --quiet) || die "cargo build --release failed"
EDGECSM="$ROOT/target/release/edgecsm"
CSM="$MODELS/csm-1b-q8"
if ! [ -f "$CSM/synth.stamp" ]; then # the stamp bench-real.sh and the benches check
  log "synthetic csm-1b q8 in $CSM"
  rm -rf "$CSM"
  mkdir -p "$MODELS" 2>/dev/null || die "cannot create the models directory $MODELS"
  quiet synth "${NICE[@]}" "$EDGECSM" synth csm-1b --dtype q8 --out "$CSM"
fi

if [ "$PREPARE_ONLY" = 1 ]; then
  echo "llama-bench:    $LLAMA_BENCH"
  echo "llama-quantize: $LLAMA_QUANTIZE"
  echo "model:          $Q8"
  echo "edgecsm model:  $CSM"
  exit 0
fi

# --- measure ----------------------------------------------------------------------------------
# int64 .npy prompts as tools/bench-real.sh makes them: bos, n-2 text ids, eos
python3 - "$WORK" <<'PY'
import struct, sys
for n in (31, 95):
    ids = [480] + [(i * 37 + 11) % 470 for i in range(n - 2)] + [481]
    hdr = "{'descr': '<i8', 'fortran_order': False, 'shape': (%d,), }" % n
    hdr += " " * (63 - (len(hdr) + 10) % 64) + "\n"
    with open("%s/ids%d.npy" % (sys.argv[1], n), "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
        f.write(struct.pack("<%dq" % n, *ids))
PY

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
llama_run() { # threads rep
  local out="$WORK/bench-$1-$2"
  "$LLAMA_BENCH" -m "$Q8" -p 32 -n 0 -t "$1" -r 3 -o json >"$out.json" 2>"$out.err" || {
    tail -n 15 "$out.err" >&2; die "llama-bench -t $1 failed"; }
  python3 - "$out.json" "$1" "$2" >>"$RESULTS" <<'PY'
import json, sys
rows = [r for r in json.load(open(sys.argv[1])) if r["n_prompt"] == 32 and r["n_gen"] == 0]
if len(rows) != 1:
    sys.exit("error: llama-bench printed %d pp32 rows" % len(rows))
print("llama\t%s\t%s\t%.3f" % (sys.argv[2], sys.argv[3], rows[0]["avg_ts"]))
PY
  cp "$out.json" "$WORK/last-llama.json"
}
first_frame() { # threads prompt-length -> seconds to the first frame
  "$EDGECSM" --threads "$1" generate --model "$CSM" --input-ids "$WORK/ids$2.npy" \
    --max-frames 1 --out "$WORK/codes.npy" 2>"$WORK/generate.err" \
    | sed -n 's/.*first frame after \([0-9.]*\) s.*/\1/p' | grep . \
    || { tail -n 5 "$WORK/generate.err" >&2; die "edgecsm generate ($2 tokens, --threads $1) \
printed no 'first frame after X s' line"; }
}
edgecsm_run() { # threads rep
  local a b
  a=$(first_frame "$1" 31)
  b=$(first_frame "$1" 95)
  awk -v a="$a" -v b="$b" -v t="$1" -v r="$2" 'BEGIN {
    if (b <= a) { print "error: the 95-token prompt was not slower than the 31-token one (" b \
      " s vs " a " s)" > "/dev/stderr"; exit 1 }
    printf "edgecsm\t%s\t%s\t%.3f\n", t, r, 64 / (b - a) }' >>"$RESULTS"
}

log "measuring: threads $THREADS, $REPS repetitions, llama.cpp and edgecsm alternating"
# one unmeasured edgecsm run first: its model's pages into the page cache (llama-bench warms up
# by itself)
first_frame "${THREADS%% *}" 31 >/dev/null
for r in $(seq "$REPS"); do
  for t in $THREADS; do
    if [ $(((r + t) % 2)) = 0 ]; then order="llama edgecsm"; else order="edgecsm llama"; fi
    for side in $order; do "${side}_run" "$t" "$r"; done
    echo "   rep $r, $t thread(s): $(awk -F'\t' -v t="$t" -v r="$r" \
      '$2 == t && $3 == r { printf "%s %s tokens/s  ", $1, $4 }' "$RESULTS")" >&2
  done
done

echo
llama_info=$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))[0]
print("build %s, %s, %s" % (r["build_commit"], r["backends"], r["cpu_info"]))' "$WORK/last-llama.json")
echo "# llama.cpp (llama-cpp-python $VERSION sdist, $llama_info) vs $("$EDGECSM" --version)"
echo
echo "$(date -u +%Y-%m-%d), $NPROC CPUs, $REPS interleaved repetitions; llama.cpp: Q8_0 Llama of the \
CSM-1B backbone's shape, \`llama-bench -p 32 -n 0 -r 3\` (mean of 3); edgecsm: synthetic csm-1b q8, \
prefill = 64 / (first frame of a 95-token prompt - of a 31-token prompt)."
echo
python3 - "$RESULTS" "$THREADS" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
def cell(side, t):
    v = sorted(float(r[3]) for r in rows if r[0] == side and r[1] == t)
    return statistics.median(v), v
print("| threads | llama.cpp pp32 tokens/s | edgecsm prefill tokens/s | ratio |")
print("|---|---|---|---|")
for t in sys.argv[2].split():
    (lm, lv), (em, ev) = cell("llama", t), cell("edgecsm", t)
    span = lambda v: " (%.1f-%.1f)" % (v[0], v[-1]) if len(v) > 1 else ""
    print("| %s | %.1f%s | %.1f%s | %.2fx |" % (t, lm, span(lv), em, span(ev), em / lm))
PY
