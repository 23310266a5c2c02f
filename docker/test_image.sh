#!/usr/bin/env bash
# Build docker/Dockerfile for real and run the image as README.md "Docker" says, on a machine with neither
# Docker Hub nor a GPU: podman (rootful, runc) builds it on a local Debian bookworm base made with debootstrap,
# with CPU torch from a wheel folder and no network in the build; then, as a non-root user with the data
# read-only and the outputs mounted, a tiny training run, `evaluate` and `denoise` go through the entrypoint,
# and their outputs must exist on the host, owned by that user.
#
#   sudo docker/test_image.sh [--work-dir DIR] [--data DIR] [--user UID:GID] [--torch-find-links DIR|URL]
#                             [--mirror URL] [--rebuild-base]
#
#   --work-dir DIR   everything it writes (default outputs/container-test)
#   --data DIR       mounted read-only at /data; must hold kodak/ (default $SSDN_DATA_ROOT, else ../shared/data;
#                    python -m ssdn.data.download kodak --root DIR fetches it)
#   --user UID:GID   who the containers run as (default the caller behind sudo, else 1000:1000, the image's user)
#   --torch-find-links DIR|URL  where pip finds torch-2.13.0+cpu, if pip's own configuration does not say
#   --mirror URL     Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   --rebuild-base   make the Debian base again (otherwise reused)
#   PYTHON=...       the CPython 3.11 (x86_64, with pip) that builds the wheel folder (default python3)
#
# Needs root (debootstrap, podman's rootful storage) and `apt-get install podman runc debootstrap`.
# Everything it writes lies under the work dir: podman's own storage and configuration (CONTAINERS_CONF,
# CONTAINERS_STORAGE_CONF point there; the user's containers.conf and storage.conf are neither used nor
# changed), the base rootfs, the wheels and, per call, runs/<time>/ (logs, and outputs/ that the containers
# write). The base image, wheels and built layers are reused by the next call (warm: about 2 minutes);
# `rm -rf` the work dir to drop them. Exit status: 0 when every step passed, 1 when one failed (the summary names it), 2 for a bad setting.
set -euo pipefail

prog="$(basename "$0")"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${repo}/outputs/container-test"
data="${SSDN_DATA_ROOT:-${repo}/../shared/data}"
user=""
torch_links=""
mirror="http://deb.debian.org/debian"
rebuild=false
python="${PYTHON:-python3}"
base="localhost/ssdn-test-base:bookworm"
image="localhost/ssdn:test"

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; }
die() {
  echo "${prog}: error: $*" >&2
  exit 2
}
fail() {
  echo "${prog}: failed: $*" >&2
  exit 1
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --work-dir) work="${2:?--work-dir needs a folder}" && shift 2 ;;
    --data) data="${2:?--data needs a folder holding kodak/}" && shift 2 ;;
    --user) user="${2:?--user needs UID:GID}" && shift 2 ;;
    --torch-find-links) torch_links="${2:?--torch-find-links needs a folder or URL}" && shift 2 ;;
    --mirror) mirror="${2:?--mirror needs a Debian mirror URL}" && shift 2 ;;
    --rebuild-base) rebuild=true && shift ;;
    -h | --help) usage && exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[[ "$(id -u)" == 0 ]] || die "run as root (sudo): debootstrap and podman's rootful storage need it"
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || die "'$tool' not found: apt-get install podman runc debootstrap"
done
[[ -d "${data}/kodak" ]] || die "--data '${data}' holds no kodak/ (python -m ssdn.data.download fetches it)"
data="$(cd "$data" && pwd)"
work="$(mkdir -p "$work" && cd "$work" && pwd)"
case "$work/" in "$data"/*) die "--work-dir '${work}' lies inside the data folder: choose another" ;; esac
# The containers run as the caller behind sudo, else as the image's own non-root user.
user="${user:-${SUDO_UID:-1000}:${SUDO_GID:-1000}}"
[[ "$user" =~ ^[0-9]+:[0-9]+$ ]] || die "--user '${user}' is not UID:GID (numbers)"
[[ "${user%%:*}" != 0 ]] || die "--user must not be root: the image is meant to run unprivileged"

# podman's configuration, for this script only: runc (crun fails on hybrid cgroups) and no default ulimits
# (the host's rlimits are lower than podman's defaults), storage under the work dir.
mkdir -p "${work}/podman"
cat >"${work}/podman/containers.conf" <<EOF
[containers]
default_ulimits = []

[engine]
runtime = "runc"
events_logger = "file"
EOF
cat >"${work}/podman/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "${work}/podman/storage"
runroot = "${work}/podman/run"
EOF
export CONTAINERS_CONF="${work}/podman/containers.conf" CONTAINERS_STORAGE_CONF="${work}/podman/storage.conf"

steps=()
started=()
step_name=""
step_start=0
begin() {
  step_name="$1"
  step_start=$SECONDS
  echo "==> ${step_name}"
}
done_step() {
  steps+=("ok    $((SECONDS - step_start))s  ${step_name}${1:+ ($1)}")
  echo "    ok ($((SECONDS - step_start)) s)${1:+: $1}"
  step_name=""
}
finish() {
  local status=$?
  for name in "${started[@]}"; do
    podman rm --force --ignore "$name" >/dev/null 2>&1 || true
  done
  rm -rf "${work}/base/rootfs.partial"
  [[ -z "$step_name" ]] || steps+=("FAIL  $((SECONDS - step_start))s  ${step_name}")
  echo "== summary (work dir ${work})"
  printf '   %s\n' "${steps[@]}"
  if ((status == 0)); then echo "== all steps passed"; else echo "== FAILED (exit ${status})"; fi
}
trap finish EXIT

# podman run through the image's entrypoint, as README.md says: non-root, data read-only, outputs mounted,
# the W&B key passed from the environment only when it is set (without one, W&B logs offline: no network).
container=0
run_image() {
  local name="ssdn-test-$$-$((container += 1))" args
  args=(--rm --name "$name" --user "$user" --shm-size=1g -v "${data}:/data:ro" -v "${out}:/outputs")
  if [[ -n "${WANDB_API_KEY:-}" ]]; then args+=(-e WANDB_API_KEY); else args+=(--network none); fi
  started+=("$name")
  nice -n 19 podman run "${args[@]}" "$image" "$@"
}

begin "base image ${base} (Debian bookworm, debootstrap)"
if "$rebuild"; then
  podman rmi --force --ignore "$base" >/dev/null
  rm -f "${work}/base/rootfs.tar"
fi
if podman image exists "$base"; then
  done_step "cached"
else
  mkdir -p "${work}/base"
  if [[ ! -f "${work}/base/rootfs.tar" ]]; then
    rm -rf "${work}/base/rootfs.partial"
    nice -n 19 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
      bookworm "${work}/base/rootfs.partial" "$mirror" >"${work}/base/debootstrap.log" 2>&1 \
      || fail "debootstrap failed: see ${work}/base/debootstrap.log"
    # Like python:*-slim: `python` and `pip` on PATH are the interpreter pip may install into (PEP 668 forbids
    # Debian's own), a venv at /opt/python.
    chroot "${work}/base/rootfs.partial" python3 -m venv /opt/python
    chroot "${work}/base/rootfs.partial" apt-get clean
    tar --numeric-owner -C "${work}/base/rootfs.partial" -cf "${work}/base/rootfs.tar.partial" .
    mv "${work}/base/rootfs.tar.partial" "${work}/base/rootfs.tar"
    rm -rf "${work}/base/rootfs.partial"
  fi
  podman import --quiet \
    --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python"]' \
    "${work}/base/rootfs.tar" "$base" >/dev/null
  done_step "$(podman run --rm --network none "$base" python --version)"
fi

# The lock's wheels, with torch's CPU build (2.13.0+cpu satisfies the lock's torch==2.13.0), plus the build
# backend that `pip install .` needs; built by this machine's Python (a few packages are sources only), so it
# must be the image's: CPython 3.11 on Linux x86_64. Made again only when the lock changes.
begin "wheels for docker/requirements.txt (CPU torch)"
lock_hash="$(sha256sum "${repo}/docker/requirements.txt" | cut -c1-16)"
wheels="${work}/wheels"
if [[ -f "${wheels}/.complete-${lock_hash}" ]]; then
  done_step "cached"
else
  "$python" -c 'import platform, sys; sys.exit(sys.version_info[:2] != (3, 11) or platform.machine() != "x86_64")' \
    || die "${python} is not CPython 3.11 on x86_64, as the image's: set PYTHON to one"
  links=()
  [[ -z "$torch_links" ]] || links=(--find-links "$torch_links")
  nice -n 19 "$python" -m pip wheel --wheel-dir "$wheels" "${links[@]}" \
    -r "${repo}/docker/requirements.txt" "setuptools>=68" wheel >"${work}/wheels.log" 2>&1 \
    || { tail -n 30 "${work}/wheels.log" >&2 && fail "pip wheel failed: see ${work}/wheels.log"; }
  compgen -G "${wheels}/torch-2.13.0+cpu-*.whl" >/dev/null \
    || fail "no CPU torch in ${wheels} (PyPI's is the CUDA build): pass --torch-find-links with torch-2.13.0+cpu"
  touch "${wheels}/.complete-${lock_hash}"
  done_step "$(find "$wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$wheels" | cut -f1)"
fi

begin "podman build ${image} (base ${base}, no network)"
nice -n 19 podman build --quiet --network none --volume "${wheels}:/wheels:ro" \
  --build-arg "BASE_IMAGE=${base}" --build-arg PIP_FIND_LINKS=/wheels --build-arg PIP_NO_INDEX=1 \
  -f "${repo}/docker/Dockerfile" -t "$image" "$repo" >"${work}/build.log" 2>&1 \
  || { tail -n 30 "${work}/build.log" >&2 && fail "podman build failed: see ${work}/build.log"; }
done_step "$(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=iec) image"

# Each call gets its own folder: logs beside the outputs folder that the containers write.
logs="${work}/runs/$(date -u +%Y%m%d-%H%M%S)"
out="${logs}/outputs"
mkdir -p "$out"
chown "$user" "$out"
echo "    outputs: ${out}"

begin "image runs as uid ${user%%:*}, /data read-only, CPU torch"
checks="$(run_image python -c '
import os, torch
try:
    open("/data/.write-test", "w")
    print("data writable")
except OSError:
    pass
print(os.getuid(), torch.__version__, torch.cuda.is_available())')"
[[ "$checks" == "${user%%:*} 2.13.0+cpu False" ]] || fail "the image printed '${checks}', not '${user%%:*} 2.13.0+cpu False' (uid, torch, CUDA)"
done_step "$checks"

begin "train: tiny run through the entrypoint (Hydra overrides)"
run_image data=folder data.train_dir=/data/kodak data.crop_size=32 data.batch_size=2 data.val_size=32 \
  data.val_count=1 trainer.max_steps=2 trainer.val_check_interval=2 trainer.checkpoint_every_n_steps=2 \
  trainer.enable_progress_bar=false example.enabled=false >"${logs}/train.log" 2>&1 \
  || { tail -n 30 "${logs}/train.log" >&2 && fail "training failed: see ${logs}/train.log"; }
checkpoint="$(find "$out" -path '*/checkpoints/last.ckpt' -print -quit)"
[[ -n "$checkpoint" && -f "$(dirname "$(dirname "$checkpoint")")/metrics.json" ]] \
  || fail "no checkpoints/last.ckpt with metrics.json under ${out}"
done_step "${checkpoint#"${out}/"}"
ckpt="/outputs/${checkpoint#"${out}/"}"

begin "evaluate: 2 KODAK crops"
run_image evaluate --checkpoint "$ckpt" --sets kodak --limit 2 --crop 64 --repeats 1 --no-progress \
  --out /outputs/eval >"${logs}/evaluate.log" 2>&1 \
  || { tail -n 30 "${logs}/evaluate.log" >&2 && fail "evaluate failed: see ${logs}/evaluate.log"; }
[[ -f "${out}/eval/results.json" ]] || fail "evaluate wrote no ${out}/eval/results.json"
done_step "eval/results.json"

begin "denoise: one KODAK image"
run_image denoise "$ckpt" /data/kodak/kodim01.png --param 25 --out /outputs/denoised >"${logs}/denoise.log" 2>&1 \
  || { tail -n 30 "${logs}/denoise.log" >&2 && fail "denoise failed: see ${logs}/denoise.log"; }
denoised="$(find "${out}/denoised" -type f -name '*.png' -print -quit)"
[[ -n "$denoised" ]] || fail "denoise wrote no PNG under ${out}/denoised"
done_step "${denoised#"${out}/"}"

begin "outputs on the host belong to ${user}"
foreign="$(find "$out" -mindepth 1 \( ! -uid "${user%%:*}" -o ! -gid "${user##*:}" \) -print -quit)"
[[ -z "$foreign" ]] || fail "${foreign} is owned by $(stat -c %u:%g "$foreign"), not ${user}"
done_step "$(find "$out" -mindepth 1 | wc -l) paths"
