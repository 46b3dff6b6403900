#!/usr/bin/env bash
# Start `python -m experiments.train` on this machine, on N local processes, or on every worker of a TPU pod.
#
#   ./launch.sh local CONFIG WORKDIR [ARGS...]            one process, all local devices
#   ./launch.sh procs N CONFIG WORKDIR [ARGS...]          N processes joined by jax.distributed over loopback
#   ./launch.sh tpu [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [ARGS...]
#                                                         copy, install and run on all workers of a TPU VM slice
#                                                         (--dry-run: print the commands instead)
#
# WORKDIR is a gs:// bucket (each TPU worker installs lgm[cloud]) or a path every process sees. ARGS are
# passed on (e.g. --config.train.num_steps=100). In `procs` mode each process sees
# LGM_LOCAL_DEVICES CPU devices (default 1; e.g. LGM_LOCAL_DEVICES=4 for 2 x 4 = 8 devices), and
# process 0's output goes to the terminal, the others' to WORKDIR/logs/process_I.log.
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
mode=$1; shift

case "$mode" in
  local)
    [ $# -ge 2 ] || usage
    config=$1 workdir=$2; shift 2
    exec python -m experiments.train --config="$config" --workdir="$workdir" "$@"
    ;;
  procs)
    [ $# -ge 3 ] || usage
    n=$1 config=$2 workdir=$3; shift 3
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "launch.sh: N must be a positive integer, got '$n'" >&2; exit 2; }
    port=${LGM_PORT:-$((20000 + RANDOM % 20000))}
    mkdir -p "$workdir/logs"
    export LGM_COORDINATOR="127.0.0.1:$port" LGM_NUM_PROCESSES="$n" JAX_PLATFORMS=cpu
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${LGM_LOCAL_DEVICES:-1}"
    pids=()
    trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
    for ((i = n - 1; i >= 0; i--)); do
      if [ "$i" -eq 0 ]; then
        LGM_PROCESS_ID=0 python -m experiments.train --config="$config" --workdir="$workdir" "$@" &
      else
        LGM_PROCESS_ID=$i python -m experiments.train --config="$config" --workdir="$workdir" "$@" \
          >"$workdir/logs/process_$i.log" 2>&1 &
      fi
      pids+=($!)
    done
    status=0
    for ((k = 0; k < n; k++)); do  # fail fast: one dead process would leave the others waiting in collectives
      if ! wait -n; then
        [ $status -ne 0 ] || echo "launch.sh: a process failed; stopping the others (logs: $workdir/logs/)" >&2
        status=1
        kill "${pids[@]}" 2>/dev/null || true
      fi
    done
    exit $status
    ;;
  tpu)
    dry_run=false
    if [ "${1:-}" = --dry-run ]; then dry_run=true; shift; fi
    run() { if $dry_run; then printf '%q ' "$@" | sed 's/ $//'; echo; else "$@"; fi; }
    [ $# -ge 4 ] || usage
    tpu=$1 zone=$2 config=$3 workdir=$4; shift 4
    here=$(cd "$(dirname "$0")" && pwd)
    args=$(printf ' %q' "$@")
    remote="set -e; mkdir -p ~/lgm && tar -C ~/lgm -xzf /tmp/lgm_code.tgz && cd ~/lgm && pip install -q -e '.[cloud]' 'jax[tpu]==0.10.2' && LGM_DISTRIBUTED=auto python -m experiments.train --config=$(printf %q "$config") --workdir=$(printf %q "$workdir")$args"
    run tar -C "$here" --exclude=.git --exclude=runs -czf /tmp/lgm_code.tgz .
    run gcloud compute tpus tpu-vm scp /tmp/lgm_code.tgz "$tpu":/tmp/lgm_code.tgz --zone="$zone" --worker=all
    run gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$remote"
    ;;
  *) usage ;;
esac
