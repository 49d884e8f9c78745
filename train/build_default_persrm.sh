#!/usr/bin/env bash
# Rebuild the PersRM shipped in pad/assets/persrm-smollm2-135m from scratch (about two hours on a 2-core CPU):
# 1. self-generated concise and humor pairs from SmolLM2's own answers to train/data/general_prompts.txt
#    (train/build_default_data.py, pad/train/selfgen.py; 4 minutes), among them humor_appended.jsonl: the first
#    sentences with a joke after them over the first sentences alone,
# 2. one stage of DPO + the chosen answers' NLL from the base, on those pairs with their opposites (`detailed`,
#    `serious`), 96 cross-principle couples and 960 HH-RLHF harmless pairs
#    (recipes/smollm2-135m/train/config_persrm_contrastive.yaml; 96 steps of 8 pairs, about 50 minutes and
#    8 minutes of held-out evaluation),
# 3. a second stage on that adapter that teaches `humor` without "shorter": all the appended-joke pairs, crossed
#    with `concise` (first sentences over the same plus the joke), and a replay of the rest
#    (recipes/smollm2-135m/train/config_persrm_contrastive_humor_appended.yaml; 80 steps, about 41 minutes
#    and 8 minutes of held-out evaluation),
# 4. copy the adapter, its pad_config.json (data counts, settings, held-out accuracy per principle and pair
#    kind) and the generated data's counts into the package.
# The adapter shipped before 2026-12-07 came from three stages (config_persrm_default*.yaml, build_drift_pairs.py;
# train/README.md keeps how); the one-stage adapter of step 2 replaced it because its principles steer their own
# ways, and step 3 was added on 2026-12-07 because `humor` answered as short as `concise` (train/README.md).
# Needs ../shared/data (the HH-RLHF file) and `pip install pyjokes` (both in `make setup`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
BATCH=${BATCH:-$($PY -c 'import torch; print(64 if torch.cuda.is_available() else 40)')}
$PY train/build_default_data.py --out runs/default-persrm-data --batch-size "$BATCH"
$PY -m pad.cli train --config recipes/smollm2-135m/train/config_persrm_contrastive.yaml --overwrite true
$PY -m pad.cli train --config recipes/smollm2-135m/train/config_persrm_contrastive_humor_appended.yaml --overwrite true
rm -rf pad/assets/persrm-smollm2-135m
mkdir -p pad/assets/persrm-smollm2-135m
cp runs/persrm-contrastive-humor-appended/{adapter_config.json,adapter_model.safetensors,pad_config.json} pad/assets/persrm-smollm2-135m/
cp runs/persrm-smollm2-135m-contrastive/pad_config.json pad/assets/persrm-smollm2-135m/stage1_pad_config.json
cp runs/default-persrm-data/counts.json pad/assets/persrm-smollm2-135m/selfgen_counts.json
echo "shipped: pad/assets/persrm-smollm2-135m"
