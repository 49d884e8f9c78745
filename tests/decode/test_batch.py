"""The running batch: rows join between steps and leave as they finish; each row's tokens stay its own."""

import pytest
from peft import PeftModel

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
from pad.models import load_causal_lm, load_tokenizer
from pad.principles import Principle

REQS = [
    DecodeRequest("Tell me a joke about cats.", [Principle("harmless", 1.0)], id="a"),
    DecodeRequest("How do I bake bread at home? Please explain every step in detail.",
                  [Principle("humor", 1.5), Principle("concise", 0.5)], id="b"),
    DecodeRequest("hi", [], id="c"),
    DecodeRequest([{"role": "user", "content": "Write a poem."}, {"role": "assistant", "content": "Roses."},
                   {"role": "user", "content": "Shorter."}], [Principle("expert", 1.0)], id="d"),
    DecodeRequest("Explain gravity to a child in one sentence.", [Principle("harmless", 0.5)], id="e"),
]
N = 20


@pytest.fixture(scope="module", params=["separate", "shared"])
def decoder_factory(request, tiny_llama, tiny_persrm, tiny_lora):
    tok = load_tokenizer(tiny_llama)
    if request.param == "shared":
        model = PeftModel.from_pretrained(load_causal_lm(tiny_llama), str(tiny_lora)).eval()
        return lambda reference: PADDecoder(model, tok, model, reference=reference)
    base, rm = load_causal_lm(tiny_llama), load_causal_lm(tiny_persrm)
    return lambda reference: PADDecoder(base, tok, rm, reference=reference)


@pytest.mark.parametrize("mode", ["greedy", "sample"])
@pytest.mark.parametrize("reference", ["base", "persrm", "prompted-base"])
def test_rows_joining_at_different_steps_decode_as_alone(decoder_factory, reference, mode):
    dec = decoder_factory(reference)
    s = SamplingSettings(max_new_tokens=N, mode=mode, temperature=1.5, seed=7)
    alone = {r.id: dec.generate([r], s)[0].token_ids for r in REQS}
    batch = dec.batch(s)
    got, ended, joins = {}, {}, {0: [0, 1], 3: [2], 7: [3], 9: [4]}  # step -> requests that join before it
    step = 0
    while step <= max(joins) or batch.live:
        if step in joins:
            batch.admit([REQS[i] for i in joins[step]])
        for _, res in batch.step():
            got[res.id] = res.token_ids
            ended[res.id] = step
        step += 1
        assert step < 10 * N
    assert got == alone
    assert len(set(ended.values())) >= 3  # rows left while others went on, and joined a shrunken batch


def test_cancel_frees_the_row_and_leaves_the_others(decoder_factory):
    dec = decoder_factory("base")
    s = SamplingSettings(max_new_tokens=N)
    alone = dec.generate([REQS[1]], s)[0].token_ids
    batch = dec.batch(s)
    keys = batch.admit([REQS[0], REQS[1]])
    for _ in range(3):
        assert batch.step() == []
    batch.cancel(keys[0])
    done = batch.step()
    assert [(k, r.finish_reason, len(r.token_ids)) for k, r in done] == [(keys[0], "cancelled", 3)]
    assert batch.live == 1
    rest = []
    while batch.live:
        rest += batch.step()
    assert rest[0][1].token_ids == alone


def test_rows_leave_a_sliding_window_cache(tiny_tokenizer):
    """A sliding-window model's cache cannot be cut or padded in place, so rows leave it by selection
    alone; the longest row finishing first (which makes leading columns dead) must not break the batch."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    tok = tiny_tokenizer
    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=8, initializer_range=0.4,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    model = MistralForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    dec = PADDecoder(model, tok, model)
    reqs = [DecodeRequest("How do I bake bread at home? Please explain every step.", [Principle("harmless", 1.0)],
                          id="long"),
            DecodeRequest("hi", [Principle("humor", 1.0)], id="short")]
    calls = {"n": 0}

    def end_long_row(module, args, output):  # the long row (row 0) ends at its 4th token
        calls["n"] += 1
        if calls["n"] in (7, 8):  # base and PersRM forward in turn: the 4th logits of both
            output[0, ..., tok.eos_token_id] += 1e4
        return output

    s = SamplingSettings(max_new_tokens=N)
    alone = dec.generate([reqs[1]], s)[0].token_ids
    handle = model.lm_head.register_forward_hook(end_long_row)
    try:
        got = {r.id: r for r in dec.generate(reqs, s)}
    finally:
        handle.remove()
    assert got["long"].finish_reason == "eos" and len(got["long"].token_ids) < N
    assert got["short"].token_ids == alone


def test_rows_with_their_own_settings_decode_as_alone(decoder_factory):
    """A server's rows each bring top-k, mode, temperature, token cap, seed and reference; sharing a batch
    changes none of their tokens."""
    dec = decoder_factory("base")
    own = [
        (SamplingSettings(max_new_tokens=N, topk=3), None),
        (SamplingSettings(max_new_tokens=N - 7, mode="sample", temperature=0.7, seed=1), "persrm"),
        (SamplingSettings(max_new_tokens=N, mode="sample", temperature=2.0, seed=2, topk=5), None),
        (SamplingSettings(max_new_tokens=5), "prompted-base"),
        (SamplingSettings(max_new_tokens=N, topk=3), "persrm"),
    ]
    reqs = [DecodeRequest(r.prompt, r.principles, r.id, settings=st, reference=ref) for r, (st, ref) in zip(REQS, own)]
    alone = {}
    for r, (st, ref) in zip(REQS, own):
        solo = decoder_factory(ref or "base")
        alone[r.id] = solo.generate([r], st)[0].token_ids
    batch = dec.batch(SamplingSettings(max_new_tokens=2))
    batch.admit(reqs[:3])
    got = {}
    for step in range(10 * N):
        if step == 2:
            batch.admit(reqs[3:])
        got.update({res.id: res.token_ids for _, res in batch.step()})
        if not batch.live:
            break
    assert got == alone
    assert len(got["b"]) == N - 7 and len(got["d"]) <= 5


def test_continuous_stream_equals_static_batches(decoder_factory):
    dec = decoder_factory("persrm")
    s = SamplingSettings(max_new_tokens=N, mode="sample", seed=3)
    reqs = [DecodeRequest(r.prompt, r.principles) for r in REQS] * 2  # no ids: keyed by position
    static = dec.generate(reqs, s)
    seen = sorted(dec.stream(reqs, s, max_live=3), key=lambda x: x[0])
    assert [i for i, _ in seen] == list(range(len(reqs)))
    assert [r.token_ids for _, r in seen] == [r.token_ids for r in static]


def test_a_request_the_decoder_cannot_run_joins_nothing(decoder_factory):
    from pad.errors import PadError

    dec = decoder_factory("base")
    batch = dec.batch(SamplingSettings(max_new_tokens=N))
    with pytest.raises(PadError, match="reference 'nope'"):
        batch.admit([REQS[0], DecodeRequest("x", reference="nope")])
    with pytest.raises(PadError, match="topk 100000"):
        batch.admit([DecodeRequest("x", settings=SamplingSettings(topk=100000))])
    assert batch.live == 0
