"""A tiny PersRM trained with cross-principle pairs tells two principles apart where the same run without them
does not.

The task mirrors the shipped PersRM's trap: every source pair prefers an answer over a plain one, humor a joke
and harmless a refusal, and the refusal wins far more pairs (eight a prompt against the joke's one), as short
answers did in the shipped data. Nothing says which of the two preferred answers each principle wants, so the
refusal, "generally good", wins under humor too. Held-out cross-principle pairs (humor: joke over refusal,
harmless: refusal over joke) measure it; the run without them is measured on the same held-out pairs by an
`eval_only` run of its adapter with `cross_principle_pairs` on (derived pairs never move the split).
Measured here: humor's cross accuracy 0.0 without them (margin -1.05), 1.0 with them (+2.53).
"""

from __future__ import annotations

import json
import random

import pytest

from tests.train.conftest import ANIMALS, FUNNY, SAFE
from tests.train.test_train import tiny_config

PLAINS = ["It is an animal that lives on a farm.", "It has four legs.", "Some people keep one.", "It eats food.",
          "It sleeps at night.", "It can be seen in a zoo.", "It is not a plant.", "It was born small."]


def shared_rejected_rows(n_prompts: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n_prompts):
        prompt = f"Tell me about the {rng.choice(ANIMALS)} number {i}."
        rows.append({"prompt": prompt, "chosen": FUNNY, "rejected": PLAINS[0], "principle": "humor"})
        rows += [{"prompt": prompt, "chosen": SAFE, "rejected": plain, "principle": "harmless"} for plain in PLAINS]
    return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama):
    from pad.train.run import train

    tmp = tmp_path_factory.mktemp("contrastive")
    data = tmp / "shared.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in shared_rejected_rows(48)))
    common = {"eval_size": 0.34, "eval_steps": 0}
    with_cross = train(tiny_config(tmp / "with", tiny_llama, data, cross_principle_pairs=True, **common),
                       echo=lambda _: None)
    without = train(tiny_config(tmp / "without", tiny_llama, data, **common), echo=lambda _: None)
    measured = train(tiny_config(tmp / "measured", tiny_llama, data, cross_principle_pairs=True, eval_only=True,
                                 init_adapter=str(without.output_dir), **common), echo=lambda _: None)
    return with_cross, without, measured


def test_cross_pairs_make_each_principle_prefer_its_own_answer(runs):
    with_cross, without, measured = runs
    for result in (with_cross, measured):
        assert set(result.eval["kinds"]) == {"source", "cross"}
        assert set(result.eval["kinds"]["cross"]["principles"]) == {"harmless", "humor"}
    trained = with_cross.eval["kinds"]["cross"]["principles"]
    untrained = measured.eval["kinds"]["cross"]["principles"]
    print("with cross pairs", trained, "\nwithout", untrained, "\nsource pairs without",
          without.eval["principles"])
    for name in ("harmless", "humor"):
        assert trained[name]["n"] == untrained[name]["n"] >= 16
        assert trained[name]["accuracy"] >= 0.9, (name, trained[name])
    # Without them, the refusal wins under both principles.
    assert untrained["humor"]["accuracy"] <= 0.5 and untrained["humor"]["margin"] < 0, untrained
    # Both runs learned their source pairs; only the cross pairs tell the principles apart.
    for name in ("harmless", "humor"):
        assert without.eval["principles"][name]["accuracy"] >= 0.9


def test_pad_config_records_kinds(runs):
    from pad.models import read_pad_config

    with_cross, _, _ = runs
    record = read_pad_config(with_cross.output_dir)
    assert record["eval"]["kinds"]["cross"]["n"] == with_cross.eval["kinds"]["cross"]["n"]
    counts = record["data"]["counts"]["cross-principle"]
    assert counts["humor"]["train"] > 0 and counts["humor"]["eval"] == with_cross.eval["kinds"]["cross"][
        "principles"]["humor"]["n"]


def test_cli_reports_pair_kinds(tmp_path, tiny_llama):
    from typer.testing import CliRunner

    from pad.cli import app

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in shared_rejected_rows(8)))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"base_model: {tiny_llama}\nmax_length: 160\nlora_r: 4\neval_size: 0.5\n"
                      "cross_principle_pairs: true\n"
                      f"sources: [{{kind: jsonl, path: {data}, opposites: {{humor: serious}}}}]\n")
    r = CliRunner().invoke(app, ["train", "--config", str(recipe), "--output_dir", str(tmp_path / "o"),
                                 "--max_steps", "1", "--save_steps", "0", "--eval_steps", "0"])
    assert r.exit_code == 0, r.output
    assert "jsonl:d.jsonl (opposite) / serious: pairs 8" in r.output
    # true crosses the sources' own principles: humor and harmless, not the opposite serious
    assert "cross-principle / humor: pairs 8, train 4, eval 4" in r.output
    assert "cross-principle / serious" not in r.output and "pair kinds: source 36 + 36 held out" in r.output
    for kind in ("source", "opposite", "cross"):
        assert f"held-out {kind} pairs: accuracy" in r.output, r.output
