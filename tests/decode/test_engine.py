"""The cached batched engine against transformers' greedy generate and a plain uncached loop."""

import pytest
from decode_helpers import PROMPTS, mixed_requests

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
from pad.decode.reference import reference_decode
from pad.errors import PadError
from pad.models import load_causal_lm, load_tokenizer
from pad.principles import Principle

N = 24


@pytest.fixture(scope="module")
def llama_pair(tiny_llama, tiny_persrm):
    return load_causal_lm(tiny_llama), load_tokenizer(tiny_llama), load_causal_lm(tiny_persrm)


def _greedy_generate(model, tok, texts, n):
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, do_sample=False, max_new_tokens=n, pad_token_id=tok.pad_token_id)
    rows = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        if tok.eos_token_id in row:
            row = row[: row.index(tok.eos_token_id) + 1]
        rows.append(row)
    return rows


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("principles", [[], [Principle("harmless", 0.0)]])
def test_w0_equals_transformers_greedy(arch, principles, tiny_llama, tiny_persrm, tiny_gpt2, tiny_gpt2_persrm):
    base_dir, rm_dir = (tiny_llama, tiny_persrm) if arch == "llama" else (tiny_gpt2, tiny_gpt2_persrm)
    base, tok, rm = load_causal_lm(base_dir), load_tokenizer(base_dir), load_causal_lm(rm_dir)
    dec = PADDecoder(base, tok, rm)
    res = dec.generate([DecodeRequest(p, principles) for p in PROMPTS], SamplingSettings(max_new_tokens=N))
    expected = _greedy_generate(base, tok, [r.model_input for r in res], N)
    assert [r.token_ids for r in res] == expected
    assert any(r.finish_reason == "length" for r in res)


@pytest.mark.parametrize("w", [0.5, 1.0, 1.5])
def test_cached_batched_equals_uncached_reference(w, llama_pair):
    base, tok, rm = llama_pair
    dec = PADDecoder(base, tok, rm)
    text_prompts = [p for p in PROMPTS if isinstance(p, str)]
    res = dec.generate([DecodeRequest(p, [Principle("harmless", w)]) for p in text_prompts],
                       SamplingSettings(max_new_tokens=N))
    for p, r in zip(text_prompts, res):
        assert r.token_ids == reference_decode(base, tok, rm, p, [Principle("harmless", w)], max_new_tokens=N)
    # Guidance changes the output: otherwise the test above proves nothing.
    vanilla = dec.generate([DecodeRequest(p, [Principle("harmless", 0.0)]) for p in text_prompts],
                           SamplingSettings(max_new_tokens=N))
    assert [r.token_ids for r in res] != [r.token_ids for r in vanilla]


@pytest.mark.parametrize("reference,base_sees", [("persrm", True), ("base", False), ("prompted-base", False),
                                                  ("prompted-base", True)])
def test_reference_policy_and_base_prompt_options(reference, base_sees, llama_pair):
    base, tok, rm = llama_pair
    dec = PADDecoder(base, tok, rm, reference=reference, base_sees_principles=base_sees)
    ps = [Principle("harmless", 1.0), Principle("humor", 0.5)]
    prompts = PROMPTS[:3]
    res = dec.generate([DecodeRequest(p, ps) for p in prompts], SamplingSettings(max_new_tokens=N))
    for p, r in zip(prompts, res):
        assert r.token_ids == reference_decode(base, tok, rm, p, ps, max_new_tokens=N, reference=reference,
                                               base_sees_principles=base_sees)
    # ... and the guidance steers: the same principles at w = 0 (the same base input) decode otherwise
    off = [Principle(p.name, 0.0) for p in ps]
    unguided = dec.generate([DecodeRequest(p, off) for p in prompts], SamplingSettings(max_new_tokens=N))
    assert [r.token_ids for r in res] != [r.token_ids for r in unguided]


def test_prompted_base_reference_cancels_the_principle_prompt(llama_pair):
    """A PersRM that learned nothing (the base itself) has zero reward against the base reading the same
    principle prompt, so guidance leaves vanilla decoding alone; against the base on the plain prompt it
    does not (the template's own effect leaks into r)."""
    base, tok, _ = llama_pair
    ps = [Principle("harmless", 1.5), Principle("humor", 1.0)]
    s = SamplingSettings(max_new_tokens=N)
    vanilla = [r.token_ids for r in PADDecoder(base, tok).generate([DecodeRequest(p) for p in PROMPTS], s)]

    def run(reference):
        dec = PADDecoder(base, tok, base, reference=reference, base_sees_principles=False)
        return [r.token_ids for r in dec.generate([DecodeRequest(p, ps) for p in PROMPTS], s)]

    assert run("prompted-base") == vanilla
    assert run("base") != vanilla


@pytest.mark.parametrize("reference", ["base", "persrm", "prompted-base"])
@pytest.mark.parametrize("eos_boost", [0.0, 2.0])
def test_batched_equals_one_by_one_with_mixed_principles(eos_boost, reference, llama_pair):
    """With eos_boost, rows end at different steps, so the batch sheds finished rows (and their PersRM
    streams, and the PersRM's or the base's reference streams) from both caches while the others go on."""
    base, tok, rm = llama_pair
    dec = PADDecoder(base, tok, rm, reference=reference)

    def boost(module, args, output):
        output[..., tok.eos_token_id] += eos_boost
        return output

    handle = base.lm_head.register_forward_hook(boost)
    reqs = mixed_requests()
    s = SamplingSettings(max_new_tokens=N)
    try:
        batched = dec.generate(reqs, s)
        single = [dec.generate([r], s)[0] for r in reqs]
    finally:
        handle.remove()
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    if eos_boost:
        lengths = [len(r.token_ids) for r in batched]
        assert len(set(lengths)) >= 3 and max(lengths) > min(lengths) + 10, lengths
    assert [r.model_input for r in batched] == [r.model_input for r in single]
    assert len(batched[1].persrm_inputs) == 2 + (reference == "persrm") and batched[2].persrm_inputs == []


def test_lora_adapter_persrm(tiny_llama, tiny_lora):
    base, tok = load_causal_lm(tiny_llama), load_tokenizer(tiny_llama)
    rm = load_causal_lm(tiny_lora)
    assert type(rm).__name__ == "PeftModel"
    dec = PADDecoder(base, tok, rm)
    ps = [Principle("harmless", 1.0)]
    res = dec.generate([DecodeRequest(p, ps) for p in PROMPTS[:3]], SamplingSettings(max_new_tokens=N))
    for p, r in zip(PROMPTS[:3], res):
        assert r.token_ids == reference_decode(base, tok, rm, p, ps, max_new_tokens=N)


def test_sampling_reproducible(llama_pair):
    base, tok, rm = llama_pair
    dec = PADDecoder(base, tok, rm)
    reqs = [DecodeRequest(p, [Principle("harmless", 1.0)]) for p in PROMPTS]
    run = lambda seed: [r.token_ids for r in dec.generate(  # noqa: E731
        reqs, SamplingSettings(mode="sample", temperature=1.0, max_new_tokens=N, seed=seed))]
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_eos_stops_rows_and_batch(llama_pair):
    base, tok, rm = llama_pair
    dec = PADDecoder(base, tok, rm)
    # Make end-of-sequence the base's favourite token: every row stops after one token.
    def boost_eos(module, args, output):
        output[..., tok.eos_token_id] += 1e4
        return output

    handle = base.lm_head.register_forward_hook(boost_eos)
    try:
        res = dec.generate([DecodeRequest(p, []) for p in PROMPTS], SamplingSettings(max_new_tokens=N))
    finally:
        handle.remove()
    assert all(r.finish_reason == "eos" and r.token_ids == [tok.eos_token_id] and r.text == "" for r in res)


def test_too_long_prompt_is_skipped(tmp_path, tiny_tokenizer):
    from pad.testing import save_tiny_model

    short = save_tiny_model(tmp_path / "short", seed=5, tokenizer=tiny_tokenizer, max_positions=64)
    base, tok = load_causal_lm(short), load_tokenizer(short)
    dec = PADDecoder(base, tok, base)
    res = dec.generate([DecodeRequest("word " * 80, [Principle("harmless", 1.0)]), DecodeRequest("hi", [])],
                       SamplingSettings(max_new_tokens=8))
    assert res[0].finish_reason == "skipped" and res[0].token_ids == []
    assert res[1].finish_reason in ("eos", "length") and res[1].token_ids


def test_another_vocabulary_takes_the_cross_tokenizer_path(llama_pair):
    """A PersRM tokenizer whose vocabulary is not the base's: its logits cannot be read at the base's ids, so the
    decoder reads candidates through the PersRM's own tokenizer (tests/decode/test_cross_engine.py); one
    vocabulary keeps the same-tokenizer rule, and the shared backbone is refused on the cross path."""
    from transformers import AutoTokenizer

    base, tok, rm = llama_pair
    other = AutoTokenizer.from_pretrained(tok.name_or_path)
    other.add_tokens(["<extra-token>"])
    assert PADDecoder(base, tok, rm, rm_tokenizer=other).cross == "exact"
    assert PADDecoder(base, tok, rm, rm_tokenizer=AutoTokenizer.from_pretrained(tok.name_or_path)).cross is None


def test_topk_larger_than_vocabulary(llama_pair):
    base, tok, rm = llama_pair
    with pytest.raises(PadError, match="larger than the vocabulary"):
        PADDecoder(base, tok, rm).generate([DecodeRequest("hi", [])], SamplingSettings(topk=10_000))
