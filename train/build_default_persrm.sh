#!/usr/bin/env bash
# Rebuild the PersRM shipped in pad/assets/persrm-smollm2-135m from scratch (about 70 minutes on a 2-core CPU):
# 1. self-generated concise and humor pairs from SmolLM2's own answers to train/data/general_prompts.txt
#    (train/build_default_data.py, pad/train/selfgen.py; 4 minutes),
# 2. one stage of DPO + the chosen answers' NLL from the base, on those pairs with their opposites (`detailed`,
#    `serious`), 96 cross-principle couples and 960 HH-RLHF harmless pairs
#    (recipes/smollm2-135m/train/config_persrm_contrastive.yaml; 96 steps of 8 pairs, about 50 minutes and
#    8 minutes of held-out evaluation),
# 3. copy the adapter, its pad_config.json (data counts, settings, held-out accuracy per principle and pair
#    kind) and the generated data's counts into the package.
# The adapter shipped before 2026-12-07 came from three stages (config_persrm_default*.yaml, build_drift_pairs.py;
# train/README.md keeps how); this one replaced it because its principles steer their own ways.
# Needs ../shared/data (the HH-RLHF file) and `pip install pyjokes` (both in `make setup`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
BATCH=${BATCH:-$($PY -c 'import torch; print(64 if torch.cuda.is_available() else 40)')}
$PY train/build_default_data.py --out runs/default-persrm-data --batch-size "$BATCH"
$PY -m pad.cli train --config recipes/smollm2-135m/train/config_persrm_contrastive.yaml --overwrite true
rm -rf pad/assets/persrm-smollm2-135m
mkdir -p pad/assets/persrm-smollm2-135m
cp runs/persrm-smollm2-135m-contrastive/{adapter_config.json,adapter_model.safetensors,pad_config.json} pad/assets/persrm-smollm2-135m/
cp runs/default-persrm-data/counts.json pad/assets/persrm-smollm2-135m/selfgen_counts.json
echo "shipped: pad/assets/persrm-smollm2-135m"
