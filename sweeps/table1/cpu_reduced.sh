#!/usr/bin/env bash
# Reduced Table 1 (Gaussian σ = 25) on a 2-core CPU: N2C, N2N, Our σ known / σ unknown, diag Σ, μ only, CBM3D.
# Every trained row gets the same budget: 2,000 images (1,000 steps of 2 random 256² crops, the paper's crop
# size, bf16 on CPU), then KODAK ×1 (24 images, the authors' padding). About 3 h on 2 cores.
# Usage: [ROWS=row,row] bash sweeps/table1/cpu_reduced.sh [overrides]  (resume=auto continues an interrupted
# sweep; ROWS picks some rows, e.g. ROWS=gauss25-n2c,gauss25-n2n ... train.images=8000 for equal compute)
# 256² crops, not 64² or 128²: a blind-spot net trained briefly on small crops does not carry over to full
# images (sweeps/table1/README.md, "Crop size").
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${SSDN_DATA_ROOT:?set SSDN_DATA_ROOT to the folder holding kodak/ and train-imagenet-sample-1000/}"
rows=gauss25-n2c,gauss25-n2n,gauss25-blindspot-sigma_known,gauss25-blindspot-sigma_global
rows=$rows,gauss25-blindspot_diag-sigma_known,gauss25-blindspot_mean,gauss25-cbm3d-sigma_known
python train.py -m "+experiment/table1=${ROWS:-$rows}" \
  trainer=cpu trainer.enable_progress_bar=false trainer.val_check_interval=250 trainer.checkpoint_every_n_steps=250 \
  data.crop_size=256 data.batch_size=2 data.num_workers=0 data.val_count=4 data.val_size=256 \
  train.images=2000 \
  eval.sets=[kodak] eval.repeats=1 \
  hydra.sweep.dir="${SWEEP_DIR:-multirun/table1-cpu}" "$@"
