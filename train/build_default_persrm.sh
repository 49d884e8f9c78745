#!/usr/bin/env bash
# Rebuild the PersRM shipped in pad/assets/persrm-smollm2-135m from scratch (about 1.5 hours on 2 CPU cores):
# 1. self-generated concise and humor pairs from SmolLM2's own answers, 2. DPO + LoRA training,
# 3. copy the adapter (and its pad_config.json with the data counts and held-out accuracy) into the package.
# Needs ../shared/data (the HH-RLHF file) and `pip install pyjokes`.
set -euo pipefail
cd "$(dirname "$0")/.."
HH=${HH:-../shared/data/hh-rlhf-harmless-base-test.part1.jsonl.gz}
python train/build_default_data.py --hh "$HH" --out runs/default-persrm-data --batch-size 41
pad train --config recipes/smollm2-135m/train/config_persrm_default_cpu.yaml --overwrite true
rm -rf pad/assets/persrm-smollm2-135m
mkdir -p pad/assets/persrm-smollm2-135m
cp runs/persrm-smollm2-135m/{adapter_config.json,adapter_model.safetensors,pad_config.json} pad/assets/persrm-smollm2-135m/
cp runs/default-persrm-data/counts.json pad/assets/persrm-smollm2-135m/selfgen_counts.json
echo "shipped: pad/assets/persrm-smollm2-135m"
