"""Training a sequence reward model (kind: reward-model) on the opposite-principles task: only an RM that
reads the principle can rank both principles' pairs."""

from __future__ import annotations

import json

import pytest
import torch

from pad.train.config import TrainConfig


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory, tiny_llama, opposite_jsonl):
    from pad.train.run import train

    tmp = tmp_path_factory.mktemp("rm")
    data = opposite_jsonl(tmp / "opposite.jsonl", 48)
    cfg = TrainConfig(kind="reward-model", base_model=str(tiny_llama), output_dir=str(tmp / "rm"),
                      sources=[{"kind": "jsonl", "path": str(data)}], eval_size=0.34, max_length=160, lora_r=8,
                      lora_alpha=16, lora_dropout=0.0, learning_rate=5e-3, warmup_ratio=0.0, max_steps=24,
                      per_device_train_batch_size=8, per_device_eval_batch_size=16, logging_steps=4, save_steps=0)
    lines: list[str] = []
    return cfg, train(cfg, echo=lines.append), lines


def test_held_out_accuracy_is_one_for_both_principles(trained_rm):
    _, result, _ = trained_rm
    per = result.eval["principles"]
    assert set(per) == {"harmless", "humor"}
    for name, m in per.items():
        assert m["n"] >= 16 and m["accuracy"] == 1.0 and m["margin"] > 0, (name, m)
    assert set(result.eval["sources"]) == {f"jsonl:opposite.jsonl / {p}" for p in per}


def test_lora_weights_change_and_base_weights_do_not(trained_rm, tiny_llama):
    from transformers import AutoModelForCausalLM

    _, result, _ = trained_rm
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    lora_b = []
    for name, p in result.model.named_parameters():
        if "lora_B" in name:
            lora_b.append(p.detach().abs().max().item())
        elif "lora_" not in name and "score" not in name:
            key = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(p.detach().cpu(), base[key]), key
    assert lora_b and min(lora_b) > 0


def test_the_rm_is_a_pad_eval_scorer_and_an_args_guide(trained_rm, tiny_llama):
    from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
    from pad.decode.args import ArgsGuide
    from pad.evaluate import build_dimensions
    from pad.models import load_causal_lm, load_tokenizer

    cfg, result, _ = trained_rm
    record = json.loads((result.output_dir / "pad_config.json").read_text())
    assert record["kind"] == "reward-model" and record["reads_principles"] is True
    assert record["eval"]["principles"]["humor"]["accuracy"] == 1.0
    (dim,) = build_dimensions([str(result.output_dir)])
    assert dim.scorer.output_names == ["reward"]
    guide = ArgsGuide(str(result.output_dir), load_tokenizer(tiny_llama))
    assert guide.path == "cached"
    dec = PADDecoder(load_causal_lm(tiny_llama), load_tokenizer(tiny_llama), args=guide, args_weight=1.0)
    (res,) = dec.generate([DecodeRequest("Tell me about the cat number 3.")], SamplingSettings(max_new_tokens=5))
    assert len(res.token_ids) >= 1
