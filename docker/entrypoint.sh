#!/usr/bin/env bash
# Container entry point.
#   IMAGE [hydra overrides ...]                 train: python train.py ... (also with a leading "train")
#   IMAGE evaluate|denoise|prepare|download ... the other ssdn commands (python -m ssdn.<command> ...)
#   IMAGE python|bash|sh ...                    anything else, for debugging
# Training runs go under $SSDN_OUTPUT_ROOT (/outputs) unless the arguments set hydra.run.dir / hydra.sweep.dir.
# Works outside the container too: SSDN_HOME is the checkout holding train.py.
set -euo pipefail

home="${SSDN_HOME:-/opt/ssdn}"
out="${SSDN_OUTPUT_ROOT:-/outputs}"

# W&B keeps settings and caches under $HOME; a container started as another uid (--user) may not have one.
if [[ ! -w "${HOME:-/nonexistent}" ]]; then
  HOME="$(mktemp -d)"
  export HOME
fi

case "${1:-}" in
  evaluate | denoise | prepare)
    command="$1"
    shift
    exec python -m "ssdn.${command}" "$@"
    ;;
  download)
    shift
    exec python -m ssdn.data.download "$@"
    ;;
  python | bash | sh)
    exec "$@"
    ;;
  train)
    shift
    ;;
esac

defaults=()
run_dir=false
sweep_dir=false
first_override=""
for i in $(seq 1 "$#"); do
  case "${!i}" in
    -*) continue ;;
    *hydra.run.dir=*) run_dir=true ;;
    *hydra.sweep.dir=*) sweep_dir=true ;;
  esac
  case "${!i}" in
    *=* | '~'*) first_override="${first_override:-$((i - 1))}" ;;
  esac
done
# Single quotes on purpose: Hydra, not the shell, resolves ${run.name} and ${now:...}.
# shellcheck disable=SC2016
{
  "$run_dir" || defaults+=("hydra.run.dir=${out}"'/${run.name}/${now:%Y-%m-%d_%H-%M-%S}')
  "$sweep_dir" || defaults+=("hydra.sweep.dir=${out}"'/multirun/${now:%Y-%m-%d_%H-%M-%S}')
}
# Hydra reads its overrides as one run of arguments: the defaults go right before the caller's first
# override (or first of all), so that options such as -m or --cfg job may come before them.
at="${first_override:-0}"
exec python "${home}/train.py" "${@:1:at}" "${defaults[@]}" "${@:at+1}"
