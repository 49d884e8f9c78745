"""The fresh validation prompts (benchmarks/data/fresh_prompts.json): written for this project, fixed before the
retraining of issue 22, used only for the final table. None may come near a training, validation or P-Soups
prompt, or the table would measure what was trained on."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRESH = ROOT / "benchmarks" / "data" / "fresh_prompts.json"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_fresh_prompts_format_and_size():
    data = json.loads(FRESH.read_text())
    assert isinstance(data, list) and len(data) >= 60
    assert all(set(d) == {"id", "prompt"} and isinstance(d["prompt"], str) and d["prompt"].strip() for d in data)
    assert len({d["id"] for d in data}) == len(data) and len({_norm(d["prompt"]) for d in data}) == len(data)


def test_fresh_prompts_are_unlike_the_others(shared_data):
    fresh = [_norm(d["prompt"]) for d in json.loads(FRESH.read_text())]
    others = [_norm(line) for line in (ROOT / "train" / "data" / "general_prompts.txt").read_text().splitlines()
              if line.strip()]
    others += [_norm(json.loads(line)["prompt"]) for line in
               (ROOT / "train" / "data" / "validation_prompts.jsonl").read_text().splitlines() if line.strip()]
    others += [_norm(d["prompt"]) for d in json.loads((shared_data / "koala_eval_50.json").read_text())]
    for f in fresh:
        close = max(others, key=lambda o: difflib.SequenceMatcher(None, f, o).ratio())
        assert difflib.SequenceMatcher(None, f, close).ratio() < 0.7, (f, close)
