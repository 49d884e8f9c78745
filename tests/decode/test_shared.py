"""One backbone (issue 12): a LoRA PersRM on the base runs its rows in the base's own forward.

Shared must equal separate token for token: the same rule, the same weights, only the cost of a step differs.
"""

import json

import pytest
import torch
from decode_helpers import PROMPTS, mixed_requests
from peft import PeftModel

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
from pad.decode.config import DecodeConfig
from pad.decode.io import PromptRow
from pad.decode.reference import reference_decode
from pad.decode.run import Models, decode_run
from pad.errors import PadError
from pad.models import load_causal_lm, load_tokenizer
from pad.principles import Principle

N = 24


@pytest.fixture(scope="module")
def shared(tiny_llama, tiny_lora):
    model = PeftModel.from_pretrained(load_causal_lm(tiny_llama), str(tiny_lora)).eval()
    return model, load_tokenizer(tiny_llama)


@pytest.fixture(scope="module")
def separate(tiny_llama, tiny_lora):
    return load_causal_lm(tiny_llama), load_causal_lm(tiny_lora)


def _boost(models, token, amount):
    """Raise `token`'s logit in every model's head, so rows end at different steps."""
    def hook(module, args, output):
        output[..., token] += amount
        return output
    return [m.get_output_embeddings().register_forward_hook(hook) for m in models]


def test_lora_is_not_zero(shared, separate):
    model, tok = shared
    ids = tok("Tell me a joke", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        with model.disable_adapter():
            plain = model(ids).logits
        assert (model(ids).logits - plain).abs().max() > 0.5


@pytest.mark.parametrize("reference", ["base", "persrm", "prompted-base"])
@pytest.mark.parametrize("eos_boost", [0.0, 2.0])
def test_shared_equals_separate_mixed_principles(reference, eos_boost, shared, separate):
    model, tok = shared
    base, rm = separate
    reqs = mixed_requests()
    s = SamplingSettings(max_new_tokens=N)
    one = PADDecoder(model, tok, model, reference=reference)
    two = PADDecoder(base, tok, rm, reference=reference)
    assert one.backbone == "shared" and two.backbone == "separate"
    handles = _boost([model, base, rm], tok.eos_token_id, eos_boost)
    try:
        got, want = one.generate(reqs, s), two.generate(reqs, s)
        alone = [one.generate([r], s)[0] for r in reqs]
    finally:
        for h in handles:
            h.remove()
    assert [r.token_ids for r in got] == [r.token_ids for r in want] == [r.token_ids for r in alone]
    if eos_boost:
        lengths = [len(r.token_ids) for r in got]
        assert len(set(lengths)) >= 2, lengths
    unguided = one.generate([DecodeRequest(r.prompt, [Principle(p.name, 0.0) for p in r.principles]) for r in reqs], s)
    assert [r.token_ids for r in got] != [r.token_ids for r in unguided]


@pytest.mark.parametrize("w", [0.5, 1.0, 1.5])
@pytest.mark.parametrize("base_sees", [True, False])
def test_shared_equals_separate_and_the_uncached_loop(w, base_sees, shared, separate):
    model, tok = shared
    base, rm = separate
    ps = [Principle("harmless", w), Principle("humor", w / 2)]
    reqs = [DecodeRequest(p, ps) for p in PROMPTS[:3]]
    s = SamplingSettings(max_new_tokens=N)
    got = PADDecoder(model, tok, model, base_sees_principles=base_sees).generate(reqs, s)
    want = PADDecoder(base, tok, rm, base_sees_principles=base_sees).generate(reqs, s)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    for p, r in zip(PROMPTS[:3], got):
        assert r.token_ids == reference_decode(base, tok, rm, p, ps, max_new_tokens=N, base_sees_principles=base_sees)


def test_shared_w0_equals_transformers_generate(shared, tiny_llama):
    model, tok = shared
    res = PADDecoder(model, tok, model).generate([DecodeRequest(p, [Principle("harmless", 0.0)]) for p in PROMPTS],
                                                 SamplingSettings(max_new_tokens=N))
    plain = load_causal_lm(tiny_llama)
    tok.padding_side = "left"
    enc = tok([r.model_input for r in res], return_tensors="pt", padding=True, add_special_tokens=False)
    out = plain.generate(**enc, do_sample=False, max_new_tokens=N, pad_token_id=tok.pad_token_id)
    expected = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        expected.append(row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row)
    assert [r.token_ids for r in res] == expected


def test_shared_sampling_equals_separate(shared, separate):
    model, tok = shared
    base, rm = separate
    reqs = [DecodeRequest(p, [Principle("harmless", 1.0)], id=f"r{i}") for i, p in enumerate(PROMPTS)]
    s = SamplingSettings(mode="sample", temperature=1.5, max_new_tokens=N, seed=3)
    got = PADDecoder(model, tok, model).generate(reqs, s)
    assert [r.token_ids for r in got] == [r.token_ids for r in PADDecoder(base, tok, rm).generate(reqs, s)]


def test_adapter_outside_decoding_is_untouched(shared):
    """The shared path switches the adapter off for base rows only inside its own forwards."""
    model, tok = shared
    ids = tok("Tell me a joke", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        before = model(ids).logits
        PADDecoder(model, tok, model).generate([DecodeRequest("hi", [Principle("harmless", 1.0)])],
                                               SamplingSettings(max_new_tokens=4))
        assert torch.equal(model(ids).logits, before)


# -- choosing the path in `pad decode` ------------------------------------------------------------------------


def _decode(cfg, prompts=PROMPTS[:3]):
    rows = [PromptRow(str(i), p) for i, p in enumerate(prompts)]
    models = Models(cfg, need_rm=True)
    return models, decode_run(cfg, rows, models, progress=False).records


def test_auto_picks_shared_and_records_it(tiny_llama, tiny_lora):
    cfg = DecodeConfig(llm=str(tiny_llama), rm=str(tiny_lora), principles=["harmless=1", "humor=0.5"],
                       max_new_tokens=N)
    models, shared_recs = _decode(cfg)
    assert models.backbone == "shared" and models.base is models.rm
    sep_models, sep_recs = _decode(DecodeConfig(**{**cfg.__dict__, "backbone": "separate"}))
    assert sep_models.backbone == "separate" and not hasattr(sep_models.rm, "peft_config")  # merged at load
    assert [r["settings"]["backbone"] for r in shared_recs] == ["shared"] * 3
    assert [r["settings"]["backbone"] for r in sep_recs] == ["separate"] * 3
    assert [r["response"] for r in shared_recs] == [r["response"] for r in sep_recs]


def test_a_copy_of_the_base_elsewhere_still_shares(tmp_path, tiny_llama, tiny_lora):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama, copy)
    models = Models(DecodeConfig(llm=str(copy), rm=str(tiny_lora)), need_rm=True)
    assert models.backbone == "shared"


def test_shared_refuses_with_a_reason(tiny_llama, tiny_persrm, tiny_lora):
    with pytest.raises(PadError, match="not a LoRA adapter folder"):
        Models(DecodeConfig(llm=str(tiny_llama), rm=str(tiny_persrm), backbone="shared"), need_rm=True)
    with pytest.raises(PadError, match="whose weights differ"):  # the adapter on another base
        Models(DecodeConfig(llm=str(tiny_persrm), rm=str(tiny_lora), backbone="shared"), need_rm=True)
    auto = Models(DecodeConfig(llm=str(tiny_persrm), rm=str(tiny_lora)), need_rm=True)
    assert auto.backbone == "separate" and "whose weights differ" in auto.backbone_note
    with pytest.raises(PadError, match="backbone 'sideways' is not one of"):
        DecodeConfig(backbone="sideways")


def test_run_file_records_backbone_through_the_cli(tmp_path, tiny_llama, tiny_lora):
    from typer.testing import CliRunner

    from pad.cli import app

    out = tmp_path / "run.jsonl"
    r = CliRunner().invoke(app, ["decode", "--llm", str(tiny_llama), "--rm", str(tiny_lora), "--prompt", "hi",
                                 "-p", "harmless", "--max-new-tokens", "4", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["settings"]["backbone"] == "shared"
