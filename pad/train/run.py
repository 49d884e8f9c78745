"""`train(cfg)`: the one entry point of `pad train`. It checks what must hold before any work, then runs the
trainer `cfg.kind` names: the PersRM's (DPO, `pad.train.trainer`) or a sequence reward model's
(`pad.train.reward`). It runs unchanged under `accelerate launch`.
"""

from __future__ import annotations

from pad.errors import PadError
from pad.train.common import Echo, TrainResult, check_reporting, end_processes
from pad.train.config import TrainConfig


def train(cfg: TrainConfig, echo: Echo | None = None) -> TrainResult:
    """Train as `cfg` says; returns where the model went and its held-out metrics."""
    check_reporting(cfg.report_to)
    if not cfg.sources:
        raise PadError("no data: the recipe lists no sources")
    import datasets

    datasets.disable_progress_bars()  # per-map bars drown the training progress
    echo = echo or (lambda _msg: None)
    try:
        if cfg.kind == "reward-model":
            from pad.train.reward import train_reward_model

            return train_reward_model(cfg, echo)
        from pad.train.trainer import train_persrm

        return train_persrm(cfg, echo)
    except BaseException:
        end_processes(wait=False)  # a failed run must not hang or abort at exit either
        raise
