"""ArmoRM on transformers 5 (issue 21, item 1): its checkpoint's remote code imports LLAMA_INPUTS_DOCSTRING,
which transformers 5 removed, so `armo-*` scorers failed with an ImportError. pad now computes the
architecture itself from the checkpoint's weights; the scores must equal the remote code's wherever it loads.

The tiny checkpoint (pad.testing.save_tiny_armorm) carries a remote-code file that imports what the real one
imports; here the remote code runs with the removed name supplied, as it would on transformers 4.
"""

import pytest
import torch
from eval_helpers import PROMPTS, RESPONSES

from pad.evaluate.inputs import Row
from pad.evaluate.scorers import build_dimensions

ROWS = [Row(str(i), p, r) for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES))]


@pytest.fixture(scope="module")
def tiny_armorm(tmp_path_factory, tiny_tokenizer):
    from pad.testing import save_tiny_armorm

    return save_tiny_armorm(tmp_path_factory.mktemp("armorm") / "armorm", seed=13, tokenizer=tiny_tokenizer)


def _score(dims, batch_size):
    from pad.evaluate.inputs import Run
    from pad.evaluate.report import score_runs

    return score_runs([Run("r", None, list(ROWS))], dims, None, batch_size)["r"].values


def test_armorm_scores_equal_its_own_remote_code(tiny_armorm, tiny_tokenizer, monkeypatch):
    import transformers.models.llama.modeling_llama as llama
    from transformers import AutoModelForSequenceClassification

    if not hasattr(llama, "LLAMA_INPUTS_DOCSTRING"):  # transformers 5: the checkpoint's own code cannot load
        with pytest.raises(ImportError, match="LLAMA_INPUTS_DOCSTRING"):
            AutoModelForSequenceClassification.from_pretrained(tiny_armorm, trust_remote_code=True)

    dims = build_dimensions([f"armo-helpfulness={tiny_armorm}", f"armo-harmless={tiny_armorm}",
                             f"armo-score={tiny_armorm}", f"armo-code-style={tiny_armorm}"])
    assert len({id(d.scorer) for d in dims}) == 1
    got = _score(dims, batch_size=3)  # batched, right-padded: each text must score as it does alone
    assert type(dims[0].scorer.model).__module__ == "pad.evaluate.armo"

    monkeypatch.setattr(llama, "LLAMA_INPUTS_DOCSTRING", "", raising=False)  # what transformers 4 has
    remote = AutoModelForSequenceClassification.from_pretrained(tiny_armorm, trust_remote_code=True).eval()
    assert type(remote).__name__ == "LlamaForRewardModelWithGating" and type(remote).__module__ != "pad.evaluate.armo"
    scores = []
    for row in ROWS:
        msgs = [{"role": "user", "content": row.prompt}, {"role": "assistant", "content": row.response.strip()}]
        text = tiny_tokenizer.apply_chat_template(msgs, tokenize=False)
        ids = torch.tensor([tiny_tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = remote(input_ids=ids)
        rewards, score = out.rewards[0], float(out.score[0])
        assert got["armo-helpfulness"][row.id] == pytest.approx(float(rewards[0]), abs=1e-5)
        assert got["armo-harmless"][row.id] == pytest.approx(float(rewards[10]), abs=1e-5)
        assert got["armo-code-style"][row.id] == pytest.approx(float(rewards[15]), abs=1e-5)
        assert got["armo-score"][row.id] == pytest.approx(score, abs=1e-5)
        scores.append(score)
    assert len({round(s, 4) for s in scores}) == len(ROWS)  # the texts do score differently


def test_armorm_needs_no_trust_in_remote_code(tiny_armorm):
    """pad never runs ArmoRM's code, so a plain model spec needs no --trust-remote-code."""
    (dim,) = build_dimensions([f"{tiny_armorm}:beavertails-is_safe"])
    assert dim.index == 10 and dim.name == "armorm:beavertails-is_safe"


def test_armorm_without_an_assistant_turn_is_one_line(tiny_armorm):
    from pad.errors import PadError
    from pad.evaluate.armo import load_armorm
    from pad.models import load_tokenizer

    model = load_armorm(str(tiny_armorm), load_tokenizer(str(tiny_armorm)))
    with pytest.raises(PadError, match="holds no assistant turn"):
        model(input_ids=torch.tensor([[5, 6, 7, 8]]))


def test_gating_pattern_from_the_model_file_else_llama3_tokens(tiny_armorm, tiny_tokenizer):
    from types import SimpleNamespace

    from pad.errors import PadError
    from pad.evaluate.armo import reply_start_pattern
    from pad.evaluate.scorers import load_model_config
    from pad.testing import build_tokenizer

    config = load_model_config(str(tiny_armorm))
    expected = tiny_tokenizer(f"{tiny_tokenizer.eos_token}\n<|im_start|>assistant\n", add_special_tokens=False)
    assert reply_start_pattern(tiny_armorm, config, tiny_tokenizer) == expected["input_ids"]  # its token_pattern
    no_code = SimpleNamespace(auto_map=None)
    llama3 = build_tokenizer()
    llama3.add_special_tokens({"additional_special_tokens": ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]})
    ids = reply_start_pattern(None, no_code, llama3)
    assert ids[:2] == llama3.convert_tokens_to_ids(["<|eot_id|>", "<|start_header_id|>"])
    with pytest.raises(PadError, match="cannot tell where the gating reads"):
        reply_start_pattern(None, no_code, tiny_tokenizer)
