#!/usr/bin/env bash
# A real Slurm cluster of one node on this machine: installs Debian's slurm-wlm and munge when
# missing, starts munged, slurmctld and slurmd (no systemd; private config, key, sockets and
# ports under a temporary folder), submits 4-task job arrays through scripts/slurm/submit.sh
# (likelihood of 2,000 MNIST test images, classification of 1,000, 64 guided samples), waits
# for the dependent merge jobs, and compares the merged files and summaries byte for byte with
# unsharded runs. Stops the daemons it started, by pid. Any failure exits non-zero with the
# daemons' logs; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
start_time=$SECONDS

say() { echo "slurm-test: $*"; }

# --- packages ----------------------------------------------------------------------------
need=()
for p in slurm-wlm munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  say "installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" </dev/null >/dev/null
fi
for b in munged slurmctld slurmd sbatch squeue sinfo scontrol; do
  command -v "$b" >/dev/null || { say "FAIL: $b is not installed after installing slurm-wlm and munge"; exit 1; }
done

# --- the binary: release (classification of 1,000 images takes ~20 s there) -----------------
# (TARFLOW_SLURM_BINARY=path runs a binary built elsewhere instead.)
tarflow=${TARFLOW_SLURM_BINARY:-}
if [ -z "$tarflow" ]; then
  say "building the release binary"
  swift build -c release --product tarflow 2>&1 | tail -1
  tarflow="$repo/.build/release/tarflow"
fi
[ -x "$tarflow" ] || { say "FAIL: $tarflow was not built"; exit 1; }
export TARFLOW=$tarflow

# --- a private one-node cluster -------------------------------------------------------------
w=$(mktemp -d /tmp/tarflow-slurm.XXXXXX)
chmod 755 "$w"
pids=()
logs=()
stop() {
  local code=$?
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  if [ "$code" -ne 0 ]; then
    for l in "${logs[@]}"; do [ -f "$l" ] && { echo "----- $l"; tail -n 40 "$l"; }; done
    for f in "$w"/job/*.out; do [ -f "$f" ] && { echo "----- $f"; tail -n 20 "$f"; }; done
    say "FAILED (work folder kept: $w)"
  else
    rm -rf "$w"
  fi
  exit "$code"
}
trap stop EXIT

fail() { say "FAIL: $*"; exit 1; }

# A free TCP port: nothing answers on it (ports are per run, so concurrent runs do not clash).
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 20000))
    (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
  fail "no free TCP port found"
}

# munged with its own key and socket.
dd if=/dev/urandom of="$w/munge.key" bs=1024 count=1 status=none
chmod 400 "$w/munge.key"
mkdir -m 755 "$w/munge"
logs+=("$w/munged.log")
munged --foreground --force --key-file="$w/munge.key" --socket="$w/munge/munge.socket" \
  --pid-file="$w/munge/munged.pid" --seed-file="$w/munge/munged.seed" --log-file="$w/munged.log" 2>>"$w/munged.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$w/munge/munge.socket" ] && break; kill -0 "${pids[-1]}" 2>/dev/null || break; sleep 0.1; done
[ -S "$w/munge/munge.socket" ] || fail "munged did not start"
say "munged running (pid ${pids[-1]})"

node=$(hostname -s)
ctld_port=$(free_port)
slurmd_port=$(free_port)
[ "$slurmd_port" != "$ctld_port" ] || slurmd_port=$((ctld_port + 1))
cpus=$(nproc)
mem=$(awk '/MemTotal/ { print int($2 / 1024 / 2) }' /proc/meminfo)
mkdir -p "$w/state" "$w/spool" "$w/job"
cat >"$w/slurm.conf" <<EOF
ClusterName=tarflowtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$w/munge/munge.socket
StateSaveLocation=$w/state
SlurmdSpoolDir=$w/spool
SlurmctldPidFile=$w/slurmctld.pid
SlurmdPidFile=$w/slurmd.pid
SlurmctldLogFile=$w/slurmctld.log
SlurmdLogFile=$w/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
echo "CgroupPlugin=cgroup/v1" >"$w/cgroup.conf"
export SLURM_CONF=$w/slurm.conf

logs+=("$w/slurmctld.log")
slurmctld -D -i -f "$w/slurm.conf" >>"$w/slurmctld.log" 2>&1 &
pids+=($!)
ctld=${pids[-1]}
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; kill -0 "$ctld" 2>/dev/null || break; sleep 0.2; done
scontrol ping 2>/dev/null | grep -q UP || fail "slurmctld did not start"
say "slurmctld running (pid $ctld, port $ctld_port)"

logs+=("$w/slurmd.log")
slurmd -D -N "$node" -f "$w/slurm.conf" >>"$w/slurmd.log" 2>&1 &
pids+=($!)
slurmd_pid=${pids[-1]}
state=""
for _ in $(seq 150); do
  state=$(sinfo -h -n "$node" -o %T 2>/dev/null | head -1)
  [ "$state" = idle ] && break
  kill -0 "$slurmd_pid" 2>/dev/null || break
  sleep 0.2
done
[ "$state" = idle ] || fail "slurmd did not bring node $node to idle (state '${state:-none}')"
say "slurmd running (pid $slurmd_pid), node $node idle with $cpus CPUs"

# --- unsharded reference runs ----------------------------------------------------------------
model=$repo/Models/mnist.tflow
images=$repo/Models/data/mnist/t10k-images-idx3-ubyte.gz
labels=$repo/Models/data/mnist/t10k-labels-idx1-ubyte.gz
ref=$w/ref
mkdir -p "$ref"
lik_flags=(--labels "$labels" --limit 2000 --seed 11 --batch-size 64)
cls_flags=(--true-labels "$labels" --limit 1000 --batch-size 32)
smp_flags=(--count 64 --label 7 --guidance 2 --seed 5)
t0=$SECONDS
# On every core (results do not depend on the thread count; the array tasks use one each).
"$tarflow" likelihood "$model" --images "$images" "${lik_flags[@]}" --save "$ref/lik.safetensors" --json --threads "$cpus" >"$ref/lik.json"
"$tarflow" classify "$model" --images "$images" "${cls_flags[@]}" --save "$ref/cls.npy" --json --threads "$cpus" >"$ref/cls.json"
"$tarflow" sample "$model" "${smp_flags[@]}" -o "$ref/smp.npy" --out-dir "$ref/png" --quiet --threads "$cpus"
echo '{"count": 64}' >"$ref/smp.json"
say "unsharded runs done in $((SECONDS - t0)) s: $(cat "$ref/lik.json") $(cat "$ref/cls.json")"

# --- the job arrays and their merges -----------------------------------------------------------
cd "$w/job"
t0=$SECONDS
read -r lik_array lik_merge < <("$repo/scripts/slurm/submit.sh" 4 likelihood "$model" "$images" "$w/job/lik.safetensors" "${lik_flags[@]}")
read -r cls_array cls_merge < <("$repo/scripts/slurm/submit.sh" 4 classify "$model" "$images" "$w/job/cls.npy" "${cls_flags[@]}")
read -r smp_array smp_merge < <("$repo/scripts/slurm/submit.sh" 4 sample "$model" "$w/job/smp.npy" "${smp_flags[@]}" --out-dir "$w/job/png")
say "submitted arrays $lik_array $cls_array $smp_array, merges $lik_merge $cls_merge $smp_merge"

jobs=("$lik_array" "$cls_array" "$smp_array" "$lik_merge" "$cls_merge" "$smp_merge")
deadline=$((SECONDS + 900))
while [ -n "$(squeue -h -j "$(IFS=,; echo "${jobs[*]}")" -o %i 2>/dev/null)" ]; do
  [ $SECONDS -lt $deadline ] || fail "jobs still queued or running after 900 s: $(squeue -h -o '%i %T %r')"
  kill -0 "$ctld" 2>/dev/null || fail "slurmctld exited while jobs were running"
  kill -0 "$slurmd_pid" 2>/dev/null || fail "slurmd exited while jobs were running"
  sleep 1
done
# Every task and merge must have completed (an array task that failed leaves its merge cancelled).
for j in "${jobs[@]}"; do
  st=$(scontrol show job "$j" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | sort -u | tr '\n' ' ')
  [ "$st" = "JobState=COMPLETED " ] || fail "job $j ended as '${st:-unknown}'"
done
say "arrays and merges completed in $((SECONDS - t0)) s"

# --- byte-for-byte comparisons -------------------------------------------------------------------
check() { cmp "$1" "$2" || fail "$2 differs from the unsharded $1"; }
check "$ref/lik.safetensors" "$w/job/lik.safetensors"
check "$ref/cls.npy" "$w/job/cls.npy"
check "$ref/smp.npy" "$w/job/smp.npy"
check "$ref/lik.json" "$w/job/tarflow-merge-$lik_merge.out"
check "$ref/cls.json" "$w/job/tarflow-merge-$cls_merge.out"
check "$ref/smp.json" "$w/job/tarflow-merge-$smp_merge.out"
diff -r "$ref/png" "$w/job/png" >/dev/null || fail "the shards' --out-dir PNGs differ from the unsharded ones"
[ "$(ls "$w/job/png" | wc -l)" = 64 ] || fail "expected 64 PNGs in the shared --out-dir"
for k in 0 1 2 3; do [ -f "$w/job/lik.shard-$k-of-4.safetensors" ] || fail "part $k of 4 missing"; done
say "merged outputs equal the unsharded runs byte for byte ($(cat "$w/job/tarflow-merge-$lik_merge.out"))"
say "passed in $((SECONDS - start_time)) s"
