"""Training the PersRM: DPO (TRL `DPOTrainer`) with a PEFT LoRA on principle-conditioned pairs.

`train(cfg)` builds the data mixture, trains, evaluates held-out preference accuracy and reward margin
per principle, and writes to `cfg.output_dir` the adapter, the tokenizer and a `pad_config.json`
(base model, principle template, principles, data mixture and counts, settings, final metrics), so that
`pad decode --rm DIR` and `pad merge DIR` need nothing else. It runs unchanged under `accelerate launch`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pad.errors import PadError
from pad.models import PAD_CONFIG, load_causal_lm, load_tokenizer, resolve_device, resolve_dtype
from pad.principles import Message, chat_text, to_messages
from pad.train.config import TrainConfig
from pad.train.pairs import Mixture, Pair, build_mixture, to_trl_row

Echo = Callable[[str], None]


@dataclass
class TrainResult:
    output_dir: Path
    eval: dict[str, Any]  # {"accuracy", "margin", "sigmoid_loss", "n", "principles": {name: {accuracy, margin, n}}}
    steps: int
    seconds: float
    model: Any = None  # the trained PeftModel (base + LoRA), in this process


# -- data ----------------------------------------------------------------------------------------


def pair_row(tokenizer, pair: Pair, template: str) -> dict[str, Any]:
    """TRL's conversational row; plain text in the HH form for a tokenizer without a chat template."""
    row = to_trl_row(pair, template)
    if getattr(tokenizer, "chat_template", None):
        return row
    return {"prompt": chat_text(tokenizer, row["prompt"]), "chosen": " " + pair.chosen,
            "rejected": " " + pair.rejected, "principle": pair.principle, "source": pair.source}


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


# -- evaluation ----------------------------------------------------------------------------------


def _trainer_class():
    """DPOTrainer whose evaluation reports preference accuracy and reward margin per principle."""
    import torch
    import torch.nn.functional as F
    from transformers import Trainer
    from trl import DPOTrainer

    class PersRMTrainer(DPOTrainer):
        # The held-out reward is always measured against the base model (the adapter disabled), as pad decode
        # and pad eval use the PersRM, during training and at its end alike. DPO's own reference can differ: a
        # second stage trains against a frozen copy of its starting adapter ("ref"), and the reference log-probs
        # TRL precomputes (or computes live) are then that copy's, so they are never read here.

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
            dataset = self.eval_dataset if eval_dataset is None else eval_dataset
            if dataset is None or not {"principle", "source"} <= set(getattr(dataset, "column_names", [])):
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            start = time.perf_counter()
            summary = self.preference_metrics(dataset)
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in summary.items() if k not in ("principles", "sources")}
            for name, m in summary["principles"].items():
                metrics.update({f"{metric_key_prefix}_{name}_{k}": v for k, v in m.items()})
            metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start, 3)
            Trainer.log(self, metrics)  # not DPOTrainer.log: that would mix in the training averages
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            self.last_eval, self.last_eval_step = summary, self.state.global_step
            return metrics

        @torch.no_grad()
        def preference_metrics(self, dataset) -> dict[str, Any]:
            """Exact held-out accuracy (reward margin > 0), mean margin and DPO loss, overall, per principle
            and per source (one principle can come from several sources, e.g. a later stage's pairs)."""
            was_training = self.model.training
            self.model.eval()
            model = self.accelerator.unwrap_model(self.model)
            keys = list(zip(dataset["principle"], dataset["source"]))  # pair_row writes both
            groups = sorted(set(keys))
            by_group: dict[tuple[str, str], torch.Tensor] = {}
            try:
                for group in groups:
                    subset = dataset.select([i for i, k in enumerate(keys) if k == group], keep_in_memory=True)
                    margins = []
                    for i, batch in enumerate(self.get_eval_dataloader(subset)):
                        key = (getattr(dataset, "_fingerprint", id(dataset)), group, i)
                        m = self._margins(model, batch, key)
                        margins.append(self.accelerator.gather_for_metrics(m).float().cpu())
                    by_group[group] = torch.cat(margins)  # (n,) beta * (policy - reference log-ratio)
            finally:
                self.model.train(was_training)

            def stats(keys) -> dict[str, float]:
                m = torch.cat([by_group[k] for k in keys])
                return {"accuracy": (m > 0).float().mean().item(), "margin": m.mean().item(), "n": int(m.numel())}

            per = {name: stats([k for k in groups if k[0] == name]) for name in sorted({k[0] for k in groups})}
            per_source = {f"{source} / {principle}": stats([(principle, source)]) for principle, source in groups}
            m = torch.cat([by_group[k] for k in groups])
            # Named for what it is: DPO's sigmoid loss of the margins against the base, whatever loss_type
            # trained (ipo, sigmoid + sft, ...) and whatever reference that training used.
            return {"accuracy": (m > 0).float().mean().item(), "margin": m.mean().item(),
                    "sigmoid_loss": -F.logsigmoid(m).mean().item(), "n": int(m.numel()), "principles": per,
                    "sources": per_source}

        def _margins(self, model, batch, key=None):
            """beta * (policy - base log-ratio) of each pair in the batch: (B,).

            The base's log-probs never change (its weights are frozen), so each held-out batch's are computed
            at the first evaluation and reused by every later one (under `key`): a periodic evaluation costs
            one forward per pair, not two.
            """
            chosen, rejected = self._completion_logps(model, batch)
            cache = self.__dict__.setdefault("_base_logps", {})
            if key is None or key not in cache:
                with model.disable_adapter():  # the base model, whichever adapters the PeftModel holds ("ref" too)
                    base = self._completion_logps(model, batch)
                if key is None:
                    return self.beta * ((chosen - base[0]) - (rejected - base[1]))
                cache[key] = base
            ref_chosen, ref_rejected = cache[key]
            return self.beta * ((chosen - ref_chosen) - (rejected - ref_rejected))

        def _completion_logps(self, model, batch):
            """Log-probs of the chosen and rejected completions, summed over their tokens: (B,), (B,)."""
            labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
            seq_len = batch["completion_mask"].size(1) - 1
            with self.accelerator.autocast():
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                            fused_lm_head=True, use_cache=False)
            return out.log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)

        def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
            # pad's held-out evaluation measures against the base itself (above) and never reads TRL's
            # reference log-probs of an evaluation set: computing them would be work for nothing.
            if name != "train":
                return dataset
            return super()._precompute_ref_logps(dataset, name, batch_size)

    return PersRMTrainer


def _format_log(step: int, max_steps: int, logs: dict[str, Any]) -> str | None:
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
            line = _format_log(state.global_step, state.max_steps, logs or {}) if state.is_world_process_zero else None
            if line:
                self.training_bar.write(line) if self.training_bar is not None else echo(line)

    return Progress


# -- the run -------------------------------------------------------------------------------------


def _check_output_dir(cfg: TrainConfig) -> str | bool:
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


def _dpo_config(cfg: TrainConfig, dtype, has_eval: bool, n_train: int = 0):
    import dataclasses

    import torch
    from trl import DPOConfig

    known = {f.name for f in dataclasses.fields(DPOConfig)}
    for key in cfg.dpo_args:
        if key not in known:
            raise PadError(f"dpo_args: {key!r} is not a trl.DPOConfig field")
    eval_on = has_eval and cfg.eval_steps > 0
    kwargs = {
        "output_dir": cfg.output_dir,
        "beta": cfg.beta,
        "loss_type": cfg.loss_types,
        "loss_weights": cfg.loss_weights,
        "max_length": cfg.max_length,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "warmup_steps": cfg.warmup_ratio,  # a float below 1 is a share of the steps
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "per_device_eval_batch_size": cfg.per_device_eval_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        **checkpointing_arg(DPOConfig, cfg.gradient_checkpointing),
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "eval_strategy": "steps" if eval_on else "no",
        "eval_steps": cfg.eval_steps if eval_on else None,
        "save_strategy": "steps" if cfg.save_steps > 0 else "no",
        "save_steps": cfg.save_steps or 500,
        "save_total_limit": cfg.save_total_limit,
        "logging_steps": cfg.logging_steps,
        "report_to": cfg.report_to,
        "ddp_find_unused_parameters": False,
        "dataloader_pin_memory": torch.cuda.is_available(),
        # Without a GPU, accelerate only sets up a multi-process (gloo) run when told it is on CPU.
        "use_cpu": not torch.cuda.is_available(),
    }
    kwargs.update(cfg.dpo_args)
    try:
        args = DPOConfig(**kwargs)
    except (ValueError, TypeError) as e:
        raise PadError(f"training settings rejected by trl: {str(e).splitlines()[0]}") from None
    args.precompute_ref_log_probs = cfg.precompute_ref_log_probs and precompute_saves_work(cfg, n_train, args)
    return args


def precompute_saves_work(cfg: TrainConfig, n_train: int, args) -> bool:
    """Whether precomputing the reference log-probs saves compute: only when the run reads a training pair more
    than once. Live, each step's reference forward costs what precomputing that pair once does, and the
    precompute pass runs over every pair before step 1 even when the run stops after a few steps."""
    if cfg.eval_only:
        return False
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    reads = cfg.max_steps * per_step if cfg.max_steps > 0 else cfg.num_train_epochs * n_train
    return reads > n_train


def checkpointing_arg(config_cls, on: bool) -> dict[str, bool]:
    """Activation checkpointing under the name the installed transformers knows: 5.x renamed
    gradient_checkpointing to activation_checkpointing and warns on the old name even when it is False."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": on}


def _pair_datasets(mix: Mixture, tokenizer, cfg: TrainConfig, args):
    """The TRL rows, written once to `output_dir/pairs/` and read back by every process.

    On disk, the datasets (and the tokenized and reference log-prob caches TRL derives from them)
    live where all processes see them; in memory each process would cache to its own temp folder.
    The folder also records exactly which pairs were trained and held out.
    """
    import shutil

    import datasets

    parts = {"train": mix.train, "eval": mix.eval}
    folder = Path(cfg.output_dir) / "pairs"
    with args.main_process_first(local=False, desc="writing the preference pairs"):
        if args.process_index == 0:
            shutil.rmtree(folder, ignore_errors=True)
            for name, pairs in parts.items():
                if pairs:
                    rows = [pair_row(tokenizer, p, cfg.template) for p in pairs]
                    datasets.Dataset.from_list(rows).save_to_disk(str(folder / name))
        loaded = {name: datasets.load_from_disk(str(folder / name)) if pairs else None
                  for name, pairs in parts.items()}
    return loaded["train"], loaded["eval"]


def _local_or_id(spec: str) -> str:
    p = Path(spec).expanduser()
    return str(p.resolve()) if p.exists() else spec


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


def train(cfg: TrainConfig, echo: Echo | None = None) -> TrainResult:
    """Train a PersRM as `cfg` says; returns where it went and its held-out metrics."""
    check_reporting(cfg.report_to)
    try:
        if cfg.kind == "reward-model":
            from pad.train.reward import train_reward_model

            return train_reward_model(cfg, echo or (lambda _msg: None))
        return _train(cfg, echo or (lambda _msg: None))
    except BaseException:
        end_processes(wait=False)  # a failed run must not hang or abort at exit either
        raise


def _train(cfg: TrainConfig, echo: Echo) -> TrainResult:
    if not cfg.sources:
        raise PadError("no data: the recipe lists no sources")
    resume_from = _check_output_dir(cfg)
    t0 = time.perf_counter()

    tokenizer = load_tokenizer(cfg.base_model)
    mix = build_training_mixture(cfg, tokenizer)

    import datasets
    import torch
    from peft import LoraConfig

    datasets.disable_progress_bars()  # per-map bars drown the training progress

    device = "cuda" if torch.cuda.is_available() else resolve_device("auto")
    dtype = resolve_dtype(cfg.dtype, device)
    args = _dpo_config(cfg, dtype, bool(mix.eval), len(mix.train))  # before the model: ZeRO-3 must see it at load time
    main = args.process_index == 0
    if main:
        echo(_mixture_report(mix))
    if args.deepspeed_plugin is not None and args.deepspeed_plugin.zero_stage == 3:
        if cfg.init_adapter:
            raise PadError("init_adapter is not supported with ZeRO-3; run the second stage without it")
        model = _local_or_id(cfg.base_model)  # TRL loads it inside ZeRO-3's partitioned init
        args.model_init_kwargs = {"dtype": str(dtype).removeprefix("torch.")}
    else:
        model = load_causal_lm(cfg.base_model, device="cpu", dtype=dtype)
    lora = None  # a second stage trains the adapter it starts from
    if cfg.init_adapter:
        from peft import PeftModel

        if not (Path(cfg.init_adapter) / "adapter_config.json").is_file():
            raise PadError(f"init_adapter {cfg.init_adapter!r} is not a LoRA adapter folder (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True)
    else:
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
    train_ds, eval_ds = _pair_datasets(mix, tokenizer, cfg, args)
    try:
        trainer = _trainer_class()(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                   processing_class=tokenizer, peft_config=lora)
    except ValueError as e:  # e.g. LoRA target modules the model does not have
        raise PadError(f"cannot set up training on {cfg.base_model}: {str(e).splitlines()[0]}") from None
    use_pad_progress(trainer, echo)
    if main:
        trainable, total = trainer.model.get_nb_trainable_parameters()
        echo(f"training {cfg.base_model} on {device} ({str(dtype).removeprefix('torch.')}), "
             f"{args.world_size} process(es): LoRA r={cfg.lora_r} on {cfg.lora_target_modules}, "
             f"{trainable:,} of {total:,} parameters trainable")
        if cfg.precompute_ref_log_probs and not cfg.eval_only:
            echo("reference log-probs: " + ("precomputed once (the run reads each pair more than once)"
                                            if args.precompute_ref_log_probs else
                                            "computed in each step (the run reads each pair at most once, so "
                                            "precomputing would save nothing)"))
    if not cfg.eval_only:
        trainer.train(resume_from_checkpoint=resume_from or None)

    summary: dict[str, Any] = {}
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(unwrapped, "peft_config", {}):
        # A second stage trained against a frozen copy of its starting adapter ("ref"); it is no part of the
        # PersRM (whose held-out reward was measured against the base model all along): not saved with it.
        unwrapped.delete_adapter("ref")
    if eval_ds is not None:
        if getattr(trainer, "last_eval_step", None) != trainer.state.global_step:
            trainer.evaluate()
        summary = trainer.last_eval
    trainer.save_model(cfg.output_dir)
    seconds = time.perf_counter() - t0
    if main:
        tokenizer.save_pretrained(cfg.output_dir)
        record_base_in_adapter(Path(cfg.output_dir), _local_or_id(cfg.base_model))
        write_pad_config(cfg, mix, summary, trainer.state.global_step, seconds, args.world_size)
    trainer.accelerator.wait_for_everyone()
    result = TrainResult(Path(cfg.output_dir), summary, trainer.state.global_step, seconds,
                         trainer.accelerator.unwrap_model(trainer.model))
    del trainer
    end_processes()
    return result


def record_base_in_adapter(folder: Path, base: str) -> None:
    """PEFT records the folder the base was loaded from; offline that is pad's cache (the converted
    GGUF), which a user's machine lacks. Record the base as the recipe named it."""
    path = folder / "adapter_config.json"
    if path.is_file():
        data = json.loads(path.read_text())
        data["base_model_name_or_path"] = base
        path.write_text(json.dumps(data, indent=2) + "\n")


def end_processes(wait: bool = True) -> None:
    """Close the process group, if any: gloo runs can abort at exit when it is left open."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def build_training_mixture(cfg: TrainConfig, tokenizer) -> Mixture:
    """The recipe's pairs, each prompt fitted into the token budget before the held-out split."""
    import os

    mix = build_mixture(cfg.sources, cfg.eval_size, cfg.seed, progress=int(os.environ.get("RANK", "0")) == 0,
                        fit=lambda pair: fit_pair(tokenizer, pair, cfg.template, cfg.prompt_budget))
    if not mix.train:
        raise PadError(f"no training pairs left after fitting prompts into {cfg.prompt_budget} tokens")
    return mix


def _mixture_report(mix: Mixture) -> str:
    lines = [f"data: {len(mix.train)} training pairs, {len(mix.eval)} held out "
             f"(by prompt), principles {', '.join(mix.principles)}"]
    for source, per in mix.counts.items():
        for principle, c in per.items():
            lines.append(f"  {source} / {principle}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    lines += [f"warning: {note}" for note in mix.notes]
    return "\n".join(lines)


def write_pad_config(cfg: TrainConfig, mix: Mixture, summary: dict, steps: int, seconds: float,
                     world_size: int) -> Path:
    import pad

    settings = cfg.to_dict()
    settings.pop("sources")
    record = {
        "kind": "persrm-lora",
        "base_model": _local_or_id(cfg.base_model),
        "template": cfg.template,
        "principles": mix.principles,
        "beta": cfg.beta,  # of the implicit reward beta * (log pi - log pi_ref)
        "decode": ({} if cfg.decode_base_sees_principles is None
                   else {"base_sees_principles": cfg.decode_base_sees_principles}),
        "data": {
            "sources": [asdict(s) for s in cfg.sources],
            "counts": mix.counts,
            "train_pairs": len(mix.train),
            "eval_pairs": len(mix.eval),
        },
        "train": {**settings, "steps": steps, "seconds": round(seconds, 1), "processes": world_size},
        "eval": summary,
        "pad_version": getattr(pad, "__version__", None),
    }
    path = Path(cfg.output_dir) / PAD_CONFIG
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path
