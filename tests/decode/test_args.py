"""ARGS in the engine: score(a) = z_b(a) + w * RM(x, y_<t + a) over the base's top-k, cached and batched,
against a plain uncached loop of that rule, one prompt at a time."""

from __future__ import annotations

import pytest
import torch

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
from pad.decode.args import ArgsGuide
from pad.decode.scoring import args_scores, select_tokens
from pad.models import load_causal_lm, load_tokenizer
from pad.principles import chat_text, to_messages

PROMPTS = ["Tell me a joke about cats.", "How do I bake bread at home? Please explain every step in detail.", "hi",
           [{"role": "user", "content": "Write a poem."}, {"role": "assistant", "content": "Roses."},
            {"role": "user", "content": "Shorter."}]]
N = 16


def test_hand_computed_args_scores():
    """Candidates 0 and 1 with base logits 2.0 and 1.0; the RM gives them 0.1 and 1.5.
    w = 1: 2.1 < 2.5, token 1 wins; w = 0.5: 2.05 > 1.75, token 0 wins; w = 0: the base's own choice."""
    cand = torch.tensor([[0, 1], [0, 1], [0, 1]])
    zb_c = torch.tensor([[2.0, 1.0]] * 3)
    r = torch.tensor([[0.1, 1.5]] * 3)
    score = args_scores(zb_c, r, torch.tensor([1.0, 0.5, 0.0]))
    assert torch.allclose(score, torch.tensor([[2.1, 2.5], [2.05, 1.75], [2.0, 1.0]]))
    assert select_tokens(cand, score).tolist() == [1, 0, 0]


@pytest.fixture(scope="module")
def base_and_rm(tiny_dir, tiny_tokenizer, tiny_llama):
    """The tiny base and a tiny one-logit sequence classifier on the same tokenizer (cached path)."""
    from pad.testing import save_tiny_classifier

    rm = save_tiny_classifier(tiny_dir / "args_rm", num_labels=1, seed=21, tokenizer=tiny_tokenizer)
    return load_causal_lm(tiny_llama), load_tokenizer(tiny_llama), rm


@torch.inference_mode()
def uncached_args(base, tok, rm_model, rm_tok, prompt, w: float, k: int, n: int) -> list[int]:
    """The rule above, re-reading every sequence at every step, for one prompt: the reference's loop."""
    ids = tok(chat_text(tok, to_messages(prompt, None)), add_special_tokens=False)["input_ids"]
    rm_prefix = rm_tok(chat_text(rm_tok, to_messages(prompt, None)), add_special_tokens=False)["input_ids"]
    out = []
    for _ in range(n):
        zb = base(torch.tensor([ids + out])).logits[0, -1].float()
        zb_c, cand = zb.topk(k)
        seqs = torch.tensor([rm_prefix + out + [a] for a in cand.tolist()])  # (k, T) one candidate a row
        h = rm_model.base_model(seqs).last_hidden_state[:, -1]  # the reward head reads each text's last token
        r = rm_model.score(h)[:, 0].float()
        nxt = int(cand[int((zb_c + w * r).argmax())])
        out.append(nxt)
        if nxt == tok.eos_token_id:
            break
    return out


@pytest.mark.parametrize("w", [0.5, 1.0])
def test_cached_batched_args_equals_the_uncached_loop(base_and_rm, w):
    base, tok, rm = base_and_rm
    guide = ArgsGuide(str(rm), tok)
    assert guide.path == "cached"
    dec = PADDecoder(base, tok, args=guide, args_weight=w)
    s = SamplingSettings(max_new_tokens=N, topk=5)
    got = [r.token_ids for r in dec.generate([DecodeRequest(p) for p in PROMPTS], s)]
    model = guide.scorer.load()
    want = [uncached_args(base, tok, model, guide.scorer.tokenizer, p, w, 5, N) for p in PROMPTS]
    assert got == want
    vanilla = [r.token_ids for r in PADDecoder(base, tok).generate([DecodeRequest(p) for p in PROMPTS], s)]
    assert got != vanilla  # the reward model moved some choices


def test_args_w0_equals_vanilla_greedy_and_rows_mix_weights(base_and_rm):
    base, tok, rm = base_and_rm
    guide = ArgsGuide(str(rm), tok)
    s = SamplingSettings(max_new_tokens=N, topk=5)
    vanilla = [r.token_ids for r in PADDecoder(base, tok).generate([DecodeRequest(p) for p in PROMPTS], s)]
    dec = PADDecoder(base, tok, args=guide, args_weight=0.0)
    assert [r.token_ids for r in dec.generate([DecodeRequest(p) for p in PROMPTS], s)] == vanilla
    # rows with their own weights in one batch, joining late, each as alone
    dec = PADDecoder(base, tok, args=guide, args_weight=1.0)
    reqs = [DecodeRequest(p, weight=w) for p, w in zip(PROMPTS, (1.0, 0.0, 0.5, 1.0))]
    alone = [dec.generate([r], s)[0].token_ids for r in reqs]
    batch = dec.batch(s)
    batch.admit(reqs[:2])
    got = {}
    for step in range(4 * N):
        if step == 3:
            batch.admit(reqs[2:])
        got.update(dict(batch.step()))
        if not batch.live:
            break
    assert [got[k].token_ids for k in sorted(got)] == alone
    assert alone[1] == vanilla[1]


def test_rm_on_another_tokenizer_reads_texts(tmp_path, base_and_rm):
    """An RM with its own vocabulary is read through its own tokenizer, on the candidates' texts."""
    from pad.testing import build_tokenizer, save_tiny_classifier

    base, tok, _ = base_and_rm
    other = save_tiny_classifier(tmp_path / "rm_other", num_labels=2, seed=5, tokenizer=build_tokenizer(vocab_size=300))
    with pytest.raises(Exception, match="has 2 labels"):
        ArgsGuide(str(other), tok)
    guide = ArgsGuide(f"{other}:1", tok)
    assert guide.path == "texts" and "tokenizer" in guide.note
    dec = PADDecoder(base, tok, args=guide, args_weight=2.0)
    s = SamplingSettings(max_new_tokens=6, topk=3)
    got = [r.token_ids for r in dec.generate([DecodeRequest(p) for p in PROMPTS[:2]], s)]
    assert got == [dec.generate([DecodeRequest(p)], s)[0].token_ids for p in PROMPTS[:2]]


def test_cli_args_guide_and_prompting_baseline(tmp_path, base_and_rm, tiny_llama):
    import json

    from typer.testing import CliRunner

    from pad.cli import app
    from pad.principles import Principle

    base, tok, rm = base_and_rm
    runs = tmp_path / "runs.config"
    runs.write_text('{"rm_weight": 0.5, "topk": 5}\n{"rm_weight": 1.0, "topk": 5}\n')
    out = tmp_path / "args.jsonl"
    r = CliRunner().invoke(app, ["decode", "--llm", str(tiny_llama), "--prompt", PROMPTS[0], "--guide", "args",
                                 "--reward-model", str(rm), "--config", str(runs), "--max-new-tokens", str(N),
                                 "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    guide = ArgsGuide(str(rm), tok)
    for i, w in enumerate((0.5, 1.0)):
        rec = json.loads((tmp_path / f"args_{i}.jsonl").read_text())
        assert rec["settings"]["guide"] == "args" and rec["settings"]["reward_path"] == "cached"
        assert rec["settings"]["weight"] == w and rec["settings"]["rm"] is None
        want = PADDecoder(base, tok, args=guide, args_weight=w).generate(
            [DecodeRequest(PROMPTS[0])], SamplingSettings(max_new_tokens=N, topk=5))[0]
        assert rec["response"] == want.text

    out = tmp_path / "prompted.jsonl"
    r = CliRunner().invoke(app, ["decode", "--llm", str(tiny_llama), "--prompt", PROMPTS[0], "-p", "harmless",
                                 "--baseline", "prompted", "--max-new-tokens", str(N), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())
    assert "harmless" in rec["model_input"] and rec["settings"]["baseline"] == "prompted"
    assert rec["principles"] == [{"name": "harmless", "weight": 0.0}] and rec["settings"]["rm"] is None
    want = PADDecoder(base, tok).generate([DecodeRequest(PROMPTS[0], [Principle("harmless", 0.0)])],
                                          SamplingSettings(max_new_tokens=N))[0]
    assert rec["response"] == want.text and rec["model_input"] == want.model_input

    r = CliRunner().invoke(app, ["decode", "--llm", str(tiny_llama), "--prompt", "x", "--guide", "args"])
    assert r.exit_code == 2 and "needs a reward model" in r.output


def test_a_base_holding_a_persrm_adapter_decodes_as_the_plain_base(base_and_rm, tiny_llama, tiny_lora):
    """`pad decode` loads a LoRA PersRM onto the base (shared backbone); a run that does not use it (ARGS,
    vanilla) must see the base with the adapter off."""
    from peft import PeftModel

    base, tok, rm = base_and_rm
    holder = PeftModel.from_pretrained(load_causal_lm(tiny_llama), str(tiny_lora)).eval()
    s = SamplingSettings(max_new_tokens=N, topk=5)
    reqs = [DecodeRequest(p) for p in PROMPTS]
    guide = ArgsGuide(str(rm), tok)
    for args in (None, guide):
        plain = [r.token_ids for r in PADDecoder(base, tok, args=args).generate(reqs, s)]
        held = PADDecoder(holder, tok, args=args)
        assert held.backbone == "none"
        assert [r.token_ids for r in held.generate(reqs, s)] == plain
