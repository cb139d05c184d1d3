#!/usr/bin/env bash
# Run vfjax as N processes on this machine, talking over loopback (CPU collectives via gloo):
# the multi-controller path of a pod or cluster, on one host.
#
#   launch/local.sh NUM_PROCESSES -- --config=configs/default.py:runlocal --workdir=/tmp/run
#   MODULE=vfjax.bench launch/local.sh 2 -- --config=configs/default.py:runlocal --steps=3
#
# Environment: MODULE (the Python module to run, default vfjax.main), DEVICES_PER_PROCESS (fake
# CPU devices per process, default 4), PORT (coordinator port, default: a free one), LOG_DIR
# (per-process logs, default: a new temporary directory).
# Process 0 also prints to this terminal. A SIGTERM to this script reaches every process (each
# saves a checkpoint of the same step and stops). When one process fails, vfjax stops the others
# with its error within seconds; should a process die without a word (killed), the rest are
# stopped here. Exits non-zero if any process fails.
set -euo pipefail

usage() { echo "usage: $0 NUM_PROCESSES -- <vfjax.main arguments>" >&2; exit 2; }
[[ $# -ge 2 && "$1" =~ ^[1-9][0-9]*$ && "$2" == "--" ]] || usage
num="$1"
shift 2

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
module="${MODULE:-vfjax.main}"
devices="${DEVICES_PER_PROCESS:-4}"
port="${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
log_dir="${LOG_DIR:-$(mktemp -d -t vfjax-local-XXXXXX)}"
mkdir -p "$log_dir"
echo "local.sh: $num processes x $devices CPU devices, coordinator 127.0.0.1:$port, logs in $log_dir" >&2

pids=()
# shellcheck disable=SC2317,SC2329  # Invoked by the traps and below.
signal_all() { for pid in "${pids[@]}"; do kill -"$1" "$pid" 2>/dev/null || true; done; }
# A SIGTERM here (scancel, a preemption) goes to every process, as on a cluster: they save a
# checkpoint of one step and stop, and this script waits for them.
trap 'signal_all TERM' TERM
trap 'signal_all INT' INT

for ((i = 0; i < num; i++)); do
  env JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES="$devices" \
    JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$num" JAX_PROCESS_ID="$i" \
    PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" \
    "$python" -m "$module" "$@" > "$log_dir/process_$i.log" 2>&1 &
  pids+=("$!")
done
tail -n +1 -f "$log_dir/process_0.log" --pid="${pids[0]}" >&2 &

# Wait for the processes as they end, in any order (polled: a signal trap runs between polls);
# the first failure stops the rest.
status=0
stop_at=0
running=("${pids[@]}")
while ((${#running[@]} > 0)); do
  still=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
      continue
    fi
    code=0
    wait "$pid" || code=$?
    if ((code != 0 && status == 0)); then
      for i in "${!pids[@]}"; do
        [[ "${pids[$i]}" == "$pid" ]] || continue
        echo "local.sh: process $i failed (exit code $code); see $log_dir/process_$i.log" >&2
        grep -h "vfjax: error:" "$log_dir/process_$i.log" | tail -n 1 >&2 || true
      done
      status=1
      stop_at=$((SECONDS + 10))  # The others normally stop by themselves within seconds.
    fi
  done
  running=("${still[@]}")
  if ((status != 0 && ${#running[@]} > 0 && SECONDS >= stop_at)); then
    signal_all KILL
  fi
  ((${#running[@]} == 0)) || sleep 0.2
done
exit "$status"
