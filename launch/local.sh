#!/usr/bin/env bash
# Run vfjax as N processes on this machine, talking over loopback (CPU collectives via gloo):
# the multi-controller path of a pod or cluster, on one host.
#
#   launch/local.sh NUM_PROCESSES -- --config=configs/default.py:runlocal --workdir=/tmp/run
#
# Environment: DEVICES_PER_PROCESS (fake CPU devices per process, default 4), PORT (coordinator
# port, default: a free one), LOG_DIR (per-process logs, default: a new temporary directory).
# Process 0 also prints to this terminal. Exits non-zero if any process fails.
set -euo pipefail

usage() { echo "usage: $0 NUM_PROCESSES -- <vfjax.main arguments>" >&2; exit 2; }
[[ $# -ge 2 && "$1" =~ ^[1-9][0-9]*$ && "$2" == "--" ]] || usage
num="$1"
shift 2

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
devices="${DEVICES_PER_PROCESS:-4}"
port="${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
log_dir="${LOG_DIR:-$(mktemp -d -t vfjax-local-XXXXXX)}"
mkdir -p "$log_dir"
echo "local.sh: $num processes x $devices CPU devices, coordinator 127.0.0.1:$port, logs in $log_dir" >&2

pids=()
# shellcheck disable=SC2317,SC2329  # Invoked by the trap.
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup INT TERM

for ((i = 0; i < num; i++)); do
  env JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES="$devices" \
    JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$num" JAX_PROCESS_ID="$i" \
    PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" \
    "$python" -m vfjax.main "$@" > "$log_dir/process_$i.log" 2>&1 &
  pids+=("$!")
done
tail -n +1 -f "$log_dir/process_0.log" --pid="${pids[0]}" >&2 &

status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "local.sh: process $i failed; see $log_dir/process_$i.log" >&2
    status=1
  fi
done
exit "$status"
