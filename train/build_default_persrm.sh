#!/usr/bin/env bash
# Rebuild the PersRM shipped in pad/assets/persrm-smollm2-135m from scratch:
# 1. self-generated concise and humor pairs from SmolLM2's own answers to train/data/general_prompts.txt
#    (concise_whole.jsonl for stage 1, concise.jsonl for stages 2 and 3, see pad/train/selfgen.py),
# 2. stage 1: DPO + LoRA (recipes/smollm2-135m/train/config_persrm_default.yaml), 530 steps,
# 3. stage 2: the same adapter, DPO + the chosen answers' NLL (config_persrm_default_stage2.yaml), 48 steps,
# 4. on-policy concise pairs: the stage-2 PersRM's guided answers (concise, w = 1) to the training prompts
#    wherever they left the base's words, rejected against the base's first sentences (train/build_drift_pairs.py),
# 5. stage 3: the stage-2 adapter on those plus a replay of the rest (config_persrm_default_stage3.yaml), 40 steps,
# 6. copy the adapter (and its pad_config.json with the data counts and held-out accuracy) into the package.
# The shipped one: data and stage 1 on one H200 GPU (16 s and 3 min), stages 2 and 3 and the on-policy pairs
# on a 2-core CPU (30 + 33 min of training, 10.5 min of decoding, and about 25 min per held-out evaluation).
# train/select_checkpoint.py then measures stage 3's checkpoints on validation prompts, if you want to
# compare them (concise at w = 1: length and base-model perplexity against vanilla).
# On a 2-core CPU alone, stage 1 takes about 4.5 hours.
# Needs ../shared/data (the HH-RLHF file) and `pip install pyjokes` (both in `make setup`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
BATCH=${BATCH:-$($PY -c 'import torch; print(64 if torch.cuda.is_available() else 40)')}
$PY train/build_default_data.py --out runs/default-persrm-data --batch-size "$BATCH"
$PY -m pad.cli train --config recipes/smollm2-135m/train/config_persrm_default.yaml --overwrite true
$PY -m pad.cli train --config recipes/smollm2-135m/train/config_persrm_default_stage2.yaml --overwrite true
$PY train/build_drift_pairs.py --rm runs/persrm-smollm2-135m-stage2 --data runs/default-persrm-data
$PY -m pad.cli train --config recipes/smollm2-135m/train/config_persrm_default_stage3.yaml --overwrite true
rm -rf pad/assets/persrm-smollm2-135m
mkdir -p pad/assets/persrm-smollm2-135m
cp runs/persrm-smollm2-135m/{adapter_config.json,adapter_model.safetensors,pad_config.json} pad/assets/persrm-smollm2-135m/
cp runs/default-persrm-data/counts.json pad/assets/persrm-smollm2-135m/selfgen_counts.json
cp runs/default-persrm-data/drift_counts.json pad/assets/persrm-smollm2-135m/drift_counts.json
cp runs/persrm-smollm2-135m-stage1/pad_config.json pad/assets/persrm-smollm2-135m/stage1_pad_config.json
cp runs/persrm-smollm2-135m-stage2/pad_config.json pad/assets/persrm-smollm2-135m/stage2_pad_config.json
echo "shipped: pad/assets/persrm-smollm2-135m"
