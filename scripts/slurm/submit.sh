#!/usr/bin/env bash
# Submits a sharded run as a Slurm job array and its merge as a dependent job.
#   scripts/slurm/submit.sh N likelihood MODEL IMAGES OUT.safetensors [flags...]
#   scripts/slurm/submit.sh N classify   MODEL IMAGES OUT.npy [flags...]
#   scripts/slurm/submit.sh N sample     MODEL OUT.npy --count 50000 [flags...]
# Prints "ARRAY_JOB_ID MERGE_JOB_ID". The merged file is OUT; the summary is in
# tarflow-merge-MERGE_JOB_ID.out. Set TARFLOW to the binary (default: tarflow on PATH) and
# SBATCH_FLAGS for extra sbatch flags (partition, account, time limit...).
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,9p "$0" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
n=$1 job=$2
shift 2
case $job in
  likelihood | classify) out=$3 ;;
  sample) out=$2 ;;
  *) echo "submit.sh: unknown job '$job'; use likelihood, classify or sample" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
array=$(sbatch --parsable ${SBATCH_FLAGS:-} --array=0-$((n - 1)) "$here/$job.sbatch" "$@")
array=${array%%;*}
# shellcheck disable=SC2086
merge=$(sbatch --parsable ${SBATCH_FLAGS:-} --dependency=afterok:"$array" --kill-on-invalid-dep=yes \
  "$here/merge.sbatch" "$out" "$n" --json)
echo "${array} ${merge%%;*}"
