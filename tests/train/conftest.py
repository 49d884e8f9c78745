"""A learnable synthetic task: the same pairs under two opposite principles, chosen and rejected swapped.

Without its principle a prompt carries no signal, so held-out accuracy of 0.9 or more for *both*
principles proves the model reads the principle text.
"""

from __future__ import annotations

import json
import random

import pytest

ANIMALS = ["cat", "dog", "fox", "owl", "cow", "pig", "bee", "ant", "rat", "eel"]
FUNNY = "Why did the chicken cross the road?"
SAFE = "I cannot help with that."


def opposite_pairs(n_prompts: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n_prompts):
        prompt = f"Tell me about the {rng.choice(ANIMALS)} number {i}."
        rows.append({"prompt": prompt, "chosen": FUNNY, "rejected": SAFE, "principle": "humor"})
        rows.append({"prompt": prompt, "chosen": SAFE, "rejected": FUNNY, "principle": "harmless"})
    return rows


@pytest.fixture(scope="session")
def opposite_jsonl():
    """write(path, n_prompts) -> path of a custom-JSONL file with 2 * n_prompts opposite pairs."""

    def write(path, n_prompts: int):
        path.write_text("".join(json.dumps(r) + "\n" for r in opposite_pairs(n_prompts)))
        return path

    return write
