"""Compare a training stage's checkpoints of the shipped PersRM on validation prompts, not on the benchmark's.

    python train/select_checkpoint.py --run runs/persrm-smollm2-135m            # stage 3, the last
    python train/select_checkpoint.py --run runs/persrm-smollm2-135m-stage2 --out runs/select-stage2

Each stage moves the PersRM step by step: how hard `concise` at w = 1 cuts answers, and how well the cut
answers read (the base model's own perplexity of them), change from checkpoint to checkpoint. This
diagnostic decodes `concise` at w = 1 with every saved checkpoint on the project's validation prompts
(train/data/validation_prompts.jsonl: none of them in the training prompts or in the P-Soups prompts
that benchmarks/quality.py reports on), measures length and base-model perplexity against vanilla
decoding (benchmarks/quality.py does the measuring), and names the most-trained checkpoint whose
perplexity stays within --max-ppl-ratio of vanilla. It goes from the last checkpoint back and stops at
the first that qualifies (--all measures every one). It prints a table and writes select.json (the
measured checkpoints' figures and the choice) to --out.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in run.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    return sorted(found)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/persrm-smollm2-135m", help="pad train output folder with checkpoint-N")
    ap.add_argument("--prompts", default=str(ROOT / "train" / "data" / "validation_prompts.jsonl"))
    ap.add_argument("--principle", default="concise")
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--max-ppl-ratio", type=float, default=1.5)
    ap.add_argument("--out", default="runs/select")
    ap.add_argument("--all", action="store_true", help="measure every checkpoint, not only down to the chosen one")
    args = ap.parse_args()

    run, out = Path(args.run), Path(args.out)
    found = checkpoints(run)
    if not found:
        sys.exit(f"error: no checkpoint-N folders in {run}")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for step, path in reversed(found):
        dest = out / path.name
        dest.mkdir(exist_ok=True)
        if (out / "vanilla.jsonl").exists() and not (dest / "vanilla.jsonl").exists():
            shutil.copy(out / "vanilla.jsonl", dest / "vanilla.jsonl")  # w = 0 does not depend on the PersRM
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--prompts", args.prompts,
                        "--principles", args.principle, "--weights", "0", f"{args.weight:g}", "--rm", str(path),
                        "--no-base-principles", "--out", str(dest)], check=True)
        if not (out / "vanilla.jsonl").exists():
            shutil.copy(dest / "vanilla.jsonl", out / "vanilla.jsonl")
        res = json.loads((dest / "quality.json").read_text())["runs"]
        r = next(x for x in res if x["w"] == args.weight)
        rows.append({"step": step, "checkpoint": str(path), "length_ratio": r["length_ratio"],
                     "ppl_ratio": r["ppl_ratio"], "tokens": r["tokens"], "eos_share": r["eos_share"]})
        if r["ppl_ratio"] <= args.max_ppl_ratio and not args.all:
            break
    rows.reverse()
    within = [r for r in rows if r["ppl_ratio"] <= args.max_ppl_ratio]
    chosen = within[-1] if within else None
    print(f"\n{args.principle} at w = {args.weight:g} on {Path(args.prompts).name}, against vanilla decoding:\n")
    print("| checkpoint | tokens | x vanilla length | x vanilla PPL | ended (eos) |")
    print("|---|---|---|---|---|")
    for r in rows:
        mark = " (chosen)" if r is chosen else ""
        print(f"| {r['step']}{mark} | {r['tokens']:.1f} | {r['length_ratio']:.2f} | {r['ppl_ratio']:.2f} | "
              f"{r['eos_share']:.0%} |")
    (out / "select.json").write_text(json.dumps({"principle": args.principle, "weight": args.weight,
                                                 "max_ppl_ratio": args.max_ppl_ratio, "prompts": args.prompts,
                                                 "checkpoints": rows, "chosen": chosen}, indent=1))
    if chosen is None:
        sys.exit(f"error: no checkpoint keeps perplexity within {args.max_ppl_ratio}x of vanilla")
    print(f"\nchosen: {chosen['checkpoint']}")


if __name__ == "__main__":
    main()
