#!/usr/bin/env bash
# Reduced Table 1 (Gaussian σ = 25) on a 2-core CPU: N2C, N2N, Our σ known / σ unknown, diag Σ, μ only, CBM3D.
# Every trained row gets the same budget: 4,000 images (1,000 steps of 4 crops of 128², bf16 on CPU), then
# KODAK ×1 (24 images, the authors' padding). About 2 h on 2 cores. Usage: bash sweeps/table1/cpu_reduced.sh [overrides]
# (e.g. resume=auto to continue an interrupted sweep: finished rows are only re-evaluated)
# 128² crops, not 64²: a net trained only on 64² crops scores below the noisy input on full-size images.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${SSDN_DATA_ROOT:?set SSDN_DATA_ROOT to the folder holding kodak/ and train-imagenet-sample-1000/}"
rows=gauss25-n2c,gauss25-n2n,gauss25-blindspot-sigma_known,gauss25-blindspot-sigma_global
rows=$rows,gauss25-blindspot_diag-sigma_known,gauss25-blindspot_mean,gauss25-cbm3d-sigma_known
python train.py -m "+experiment/table1=$rows" \
  trainer=cpu trainer.enable_progress_bar=false trainer.val_check_interval=250 trainer.checkpoint_every_n_steps=250 \
  data.crop_size=128 data.batch_size=4 data.num_workers=0 data.val_count=4 data.val_size=256 \
  train.images=4000 \
  eval.sets=[kodak] eval.repeats=1 \
  hydra.sweep.dir="${SWEEP_DIR:-multirun/table1-cpu}" "$@"
