#!/usr/bin/env bash
# Runs N copies of a command on this machine as the N processes of one JAX job on CPU: the way
# multi-host code paths are exercised without a pod.
#
# Usage:
#   launch/local_multiprocess.sh [--devices_per_process K] [--port P] [--log_dir DIR] [--dry_run]
#                                N COMMAND [ARGS...]
#
#   --devices_per_process K  fake CPU devices per process (default 4)
#   --port P                 coordinator port on localhost (default: a free port)
#   --log_dir DIR            process i writes DIR/process_<i>.log (default: a new temp dir)
#   --dry_run                print each process's environment and command; run nothing
#   -h, --help               this help
#
# Process i runs COMMAND with
#   JAX_PLATFORMS=cpu XLA_FLAGS="$XLA_FLAGS --xla_force_host_platform_device_count=K"
#   JAX_COORDINATOR_ADDRESS=localhost:P JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i
#   MUSICLM_JAX_DISTRIBUTED=on
# Process 0's log is also streamed to stdout. The exit status is the first failing process's (0
# when all succeed); when one process fails, or on Ctrl-C / TERM, the others are stopped.
#
# Examples:
#   launch/local_multiprocess.sh 2 musiclm-jax train --gin_file=gin/models/semantic/tiny.gin \
#     --gin_file=gin/runs/synthetic.gin --gin_file=gin/mesh/cpu8.gin --gin.MODEL_DIR="'/tmp/semantic'"
#   launch/local_multiprocess.sh --dry_run 4 musiclm-jax infer --prompts=prompts.jsonl
set -euo pipefail

readonly PROG=local_multiprocess.sh
readonly FALLBACK_PORT=12355
readonly KILL_GRACE_SECONDS=5

usage() {
  awk 'NR > 1 && /^set -euo pipefail/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
}

die_usage() {
  echo "$PROG: $*" >&2
  echo "Run '$0 --help' for usage." >&2
  exit 2
}

is_positive_int() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

free_port() {
  local python
  for python in python3 python; do
    if command -v "$python" >/dev/null 2>&1 &&
      "$python" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])' 2>/dev/null; then
      return
    fi
  done
  echo "$FALLBACK_PORT"
}

devices_per_process=4
port=""
log_dir=""
dry_run=0
while (($#)); do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --devices_per_process=* | --port=* | --log_dir=*)
      set -- "${1%%=*}" "${1#*=}" "${@:2}"
      ;;
    --devices_per_process | --port | --log_dir)
      (($# >= 2)) || die_usage "$1 needs a value"
      case $1 in
        --devices_per_process) devices_per_process=$2 ;;
        --port) port=$2 ;;
        --log_dir) log_dir=$2 ;;
      esac
      shift 2
      ;;
    --dry_run)
      dry_run=1
      shift
      ;;
    --)
      shift
      break
      ;;
    -*) die_usage "unknown flag: $1" ;;
    *) break ;;
  esac
done

(($# >= 1)) || die_usage "missing N (the number of processes) and COMMAND"
is_positive_int "$1" || die_usage "N must be a positive integer, got '$1'"
num_processes=$1
shift
(($# >= 1)) || die_usage "missing COMMAND"
is_positive_int "$devices_per_process" ||
  die_usage "--devices_per_process must be a positive integer, got '$devices_per_process'"
if [[ -n $port ]]; then
  if ! is_positive_int "$port" || ((port > 65535)); then
    die_usage "--port must be in 1..65535, got '$port'"
  fi
else
  port=$(free_port)
fi

xla_flags="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$devices_per_process"

# Sets `process_env` to the environment assignments of process $1.
set_process_env() {
  process_env=(
    JAX_PLATFORMS=cpu
    "XLA_FLAGS=$xla_flags"
    "JAX_COORDINATOR_ADDRESS=localhost:$port"
    "JAX_NUM_PROCESSES=$num_processes"
    "JAX_PROCESS_ID=$1"
    MUSICLM_JAX_DISTRIBUTED=on
  )
}

if ((dry_run)); then
  for ((i = 0; i < num_processes; i++)); do
    set_process_env "$i"
    printf 'process %d:' "$i"
    printf ' %q' "${process_env[@]}" "$@"
    printf '\n'
  done
  exit 0
fi

if [[ -z $log_dir ]]; then
  log_dir=$(mktemp -d "${TMPDIR:-/tmp}/musiclm_jax_local.XXXXXX")
fi
mkdir -p "$log_dir"
echo "$PROG: $num_processes processes, coordinator localhost:$port, logs in $log_dir" >&2

pids=()
statuses=()
tail_pid=""
kill_at=""

# Signals every still-running process group; the first call sends TERM, later ones KILL.
stop_processes() {
  local signal=TERM i
  [[ -n $kill_at ]] && signal=KILL
  for i in "${!pids[@]}"; do
    if [[ -z ${statuses[i]:-} ]]; then
      kill "-$signal" -- "-${pids[i]}" 2>/dev/null || true
    fi
  done
  [[ -n $kill_at ]] || kill_at=$((SECONDS + KILL_GRACE_SECONDS))
}

# shellcheck disable=SC2317  # run by the traps below
cleanup() {
  local i
  for i in "${!pids[@]}"; do
    if [[ -z ${statuses[i]:-} ]]; then
      kill -KILL -- "-${pids[i]}" 2>/dev/null || true
    fi
  done
  if [[ -n $tail_pid ]]; then
    kill "$tail_pid" 2>/dev/null || true
  fi
}

# shellcheck disable=SC2317  # run by the traps below
on_signal() {
  trap - INT TERM
  echo "$PROG: interrupted; stopping all processes" >&2
  stop_processes
  local i alive
  while ((SECONDS < kill_at)); do
    alive=0
    for i in "${!pids[@]}"; do
      kill -0 "${pids[i]}" 2>/dev/null && alive=1
    done
    ((alive)) || break
    sleep 0.2
  done
  exit "$1" # the EXIT trap kills whatever is left
}

trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# Job control gives each process its own process group, so stopping one also stops whatever it
# started; it is switched off again so that the waits below stay in this script's group.
set -m
for ((i = 0; i < num_processes; i++)); do
  set_process_env "$i"
  (export "${process_env[@]}" && exec "$@") <"/dev/null" >"$log_dir/process_$i.log" 2>&1 &
  pids+=("$!")
done
set +m
tail -s 0.2 -n +1 -f --pid="${pids[0]}" "$log_dir/process_0.log" &
tail_pid=$!

status=0
remaining=$num_processes
while ((remaining > 0)); do
  for i in "${!pids[@]}"; do
    [[ -n ${statuses[i]:-} ]] && continue
    kill -0 "${pids[i]}" 2>/dev/null && continue
    code=0
    wait "${pids[i]}" || code=$?
    statuses[i]=$code
    remaining=$((remaining - 1))
    if ((code != 0 && status == 0)); then
      status=$code
      echo "$PROG: process $i exited with status $code (log: $log_dir/process_$i.log);" \
        "stopping the others" >&2
      ((i == 0)) || tail -n 20 "$log_dir/process_$i.log" | sed "s/^/[process $i] /" >&2
      stop_processes
    fi
  done
  if ((remaining > 0)); then
    [[ -n $kill_at && $SECONDS -ge $kill_at ]] && stop_processes
    sleep 0.2
  fi
done
wait "$tail_pid" 2>/dev/null || true
tail_pid=""
exit "$status"
