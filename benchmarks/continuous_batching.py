"""Continuous batching against static batches, offline, on the same prompts and principles.

- static: the prompts in fixed batches of B (`PADDecoder.generate` per batch): a batch ends when its
  slowest row ends, while its finished rows' places stay empty;
- continuous: `PADDecoder.stream` (what `pad decode` runs): up to B rows decode together and a finished
  row's place goes to the next prompt at once.

Greedy, k = 10, each prompt guided by one of concise / harmless / humor at w = 1 in turn, rows ending at
their end-of-sequence token or the token cap. Both must give the same answers (counted in the table).

    python benchmarks/continuous_batching.py                      # tiny fixtures
    python benchmarks/continuous_batching.py --models smollm2 --json benchmarks/results/continuous_batching.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_speed import PROMPTS, model_specs  # noqa: E402

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings  # noqa: E402
from pad.principles import Principle  # noqa: E402

KOALA = Path(__file__).resolve().parents[2] / "shared" / "data" / "koala_eval_50.json"
TURNS = ["concise", "harmless", "humor"]


def prompts_for(which: str, limit: int | None) -> tuple[str, list]:
    if which == "smollm2" and KOALA.is_file():
        from pad.decode.io import load_prompts

        rows, kind = [r.prompt for r in load_prompts(KOALA)], "P-Soups (Koala)"
    else:
        rows, kind = [f"{p} {'Answer in detail. ' * (i % 4)}" for i, p in enumerate(PROMPTS * 3)], "built-in"
    rows = rows[:limit] if limit else rows
    return f"{len(rows)} {kind} prompts", rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--limit", type=int, help="only the first N prompts")
    ap.add_argument("--reps", type=int, default=1, help="rounds (static then continuous in each); medians")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from pad.decode.config import DecodeConfig
    from pad.decode.run import Models

    label, base_spec, rm_spec = model_specs(args.models)
    models = Models(DecodeConfig(llm=base_spec, rm=rm_spec, device=args.device), need_rm=True)
    dec = PADDecoder(models.base, models.tok, models.rm, models.rm_tok,
                     base_sees_principles=models.base_sees_principles)
    plabel, prompts = prompts_for(args.models, args.limit)
    reqs = [DecodeRequest(p, [Principle(TURNS[i % len(TURNS)], 1.0)], id=str(i)) for i, p in enumerate(prompts)]
    s = SamplingSettings(max_new_tokens=args.max_new_tokens)

    def static():
        out = []
        for i in range(0, len(reqs), args.batch):
            out += dec.generate(reqs[i:i + args.batch], s)
        return out

    def continuous():
        return [r for _, r in sorted(dec.stream(reqs, s, max_live=args.batch), key=lambda x: x[0])]

    times = {"static": [], "continuous": []}
    answers = {}
    for _ in range(args.reps):
        for name, fn in (("static", static), ("continuous", continuous)):
            t0 = time.perf_counter()
            answers[name] = fn()
            times[name].append(time.perf_counter() - t0)
    tokens = sum(len(r.token_ids) for r in answers["static"])
    same = sum(a.token_ids == b.token_ids for a, b in zip(answers["static"], answers["continuous"]))
    lengths = [len(r.token_ids) for r in answers["static"]]
    base_t = statistics.median(times["static"])
    rows = []
    for name in ("static", "continuous"):
        t = statistics.median(times[name])
        rows.append({"method": name, "seconds": round(t, 2), "tokens": tokens, "tokens_per_s": round(tokens / t, 1),
                     "speedup": round(base_t / t, 2)})
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    print(f"{label}; {plabel}; batch {args.batch}; up to {args.max_new_tokens} new tokens (median {statistics.median(lengths):.0f}, "
          f"min {min(lengths)}, max {max(lengths)}); backbone {dec.backbone}; {dev}; median of {args.reps}")
    print("\n| method | seconds | tokens | tokens/s | x static |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['method']} | {r['seconds']} | {r['tokens']} | {r['tokens_per_s']} | {r['speedup']}x |")
    print(f"\nsame tokens on both: {same} of {len(reqs)} answers")
    if args.json:
        Path(args.json).write_text(json.dumps({"models": label, "prompts": plabel, "batch": args.batch,
                                               "max_new_tokens": args.max_new_tokens, "device": dev,
                                               "backbone": dec.backbone, "reps": args.reps, "rows": rows,
                                               "same_answers": same, "n": len(reqs), "lengths": lengths},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
