"""Training the PersRM: DPO (TRL `DPOTrainer`) with a PEFT LoRA on principle-conditioned pairs.

`train_persrm(cfg)` builds the data mixture, trains, evaluates held-out preference accuracy and reward margin
per principle, and writes to `cfg.output_dir` the adapter, the tokenizer and a `pad_config.json`
(base model, principle template, principles, data mixture and counts, settings, final metrics), so that
`pad decode --rm DIR` and `pad merge DIR` need nothing else. It runs unchanged under `accelerate launch`.
What it shares with the reward-model trainer lives in `pad.train.common`; `pad.train.run.train` picks one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pad.errors import PadError
from pad.models import load_causal_lm, load_tokenizer
from pad.principles import chat_text
from pad.train.common import (
    Echo,
    TrainResult,
    build_training_mixture,
    check_output_dir,
    checkpointing_arg,
    device_and_dtype,
    end_processes,
    local_or_id,
    mixture_report,
    record_base_in_adapter,
    use_pad_progress,
    write_record,
)
from pad.train.config import TrainConfig
from pad.train.contrastive import kind_metrics
from pad.train.pairs import Mixture, Pair, to_trl_row

# -- data ----------------------------------------------------------------------------------------


def pair_row(tokenizer, pair: Pair, template: str) -> dict[str, Any]:
    """TRL's conversational row; plain text in the HH form for a tokenizer without a chat template."""
    row = to_trl_row(pair, template)
    if getattr(tokenizer, "chat_template", None):
        return row
    return {"prompt": chat_text(tokenizer, row["prompt"]), "chosen": " " + pair.chosen,
            "rejected": " " + pair.rejected, "principle": pair.principle, "source": pair.source}


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


# -- the run -------------------------------------------------------------------------------------


def train_persrm(cfg: TrainConfig, echo: Echo) -> TrainResult:
    """Train (or with eval_only, only measure) a PersRM as `cfg` says; returns where it went and its metrics."""
    resume_from = check_output_dir(cfg)
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(cfg.base_model)
    mix = build_training_mixture(cfg, tokenizer)
    device, dtype = device_and_dtype(cfg)
    args = _dpo_config(cfg, dtype, bool(mix.eval), len(mix.train))  # before the model: ZeRO-3 must see it at load time
    main = args.process_index == 0
    if main:
        echo(mixture_report(mix))
    model, lora = _policy(cfg, args, dtype)
    train_ds, eval_ds = _pair_datasets(mix, tokenizer, cfg, args)
    try:
        trainer = _trainer_class()(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                   processing_class=tokenizer, peft_config=lora)
    except ValueError as e:  # e.g. LoRA target modules the model does not have
        raise PadError(f"cannot set up training on {cfg.base_model}: {str(e).splitlines()[0]}") from None
    use_pad_progress(trainer, echo)
    if main:
        trainer.add_callback(_checkpoint_record(cfg, mix))
        for line in _setup_lines(cfg, trainer, args, device, dtype):
            echo(line)
    if not cfg.eval_only:
        trainer.train(resume_from_checkpoint=resume_from or None)
    summary = _final_metrics(trainer, eval_ds)
    trainer.save_model(cfg.output_dir)
    seconds = time.perf_counter() - t0
    if main:
        tokenizer.save_pretrained(cfg.output_dir)
        record_base_in_adapter(Path(cfg.output_dir), local_or_id(cfg.base_model))
        write_pad_config(cfg, mix, summary, trainer.state.global_step, seconds, args.world_size)
    trainer.accelerator.wait_for_everyone()
    result = TrainResult(Path(cfg.output_dir), summary, trainer.state.global_step, seconds,
                         trainer.accelerator.unwrap_model(trainer.model))
    del trainer
    end_processes()
    return result


def _policy(cfg: TrainConfig, args, dtype):
    """The model DPO trains and the LoRA to put on it: (model or its id under ZeRO-3, LoraConfig or None).

    A second stage (init_adapter) trains the adapter it starts from, so it gets no fresh LoRA.
    """
    from peft import LoraConfig

    if args.deepspeed_plugin is not None and args.deepspeed_plugin.zero_stage == 3:
        if cfg.init_adapter:
            raise PadError("init_adapter is not supported with ZeRO-3; run the second stage without it")
        args.model_init_kwargs = {"dtype": str(dtype).removeprefix("torch.")}
        return local_or_id(cfg.base_model), LoraConfig(**_lora_settings(cfg))  # TRL loads it partitioned
    model = load_causal_lm(cfg.base_model, device="cpu", dtype=dtype)
    if not cfg.init_adapter:
        return model, LoraConfig(**_lora_settings(cfg))
    from peft import PeftModel

    if not (Path(cfg.init_adapter) / "adapter_config.json").is_file():
        raise PadError(f"init_adapter {cfg.init_adapter!r} is not a LoRA adapter folder (no adapter_config.json)")
    return PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True), None


def _lora_settings(cfg: TrainConfig) -> dict[str, Any]:
    return {"r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
            "target_modules": cfg.lora_target_modules, "task_type": "CAUSAL_LM"}


def _setup_lines(cfg: TrainConfig, trainer, args, device: str, dtype) -> list[str]:
    """What is trained where, and whether the reference log-probs are precomputed and why."""
    trainable, total = trainer.model.get_nb_trainable_parameters()
    lines = [f"training {cfg.base_model} on {device} ({str(dtype).removeprefix('torch.')}), "
             f"{args.world_size} process(es): LoRA r={cfg.lora_r} on {cfg.lora_target_modules}, "
             f"{trainable:,} of {total:,} parameters trainable"]
    if cfg.precompute_ref_log_probs and not cfg.eval_only:
        lines.append("reference log-probs: " + (
            "precomputed once (the run reads each pair more than once)" if args.precompute_ref_log_probs else
            "computed in each step (the run reads each pair at most once, so precomputing would save nothing)"))
    return lines


def _final_metrics(trainer, eval_ds) -> dict[str, Any]:
    """The held-out metrics of the trained PersRM (the last evaluation when it was at this step).

    A second stage trained against a frozen copy of its starting adapter ("ref"); it is no part of the
    PersRM (whose held-out reward was measured against the base model all along): dropped before saving.
    """
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(unwrapped, "peft_config", {}):
        unwrapped.delete_adapter("ref")
    if eval_ds is None:
        return {}
    if getattr(trainer, "last_eval_step", None) != trainer.state.global_step:
        trainer.evaluate()
    return {**trainer.last_eval, "kinds": kind_metrics(trainer.last_eval)}  # per pair kind (pad.train.contrastive)


def write_pad_config(cfg: TrainConfig, mix: Mixture, summary: dict, steps: int, seconds: float | None,
                     world_size: int, folder: str | Path | None = None) -> Path:
    decode = {} if cfg.decode_base_sees_principles is None else {"base_sees_principles": cfg.decode_base_sees_principles}
    run = {"steps": steps, "seconds": None if seconds is None else round(seconds, 1), "processes": world_size}
    return write_record(cfg, mix, summary, run, "persrm-lora", folder=folder,
                        beta=cfg.beta,  # of the implicit reward beta * (log pi - log pi_ref)
                        decode=decode)


def _checkpoint_record(cfg: TrainConfig, mix: Mixture):
    """A callback that gives each checkpoint-N its pad_config.json (no held-out metrics: none are measured there)
    and the base as the recipe named it, so that `pad decode --rm`, `pad train --eval_only --init_adapter` and
    `pad eval` take a checkpoint as they take the finished adapter."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class CheckpointRecord(TrainerCallback):  # added on the main process only
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if folder.is_dir():
                record_base_in_adapter(folder, local_or_id(cfg.base_model))
                write_pad_config(cfg, mix, {}, state.global_step, None, args.world_size, folder=folder)

    return CheckpointRecord()
