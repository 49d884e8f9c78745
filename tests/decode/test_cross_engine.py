"""The cross-tokenizer PersRM inside the engine (`PADDecoder` with a PersRM of another vocabulary): the batch,
continuous batching, sampling, `pad decode` and `pad serve` give the tokens of the uncached loop of the rule
(`cross_reference_decode`), greedy.

w = 1 is covered by tests/decode/test_cross_tokenizer.py, where the base's logits are computed as the loop
computes them: at w = 1 candidates whose texts are the same (bytes of one unfinished character) tie exactly in
the rule, and which one wins then follows the rounding of the base's logits, which a cached batched forward
does not share with an uncached one."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pad.cli import app
from pad.decode.engine import DecodeRequest, PADDecoder, SamplingSettings
from pad.decode.reference import cross_reference_decode
from pad.errors import PadError
from pad.principles import Principle
from pad.testing import SPECIAL_TOKENS, build_causal_lm, build_tokenizer, save_tiny_model

PROMPTS = ["Tell me a joke about cats.", "How do I bake bread?", "hi", "Explain gravity to a child.",
           [{"role": "user", "content": "Write a short poem."}]]
K, N = 4, 10


@pytest.fixture(scope="module")
def pair():
    """A base on one tokenizer and a PersRM on another (other merges, other ids for the special tokens)."""
    ta = build_tokenizer(320)
    tb = build_tokenizer(400, reverse_corpus=True, special_tokens=SPECIAL_TOKENS[::-1])
    return ta, build_causal_lm(ta, seed=0), tb, build_causal_lm(tb, seed=1)


def _loop(pair, prompt, principles, rule="exact", n=N):
    ta, base, tb, rm = pair
    return cross_reference_decode(base, ta, rm, tb, prompt, principles, topk=K, max_new_tokens=n, rule=rule)


@pytest.mark.parametrize("rule", ["exact", "first-subtoken"])
@pytest.mark.parametrize("principles", [[Principle("humor", 0.5)], [Principle("humor", 0.5), Principle("concise", 0.25)]],
                         ids=["one", "two"])
def test_the_batch_equals_the_uncached_loop(pair, principles, rule):
    ta, base, tb, rm = pair
    dec = PADDecoder(base, ta, rm, tb, cross_tokenizer=None if rule == "exact" else rule)
    assert dec.cross == rule  # the vocabularies differ: exact unless told
    s = SamplingSettings(topk=K, max_new_tokens=N)
    got = dec.generate([DecodeRequest(p, principles) for p in PROMPTS], s)
    want = [_loop(pair, p, principles, rule) for p in PROMPTS]
    assert [g.token_ids for g in got] == want
    vanilla = PADDecoder(base, ta).generate([DecodeRequest(p, principles) for p in PROMPTS], s)
    assert any(g.token_ids != v.token_ids for g, v in zip(got, vanilla))  # the guide changed something


def test_rows_joining_a_running_batch_equal_the_loop(pair):
    """Continuous batching: two live rows at most, rows finish and others join mid-batch, each row with its own
    principles (one, two, none: vanilla); each equals its own loop."""
    ta, base, tb, rm = pair
    dec = PADDecoder(base, ta, rm, tb)
    own = [[Principle("humor", 0.5)], [Principle("concise", 0.5)], [],
           [Principle("humor", 0.5), Principle("concise", 0.25)], [Principle("harmless", 0.75)]]
    reqs = [DecodeRequest(p, own[i], settings=SamplingSettings(topk=K, max_new_tokens=N - i))
            for i, p in enumerate(PROMPTS)]
    got = dict(dec.stream(reqs, SamplingSettings(topk=K, max_new_tokens=N), max_live=2))
    for i, p in enumerate(PROMPTS):
        assert got[i].token_ids == _loop(pair, p, own[i], n=N - i), i


def test_sampled_rows_do_not_depend_on_their_batch(pair):
    ta, base, tb, rm = pair
    dec = PADDecoder(base, ta, rm, tb)
    s = SamplingSettings(topk=K, max_new_tokens=N, mode="sample", temperature=2.0, seed=3)
    reqs = [DecodeRequest(p, [Principle("humor", 1.0)], id=f"r{i}") for i, p in enumerate(PROMPTS)]
    together = [r.token_ids for r in dec.generate(reqs, s)]
    alone = [dec.generate([r], s)[0].token_ids for r in reqs]
    assert together == alone
    assert len({tuple(t) for t in together}) > 1


def test_what_the_cross_path_refuses(pair):
    ta, base, tb, rm = pair
    with pytest.raises(PadError, match="against the base only"):
        PADDecoder(base, ta, rm, tb, reference="persrm")
    with pytest.raises(PadError, match="is not one of"):
        PADDecoder(base, ta, rm, tb, cross_tokenizer="last-subtoken")
    dec = PADDecoder(base, ta, rm, tb)
    with pytest.raises(PadError, match="against the base only"):
        dec.generate([DecodeRequest("hi", [Principle("humor", 1.0)], reference="prompted-base")])


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory, pair):
    ta, _, tb, _ = pair
    root = tmp_path_factory.mktemp("cross")
    return save_tiny_model(root / "base", "llama", seed=0, tokenizer=ta), save_tiny_model(root / "rm", "llama", seed=1,
                                                                                          tokenizer=tb)


@pytest.mark.parametrize("rule", [None, "first-subtoken"])
def test_pad_decode_guides_a_base_of_another_tokenizer(tmp_path, saved_pair, rule):
    """`pad decode --llm BASE --rm PERSRM` with two vocabularies takes the exact rule by itself; the run file
    equals the engine on the same models."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, rm_dir = saved_pair
    out = tmp_path / "run.jsonl"
    extra = ["--cross-tokenizer", rule] if rule else []
    r = CliRunner().invoke(app, ["decode", "--llm", str(base_dir), "--rm", str(rm_dir), "--prompt", PROMPTS[0],
                                 "-p", "humor=0.5", "--topk", str(K), "--max-new-tokens", str(N), "--out", str(out),
                                 "-q", *extra])
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text().splitlines()[0])
    ta, tb = AutoTokenizer.from_pretrained(base_dir), AutoTokenizer.from_pretrained(rm_dir)
    base, rm = AutoModelForCausalLM.from_pretrained(base_dir), AutoModelForCausalLM.from_pretrained(rm_dir)
    want = cross_reference_decode(base, ta, rm, tb, PROMPTS[0], [Principle("humor", 0.5)], topk=K, max_new_tokens=N,
                                  rule=rule or "exact")
    assert rec["tokens"] == len(want) and rec["settings"]["cross_tokenizer"] == (rule or "exact")
    with torch.inference_mode():
        dec = PADDecoder(base, ta, rm, tb, cross_tokenizer=rule)
        got = dec.generate([DecodeRequest(PROMPTS[0], [Principle("humor", 0.5)])], SamplingSettings(topk=K,
                                                                                                   max_new_tokens=N))
    assert got[0].token_ids == want and got[0].text == rec["response"]


def test_pad_serve_with_a_persrm_of_another_tokenizer_equals_pad_decode(tmp_path, saved_pair):
    """A chat request with principles through a real server (loopback port, the `openai` client) answers what
    `pad decode` writes for the same prompt, streamed or not."""
    from openai import OpenAI

    from pad.decode.config import DecodeConfig
    from pad.decode.run import Models
    from pad.serve import build_service, running_server

    base_dir, rm_dir = saved_pair
    cfg = DecodeConfig(llm=str(base_dir), rm=str(rm_dir), max_new_tokens=N, topk=K)
    models = Models(cfg, need_rm=True)
    svc = build_service(cfg, max_batch=4, max_queue=8, max_tokens=64, name="tiny", models=models)
    out = tmp_path / "run.jsonl"
    r = CliRunner().invoke(app, ["decode", "--llm", str(base_dir), "--rm", str(rm_dir), "--prompt", PROMPTS[1],
                                 "-p", "humor=0.5", "--topk", str(K), "--max-new-tokens", str(N), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    want = json.loads(out.read_text())["response"]
    with running_server(svc) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)
        ask = {"model": "tiny", "messages": [{"role": "user", "content": PROMPTS[1]}], "max_tokens": N,
               "temperature": 0, "extra_body": {"principles": [{"name": "humor", "weight": 0.5}]}}
        got = client.chat.completions.create(**ask)
        assert got.choices[0].message.content == want
        chunks = client.chat.completions.create(**ask, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
        ask["extra_body"] = {}
        assert client.chat.completions.create(**ask).choices[0].message.content != want  # the guide mattered


def test_one_tokenizer_through_the_cross_path_is_the_same_tokenizer_path():
    """A word-level tokenizer gives every id back from its text: forced through the cross path, the engine makes
    the same-tokenizer path's tokens, batched, with two principles."""
    from pad.testing import build_word_tokenizer

    tok = build_word_tokenizer()
    base, rm = build_causal_lm(tok, seed=4), build_causal_lm(tok, seed=5)
    ps = [Principle("humor", 1.0), Principle("concise", 0.5)]
    s = SamplingSettings(topk=K, max_new_tokens=N)
    reqs = [DecodeRequest(p, ps) for p in PROMPTS]
    cross = PADDecoder(base, tok, rm, tok, cross_tokenizer="exact")
    same = PADDecoder(base, tok, rm, tok)
    assert cross.cross == "exact" and same.cross is None
    got, want = cross.generate(reqs, s), same.generate(reqs, s)
    assert [g.token_ids for g in got] == [w.token_ids for w in want]
    vanilla = PADDecoder(base, tok).generate(reqs, s)
    assert [g.token_ids for g in got] != [v.token_ids for v in vanilla]
