#!/usr/bin/env bash
# Rebuild the PersRM shipped in pad/assets/persrm-smollm2-135m from scratch:
# 1. self-generated concise and humor pairs from SmolLM2's own answers to train/data/general_prompts.txt,
# 2. stage 1: DPO + LoRA (recipes/smollm2-135m/train/config_persrm_default.yaml), 530 steps,
# 3. stage 2: the same adapter, DPO + the chosen answers' NLL (config_persrm_default_stage2.yaml), 48 steps,
#    a checkpoint every 8,
# 4. pick the checkpoint (train/select_checkpoint.py: the most-trained one whose `concise` answers at w = 1
#    stay within 1.5x vanilla perplexity on the validation prompts, train/data/validation_prompts.jsonl),
# 5. measure its held-out accuracy against the base (pad train eval_only), and copy the adapter with its
#    pad_config.json (data counts, held-out accuracy, the selection) into the package.
# The shipped one: data and stage 1 on one H200 GPU (16 s and 3 min), stage 2 on a 2-core CPU (about 30 min
# of training), the selection about 15 min and the held-out evaluation about 15 min.
# On a 2-core CPU alone, stage 1 takes about 4.5 hours.
# Needs ../shared/data (the HH-RLHF file) and `pip install pyjokes` (both in `make setup`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
BATCH=${BATCH:-$($PY -c 'import torch; print(64 if torch.cuda.is_available() else 40)')}
$PY train/build_default_data.py --out runs/default-persrm-data --batch-size "$BATCH"
$PY -m pad.cli train --config recipes/smollm2-135m/train/config_persrm_default.yaml --overwrite true
$PY -m pad.cli train --config recipes/smollm2-135m/train/config_persrm_default_stage2.yaml --overwrite true
$PY train/select_checkpoint.py --run runs/persrm-smollm2-135m --out runs/select
CKPT=$($PY -c 'import json; print(json.load(open("runs/select/select.json"))["chosen"]["checkpoint"])')
$PY -m pad.cli train --config recipes/smollm2-135m/train/config_persrm_default_stage2.yaml \
    --init_adapter "$CKPT" --eval_only true --output_dir runs/persrm-smollm2-135m-shipped --overwrite true
$PY - <<'PYEOF'
import json
from pathlib import Path
path = Path("runs/persrm-smollm2-135m-shipped/pad_config.json")
cfg = json.loads(path.read_text())
sel = json.loads(Path("runs/select/select.json").read_text())
cfg["stage2_checkpoint"] = {"step": sel["chosen"]["step"], "of_steps": cfg["train"]["max_steps"], "selection": sel}
cfg["eval_note"] = ("eval: held-out pairs (the same as stage 1's), implicit reward against the base model, measured "
                    "by pad train with init_adapter = the chosen stage-2 checkpoint and eval_only = true")
path.write_text(json.dumps(cfg, indent=1) + "\n")
PYEOF
rm -rf pad/assets/persrm-smollm2-135m
mkdir -p pad/assets/persrm-smollm2-135m
cp runs/persrm-smollm2-135m-shipped/{adapter_config.json,adapter_model.safetensors,pad_config.json} pad/assets/persrm-smollm2-135m/
cp runs/default-persrm-data/counts.json pad/assets/persrm-smollm2-135m/selfgen_counts.json
cp runs/persrm-smollm2-135m-stage1/pad_config.json pad/assets/persrm-smollm2-135m/stage1_pad_config.json
echo "shipped: pad/assets/persrm-smollm2-135m ($CKPT)"
