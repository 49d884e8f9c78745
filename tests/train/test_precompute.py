"""Work done for nothing (issue 21, item 7): reference log-probs are precomputed only where that saves compute
(the run reads a training pair more than once), never for the held-out set pad's evaluation does not read, and
the held-out evaluation computes the base's log-probs once, not at every evaluation.

Before: TRL precomputed the reference for every training pair before step 1 whatever max_steps was, and for the
held-out pairs too; each periodic evaluation ran the base again.
"""

from __future__ import annotations

import contextlib

import pytest

from tests.train.test_train import _base_referenced_margins, tiny_config


@pytest.fixture
def precomputed(monkeypatch):
    """The datasets TRL precomputes reference log-probs for, by name, in order."""
    from trl import DPOTrainer

    names: list[str] = []
    real = DPOTrainer._precompute_ref_logps

    def recording(self, dataset, name, batch_size):
        names.append(name)
        return real(self, dataset, name, batch_size)

    monkeypatch.setattr(DPOTrainer, "_precompute_ref_logps", recording)
    return names


@pytest.mark.parametrize(("settings", "expected"), [
    ({"max_steps": 1}, []),  # 8 of 24 training pairs read: precomputing all 24 first would be waste
    ({"max_steps": -1, "num_train_epochs": 2.0}, ["train"]),  # each pair read twice: once saves a forward
])
def test_precompute_only_where_it_saves_work(tmp_path, tiny_llama, opposite_jsonl, precomputed, settings, expected):
    from pad.train.run import train

    data = opposite_jsonl(tmp_path / "d.jsonl", 16)  # 32 pairs: 24 trained on, 8 held out
    cfg = tiny_config(tmp_path, tiny_llama, data, precompute_ref_log_probs=True, eval_steps=0, **settings)
    lines: list[str] = []
    result = train(cfg, echo=lines.append)
    assert precomputed == expected  # never "eval": the held-out evaluation does not read it
    assert result.eval["n"] == 8
    said = "precomputed once" if expected else "computed in each step"
    assert any(line.startswith("reference log-probs: " + said) for line in lines), lines


def test_held_out_evaluation_runs_the_base_once(tmp_path, tiny_llama, opposite_jsonl, monkeypatch):
    from peft import PeftModel

    import pad.train.trainer as trainer_module
    from pad.train.run import train

    base_passes: list[int] = []
    seen: dict = {}
    real_disable = PeftModel.disable_adapter

    @contextlib.contextmanager
    def counting_disable(self):
        if seen.get("evaluating"):
            base_passes.append(1)
        with real_disable(self):
            yield

    make = trainer_module._trainer_class

    def recording_class():
        class Recording(make()):
            def evaluate(self, *args, **kwargs):
                seen["evaluating"], seen["trainer"] = True, self
                try:
                    metrics = super().evaluate(*args, **kwargs)
                finally:
                    seen["evaluating"] = False
                seen.setdefault("metrics", {})[self.state.global_step] = metrics
                return metrics

        return Recording

    monkeypatch.setattr(PeftModel, "disable_adapter", counting_disable)
    monkeypatch.setattr(trainer_module, "_trainer_class", recording_class)
    data = opposite_jsonl(tmp_path / "d.jsonl", 16)
    cfg = tiny_config(tmp_path, tiny_llama, data, max_steps=3, eval_steps=1, precompute_ref_log_probs=False)
    train(cfg, echo=lambda _: None)
    assert sorted(seen["metrics"]) == [1, 2, 3]  # three evaluations of the 8 held-out pairs...
    assert len(base_passes) == 2  # ...one base batch per principle, computed at the first only
    # and what the later ones reused is right: the step-3 margins equal a fresh computation against the base
    trainer = seen["trainer"]
    expected = _base_referenced_margins(trainer, trainer.eval_dataset)
    for key, value in expected.items():
        assert seen["metrics"][3][key] == pytest.approx(value, abs=1e-5), key
