"""What both trainers share: the PersRM's (DPO, `pad.train.trainer`) and the sequence reward model's
(`pad.train.reward`). Neither trainer imports the other; `pad.train.run.train` chooses between them.

- before any work: the output folder and what to resume from, the trackers' packages;
- the data: each prompt fitted into its token budget, the mixture built and reported;
- the run: device and dtype, transformers' names for settings, pad's one-line progress, the result;
- after: the record in `pad_config.json`, the base as the recipe named it, the process group closed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pad.errors import PadError
from pad.models import PAD_CONFIG, read_pad_config
from pad.principles import Message, chat_text, to_messages
from pad.train.config import TrainConfig
from pad.train.contrastive import add_contrastive, kind_counts, limit_eval, pair_kind
from pad.train.pairs import Mixture, Pair, build_mixture

Echo = Callable[[str], None]


@dataclass
class TrainResult:
    output_dir: Path
    eval: dict[str, Any]  # {"accuracy", "margin", "n", "principles": {name: {accuracy, margin, n}}, ...}
    steps: int
    seconds: float
    model: Any = None  # the trained PeftModel (base + LoRA), in this process


# -- before any work -----------------------------------------------------------------------------

# transformers' report_to names -> (modules any one of which it accepts, what to install). A missing one
# otherwise fails only once the data is built and the model loaded, in a long traceback.
REPORTERS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "'pad-align[tensorboard]'"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
    "comet_ml": (("comet_ml",), "comet_ml"),
    "clearml": (("clearml",), "clearml"),
    "dvclive": (("dvclive",), "dvclive"),
    "neptune": (("neptune",), "neptune"),
    "codecarbon": (("codecarbon",), "codecarbon"),
    "swanlab": (("swanlab",), "swanlab"),
    "trackio": (("trackio",), "trackio"),
}


def _importable(module: str) -> bool:
    import importlib.util
    import sys

    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def check_reporting(report_to: list[str] | str) -> None:
    """Refuse, before any work, an experiment tracker whose package is not installed (one line: what to install)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    for name in names:
        if name in REPORTERS and not any(_importable(m) for m in REPORTERS[name][0]):
            raise PadError(f"report_to: {name} needs the {REPORTERS[name][0][0]} package, which is not installed: "
                           f"pip install {REPORTERS[name][1]} (or set report_to: none)")


def check_output_dir(cfg: TrainConfig) -> str | bool:
    """What to resume from (a folder, or False); refuses to write over a run unless told to."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.output_dir)
    if isinstance(cfg.resume, str):
        if not Path(cfg.resume).is_dir():
            raise PadError(f"resume: checkpoint folder {cfg.resume!r} does not exist")
        return cfg.resume
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if cfg.resume:
        if last is None:
            raise PadError(f"resume: {out} holds no checkpoint-* folder to resume from")
        return last
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise PadError(f"output_dir {out} is not empty; set resume (continue) or overwrite (start again)")
    return False


# -- the data ------------------------------------------------------------------------------------


def prompt_tokens(tokenizer, pair: Pair, template: str) -> int:
    messages = to_messages(pair.prompt if isinstance(pair.prompt, str) else list(pair.prompt), pair.principle,
                           template)
    return len(tokenizer(chat_text(tokenizer, messages), add_special_tokens=False)["input_ids"])


def fit_pair(tokenizer, pair: Pair, template: str, budget: int) -> Pair | None:
    """Drop the earliest turns of a long conversation until the prompt fits `budget` tokens.

    The last user turn (which carries the principle) always stays; None when even it does not fit.
    """
    while prompt_tokens(tokenizer, pair, template) > budget:
        turns: list[Message] = [] if isinstance(pair.prompt, str) else list(pair.prompt)
        system = [m for m in turns[:1] if m["role"] == "system"]
        rest = turns[len(system):]
        if len(rest) < 3:  # only the last user turn is left
            return None
        rest = rest[2:] if rest[1]["role"] == "assistant" else rest[1:]  # one exchange less
        pair = Pair(tuple(system + rest), pair.chosen, pair.rejected, pair.principle, pair.source)
    return pair


def build_training_mixture(cfg: TrainConfig, tokenizer) -> Mixture:
    """The recipe's pairs, each prompt fitted into the token budget before the held-out split."""
    if not cfg.sources:
        raise PadError("no data: the recipe lists no sources")
    mix = build_mixture(cfg.sources, cfg.eval_size, cfg.seed, progress=is_main_process(),
                        fit=lambda pair: fit_pair(tokenizer, pair, cfg.template, cfg.prompt_budget))
    mix = add_contrastive(mix, cfg)  # cross-principle and opposite pairs, each on its own side of the split
    mix = limit_eval(mix, cfg.eval_limit, cfg.seed)
    if cfg.init_adapter:
        earlier = (read_pad_config(cfg.init_adapter) or {}).get("data", {})
        mix.notes += split_changes(mix, earlier, cfg.init_adapter)
    if not mix.train:
        raise PadError(f"no training pairs left after fitting prompts into {cfg.prompt_budget} tokens")
    return mix


def split_changes(mix: Mixture, earlier: dict[str, Any], where: str) -> list[str]:
    """A warning when a later stage holds out other pairs than the stage it starts from (`earlier`: the `data` of
    its pad_config.json): a prompt that stage held out may then be trained on here, and its held-out accuracy mean
    less. A stage changes the split by dropping or adding pairs before it, e.g. through another max_length,
    max_prompt_length, source, eval_size or seed. Each source's held-out prompts are compared by their digest
    (`held_out_prompts`, recorded since 2026-12-07); a record without one is compared by its held-out counts, where
    counts that differ prove the split moved and equal ones do not prove it stayed. Only the sources' own pairs
    are compared: derived pairs (opposites, cross couples) follow their prompts' sides, and a stage with another
    source or limit derives more or fewer of them on the same split."""
    digests = earlier.get("held_out_prompts") or {}
    counts = earlier.get("counts") or {}
    moved = []
    for source, per in mix.counts.items():
        if pair_kind(source) != "source":
            continue
        if source in digests and source in mix.held_out_prompts:
            if digests[source] != mix.held_out_prompts[source]:
                held = sum(c.get("eval", 0) for c in per.values())
                moved.append(f"{source}: other prompts held out ({held} pairs here)")
            continue
        for principle, c in per.items():
            before = counts.get(source, {}).get(principle, {}).get("eval")
            if before is not None and c.get("eval", 0) != before:
                moved.append(f"{source} / {principle} {c.get('eval', 0)} here, {before} there")
    if not moved:
        return []
    return [f"the held-out split differs from init_adapter {where}'s ({'; '.join(moved)}): pairs it held out may "
            "be trained on here; keep its sources, eval_size, seed, max_length and max_prompt_length"]


def mixture_report(mix: Mixture) -> str:
    lines = [f"data: {len(mix.train)} training pairs, {len(mix.eval)} held out "
             f"(by prompt), principles {', '.join(mix.principles)}"]
    for source, per in mix.counts.items():
        for principle, c in per.items():
            lines.append(f"  {source} / {principle}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    lines.append("  " + kind_counts(mix))
    lines += [f"warning: {note}" for note in mix.notes]
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------------


def is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def device_and_dtype(cfg: TrainConfig):
    """Where training runs (a GPU when there is one; accelerate places each process) and in which dtype."""
    import torch

    from pad.models import resolve_device, resolve_dtype

    device = "cuda" if torch.cuda.is_available() else resolve_device("auto")
    return device, resolve_dtype(cfg.dtype, device)


def checkpointing_arg(config_cls, on: bool) -> dict[str, bool]:
    """Activation checkpointing under the name the installed transformers knows: 5.x renamed
    gradient_checkpointing to activation_checkpointing and warns on the old name even when it is False."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": on}


def format_log(step: int, max_steps: int, logs: dict[str, Any]) -> str | None:
    """One line: the training loss and rewards, or the held-out accuracy and margin per principle."""
    short = {"loss": "loss", "rewards/accuracies": "acc", "rewards/margins": "margin", "learning_rate": "lr",
             "train_loss": "mean loss", "train_runtime": "seconds"}
    parts = [f"{short[k]} {v:.4g}" for k, v in logs.items() if k in short and isinstance(v, (int, float))]
    held = [f"{k.removeprefix('eval_')} {v:.3g}" for k, v in logs.items()
            if k.startswith("eval_") and k.endswith(("_accuracy", "_margin")) and isinstance(v, (int, float))]
    if held:
        parts = ["held-out", *held]
    return f"step {step}/{max_steps}: " + ", ".join(parts) if parts else None


def use_pad_progress(trainer, echo: Echo) -> None:
    """Replace the Trainer's own bar and log printer by pad's one-line progress."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_progress_callback(echo))


def _progress_callback(echo: Echo):
    from transformers.trainer_callback import ProgressCallback

    class Progress(ProgressCallback):
        """The usual progress bar, with one short line per log instead of a dict of every metric."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            line = format_log(state.global_step, state.max_steps, logs or {}) if state.is_world_process_zero else None
            if line:
                self.training_bar.write(line) if self.training_bar is not None else echo(line)

    return Progress


# -- after ---------------------------------------------------------------------------------------


def local_or_id(spec: str) -> str:
    p = Path(spec).expanduser()
    return str(p.resolve()) if p.exists() else spec


def record_base_in_adapter(folder: Path, base: str) -> None:
    """PEFT records the folder the base was loaded from; offline that is pad's cache (the converted
    GGUF), which a user's machine lacks. Record the base as the recipe named it."""
    path = folder / "adapter_config.json"
    if path.is_file():
        data = json.loads(path.read_text())
        data["base_model_name_or_path"] = base
        path.write_text(json.dumps(data, indent=2) + "\n")


def write_record(cfg: TrainConfig, mix: Mixture, summary: dict, run: dict[str, Any], kind: str,
                 folder: str | Path | None = None, **fields) -> Path:
    """`pad_config.json` in `folder` (default output_dir): what was trained (`kind`) on what (base, template,
    principles, the trainer's own `fields`, data and its counts, every setting plus `run`: steps, seconds, ...) and
    the held-out metrics."""
    import pad

    settings = cfg.to_dict()
    settings.pop("sources")
    record = {
        "kind": kind,
        "base_model": local_or_id(cfg.base_model),
        "template": cfg.template,
        "principles": mix.principles,
        **fields,
        "data": {"sources": [asdict(s) for s in cfg.sources], "counts": mix.counts,
                 "held_out_prompts": mix.held_out_prompts, "train_pairs": len(mix.train),
                 "eval_pairs": len(mix.eval)},
        "train": {**settings, **run},
        "eval": summary,
        "pad_version": getattr(pad, "__version__", None),
    }
    path = Path(folder or cfg.output_dir) / PAD_CONFIG
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


def end_processes(wait: bool = True) -> None:
    """Close the process group, if any: gloo runs can abort at exit when it is left open."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
