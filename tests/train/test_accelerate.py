"""`pad train` unchanged under `accelerate launch` with two CPU processes (gloo).

Slow: it starts two Python processes (about half a minute on two cores). The command it runs is the
one train/README.md documents.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_two_cpu_processes_train_the_tiny_model(tmp_path, tiny_llama, opposite_jsonl):
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    if not Path(accelerate).exists():
        pytest.skip("accelerate's launcher is not installed")
    data = opposite_jsonl(tmp_path / "opposite.jsonl", 48)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"base_model: {tiny_llama}\noutput_dir: {tmp_path / 'out'}\nsources: [{{kind: jsonl, path: {data}}}]\n"
        "eval_size: 0.34\nmax_length: 160\nlora_r: 8\nlora_alpha: 16\nlora_dropout: 0.0\n"
        "learning_rate: 5.0e-3\nwarmup_ratio: 0.0\nmax_steps: 16\nper_device_train_batch_size: 4\n"
        "eval_steps: 8\nlogging_steps: 4\nsave_steps: 8\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "-m", "pad.cli", "train",
           "--config", str(recipe)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 process(es)" in r.stdout
    record = json.loads((tmp_path / "out" / "pad_config.json").read_text())
    assert record["train"]["processes"] == 2 and record["train"]["steps"] == 16
    for name, m in record["eval"]["principles"].items():
        assert m["accuracy"] >= 0.9, (name, m)
        assert m["n"] == record["data"]["counts"]["jsonl:opposite.jsonl"][name]["eval"]  # no pair counted twice
    assert (tmp_path / "out" / "checkpoint-16").is_dir()
