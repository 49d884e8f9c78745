"""Run-file rows in the `pad decode` format, for the `pad eval` tests."""

from __future__ import annotations

import json
from pathlib import Path

PROMPTS = [
    "How do I bake bread?",
    "Tell me a joke about cats.",
    "Explain gravity to a child in one sentence.",
    "Write a short poem.",
]
RESPONSES = [
    " Mix flour, water, salt and yeast, then bake.",
    "Why did the cat cross the road? To get to the other side.",
    "Gravity is the pull that makes things fall.",
    "The quick brown fox jumps over the lazy dog.",
]


def run_row(i: int, run: str, response: str, principles=(), prompt=None, finish="eos") -> dict:
    return {
        "id": str(i), "prompt": PROMPTS[i % len(PROMPTS)] if prompt is None else prompt,
        "principles": [{"name": n, "weight": w} for n, w in principles],
        "model_input": "", "persrm_inputs": [], "response": response,
        "settings": {"run": run, "llm": "tiny", "rm": None, "topk": 10, "mode": "greedy", "temperature": 1.0,
                     "max_new_tokens": 16, "seed": 0, "reference": "base", "base_sees_principles": True,
                     "template": "t"},
        "tokens": 3, "finish_reason": finish, "seconds": 0.1,
    }  # fmt: skip


def write_run(path: Path, run: str, responses, principles=(), **kw) -> Path:
    path.write_text("".join(json.dumps(run_row(i, run, r, principles, **kw)) + "\n" for i, r in enumerate(responses)))
    return path
