#!/usr/bin/env bash
# Runs a command on every worker of a Cloud TPU pod slice (or of every slice of a multislice
# queued resource): creates the TPU if missing, installs this repository on every worker, then
# starts the command on all workers at once and streams their output.
#
# Usage:
#   launch/tpu_pod.sh --name NAME --zone ZONE --accelerator_type TYPE [--project P]
#                     [--runtime_version V] [--num_slices S] [--reuse] [--spot]
#                     [--package PATH] [--extras E] [--python PY] [--remote_setup CMD]
#                     [--env KEY=VALUE]... [--log_dir DIR] [--dry_run] -- COMMAND [ARGS...]
#
#   --name NAME              TPU VM name (with --num_slices > 1: the queued resource's name; its
#                            slices are NAME-0, NAME-1, ...)
#   --zone ZONE              e.g. us-west4-a
#   --accelerator_type TYPE  e.g. v5litepod-16, v4-32, v5p-64, v6e-16
#   --project P              Google Cloud project (default: gcloud's configured project)
#   --runtime_version V      TPU software version (default by generation: v2-alpha-tpuv5-lite for
#                            v5e, v2-alpha-tpuv5 for v5p, v2-alpha-tpuv6e for v6e,
#                            tpu-ubuntu2204-base for v2/v3/v4)
#   --num_slices S           S > 1: a multislice queued resource of S slices over DCN (default 1)
#   --reuse                  the TPU must already exist (error if it does not); never create
#   --spot                   create spot (preemptible) capacity
#   --package PATH           wheel or sdist to install (default: a wheel of this repository, built
#                            with `python3 -m pip wheel --no-deps`)
#   --extras E               package extras to install (default: tpu; '' for none)
#   --python PY              Python (>= 3.11) on the workers that makes the venv (default: the
#                            first of python3.11/3.12/3.13 found, else python3.11 from apt)
#   --remote_setup CMD       shell command run on every worker before installing
#   --env KEY=VALUE          extra environment for COMMAND on the workers (repeatable)
#   --log_dir DIR            local directory for the built package and tpu_pod.log (default: a
#                            new temp dir)
#   --dry_run                print every command (`+ ...`, one per line) instead of running it
#   -h, --help               this help
#
# Every worker gets the package and this repository's gin/ directory in ~/musiclm_jax (with a venv
# in ~/musiclm_jax/.venv) and runs COMMAND there, so relative --gin_file paths work. COMMAND runs
# with MUSICLM_JAX_DISTRIBUTED=on: `jax.distributed.initialize()` finds the pod's workers (and, for
# multislice, the MEGASCALE_* settings Cloud TPU gives the slices) by itself. Ctrl-C stops the
# local ssh sessions; processes on the workers may outlive them.
#
# Example:
#   launch/tpu_pod.sh --name musiclm-v5e --zone us-west4-a --accelerator_type v5litepod-16 -- \
#     musiclm-jax train --gin_file=gin/models/semantic/paper.gin \
#     --gin_file=gin/runs/stage_rendered.gin --gin_file=gin/mesh/tpu_v5e_16.gin \
#     --gin.MODEL_DIR="'gs://bucket/semantic'"
set -euo pipefail

readonly PROG=tpu_pod.sh
readonly REMOTE_DIR=musiclm_jax # under the workers' home directory
readonly POLL_SECONDS=30
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo_root

usage() {
  awk 'NR > 1 && /^set -euo pipefail/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
}

die_usage() {
  echo "$PROG: $*" >&2
  echo "Run '$0 --help' for usage." >&2
  exit 2
}

die() {
  echo "$PROG: error: $*" >&2
  exit 1
}

# Prints a command as a shell would read it back.
show() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
}

run() {
  show "$@"
  if ((!dry_run)); then
    "$@"
  fi
}

default_runtime_version() {
  case $1 in
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) return 1 ;;
  esac
}

name=""
zone=""
accelerator_type=""
project=""
runtime_version=""
num_slices=1
reuse=0
spot=0
package=""
extras=tpu
python=""
remote_setup=""
env_vars=()
log_dir=""
dry_run=0

parse_args() {
  while (($#)); do
    case $1 in
      -h | --help)
        usage
        exit 0
        ;;
      --*=*)
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
        continue
        ;;
      --name | --zone | --accelerator_type | --project | --runtime_version | --num_slices | \
        --package | --extras | --python | --remote_setup | --env | --log_dir)
        (($# >= 2)) || die_usage "$1 needs a value"
        case $1 in
          --name) name=$2 ;;
          --zone) zone=$2 ;;
          --accelerator_type) accelerator_type=$2 ;;
          --project) project=$2 ;;
          --runtime_version) runtime_version=$2 ;;
          --num_slices) num_slices=$2 ;;
          --package) package=$2 ;;
          --extras) extras=$2 ;;
          --python) python=$2 ;;
          --remote_setup) remote_setup=$2 ;;
          --env) env_vars+=("$2") ;;
          --log_dir) log_dir=$2 ;;
        esac
        shift 2
        ;;
      --reuse | --spot | --dry_run)
        case $1 in
          --reuse) reuse=1 ;;
          --spot) spot=1 ;;
          --dry_run) dry_run=1 ;;
        esac
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
  command=("$@")
}

check_args() {
  local kv
  [[ -n $name ]] || die_usage "--name is required"
  [[ -n $zone ]] || die_usage "--zone is required"
  [[ -n $accelerator_type ]] || die_usage "--accelerator_type is required"
  ((${#command[@]})) || die_usage "missing COMMAND (after --)"
  [[ $num_slices =~ ^[1-9][0-9]*$ ]] || die_usage "--num_slices must be a positive integer"
  if [[ -z $runtime_version ]]; then
    runtime_version=$(default_runtime_version "$accelerator_type") ||
      die_usage "no default runtime version for '$accelerator_type'; pass --runtime_version"
  fi
  for kv in "${env_vars[@]}"; do
    [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die_usage "--env wants KEY=VALUE, got '$kv'"
  done
  if [[ -n $package && ! -f $package ]]; then
    die_usage "--package $package: no such file"
  fi
}

# The gcloud command group, target flags and create flags for one slice (a TPU VM) or several
# (a queued resource, whose scp/ssh reach every node with --node=all).
setup_gcloud() {
  scope=(--zone="$zone")
  if [[ -n $project ]]; then
    scope+=(--project="$project")
  fi
  if ((num_slices > 1)); then
    api=(gcloud compute tpus queued-resources)
    all_workers=(--node=all --worker=all)
    create_flags=(--accelerator-type="$accelerator_type" --runtime-version="$runtime_version"
      --node-count="$num_slices" --node-prefix="$name")
    state_format='value(state.state)'
    ready_state=ACTIVE
    pending_states='ACCEPTED|PROVISIONING|WAITING_FOR_RESOURCES|CREATING'
  else
    api=(gcloud compute tpus tpu-vm)
    all_workers=(--worker=all)
    create_flags=(--accelerator-type="$accelerator_type" --version="$runtime_version")
    state_format='value(state)'
    ready_state=READY
    pending_states='CREATING|STARTING|RESTARTING'
  fi
  if ((spot)); then
    create_flags+=(--spot)
  fi
}

tpu_state() {
  "${api[@]}" describe "$name" "${scope[@]}" --format="$state_format" 2>/dev/null
}

wait_until_ready() {
  local state
  while true; do
    state=$(tpu_state) || state=""
    [[ $state == "$ready_state" ]] && return
    if [[ ! $state =~ ^($pending_states)$ ]]; then
      die "TPU '$name' is ${state:-gone}, not $ready_state; delete it" \
        "(${api[*]} delete $name ${scope[*]}) or choose another --name"
    fi
    echo "$PROG: TPU '$name' is $state; checking again in ${POLL_SECONDS}s"
    sleep "$POLL_SECONDS"
  done
}

# Describes the TPU; creates it when missing (a dry run assumes it is missing unless --reuse).
ensure_tpu() {
  local state=""
  show "${api[@]}" describe "$name" "${scope[@]}" --format="$state_format"
  if ((dry_run)); then
    if ((reuse)); then
      state=$ready_state
    fi
  else
    state=$(tpu_state) || state=""
  fi
  if [[ -n $state ]]; then
    echo "$PROG: TPU '$name' exists ($state)"
  elif ((reuse)); then
    die "--reuse: no TPU named '$name' in $zone"
  else
    run "${api[@]}" create "$name" "${scope[@]}" "${create_flags[@]}"
  fi
  if ((!dry_run)); then
    wait_until_ready
  fi
}

# The name `pip wheel` gives this repository's wheel, for dry runs (which build nothing).
predicted_wheel_name() {
  local version
  version=$(sed -n 's/^ *version="\([^"]*\)",.*/\1/p' "$repo_root/setup.py")
  echo "musiclm_jax-${version:-VERSION}-py3-none-any.whl"
}

# Sets `package` (built unless --package was given), `gin_archive` and `installer`.
prepare_package() {
  local package_dir=$log_dir/package wheels
  gin_archive=$package_dir/musiclm_jax_gin.tar.gz
  installer=$package_dir/musiclm_jax_install.sh
  if ((!dry_run)); then
    mkdir -p "$package_dir"
  fi
  if [[ -z $package ]]; then
    run python3 -m pip wheel --no-deps --quiet -w "$package_dir" "$repo_root"
    if ((dry_run)); then
      package=$package_dir/$(predicted_wheel_name)
    else
      wheels=("$package_dir"/*.whl)
      [[ ${#wheels[@]} == 1 && -f ${wheels[0]} ]] || die "expected one wheel in $package_dir"
      package=${wheels[0]}
    fi
  fi
  run tar -czf "$gin_archive" -C "$repo_root" gin
  if ((!dry_run)); then
    install_script >"$installer"
  fi
}

# The script each worker runs to install the package in ~/musiclm_jax/.venv (dry runs do not write
# it; it is what this function prints).
install_script() {
  local extras_suffix=""
  if [[ -n $extras ]]; then
    extras_suffix="[$extras]"
  fi
  echo 'set -e'
  printf 'dir=%q package=%q extras=%q gin_archive=%q python=%q\n' "$REMOTE_DIR" \
    "$(basename "$package")" "$extras_suffix" "$(basename "$gin_archive")" "$python"
  if [[ -n $remote_setup ]]; then
    printf '%s\n' "$remote_setup"
  fi
  cat <<'EOF'
mkdir -p "$HOME/$dir"
cd "$HOME/$dir"
rm -rf gin
tar -xzf "$HOME/$gin_archive"
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.13; do
    if command -v "$candidate" >/dev/null; then python=$candidate; break; fi
  done
fi
if [ -z "$python" ]; then
  sudo apt-get update -q
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3.11 python3.11-venv
  python=python3.11
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11) and "musiclm-jax needs Python >= 3.11; pass --python")'
if [ ! -x .venv/bin/pip ]; then
  "$python" -m venv --clear .venv || {
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$python-venv"
    "$python" -m venv --clear .venv
  }
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$HOME/$package$extras"
.venv/bin/python -m pip install -q --no-deps --force-reinstall "$HOME/$package"
EOF
}

# The command line each worker runs: COMMAND in ~/musiclm_jax with the venv first on PATH.
run_command_line() {
  local line kv
  line="cd ~/$REMOTE_DIR && export MUSICLM_JAX_DISTRIBUTED=on"
  line+=" PATH=\"\$HOME/$REMOTE_DIR/.venv/bin:\$PATH\""
  for kv in "${env_vars[@]}"; do
    line+=" $(printf '%q' "$kv")"
  done
  line+=" && exec$(printf ' %q' "${command[@]}")"
  echo "$line"
}

main() {
  parse_args "$@"
  check_args
  setup_gcloud
  if [[ -z $log_dir ]]; then
    if ((dry_run)); then
      log_dir="${TMPDIR:-/tmp}/musiclm_jax_tpu_$name.XXXXXX"
    else
      log_dir=$(mktemp -d "${TMPDIR:-/tmp}/musiclm_jax_tpu_$name.XXXXXX")
    fi
  fi
  if ((!dry_run)); then
    mkdir -p "$log_dir"
    exec > >(tee -a "$log_dir/tpu_pod.log") 2>&1
    echo "$PROG: log: $log_dir/tpu_pod.log"
  fi

  ensure_tpu
  prepare_package
  run "${api[@]}" scp "$package" "$gin_archive" "$installer" "$name:" "${scope[@]}" \
    "${all_workers[@]}"
  run "${api[@]}" ssh "$name" "${scope[@]}" "${all_workers[@]}" \
    --command="bash ~/$(basename "$installer")"
  run "${api[@]}" ssh "$name" "${scope[@]}" "${all_workers[@]}" --command="$(run_command_line)"
}

main "$@"
