"""The engine review (issue 20): each test failed on the main it started from (4b91bcb) and passes after."""

import pytest
import torch
from decode_helpers import PROMPTS, mixed_requests
from peft import PeftModel

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
from pad.errors import PadError
from pad.models import load_causal_lm, load_tokenizer
from pad.principles import Principle
from pad.testing import save_tiny_lora, save_tiny_model

N = 16


def _generate_plain(model, tok, texts, n=N):
    """transformers' own greedy `generate` on the exact texts, cut after the first end token."""
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, do_sample=False, max_new_tokens=n, pad_token_id=tok.pad_token_id)
    rows = out[:, enc["input_ids"].shape[1]:].tolist()
    return [row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row for row in rows]


# -- 1. adapters that train whole modules ------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_lora(tiny_dir, tiny_llama):
    """A LoRA PersRM that also trains the whole LM head (PEFT's modules_to_save)."""
    return save_tiny_lora(tiny_llama, tiny_dir / "lora_head", seed=6, modules_to_save=["lm_head"])


def _shared(tiny_llama, adapter):
    return PeftModel.from_pretrained(load_causal_lm(tiny_llama), str(adapter)).eval()


def test_trained_head_changes_the_persrm(tiny_llama, head_lora):
    """The fixture is what the tests below need: the saved head differs from the base's."""
    model = _shared(tiny_llama, head_lora)
    assert "lm_head" in model.peft_config["default"].modules_to_save
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        on = model(ids).logits
        with model.disable_adapter():
            off = model(ids).logits
    head = model.base_model.model.lm_head
    assert not torch.equal(head.original_module.weight, head.modules_to_save["default"].weight)
    assert (on - off).abs().max() > 0.5


def test_trained_head_shared_equals_separate(tiny_llama, head_lora):
    tok = load_tokenizer(tiny_llama)
    model = _shared(tiny_llama, head_lora)
    reqs = mixed_requests()
    s = SamplingSettings(max_new_tokens=N)
    one = PADDecoder(model, tok, model)
    two = PADDecoder(load_causal_lm(tiny_llama), tok, load_causal_lm(head_lora))
    assert one.backbone == "shared" and two.backbone == "separate"
    assert [r.token_ids for r in one.generate(reqs, s)] == [r.token_ids for r in two.generate(reqs, s)]


def test_trained_head_w0_and_adapter_off_equal_generate(tiny_llama, head_lora):
    tok = load_tokenizer(tiny_llama)
    model = _shared(tiny_llama, head_lora)
    plain = load_causal_lm(tiny_llama)
    s = SamplingSettings(max_new_tokens=N)
    w0 = PADDecoder(model, tok, model).generate([DecodeRequest(p, [Principle("harmless", 0.0)]) for p in PROMPTS], s)
    assert [r.token_ids for r in w0] == _generate_plain(plain, tok, [r.model_input for r in w0])
    # a base that holds the adapter but decodes with no PAD guide (vanilla and ARGS after a shared load)
    bare = PADDecoder(model, tok).generate([DecodeRequest(p) for p in PROMPTS], s)
    assert [r.token_ids for r in bare] == _generate_plain(plain, tok, [r.model_input for r in bare])


def test_trainable_tokens_shared_equals_separate_and_w0_is_vanilla(tiny_tokenizer):
    """PEFT's trainable tokens (an embedding whose rows the adapter retrains) take the same path."""
    import copy

    from peft import LoraConfig, get_peft_model

    from pad.testing import build_causal_lm

    plain = build_causal_lm(tiny_tokenizer, seed=0)
    torch.manual_seed(3)
    model = get_peft_model(copy.deepcopy(plain), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"],
                                                            trainable_token_indices={"embed_tokens": list(range(300))}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "trainable_tokens_delta" in name:
                p.add_(torch.randn(p.shape))
    model.eval()
    s = SamplingSettings(max_new_tokens=N)
    reqs = mixed_requests()
    got = PADDecoder(model, tiny_tokenizer, model).generate(reqs, s)
    assert [r.token_ids for r in got] == [r.token_ids for r in
                                          PADDecoder(plain, tiny_tokenizer, copy.deepcopy(model)).generate(reqs, s)]
    w0 = [DecodeRequest(p, [Principle("harmless", 0.0)]) for p in PROMPTS]
    assert ([r.token_ids for r in PADDecoder(model, tiny_tokenizer, model).generate(w0, s)]
            == [r.token_ids for r in PADDecoder(plain, tiny_tokenizer).generate(w0, s)])


# -- 2. sliding-window and hybrid caches take new rows -----------------------------------------------------


@pytest.fixture(scope="module", params=["mistral", "gemma3"])
def windowed(request, tiny_tokenizer):
    """A model whose layers attend through a window of 8 tokens (Gemma 3: one full-attention layer too), and a
    PersRM of the same kind."""
    from pad.testing import build_causal_lm

    return (build_causal_lm(tiny_tokenizer, request.param, seed=7), build_causal_lm(tiny_tokenizer, request.param,
                                                                                    seed=8), tiny_tokenizer)


def test_the_window_matters(windowed):
    """The fixture is what the test below needs: prompts longer than the window, and a window that changes
    the logits (a cache that kept every column would decode otherwise)."""
    base, _, tok = windowed
    ids = tok(PROMPTS[1], return_tensors="pt")["input_ids"]
    assert ids.shape[1] > 8
    with torch.inference_mode():
        windowed_logits = base(ids).logits[0, -1]
        base.config.sliding_window = 10_000
        try:
            full = base(ids).logits[0, -1]
        finally:
            base.config.sliding_window = 8
    assert (windowed_logits - full).abs().max() > 1e-3


@pytest.mark.parametrize("guided", [False, True])
def test_windowed_cache_continuous_batching_equals_alone(windowed, guided):
    base, rm, tok = windowed
    dec = PADDecoder(base, tok, rm if guided else None)
    principles = [Principle("harmless", 1.0)] if guided else []
    # caps 5, 8, 11, ...: rows finish at different steps, so new rows join a running batch with a full window
    reqs = [DecodeRequest(p, principles, id=str(i), settings=SamplingSettings(max_new_tokens=5 + 3 * i))
            for i, p in enumerate(PROMPTS * 2 + [PROMPTS[1] + " " + PROMPTS[1]])]  # the last is wider than the batch
    alone = [dec.generate([r], r.settings)[0].token_ids for r in reqs]
    got = [None] * len(reqs)
    for i, res in dec.stream(reqs, SamplingSettings(max_new_tokens=32), max_live=3):
        got[i] = res.token_ids
    assert got == alone
    assert len({len(t) for t in got}) >= 5 and max(len(t) for t in got) > 16  # joins past the window


def test_a_cache_rows_cannot_join_drains_the_batch_instead_of_failing(monkeypatch, two_models):
    """Where rows cannot be padded into a cache (quantized, static), continuous batching waits for the batch to
    drain and starts the next one: same tokens, no error."""
    import pad.decode.streams as streams

    base, tok, rm = two_models
    reqs = [DecodeRequest(p, [Principle("harmless", 1.0)], id=str(i),
                          settings=SamplingSettings(max_new_tokens=4 + 2 * i)) for i, p in enumerate(PROMPTS * 2)]
    alone = [PADDecoder(base, tok, rm).generate([r], r.settings)[0].token_ids for r in reqs]
    monkeypatch.setattr(streams, "_joinable_layers", lambda cache: None)
    dec = PADDecoder(base, tok, rm)
    with pytest.raises(PadError, match="rows cannot join a running batch"):  # what the batch now avoids
        b = dec.batch(SamplingSettings(max_new_tokens=8))
        b.admit(reqs[:1])
        b.step()
        b.admit(reqs[1:2])
    got = [None] * len(reqs)
    for i, res in dec.stream(reqs, SamplingSettings(max_new_tokens=32), max_live=3):
        got[i] = res.token_ids
    assert got == alone


# -- 3. the prompted-base reference's slots are bounded by the base's context -------------------------------


def test_prompted_base_slot_longer_than_the_context_skips_the_row(tmp_path, tiny_tokenizer, tiny_persrm):
    """A base with 96 positions, a PersRM with 512: the base reads each principle prompt too, so the principle
    prompt must fit the base's context, not only the PersRM's."""
    folder = save_tiny_model(tmp_path / "ctx96", seed=5, tokenizer=tiny_tokenizer, max_positions=96)
    base, tok = load_causal_lm(folder), load_tokenizer(folder)
    dec = PADDecoder(base, tok, load_causal_lm(tiny_persrm), reference="prompted-base", base_sees_principles=False)
    lengths = lambda req: [len(tok(t, add_special_tokens=False)["input_ids"]) for t in (dec.texts(req)[0],  # noqa: E731
                                                                                       dec.texts(req)[1][0])]
    fits = DecodeRequest("hi", [Principle("harmless", 1.0)], id="fits")
    too_long = DecodeRequest("hi", [Principle("be kind and " * 12 + "brief", 1.0)], id="long")
    base_len, prompt_len = lengths(too_long)
    assert base_len < 96 <= prompt_len  # only the principle prompt the base reads is too long
    s = SamplingSettings(max_new_tokens=8)
    res = dec.generate([fits, too_long], s)
    assert [r.finish_reason for r in res] == ["length", "skipped"]
    assert res[0].token_ids == dec.generate([fits], s)[0].token_ids
    # a principle prompt that fits with fewer than 8 places left caps the row there
    near = next(r for r in (DecodeRequest("hi", [Principle("kind " + "x" * n, 1.0)]) for n in range(60))
                if 88 < lengths(r)[1] < 96)
    capped = dec.generate([near], s)[0]
    assert capped.finish_reason != "skipped" and len(capped.token_ids) <= 96 - lengths(near)[1]


# -- 4. the Python API -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_models(tiny_llama, tiny_persrm):
    return load_causal_lm(tiny_llama), load_tokenizer(tiny_llama), load_causal_lm(tiny_persrm)


def test_requests_admitted_in_two_calls_sample_apart(two_models):
    base, tok, rm = two_models
    s = SamplingSettings(mode="sample", temperature=2.0, max_new_tokens=N, seed=5)
    batch = PADDecoder(base, tok, rm).batch(s)
    req = DecodeRequest(PROMPTS[1], [Principle("harmless", 1.0)])
    keys = batch.admit([req]) + batch.admit([req])
    got = {}
    while batch.live:
        got.update(batch.step())
    assert got[keys[0]].token_ids != got[keys[1]].token_ids


def test_a_principle_without_a_weight_is_refused_in_one_line(two_models):
    base, tok, rm = two_models
    with pytest.raises(PadError, match="principle 'harmless' has no weight"):
        PADDecoder(base, tok, rm).generate([DecodeRequest("hi", [Principle("harmless", None)])])
    ok = PADDecoder(base, tok, rm).generate([DecodeRequest("hi", [Principle("harmless", None).with_default(1.0)])],
                                            SamplingSettings(max_new_tokens=2))
    assert ok[0].finish_reason in ("eos", "length")


# -- 5. sampling is random where it should be --------------------------------------------------------------


def _picks(dec, req, s):
    """Where, among the row's k candidates (the base's top-k, in order), every token a sampled row chose sits."""
    batch = dec.batch(s)
    batch.admit([req])
    picks = []
    while batch.live:
        cand = batch.base_stream.logits[batch.groups[0].base_at].topk(s.topk).indices[0].tolist()  # (k,)
        batch.step()
        picks.append(cand.index(batch.new_tokens()[0][1]))
    return picks


def test_a_row_draws_a_new_number_every_step(two_models):
    """At a high temperature the samples spread over the candidates; one number reused every step would pick
    (nearly) the same place among them each time."""
    base, tok, rm = two_models
    s = SamplingSettings(mode="sample", temperature=50.0, topk=10, max_new_tokens=24, seed=1)
    picks = _picks(PADDecoder(base, tok, rm), DecodeRequest(PROMPTS[0], [Principle("harmless", 1.0)], id="x"), s)
    assert len(picks) == 24 and len(set(picks)) >= 4, picks


def test_same_prompt_with_two_ids_samples_differently(two_models):
    base, tok, rm = two_models
    s = SamplingSettings(mode="sample", temperature=2.0, max_new_tokens=N, seed=2)
    reqs = [DecodeRequest(PROMPTS[1], [Principle("harmless", 1.0)], id=i) for i in ("a", "b")]
    a, b = PADDecoder(base, tok, rm).generate(reqs, s)
    assert a.token_ids != b.token_ids
    # and each is its own solo run: the stream is the id's, not the position's
    assert PADDecoder(base, tok, rm).generate(reqs[1:], s)[0].token_ids == b.token_ids


def test_rows_with_one_topk_and_their_own_temperatures_equal_their_solo_runs(two_models):
    base, tok, rm = two_models
    dec = PADDecoder(base, tok, rm)
    batch_s = SamplingSettings(mode="sample", temperature=1.0, max_new_tokens=N, seed=4)
    reqs = [DecodeRequest(PROMPTS[0], [Principle("harmless", 1.0)], id=f"t{t}",
                          settings=SamplingSettings(mode="sample", temperature=t, max_new_tokens=N, seed=4))
            for t in (0.3, 1.0, 8.0)]
    together = [r.token_ids for r in dec.generate(reqs, batch_s)]
    alone = [dec.generate([r], r.settings)[0].token_ids for r in reqs]  # each row's settings the batch's
    assert together == alone
    assert len({tuple(t) for t in together}) == 3  # the temperatures matter
