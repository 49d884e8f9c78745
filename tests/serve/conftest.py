"""Fixtures of the server tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def long_model(tiny_dir, tiny_tokenizer):
    """A tiny base with a long context, so that one row can be kept decoding for seconds."""
    from pad.testing import save_tiny_model

    return save_tiny_model(tiny_dir / "llama_long", "llama", seed=0, tokenizer=tiny_tokenizer, max_positions=8192)
