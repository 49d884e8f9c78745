"""Mends from the line-by-line review (issue 11): each test failed on the main it started from (acc0a56)."""

import json

import pytest
from typer.testing import CliRunner

from pad.cli import app
from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
from pad.decode.config import DecodeConfig
from pad.decode.io import load_prompts
from pad.decode.reference import reference_decode
from pad.decode.run import Models, decode_run
from pad.models import load_causal_lm, load_tokenizer
from pad.principles import Principle

runner = CliRunner()
N = 16


def _rows(n=8):
    return [{"id": f"q{i}", "prompt": f"Question {i}: tell me about topic {i * 7}" + " and more" * (i % 3)}
            for i in range(n)]


@pytest.fixture
def prompts_path(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return path


@pytest.fixture(scope="module")
def models(tiny_llama, tiny_persrm):
    return Models(DecodeConfig(llm=str(tiny_llama), rm=str(tiny_persrm)), need_rm=True)


def _sample_cfg(tiny_llama, tiny_persrm, **kw):
    base = {"llm": str(tiny_llama), "rm": str(tiny_persrm), "principles": ["harmless=1.0"], "mode": "sample",
            "temperature": 1.5, "max_new_tokens": N, "seed": 11}
    return DecodeConfig(**{**base, **kw})


def _by_id(records):
    return {r["id"]: r["response"] for r in records}


# -- 1. a row's samples depend on the seed and the row only ----------------------------------------------------


def test_seeded_samples_do_not_depend_on_batching_order_or_resume(tmp_path, prompts_path, models, tiny_llama,
                                                                  tiny_persrm):
    rows = load_prompts(prompts_path)
    runs = {}
    for bs in (1, 3, 8):
        runs[bs] = _by_id(decode_run(_sample_cfg(tiny_llama, tiny_persrm, batch_size=bs), rows, models,
                                     progress=False).records)
    assert runs[1] == runs[3] == runs[8]
    reordered = _by_id(decode_run(_sample_cfg(tiny_llama, tiny_persrm, batch_size=3), rows[::-1], models,
                                  progress=False).records)
    assert reordered == runs[1]
    # killed after the first batch, then resumed
    out = tmp_path / "run.jsonl"
    decode_run(_sample_cfg(tiny_llama, tiny_persrm, batch_size=3), rows[:3], models, out, progress=False)
    decode_run(_sample_cfg(tiny_llama, tiny_persrm, batch_size=3), rows, models, out, resume=True, progress=False)
    resumed = _by_id(json.loads(line) for line in out.read_text().splitlines())
    assert resumed == runs[1] and len(out.read_text().splitlines()) == len(rows)
    # ... and the seed matters, and sampling is not greedy
    other = _by_id(decode_run(_sample_cfg(tiny_llama, tiny_persrm, seed=12), rows, models, progress=False).records)
    greedy = _by_id(decode_run(_sample_cfg(tiny_llama, tiny_persrm, mode="greedy"), rows, models,
                               progress=False).records)
    assert other != runs[1] and greedy != runs[1]


def test_unseeded_sampling_is_recorded_as_null(tmp_path, prompts_path, tiny_llama, tiny_persrm):
    out = tmp_path / "run.jsonl"
    args = ["decode", "--llm", str(tiny_llama), "--rm", str(tiny_persrm), "--prompts", str(prompts_path), "-p",
            "harmless", "--mode", "sample", "--temperature", "2", "--max-new-tokens", str(N), "--seed", "none", "-q"]
    assert runner.invoke(app, [*args, "--out", str(out)]).exit_code == 0
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "again.jsonl")]).exit_code == 0
    first = [json.loads(x) for x in out.read_text().splitlines()]
    again = [json.loads(x) for x in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert all(r["settings"]["seed"] is None for r in first)
    assert [r["response"] for r in first] != [r["response"] for r in again]
    r = runner.invoke(app, [*args, "--seed", "x1", "--out", str(tmp_path / "bad.jsonl")])
    assert r.exit_code == 2 and "--seed 'x1' is not a whole number or 'none'" in r.output


# -- 2. run-config lines set the weight of principles that carry none -------------------------------------------


def test_run_config_weight_reaches_rows_with_their_own_principle(tmp_path, tiny_llama, tiny_persrm):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": "own", "prompt": "Tell me a joke about cats.", "principle": "humor"},
            {"id": "weighted", "prompt": "Write a short poem.", "principle": "humor=2"},
            {"id": "plain", "prompt": "hi"}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sweep = tmp_path / "sweep.config"
    sweep.write_text('{"rm_weight": 0}\n{"rm_weight": 1.5}\n')
    out = tmp_path / "sweep.jsonl"
    r = runner.invoke(app, ["decode", "--llm", str(tiny_llama), "--rm", str(tiny_persrm), "--prompts", str(prompts),
                            "-p", "harmless", "--config", str(sweep), "--max-new-tokens", str(N), "--out", str(out),
                            "-q"])
    assert r.exit_code == 0, r.output
    run0 = {x["id"]: x for x in map(json.loads, (tmp_path / "sweep_0.jsonl").read_text().splitlines())}
    run1 = {x["id"]: x for x in map(json.loads, (tmp_path / "sweep_1.jsonl").read_text().splitlines())}
    assert run0["own"]["principles"] == [{"name": "humor", "weight": 0.0}]
    assert run1["own"]["principles"] == [{"name": "humor", "weight": 1.5}]
    assert run0["weighted"]["principles"] == run1["weighted"]["principles"] == [{"name": "humor", "weight": 2.0}]
    assert run0["plain"]["principles"] == [{"name": "harmless", "weight": 0.0}]
    # the w = 0 line is unguided for the row with its own principle: the base alone decodes it
    base, tok = load_causal_lm(tiny_llama), load_tokenizer(tiny_llama)
    alone = PADDecoder(base, tok).generate([DecodeRequest(rows[0]["prompt"], [Principle("humor", 0.0)])],
                                           SamplingSettings(max_new_tokens=N))[0]
    assert run0["own"]["response"] == alone.text and run0["own"]["settings"]["rm"] is None
    assert run1["own"]["response"] != run0["own"]["response"]


# -- 4. one definition of the end tokens -----------------------------------------------------------------------


def test_reference_loop_and_engine_stop_at_every_end_token(tiny_llama, tiny_persrm, tiny_tokenizer):
    base, tok, rm = load_causal_lm(tiny_llama), load_tokenizer(tiny_llama), load_causal_lm(tiny_persrm)
    other_end = tok.convert_tokens_to_ids("<|endoftext|>")
    assert other_end != tok.eos_token_id
    base.generation_config.eos_token_id = [tok.eos_token_id, other_end]  # a model with two end tokens

    calls = {"n": 0}

    def late_boost(module, args, output):  # from the fifth forward on, the second end token wins
        calls["n"] += 1
        if calls["n"] > 4:
            output[..., other_end] += 1e4
        return output

    handle = base.lm_head.register_forward_hook(late_boost)
    try:
        ps = [Principle("harmless", 1.0)]
        ref = reference_decode(base, tok, rm, "Tell me a joke about cats.", ps, max_new_tokens=N)
        calls["n"] = 0
        res = PADDecoder(base, tok, rm).generate([DecodeRequest("Tell me a joke about cats.", ps)],
                                                 SamplingSettings(max_new_tokens=N))[0]
    finally:
        handle.remove()
    assert ref[-1] == other_end and len(ref) < N
    assert res.token_ids == ref and res.finish_reason == "eos"


# -- 8. principle names that hold '=' ----------------------------------------------------------------------------


def test_principle_names_with_equals_are_quoted(tmp_path, tiny_llama, tiny_persrm):
    assert Principle.parse('"tone=formal"') == Principle("tone=formal", 1.0)
    assert Principle.parse("'tone=formal'=0.5") == Principle("tone=formal", 0.5)
    assert Principle.parse("harmless=1.5") == Principle("harmless", 1.5)
    with pytest.raises(ValueError, match="quoted"):
        Principle.parse("tone=formal")
    out = tmp_path / "run.jsonl"
    r = runner.invoke(app, ["decode", "--llm", str(tiny_llama), "--rm", str(tiny_persrm), "--prompt", "hi",
                            "-p", '"tone=formal"=0.5', "--max-new-tokens", "4", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["principles"] == [{"name": "tone=formal", "weight": 0.5}]
    assert "[Principles] tone=formal [Instruction] hi" in rec["persrm_inputs"][0]
    r = runner.invoke(app, ["decode", "--llm", str(tiny_llama), "--rm", str(tiny_persrm), "--prompt", "hi",
                            "-p", "tone=formal", "--max-new-tokens", "4", "-q"])
    assert r.exit_code == 2 and "is quoted" in r.output
