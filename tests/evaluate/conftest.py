"""Tiny reward models for `pad eval`, built in the session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_rm(tiny_dir, tiny_tokenizer) -> Path:
    """One-logit sequence classifier (the shape of the Ray2333 GPT-2 reward models)."""
    from pad.testing import save_tiny_classifier

    return save_tiny_classifier(tiny_dir / "rm1", num_labels=1, seed=10, tokenizer=tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_rm2(tiny_dir, tiny_tokenizer) -> Path:
    """Two-label classifier (the shape of the humor classifier)."""
    from pad.testing import save_tiny_classifier

    return save_tiny_classifier(tiny_dir / "rm2", num_labels=2, seed=11, tokenizer=tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_armo(tiny_dir, tiny_tokenizer) -> Path:
    """ArmoRM look-alike saved as a remote-code checkpoint (config auto_map + modeling file)."""
    from pad.testing import save_tiny_armo

    return save_tiny_armo(tiny_dir / "armo", seed=12, tokenizer=tiny_tokenizer)

