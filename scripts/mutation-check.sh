#!/usr/bin/env bash
# Mutation checks (Tests/README.md "Mutation checks"): for each patch in Tests/Mutations/
# (or the ones named), applies it, builds, runs the test classes named on its `# filter:` line
# and expects at least one test to fail; then reverses the patch, also on an error or Ctrl-C.
# Prints the failing tests of each mutation; exits 1 if a mutation survives, does not apply
# any more, or does not build.
set -uo pipefail
cd "$(dirname "$0")/.."

patches=("$@")
[ ${#patches[@]} -eq 0 ] && patches=(Tests/Mutations/*.patch)
applied=""
restore() { [ -n "$applied" ] && git apply -R "$applied" && applied=""; }
trap restore EXIT
trap 'restore; exit 130' INT TERM

status=0
for p in "${patches[@]}"; do
  name=$(basename "$p" .patch)
  filter=$(sed -n 's/^# filter: //p' "$p")
  if [ -z "$filter" ]; then echo "$name: no '# filter:' line"; status=1; continue; fi
  if ! git apply --check "$p" 2>/dev/null; then
    echo "$name: the patch no longer applies (the code it mutates changed): update it"; status=1; continue
  fi
  git apply "$p" && applied="$p"
  log=$(mktemp)
  if ! swift build --build-tests >"$log" 2>&1; then
    echo "$name: does not build with the mutation (see $log)"; status=1; restore; continue
  fi
  if swift test --filter "$filter" >"$log" 2>&1; then
    echo "$name: SURVIVED (no test in '$filter' failed)"; status=1
  else
    failed=$(grep -E "Test Case '.*' failed" "$log" | sed -E "s/.*Test Case '-?\[?([^]' ]+)[ .]([^]' ]+)\]?' failed.*/\1.\2/" | sort -u)
    if [ -z "$failed" ]; then
      echo "$name: swift test failed without a failing test (see $log)"; status=1
    else
      echo "$name: caught by $(echo "$failed" | wc -l) tests:"
      echo "$failed" | sed 's/^/  /'
      rm -f "$log"
    fi
  fi
  restore
done
exit $status
