#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: create the TPU VMs, copy this repository to every worker,
# install, run vfjax.main on all workers at once (one process per host; JAX finds its peers),
# stream the logs, then delete the slice.
#
#   TPU_NAME=vf-1 ZONE=us-east5-b ACCELERATOR_TYPE=v5litepod-16 \
#     launch/tpu_pod.sh --config=configs/ucf101_64.py --workdir=gs://BUCKET/runs/ucf101_64
#
# Settings (environment): TPU_NAME, ZONE, ACCELERATOR_TYPE (required); PROJECT (default: gcloud's),
# RUNTIME_VERSION (default v2-alpha-tpuv5-lite), SPOT=1 (preemptible capacity), KEEP=1 (do not
# delete at the end), REMOTE_DIR (default vfjax), DRY_RUN=1 (print every command, run none).
# The workdir should be a bucket path every worker can reach: every file of the run goes there.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE}"
RUNTIME_VERSION="${RUNTIME_VERSION:-v2-alpha-tpuv5-lite}"
REMOTE_DIR="${REMOTE_DIR:-vfjax}"
[[ $# -ge 1 ]] || { echo "usage: $0 <vfjax.main arguments>" >&2; exit 2; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gcloud_tpu=(gcloud compute tpus tpu-vm)
common=(--zone="$ZONE")
[[ -n "${PROJECT:-}" ]] && common+=(--project="$PROJECT")

run() {
  # Prints the command (shell-quoted), then runs it unless DRY_RUN=1.
  printf '+'; printf ' %q' "$@"; printf '\n'
  [[ "${DRY_RUN:-0}" == 1 ]] || "$@"
}

create=("${gcloud_tpu[@]}" create "$TPU_NAME" "${common[@]}"
  --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
[[ "${SPOT:-0}" == 1 ]] && create+=(--spot)

main_args=""
for arg in "$@"; do main_args+=" $(printf '%q' "$arg")"; done
archive="${TMPDIR:-/tmp}/vfjax-$TPU_NAME.tar.gz"
install="mkdir -p $REMOTE_DIR && tar -xzf vfjax.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR"
install+=" && python3 -m pip install -q -U 'jax[tpu]' && python3 -m pip install -q -r requirements.txt"
train="cd $REMOTE_DIR && python3 -m vfjax.main$main_args 2>&1"

delete_slice() {
  if [[ "${KEEP:-0}" != 1 ]]; then
    run "${gcloud_tpu[@]}" delete "$TPU_NAME" "${common[@]}" --quiet
  fi
}

run "${create[@]}"
trap delete_slice EXIT
# The committed tree only (no virtual environments, no local runs).
run git -C "$repo" archive --format=tar.gz --output="$archive" HEAD
run "${gcloud_tpu[@]}" scp "$archive" "$TPU_NAME:vfjax.tar.gz" "${common[@]}" --worker=all
run "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${common[@]}" --worker=all --command="$install"
# Every worker runs the same command; their outputs stream here, prefixed by worker.
run "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${common[@]}" --worker=all --command="$train"
