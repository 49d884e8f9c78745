"""Training a sequence reward model (`kind: reward-model`): a Bradley-Terry classifier, TRL's `RewardTrainer`
with a PEFT LoRA, on the same pairs and recipes as the PersRM.

The RM reads the reply to the prompt in the base's chat format, the principle prompt around the prompt when
the pairs hold more than one principle (a principle-conditioned RM), the plain prompt when they hold one (the
paper's single-objective RMs, what ARGS uses). `output_dir` gets a standalone classifier (the LoRA merged in,
so `pad eval --scorer DIR` and `pad decode --guide args --reward-model DIR` load it like any other), the
tokenizer, the adapter itself in `adapter/`, and `pad_config.json` with held-out pairwise accuracy per
principle and source.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pad.errors import PadError
from pad.models import load_causal_lm, load_tokenizer
from pad.principles import chat_text, to_messages
from pad.train.common import (
    Echo,
    TrainResult,
    build_training_mixture,
    check_output_dir,
    checkpointing_arg,
    device_and_dtype,
    mixture_report,
    use_pad_progress,
    write_record,
)
from pad.train.config import TrainConfig
from pad.train.pairs import Pair


def reward_text(tokenizer, pair_prompt, principle: str | None, template: str) -> str:
    """What the RM reads before the reply: the prompt in the chat format, with the principle prompt or not."""
    return chat_text(tokenizer, to_messages(pair_prompt, principle, template))


def _rows(pairs: list[Pair], tokenizer, template: str, reads_principles: bool) -> list[dict[str, str]]:
    eos = tokenizer.eos_token or ""
    return [{"prompt": reward_text(tokenizer, p.prompt, p.principle if reads_principles else None, template),
             "chosen": p.chosen + eos, "rejected": p.rejected + eos} for p in pairs]


def classifier_from(base: str, device: str, dtype):
    """A one-logit sequence classifier on `base`'s weights (its LM head dropped, a fresh score head)."""
    from transformers import AutoModelForSequenceClassification

    lm = load_causal_lm(base, device="cpu", dtype=dtype)
    cfg = lm.config
    cfg.num_labels = 1
    cfg.id2label, cfg.label2id = {0: "reward"}, {"reward": 0}
    if cfg.pad_token_id is None:
        cfg.pad_token_id = cfg.eos_token_id if isinstance(cfg.eos_token_id, int) else 0
    model = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype)
    missing, _ = model.load_state_dict(lm.state_dict(), strict=False)
    if any(not k.startswith("score") for k in missing):
        raise PadError(f"{base}: the classifier's backbone does not take the LM's weights ({missing[0]})")
    return model.to(device)


def pairwise_accuracy(model, tokenizer, pairs: list[Pair], rows: list[dict], batch_size: int = 16,
                      max_length: int | None = None, progress: bool = False) -> dict:
    """Held-out accuracy (r(chosen) > r(rejected)) and mean margin, overall, per principle and per source.

    Pairs with a side longer than `max_length` tokens are left out, as training leaves them out
    (`too_long` counts them)."""
    import torch
    from tqdm.auto import tqdm

    encoded = [[tokenizer(r["prompt"] + r[side], add_special_tokens=False)["input_ids"] for side in ("chosen", "rejected")]
               for r in rows]
    keep = [j for j, (c, rj) in enumerate(encoded) if max_length is None or max(len(c), len(rj)) <= max_length]
    too_long = len(rows) - len(keep)
    pairs = [pairs[j] for j in keep]
    seqs = [ids for j in keep for ids in encoded[j]]
    if not seqs:
        return {"accuracy": None, "margin": None, "n": 0, "too_long": too_long, "principles": {}, "sources": {}}
    scores = []
    model.eval()
    pad = model.config.pad_token_id
    with torch.inference_mode():
        for i in tqdm(range(0, len(seqs), batch_size), desc="held-out pairs", unit="batch", disable=not progress,
                      leave=False):
            enc = seqs[i:i + batch_size]
            width = max(len(e) for e in enc)
            ids = torch.tensor([e + [pad] * (width - len(e)) for e in enc])
            mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in enc])
            out = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device))
            scores += out.logits[:, 0].float().cpu().tolist()
    groups: dict[str, list[float]] = defaultdict(list)
    by_principle: dict[str, list[float]] = defaultdict(list)
    margins = [scores[2 * j] - scores[2 * j + 1] for j in range(len(pairs))]
    for p, m in zip(pairs, margins):
        by_principle[p.principle].append(m)
        groups[f"{p.source} / {p.principle}"].append(m)

    def stats(ms: list[float]) -> dict[str, Any]:
        return {"accuracy": sum(m > 0 for m in ms) / len(ms), "margin": sum(ms) / len(ms), "n": len(ms)}

    return {**stats(margins), "too_long": too_long,
            "principles": {k: stats(v) for k, v in sorted(by_principle.items())},
            "sources": {k: stats(v) for k, v in sorted(groups.items())}}


def _reward_config(cfg: TrainConfig, dtype):
    import torch
    from trl import RewardConfig

    try:
        return RewardConfig(
            output_dir=cfg.output_dir, max_length=cfg.max_length, learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm, num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.per_device_train_batch_size,
            per_device_eval_batch_size=cfg.per_device_eval_batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            **checkpointing_arg(RewardConfig, cfg.gradient_checkpointing),
            bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, seed=cfg.seed, data_seed=cfg.seed,
            eval_strategy="no", save_strategy="steps" if cfg.save_steps > 0 else "no",
            save_steps=cfg.save_steps or 500, save_total_limit=cfg.save_total_limit, logging_steps=cfg.logging_steps,
            report_to=cfg.report_to, use_cpu=not torch.cuda.is_available(),
            dataloader_pin_memory=torch.cuda.is_available(), ddp_find_unused_parameters=False, **cfg.dpo_args)
    except (TypeError, ValueError) as e:
        raise PadError(f"training settings rejected by trl's RewardConfig: {str(e).splitlines()[0]}") from None


def train_reward_model(cfg: TrainConfig, echo: Echo) -> TrainResult:
    """Train a sequence reward model on the recipe's pairs; returns where it went and its held-out accuracy."""
    resume_from = check_output_dir(cfg)
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(cfg.base_model)
    mix = build_training_mixture(cfg, tokenizer)  # long conversations lose early turns
    reads = len(mix.principles) > 1
    _, dtype = device_and_dtype(cfg)
    args = _reward_config(cfg, dtype)
    main = args.process_index == 0
    if main:
        echo(mixture_report(mix))
    trainer = _reward_trainer(cfg, args, dtype, _rows(mix.train, tokenizer, cfg.template, reads), tokenizer)
    use_pad_progress(trainer, echo)
    if main:
        trainable, total = trainer.model.get_nb_trainable_parameters()
        echo(f"training a reward model on {cfg.base_model} ({'principle prompts' if reads else 'plain prompts'}), "
             f"{args.world_size} process(es): LoRA r={cfg.lora_r}, {trainable:,} of {total:,} parameters trainable")
    trainer.train(resume_from_checkpoint=resume_from or None)
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    summary = pairwise_accuracy(peft_model, tokenizer, mix.eval, _rows(mix.eval, tokenizer, cfg.template, reads),
                                cfg.per_device_eval_batch_size, cfg.max_length, progress=main) if mix.eval else {}
    if main:
        _save(peft_model, tokenizer, Path(cfg.output_dir))
        write_record(cfg, mix, summary, {"steps": trainer.state.global_step,
                                         "seconds": round(time.perf_counter() - t0, 1)},
                     "reward-model", reads_principles=reads)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(Path(cfg.output_dir), summary, trainer.state.global_step, time.perf_counter() - t0, peft_model)


def _reward_trainer(cfg: TrainConfig, args, dtype, rows: list[dict[str, str]], tokenizer):
    """TRL's RewardTrainer on a one-logit classifier of the base, with a fresh LoRA."""
    import datasets
    from peft import LoraConfig
    from trl import RewardTrainer

    model = classifier_from(cfg.base_model, "cpu", dtype)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="SEQ_CLS")
    try:
        return RewardTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=tokenizer, peft_config=lora)
    except ValueError as e:
        raise PadError(f"cannot set up reward-model training on {cfg.base_model}: {str(e).splitlines()[0]}") from None


def _save(peft_model, tokenizer, out: Path) -> None:
    """The classifier with the LoRA merged in (what pad eval and ARGS load), the adapter in adapter/, the tokenizer."""
    peft_model.save_pretrained(out / "adapter")
    merged = copy.deepcopy(peft_model).merge_and_unload()  # the trained PeftModel stays as it is
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
