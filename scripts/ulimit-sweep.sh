#!/usr/bin/env bash
# Runs every tarflow command under `ulimit -v` and `ulimit -d` at several levels and reports,
# as a table, how each run ended. A run must end in exit 0 with the same output as a run
# without a limit, or in exit 1 with one `error:` line; anything else is flagged:
#   SIGNAL n   killed by signal n (exit status >= 128)
#   HANG       still running after the timeout
#   PARTIAL    exit 0 but the output is missing, empty or differs from the unlimited run
#   BAD        another exit status, or an error of more than one line
#   UNCHECKED  exit 0, but the run without a limit (the reference) failed
#
#   bash scripts/ulimit-sweep.sh                       # debug build, default levels
#   TARFLOW=.build/release/tarflow LEVELS="300000 800000" bash scripts/ulimit-sweep.sh
# Exit status 1 when any run was flagged. Run logs go to $WORK (default: a temporary folder).
set -uo pipefail
cd "$(dirname "$0")/.."
TARFLOW=${TARFLOW:-.build/debug/tarflow}
LEVELS=${LEVELS:-"200000 400000 600000 900000 2000000"}
TIMEOUT=${TIMEOUT:-300}
WORK=${WORK:-$(mktemp -d /tmp/ulimit-sweep.XXXXXX)}
[ -x "$TARFLOW" ] || { echo "error: $TARFLOW not found; build it first (swift build)" >&2; exit 2; }
TARFLOW=$(cd "$(dirname "$TARFLOW")" && pwd)/$(basename "$TARFLOW")
MODEL=Models/mnist.tflow
IMAGES=Models/data/mnist/t10k-images-idx3-ubyte.gz
LABELS=Models/data/mnist/t10k-labels-idx1-ubyte.gz
PTH=Tests/Fixtures/tiny_uncond/model.pth
mkdir -p "$WORK"

# name | arguments (OUT is replaced by the run's output folder) | what to compare: a file in
# OUT, "stdout", or "json" (stdout is one JSON line whose values vary, e.g. timings)
COMMANDS=(
  "likelihood|likelihood $MODEL --images $IMAGES --limit 8 --json --quiet|stdout"
  "likelihood-1000|likelihood $MODEL --images $IMAGES --limit 1000 --batch-size 1000 --json --quiet|stdout"
  "sample|sample $MODEL --count 4 -o OUT/s.npy --quiet|s.npy"
  "sample-256|sample $MODEL --count 256 -o OUT/s.npy --quiet|s.npy"
  "denoise|denoise $MODEL --images $WORK/noisy.npy -o OUT/d.npy --quiet|d.npy"
  "classify|classify $MODEL --images $IMAGES --true-labels $LABELS --limit 8 --json --quiet|stdout"
  "convert|convert $PTH -o OUT/c.tflow --image-size 8 --quiet|c.tflow"
  "compile|compile $MODEL -o OUT/m.tflow --batch 1,4 --quiet|m.tflow"
  "compile-config|compile --config Models/configs/mnist.json --random-weights 0 -o OUT/r.tflow --functions none --quiet|r.tflow"
  "inspect|inspect $MODEL --graphs|stdout"
  "bench|bench $MODEL --what forward --batch 4 --reps 1|json"
)

# Input of denoise: four samples of the model.
"$TARFLOW" sample $MODEL --count 4 --seed 1 -o "$WORK/noisy.npy" --quiet || { echo "error: cannot make the denoise input" >&2; exit 2; }

# run NAME LIMIT_FLAG LEVEL: runs one command, prints its verdict
run() {
  local name=$1 flag=$2 level=$3 spec args check out dir rc err
  for spec in "${COMMANDS[@]}"; do [ "${spec%%|*}" = "$name" ] && break; done
  args=$(echo "$spec" | cut -d'|' -f2); check=$(echo "$spec" | cut -d'|' -f3)
  dir="$WORK/$name/${flag#-}$level"
  rm -rf "$dir" && mkdir -p "$dir"
  args=${args//OUT/$dir}
  if [ "$flag" = none ]; then
    timeout "$TIMEOUT" "$TARFLOW" $args > "$dir/stdout" 2> "$dir/stderr"
  else
    timeout "$TIMEOUT" bash -c "ulimit $flag $level && exec \"\$0\" \"\$@\"" "$TARFLOW" $args > "$dir/stdout" 2> "$dir/stderr"
  fi
  rc=$?
  err=$(head -c 300 "$dir/stderr" | head -1)
  local lines; lines=$(grep -vc '^warning: ' "$dir/stderr")
  if [ $rc -eq 124 ]; then echo "HANG (>${TIMEOUT}s)"; return 1; fi
  if [ $rc -ge 128 ]; then echo "SIGNAL $((rc - 128)): $err"; return 1; fi
  if [ $rc -eq 0 ]; then
    local f
    case $check in stdout|json) f="$dir/stdout" ;; *) f="$dir/$check" ;; esac
    if [ ! -s "$f" ]; then echo "PARTIAL (no $check)"; return 1; fi
    if [ "$check" = json ]; then
      [ "$(wc -l < "$f")" -eq 1 ] && grep -q '"peak_rss_bytes"' "$f" || { echo "PARTIAL (not one JSON line)"; return 1; }
    elif [ "$flag" != none ] && [ ! -s "$WORK/$name/none0/${f##*/}" ]; then
      echo "UNCHECKED (the run without a limit left no output to compare)"; return 1
    elif [ "$flag" != none ] && ! cmp -s "$f" "$WORK/$name/none0/${f##*/}"; then
      echo "PARTIAL ($check differs from the unlimited run)"; return 1
    fi
    echo "ok"; return 0
  fi
  if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && [[ $err == error:* ]]; then echo "exit 1: ${err:0:110}"; return 0; fi
  echo "BAD exit $rc ($lines lines): ${err:0:100}"; return 1
}

flagged=0
echo "| command | limit | result |"
echo "|---|---|---|"
for spec in "${COMMANDS[@]}"; do
  name=${spec%%|*}
  v=$(run "$name" none 0) || flagged=1
  echo "| $name | none | $v |"
  for flag in -v -d; do
    for level in $LEVELS; do
      v=$(run "$name" $flag "$level") || flagged=1
      echo "| $name | ulimit $flag $level | $v |"
    done
  done
done
echo "logs: $WORK" >&2
exit $flagged
