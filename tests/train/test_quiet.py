"""`pad train` and `pad merge` print pad's own progress only, and `pad train --help` lists what can be
overridden (issue 21, item 6). Run as real processes: pytest's own warning filters would hide the noise.

Before: library deprecation warnings (one from pad's own `gradient_checkpointing` key), datasets' per-split
bars and transformers' weight-loading bars; `pad train --help` listed only --config.
"""

from __future__ import annotations

import dataclasses
import sys

from tests.parallel_helpers import run

NOISE = ("Warning", "warnings.warn", "Generating train split", "Loading weights", "Map", "Writing model shards",
         "eval dataset")


def test_train_and_merge_print_no_library_noise(tmp_path, tiny_llama, opposite_jsonl):
    data = opposite_jsonl(tmp_path / "d.jsonl", 8)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"base_model: {tiny_llama}\nsources: [{{kind: jsonl, path: {data}}}]\nmax_length: 160\n"
                      "lora_r: 4\nmax_steps: 2\neval_steps: 1\nsave_steps: 0\neval_size: 4\n"
                      "gradient_checkpointing: true\nnum_train_epochs: 2\n")
    out = tmp_path / "run"
    r = run([sys.executable, "-m", "pad.cli", "train", "--config", str(recipe), "--output_dir", str(out)])
    text = r.stdout + r.stderr
    assert "saved the PersRM adapter" in text
    for noise in NOISE:
        assert noise not in text, f"{noise!r} in:\n{text}"
    r = run([sys.executable, "-m", "pad.cli", "merge", str(out), "--out", str(tmp_path / "merged")])
    text = r.stdout + r.stderr
    assert "largest logit difference" in text
    for noise in NOISE:
        assert noise not in text, f"{noise!r} in:\n{text}"


def test_train_help_lists_every_field():
    from pad.train.config import TrainConfig

    r = run([sys.executable, "-m", "pad.cli", "train", "--help"])
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name} (" in r.stdout, f.name
    assert "--learning_rate (5e-05): Peak learning rate" in r.stdout
