"""DPO + LoRA training of a tiny PersRM on a task only a model that reads the principle can learn
(the opposite-principles task of conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pad.cli import app
from pad.train.config import TrainConfig


def tiny_config(tmp_path, base, data, **kw) -> TrainConfig:
    settings = {
        "base_model": str(base), "output_dir": str(tmp_path / "persrm"),
        "sources": [{"kind": "jsonl", "path": str(data)}], "eval_size": 0.25, "max_length": 160,
        "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "learning_rate": 5e-3, "warmup_ratio": 0.0,
        "max_steps": 16, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
        "eval_steps": 8, "logging_steps": 4, "save_steps": 0,
    }
    settings.update(kw)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama, opposite_jsonl):
    from pad.train.run import train

    tmp = tmp_path_factory.mktemp("train")
    data = opposite_jsonl(tmp / "opposite.jsonl", 48)
    cfg = tiny_config(tmp, tiny_llama, data, eval_size=0.34)
    lines: list[str] = []
    return cfg, train(cfg, echo=lines.append), lines


def test_reads_the_principle(trained):
    _, result, _ = trained
    per = result.eval["principles"]
    assert set(per) == {"harmless", "humor"}
    for name, m in per.items():
        assert m["n"] >= 16, m
        assert m["accuracy"] >= 0.9, (name, m)
        assert m["margin"] > 0
    # Per source too: here one source holds both principles, so its two entries are the principles'.
    src = result.eval["sources"]
    assert set(src) == {f"jsonl:opposite.jsonl / {p}" for p in per}
    for name, m in per.items():
        assert src[f"jsonl:opposite.jsonl / {name}"] == m


def test_lora_weights_change_and_base_weights_do_not(trained, tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM

    _, result, _ = trained
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    lora_b, seen = [], set()
    for name, p in result.model.named_parameters():
        if "lora_" in name:
            if "lora_B" in name:  # PEFT starts B at zero
                lora_b.append(p.detach().abs().max().item())
            continue
        key = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(p.detach().cpu(), base[key]), key
        assert not p.requires_grad
        seen.add(key)
    assert seen == set(base)
    assert lora_b and min(lora_b) > 0


def test_output_folder_is_self_contained(trained, tiny_llama):
    import torch

    from pad.models import load_causal_lm, load_tokenizer, read_pad_config

    cfg, result, lines = trained
    out = result.output_dir
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "pad_config.json"):
        assert (out / name).is_file(), name
    record = read_pad_config(out)
    assert record["base_model"] == str(tiny_llama.resolve())
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == record["base_model"]
    assert record["template"] == cfg.template
    assert record["principles"] == ["harmless", "humor"]
    assert record["beta"] == cfg.beta
    counts = record["data"]["counts"]["jsonl:opposite.jsonl"]
    assert counts["humor"]["train"] + counts["humor"]["eval"] == 48
    assert record["data"]["train_pairs"] + record["data"]["eval_pairs"] == 96
    assert record["train"]["max_steps"] == 16 and record["train"]["steps"] == 16
    assert record["eval"]["principles"]["humor"]["accuracy"] >= 0.9
    # No checkpoints were asked for; progress lines were reported.
    assert not list(out.glob("checkpoint-*"))
    assert any(line.startswith("data: ") and "held out (by prompt)" in line for line in lines), lines

    # `pad decode --rm DIR` needs nothing else: the adapter loads on its recorded base.
    reloaded = load_causal_lm(out)
    tok = load_tokenizer(out)
    ids = tok("Tell me about the cat number 3.", return_tensors="pt")["input_ids"]
    result.model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, result.model(input_ids=ids).logits, atol=1e-5)


def test_cli_train_checkpoints_and_resume(tmp_path, tiny_llama, opposite_jsonl):
    data = opposite_jsonl(tmp_path / "d.jsonl", 8)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"base_model: {tiny_llama}\nsources: [{{kind: jsonl, path: {data}}}]\n"
                      "max_length: 160\nper_device_train_batch_size: 4\neval_size: 4\nlora_r: 4\n")
    out = tmp_path / "run"
    common = ["train", "--config", str(recipe), "--output_dir", str(out), "--save_steps", "2", "--eval_steps", "0"]
    r = CliRunner().invoke(app, [*common, "--max_steps", "2"])
    assert r.exit_code == 0, r.output
    assert "saved the PersRM adapter" in r.output and "held-out harmless: accuracy" in r.output
    assert (out / "checkpoint-2").is_dir()
    # A checkpoint carries its own record (no held-out metrics), so pad decode and eval_only take it as an adapter.
    record = json.loads((out / "checkpoint-2" / "pad_config.json").read_text())
    assert (record["kind"], record["train"]["steps"], record["eval"]) == ("persrm-lora", 2, {})
    assert record["template"] == json.loads((out / "pad_config.json").read_text())["template"]

    # The same folder again is refused unless resumed (or overwritten).
    r = CliRunner().invoke(app, [*common, "--max_steps", "3"])
    assert r.exit_code == 2 and "is not empty; set resume" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, [*common, "--max_steps", "3", "--resume"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "pad_config.json").read_text())["train"]["steps"] == 3


@pytest.mark.parametrize(("recipe", "message"), [
    ("sources: [{kind: jsonl, path: DATA}]\nbase_model: BASE\nlearing_rate: 1\n", "unknown field 'learing_rate'"),
    ("sources: [{kind: pku_saferlhf, path: DATA, principles: {harmless: safer_response_id}}]\nbase_model: BASE\n",
     "d.jsonl: missing column 'response_0'"),
    ("sources: [{kind: jsonl, path: DATA}]\nbase_model: /no/such/model\n", "model path '/no/such/model' does not exist"),
    ("base_model: BASE\n", "no data: the recipe lists no sources"),
    ("sources: [{kind: jsonl, path: DATA}]\nbase_model: BASE\nlora_target_modules: [nope_proj]\n",
     "cannot set up training on"),
])
def test_cli_train_bad_input_is_one_line(tmp_path, tiny_llama, opposite_jsonl, recipe, message):
    data = opposite_jsonl(tmp_path / "d.jsonl", 4)
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.replace("DATA", str(data)).replace("BASE", str(tiny_llama)))
    r = CliRunner().invoke(app, ["train", "--config", str(path), "--output_dir", str(tmp_path / "o"),
                                 "--max_length", "160"])
    assert r.exit_code == 2, r.output
    last = r.output.strip().splitlines()[-1]  # progress may come first; the error is one line, last
    assert last.startswith("error: ") and message in last, r.output
    assert "Traceback" not in r.output and r.output.count("error: ") == 1, r.output


def test_adapter_records_the_hub_id_not_the_offline_cache(tmp_path):
    from pad.train.common import record_base_in_adapter

    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/root/.cache/pad/x", "r": 8}))
    record_base_in_adapter(tmp_path, "HuggingFaceTB/SmolLM2-135M-Instruct")
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    assert data == {"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "r": 8}


@pytest.mark.parametrize("precompute", [True, False])
def test_second_stage_continues_the_adapter(trained, tmp_path, tiny_llama, opposite_jsonl, precompute):
    """init_adapter: the stage-1 LoRA is trained further (here with DPO + the chosen NLL), not replaced."""
    from datasets import load_from_disk
    from safetensors.torch import load_file

    from pad.models import read_pad_config
    from pad.train.pairs import Pair, to_trl_row
    from pad.train.run import train

    cfg1, result1, _ = trained
    # A later stage's own pairs that must not move the held-out split: on every training prompt of stage 1
    # (they would move it: more pairs, so more held-out prompts) and on every second held-out one.
    def held(result, source):
        ds = load_from_disk(str(result.output_dir / "pairs" / "eval"))
        return sorted(json.dumps(r["prompt"]) for r in ds if r["source"] == source and r["principle"] == "humor")

    def key(row):
        return json.dumps(to_trl_row(Pair(row["prompt"], "", "", "humor"))["prompt"])

    rows = [json.loads(line) for line in Path(cfg1.sources[0].path).read_text().splitlines()]
    held1 = set(held(result1, "jsonl:opposite.jsonl"))
    humor_rows = [r for r in rows if r["principle"] == "humor"]
    followers = [r for r in humor_rows if key(r) in held1][::2]
    extra = tmp_path / "extra.jsonl"
    extra.write_text("".join(json.dumps({**r, "rejected": "Nothing to add."}) + "\n"
                             for r in [r for r in humor_rows if key(r) not in held1] + followers))
    sources = [{"kind": "jsonl", "path": str(cfg1.sources[0].path)},
               {"kind": "jsonl", "path": str(extra), "moves_split": False}]
    cfg2 = tiny_config(tmp_path, tiny_llama, cfg1.sources[0].path, eval_size=cfg1.eval_size, max_steps=3,
                       eval_steps=0, init_adapter=str(result1.output_dir), loss_type=["sigmoid", "sft"],
                       precompute_ref_log_probs=precompute, sources=sources)
    result2 = train(cfg2, echo=lambda _: None)
    before = load_file(result1.output_dir / "adapter_model.safetensors")
    after = load_file(result2.output_dir / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    moved = max((after[k] - before[k]).abs().max().item() for k in before)
    size = max(before[k].abs().max().item() for k in before)
    assert 0 < moved < size  # continued from stage 1, not a fresh LoRA (B would start at zero)
    record = read_pad_config(result2.output_dir)
    assert record["train"]["init_adapter"] == str(result1.output_dir)
    assert record["train"]["loss_type"] == ["sigmoid", "sft"]
    assert record["eval"]["principles"]["humor"]["accuracy"] >= 0.9  # the same held-out pairs as stage 1
    # Measured against the base, stage 2 keeps at least most of stage 1's margin (here 7.4 vs 5.1); against
    # its frozen stage-1 copy ("ref"), live or precomputed, it would be 2.2.
    assert record["eval"]["principles"]["humor"]["margin"] > 0.5 * result1.eval["principles"]["humor"]["margin"]
    assert not (result2.output_dir / "ref").exists()  # the frozen copy is not saved with the adapter
    # Held out per source: the first source's held-out pairs are stage 1's; the added ones follow their prompts.
    assert held(result2, "jsonl:opposite.jsonl") == sorted(held1)
    assert held(result2, "jsonl:extra.jsonl") == sorted(key(r) for r in followers) and followers
    src = record["eval"]["sources"]
    assert set(src) == {"jsonl:opposite.jsonl / humor", "jsonl:opposite.jsonl / harmless", "jsonl:extra.jsonl / humor"}
    assert src["jsonl:opposite.jsonl / humor"]["n"] == result1.eval["principles"]["humor"]["n"]
    assert src["jsonl:extra.jsonl / humor"]["n"] == len(followers)
    assert record["eval"]["principles"]["humor"]["n"] == result1.eval["principles"]["humor"]["n"] + len(followers)


def test_init_adapter_must_be_an_adapter(tmp_path, tiny_llama, opposite_jsonl):
    data = opposite_jsonl(tmp_path / "d.jsonl", 4)
    path = tmp_path / "recipe.yaml"
    path.write_text(f"sources: [{{kind: jsonl, path: {data}}}]\nbase_model: {tiny_llama}\ninit_adapter: {tmp_path}\n")
    r = CliRunner().invoke(app, ["train", "--config", str(path), "--output_dir", str(tmp_path / "o"),
                                 "--max_length", "160"])
    assert r.exit_code == 2 and "is not a LoRA adapter folder" in r.output.strip().splitlines()[-1], r.output


def _base_referenced_margins(trainer, dataset) -> dict[str, float]:
    """Mean beta * (policy - base log-ratio) per principle and overall, computed here by hand: log-softmax of
    the logits with the adapter on, then off, on TRL's own eval batches."""
    import torch

    model = trainer.accelerator.unwrap_model(trainer.model).eval()

    def logps(batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        labels = batch["input_ids"][:, 1:]
        per_token = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        return (per_token * batch["completion_mask"][:, 1:]).sum(1).chunk(2)  # (B,), (B,) chosen, rejected

    margins: dict[str, list[float]] = {}
    with torch.no_grad():
        for name in sorted(set(dataset["principle"])):
            subset = dataset.filter(lambda r, name=name: r["principle"] == name)
            for batch in trainer.get_eval_dataloader(subset):
                chosen, rejected = logps(batch)
                with model.disable_adapter():
                    base_chosen, base_rejected = logps(batch)
                m = trainer.beta * ((chosen - base_chosen) - (rejected - base_rejected))
                margins.setdefault(name, []).extend(m.tolist())
    out = {f"eval_{name}_margin": sum(v) / len(v) for name, v in margins.items()}
    every = [x for v in margins.values() for x in v]
    return {**out, "eval_margin": sum(every) / len(every)}


@pytest.mark.parametrize("precompute", [True, False])
def test_second_stage_evaluates_against_the_base_during_training_too(trained, tmp_path, tiny_llama, monkeypatch,
                                                                      precompute):
    """The held-out numbers logged during a second stage (which trains against a frozen copy "ref" of its
    starting adapter) are the PersRM's reward as pad decode and pad eval use it: against the base model,
    the same measurement as the final report."""
    import pad.train.trainer as trainer_module
    from pad.train.run import train

    cfg1, result1, _ = trained
    make = trainer_module._trainer_class
    seen = {}

    def recording_class():
        class Recording(make()):
            def train(self, *args, **kwargs):
                seen["trainer"], self.in_training = self, True
                try:
                    return super().train(*args, **kwargs)
                finally:
                    self.in_training = False

            def evaluate(self, *args, **kwargs):
                metrics = super().evaluate(*args, **kwargs)
                if getattr(self, "in_training", False):
                    seen.setdefault("during", {})[self.state.global_step] = metrics
                return metrics

        return Recording

    monkeypatch.setattr(trainer_module, "_trainer_class", recording_class)
    cfg2 = tiny_config(tmp_path, tiny_llama, cfg1.sources[0].path, eval_size=cfg1.eval_size, max_steps=2,
                       eval_steps=2, init_adapter=str(result1.output_dir), precompute_ref_log_probs=precompute)
    result2 = train(cfg2, echo=lambda _: None)
    during = seen["during"][2]  # evaluated by the Trainer at its last step, inside train()
    trainer = seen["trainer"]
    assert "ref" not in trainer.accelerator.unwrap_model(trainer.model).peft_config
    expected = _base_referenced_margins(trainer, trainer.eval_dataset)
    assert set(expected) == {"eval_humor_margin", "eval_harmless_margin", "eval_margin"}
    for key, value in expected.items():
        assert during[key] == pytest.approx(value, abs=1e-5), key
    # and the final report is that same evaluation
    assert result2.eval["margin"] == pytest.approx(during["eval_margin"], abs=1e-5)
    assert result2.eval["principles"]["humor"]["margin"] == pytest.approx(during["eval_humor_margin"], abs=1e-5)
