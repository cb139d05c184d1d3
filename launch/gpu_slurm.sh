#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node (all its GPUs) or one per GPU.
# JAX reads the coordinator, process count and id from SLURM's environment.
#
#   sbatch --nodes=4 launch/gpu_slurm.sh --config=configs/ucf101_128.py --workdir=/shared/runs/u128
#   PROCESS_PER=gpu sbatch --nodes=2 --ntasks-per-node=8 launch/gpu_slurm.sh --config=...
#
# Settings: PROCESS_PER=node|gpu (default node), VENV (a virtual environment to activate on every
# node), GPUS_PER_NODE (default 8). The workdir must be on storage every node reaches.
#SBATCH --job-name=vfjax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --time=48:00:00
#SBATCH --output=vfjax-%j.log
#SBATCH --signal=TERM@300
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: sbatch $0 <vfjax.main arguments>" >&2; exit 2; }
repo="${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
process_per="${PROCESS_PER:-node}"
case "$process_per" in
  node | gpu) ;;
  *) echo "PROCESS_PER must be node or gpu, got $process_per" >&2; exit 2 ;;
esac

# Each task: enter the repository and environment; with one process per GPU, see only its GPU.
# shellcheck disable=SC2016  # Expanded by each task's own shell.
task='cd "$1" && shift && if [[ -n "${VENV:-}" ]]; then source "$VENV/bin/activate"; fi
if [[ "$PROCESS_PER" == gpu ]]; then export CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"; fi
exec python3 -m vfjax.main "$@"'

export PROCESS_PER="$process_per"
# SIGTERM (sent 300 s before the time limit, or on preemption) reaches every task: each saves a
# checkpoint at the same step and stops; resubmitting the same command resumes.
srun --kill-on-bad-exit=1 bash -c "$task" vfjax-task "$repo" "$@"
