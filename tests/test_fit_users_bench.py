"""benchmarks/fit_users.py's harmless user: with --held-out-of, only pairs the PersRM's recipe held out (the
shared HH file is the PersRM's training data too)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_helpers import load_benchmark

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def fit_users():
    return load_benchmark("fit_users.py", "fit_users_bench")


def test_the_harmless_user_takes_only_held_out_pairs(fit_users, shared_data, tmp_path):
    """A recipe holding out 300 HH pairs by prompt: the harmless user drawn with its held-out set uses none of
    the recipe's training pairs, where the file's first pairs (the default) are mostly training pairs."""
    from pad.models import load_tokenizer
    from pad.train.common import build_training_mixture
    from pad.train.config import load_train_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base_model: HuggingFaceTB/SmolLM2-135M-Instruct\neval_size: 300\nmax_length: 256\n"
                      f"max_prompt_length: 128\nsources:\n  - kind: hh_rlhf\n"
                      f"    path: {shared_data / 'hh-rlhf-harmless-base-test.part1.jsonl.gz'}\n"
                      f"    principles: {{harmless: chosen}}\n")
    cfg = load_train_config(str(recipe))
    mix = build_training_mixture(cfg, load_tokenizer(cfg.base_model))
    trained = {(p.prompt[-1]["content"], p.chosen.strip()) for p in mix.train}
    held = fit_users.held_out_harmless(str(recipe))
    assert len(held) == len(mix.eval) >= 300 and not held & trained

    users = fit_users.harmless_pairs(20, 700, held)
    assert len(users) == 20 and all((u["prompt"], u["chosen"]) in held for u in users)
    first = fit_users.harmless_pairs(20, 700)
    assert sum((u["prompt"], u["chosen"]) in trained for u in first) > 10
