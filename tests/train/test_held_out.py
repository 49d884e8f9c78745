"""Held-out splits say what they hold (issue 21, item 4).

Before: an eval_size above the number of pairs was accepted (most pairs held out, a few trained on); prompts
dropped as too long after the split silently shrank the held-out set; the held-out "loss" was DPO's sigmoid
loss whatever loss_type trained, under a name that said otherwise.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pad.cli import app
from tests.train.conftest import FUNNY, SAFE


def _pairs(short: int, long: int) -> str:
    rows = []
    for i in range(short + long):
        prompt = f"Tell me about the cat number {i}." * (1 if i < short else 10)  # ~110 vs ~310 prompt tokens
        rows.append({"prompt": prompt, "chosen": FUNNY, "rejected": SAFE, "principle": "humor"})
        rows.append({"prompt": prompt, "chosen": SAFE, "rejected": FUNNY, "principle": "harmless"})
    return "".join(json.dumps(r) + "\n" for r in rows)


def _train(tmp_path, tiny_llama, data: str, *extra: str):
    path = tmp_path / "pairs.jsonl"
    path.write_text(data)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"base_model: {tiny_llama}\nsources: [{{kind: jsonl, path: {path}}}]\nmax_length: 256\n"
                      "max_prompt_length: 200\nlora_r: 4\nper_device_train_batch_size: 4\nmax_steps: 1\n"
                      "eval_steps: 0\nsave_steps: 0\n")
    return CliRunner().invoke(app, ["train", "--config", str(recipe), "--output_dir", str(tmp_path / "run"), *extra])


def test_eval_size_above_the_pairs_is_refused(tmp_path, tiny_llama):
    r = _train(tmp_path, tiny_llama, _pairs(4, 0), "--eval_size", "500")
    assert r.exit_code == 2, r.output
    last = r.output.strip().splitlines()[-1]
    assert last == ("error: eval_size 500 asks to hold out as many pairs as there are (8, after skipping and "
                    "fitting); give a number below 8 or a fraction below 1"), r.output


def test_split_after_fitting_keeps_the_held_out_size_and_names_the_loss(tmp_path, tiny_llama):
    # 6 prompts that fit and 12 that cannot: 36 pairs, 24 of them too long; 8 held out by whole prompts.
    r = _train(tmp_path, tiny_llama, _pairs(6, 12), "--eval_size", "8", "--loss_type", "ipo")
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "run" / "pad_config.json").read_text())
    assert record["data"]["eval_pairs"] == 8 and record["data"]["train_pairs"] == 4
    counts = record["data"]["counts"]["jsonl:pairs.jsonl"]
    assert counts["humor"]["too_long"] == 12 and counts["harmless"]["too_long"] == 12
    assert counts["humor"]["eval"] == 4 and counts["humor"]["pairs"] == 6
    # Its held-out prompts are recorded as a digest, for a later stage's split check.
    assert list(record["data"]["held_out_prompts"]) == ["jsonl:pairs.jsonl"]
    # The numbers of a small held-out set are printed beside it.
    assert "warning: only 4 held-out harmless pairs: its held-out accuracy moves in steps of 0.25" in r.output
    assert "warning: only 4 pairs left to train on against 8 held out; lower eval_size" in r.output
    # The held-out loss is named for what was measured (ipo trained; the held-out loss is DPO's sigmoid one).
    assert "sigmoid_loss" in record["eval"] and "loss" not in record["eval"]
