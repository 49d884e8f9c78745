"""Training speed: `pad train` against TRL's `DPOTrainer` used directly, on the same model, pairs, LoRA, batch
and steps, in interleaved rounds; medians, and where pad's extra time goes.

Both runs load the base, build TRL's conversational rows from the same pairs (pad also fits the prompts into
its token budget, writes the pairs to `output_dir/pairs/` and records what it did), let TRL tokenize them,
train, and save the adapter. pad then measures held-out accuracy and margin per principle (at the end only:
`eval_steps: 0`); bare TRL evaluates nothing. Reference log-probs: pad precomputes them only when the run reads
a pair more than once (here it does not), bare TRL as it is told (`--precompute`, default off: the same).

The table splits each run into: setup (model, data, trainer; pad's own data preparation and TRL's precompute
shown apart), the training loop, the held-out evaluation, and the rest (saving). A third method,
`pad, periodic eval`, evaluates every `--eval-every` steps and prints what each periodic evaluation costs: the
first one computes the base's log-probs of the held-out pairs, the later ones reuse them.

    python benchmarks/train_speed.py                                  # tiny Llama (hidden 128, 4 layers), CPU
    python benchmarks/train_speed.py --rounds 3 --json benchmarks/results/train_speed.json
    python benchmarks/train_speed.py --model runs/smollm2-135m-instruct --pairs 64 --steps 4   # a real checkpoint

Times are the process's CPU seconds (one torch thread by default): on a shared machine wall time moved 10x
between rounds, CPU time far less. They are still indicative; rerun with more rounds before trusting them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ANIMALS = ["cat", "dog", "fox", "owl", "cow", "pig", "bee", "ant", "rat", "eel"]
FUNNY = "Why did the chicken cross the road? To get to the other side, of course, and then back again for more."
SAFE = "I cannot help with that, but here is a safer idea: read about it in a good book from the library."


def pair_file(folder: Path, n_pairs: int) -> Path:
    """Opposite pairs under two principles (the test suite's learnable task), n_pairs in all."""
    rng = random.Random(0)
    rows = []
    for i in range(n_pairs // 2):
        prompt = f"Tell me about the {rng.choice(ANIMALS)} number {i}, and what it likes to eat."
        rows.append({"prompt": prompt, "chosen": FUNNY, "rejected": SAFE, "principle": "humor"})
        rows.append({"prompt": prompt, "chosen": SAFE, "rejected": FUNNY, "principle": "harmless"})
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class Timer:
    """Seconds per phase of the current run, from wrappers put around the library calls below."""

    def __init__(self):
        self.phases: dict[str, float] = defaultdict(float)
        self.evaluations: list[float] = []

    def wrap(self, owner, name: str, phase: str):
        real = getattr(owner, name)
        timer = self

        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return real(*args, **kwargs)
            finally:
                seconds = time.process_time() - start
                timer.phases[phase] += seconds
                if phase == "held-out eval":
                    timer.evaluations.append(seconds)

        setattr(owner, name, timed)
        return real


@contextlib.contextmanager
def instrumented(timer: Timer):
    """Time TRL's training loop and precompute, pad's data preparation and held-out evaluation."""
    import trl

    import pad.train.trainer as pad_trainer

    make = pad_trainer._trainer_class
    saved = [(trl.DPOTrainer, "train", timer.wrap(trl.DPOTrainer, "train", "training loop")),
             (trl.DPOTrainer, "_precompute_ref_logps",
              timer.wrap(trl.DPOTrainer, "_precompute_ref_logps", "precompute")),
             (pad_trainer, "build_training_mixture",
              timer.wrap(pad_trainer, "build_training_mixture", "data preparation")),
             (pad_trainer, "_pair_datasets", timer.wrap(pad_trainer, "_pair_datasets", "data preparation"))]

    def timed_class():
        cls = make()
        timer.wrap(cls, "evaluate", "held-out eval")
        return cls

    pad_trainer._trainer_class = timed_class
    try:
        yield
    finally:
        pad_trainer._trainer_class = make
        for owner, name, real in saved:
            setattr(owner, name, real)


def settings(args, base: str, data: Path, out: Path, eval_steps: int) -> dict:
    return {"base_model": base, "output_dir": str(out), "sources": [{"kind": "jsonl", "path": str(data)}],
            "eval_size": args.eval_size, "max_length": 192, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
            "learning_rate": 1e-3, "warmup_ratio": 0.0, "max_steps": args.steps,
            "per_device_train_batch_size": args.batch, "per_device_eval_batch_size": 2 * args.batch,
            "eval_steps": eval_steps, "logging_steps": 1000, "save_steps": 0, "seed": 0,
            "precompute_ref_log_probs": args.precompute, "overwrite": True,
            "dpo_args": {"disable_tqdm": True}}  # no bars in the table's output, for both methods


def run_pad(args, base: str, data: Path, out: Path, eval_steps: int = 0) -> None:
    from pad.train.config import TrainConfig
    from pad.train.run import train

    train(TrainConfig(**settings(args, base, data, out, eval_steps)))


def run_trl(args, base: str, data: Path, out: Path) -> None:
    """TRL's DPOTrainer on pad's training pairs (the same split), with the same LoRA and DPO settings."""
    import datasets
    from peft import LoraConfig
    from trl import DPOTrainer

    from pad.models import load_causal_lm, load_tokenizer
    from pad.train.config import TrainConfig
    from pad.train.pairs import build_mixture, to_trl_row
    from pad.train.trainer import _dpo_config

    cfg = TrainConfig(**settings(args, base, data, out, 0))
    tokenizer = load_tokenizer(base)
    mix = build_mixture(cfg.sources, cfg.eval_size, cfg.seed)
    rows = [to_trl_row(p, cfg.template) for p in mix.train]
    dpo_args = _dpo_config(cfg, load_causal_lm(base).dtype, has_eval=False, n_train=len(rows))
    dpo_args.precompute_ref_log_probs = args.precompute  # as told, not pad's rule
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=load_causal_lm(base), args=dpo_args, train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora)
    trainer.train()
    trainer.save_model(str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a causal LM checkpoint folder (default: a tiny random Llama built here)")
    parser.add_argument("--pairs", type=int, default=96, help="preference pairs in all (before the held-out split)")
    parser.add_argument("--eval-size", type=float, default=16, help="held-out pairs")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=8, help="periodic evaluation of the third method")
    parser.add_argument("--precompute", action="store_true", help="ask both for precomputed reference log-probs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is the work done)")
    parser.add_argument("--json", type=Path, help="also save the table and settings here")
    args = parser.parse_args()

    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    import warnings

    warnings.filterwarnings("ignore")
    work = Path(tempfile.mkdtemp(prefix="train-speed-"))
    base = args.model
    if base is None:
        from pad.testing import build_tokenizer, save_tiny_model

        base = str(save_tiny_model(work / "tiny", "llama", seed=0, tokenizer=build_tokenizer(), hidden=128,
                                   layers=4))
    data = pair_file(work, args.pairs)
    methods = {
        "bare TRL": lambda out: run_trl(args, base, data, out),
        "pad, eval at end": lambda out: run_pad(args, base, data, out),
        "pad, periodic eval": lambda out: run_pad(args, base, data, out, args.eval_every),
    }
    times: dict[str, list[dict]] = defaultdict(list)
    evals: list[list[float]] = []
    run_pad(args, base, data, work / "warm-up")  # imports and first-use costs out of the rounds
    for r in range(args.rounds):
        for name, fn in methods.items():  # interleaved: each round runs every method once
            timer = Timer()
            wall, cpu = time.perf_counter(), time.process_time()
            with instrumented(timer):
                fn(work / f"{name.replace(' ', '_').replace(',', '')}-{r}")
            times[name].append({"wall": time.perf_counter() - wall, "total": time.process_time() - cpu,
                                **timer.phases})
            if name == "pad, periodic eval":
                evals.append(timer.evaluations)
            print(f"round {r + 1}/{args.rounds}: {name} {times[name][-1]['total']:.2f} CPU s, "
                  f"{times[name][-1]['wall']:.2f} s", file=sys.stderr)

    def median_round(name: str) -> dict:
        """The round whose total is the median: its phases add up, which medians per phase need not."""
        ranked = sorted(times[name], key=lambda t: t["total"])
        return ranked[(len(ranked) - 1) // 2]

    bare = median_round("bare TRL")["total"]
    rows = []
    for name in methods:
        t = median_round(name)
        ev = t.get("held-out eval", 0.0)
        periodic = ev if name == "pad, periodic eval" else 0.0  # inside the training loop
        rest = t["total"] - t.get("training loop", 0.0) - (ev - periodic) - t.get("data preparation", 0.0)
        rows.append({"method": name, "CPU seconds": t["total"], "x bare TRL": t["total"] / bare,
                     "data preparation": t.get("data preparation", 0.0), "precompute": t.get("precompute", 0.0),
                     "training loop": t.get("training loop", 0.0), "held-out eval": ev, "setup and saving": rest,
                     "wall seconds (median)": statistics.median(x["wall"] for x in times[name])})
    model_name = Path(args.model).name if args.model else "tiny Llama (hidden 128, 4 layers)"
    print(f"\n{model_name}; {args.pairs} pairs ({args.eval_size:g} held out), {args.steps} steps of {args.batch}, "
          f"LoRA r=8, {args.threads} thread(s); CPU seconds of this process, the median of {args.rounds} interleaved "
          "rounds (its phases); wall seconds for reference\n")
    cols = ["method", "CPU seconds", "x bare TRL", "data preparation", "precompute", "training loop", "held-out eval",
            "setup and saving", "wall seconds (median)"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(row[c] if c == "method" else f"{row[c]:.2f}" for c in cols) + " |")
    per_eval = [statistics.median(e[i] for e in evals) for i in range(min(map(len, evals)))] if evals else []
    if per_eval:
        print(f"\neach periodic held-out evaluation ({args.eval_size:g} pairs, every {args.eval_every} steps), CPU s: "
              + ", ".join(f"{s:.2f}" for s in per_eval)
              + " (the first computes the base's log-probs; the later ones reuse them)")
    if args.json:
        args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "periodic_evaluations": per_eval}, indent=2) + "\n")


if __name__ == "__main__":
    main()
