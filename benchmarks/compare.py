"""The paper's comparison on one engine: vanilla, prompting, ARGS and PAD, under one set of settings.

Every method answers the same prompts with the same base model (greedy, k = 10, the same token cap and
batch), through `pad decode`'s library:
- vanilla: the base alone;
- prompted: the base reads the principle prompt (`--baseline prompted`);
- ARGS w: `--guide args --reward-model RM -w w`, the sequence RM guiding over the top-k;
- PAD w: the PersRM guiding with the principle at weight w.
Per method: the RM's score of the answers (mean and 95% interval, win rate against vanilla, through
`pad eval`), the answers' length in tokens, the base model's perplexity of them given the plain prompt,
and decoding tokens/s. ARGS optimizes the very RM that scores here, so its score column flatters it; the
paper's harmless GPT-2 RM guided ARGS and scored it too. A plot of score against perplexity.

    pad train --config recipes/smollm2-135m/train/config_rm_hh_harmless_cpu.yaml    # the harmless RM, once
    python benchmarks/compare.py --json benchmarks/results/compare.json               # SmolLM2 + shipped PersRM

Run files go to --out and resume (rerun to continue).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DEFAULT_PROMPTS, base_perplexity  # noqa: E402


def methods(principle: str, rm: str, pad_weights: list[float], args_weights: list[float]) -> list[tuple[str, dict]]:
    out = [("vanilla", {"principles": []}),
           ("prompted", {"principles": [principle], "baseline": "prompted"})]
    out += [(f"ARGS w={w:g}", {"principles": [], "guide": "args", "reward_model": rm, "weight": w})
            for w in args_weights]
    out += [(f"PAD w={w:g}", {"principles": [f"{principle}={w}"]}) for w in pad_weights]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", default=None, help="base model (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--rm", default=None, help="PersRM (default: the shipped one)")
    ap.add_argument("--reward-model", default="runs/smollm2-135m-rm-hh-harmless-cpu",
                    help="the sequence RM: ARGS's guide and the score column")
    ap.add_argument("--principle", default="harmless")
    ap.add_argument("--pad-weights", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--args-weights", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--prompts", default=str(DEFAULT_PROMPTS))
    ap.add_argument("--limit", type=int)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--json", help="also write the table to this file")
    args = ap.parse_args()

    from pad.decode.config import DecodeConfig
    from pad.decode.run import Models, decode_run, gather_prompts
    from pad.evaluate import EvalConfig, run_eval
    from pad.models import DEFAULT_BASE

    if not Path(args.prompts).is_file():
        sys.exit(f"{args.prompts} is absent (only development machines have ../shared)")
    rows = gather_prompts(args.prompts, limit=args.limit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base_cfg = DecodeConfig(llm=args.llm or DEFAULT_BASE, rm=args.rm, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size)
    models = Models(base_cfg, need_rm=True)
    table, files = [], []
    for name, change in methods(args.principle, args.reward_model, args.pad_weights, args.args_weights):
        cfg = replace(base_cfg, **change)
        path = out / (name.replace(" ", "_").replace("=", "") + ".jsonl")
        summary = decode_run(cfg, rows, models, path, run=name, resume=True, progress=True)
        records = [json.loads(line) for line in path.read_text().splitlines()]
        files.append(path)
        tokens = sum(r["tokens"] for r in records)
        row = {"method": name, "length": round(tokens / len(records), 1),
               "perplexity": round(base_perplexity(models.base, models.tok, records), 2)}
        if summary.written:  # decoded in this call: its speed
            row["tokens_per_s"] = round(summary.tokens / summary.seconds, 1) if summary.seconds else None
        table.append(row)
    report = run_eval(EvalConfig(runs=[str(f) for f in files], scorers=[args.reward_model],
                                 baseline="vanilla", out=str(out / "report"), plots=False, progress=False))
    for row, res in zip(table, report.results):
        row.update(score=round(res["mean"], 3), ci=[round(res["ci_low"], 3), round(res["ci_high"], 3)],
                   win=None if res["win"] is None else round(res["win"], 2))
    print(f"{len(rows)} prompts; principle {args.principle}; score: {args.reward_model}; greedy, k = 10, "
          f"up to {args.max_new_tokens} tokens, batch {args.batch_size}")
    print("\n| method | RM score (95% CI) | win vs vanilla | length (tokens) | base perplexity | tokens/s |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for r in table:
        win = "-" if r["win"] is None else f"{r['win']:.0%}"
        print(f"| {r['method']} | {r['score']:.3f} ({r['ci'][0]:.3f} to {r['ci'][1]:.3f}) | {win} | {r['length']} | "
              f"{r['perplexity']} | {r.get('tokens_per_s', '-')} |")
    best = {
        "RM score": max(table, key=lambda r: r["score"])["method"],
        "win vs vanilla": max((r for r in table if r["win"] is not None), key=lambda r: r["win"])["method"],
        "shortest": min(table, key=lambda r: r["length"])["method"],
        "lowest perplexity": min(table, key=lambda r: r["perplexity"])["method"],
        "fastest": max((r for r in table if r.get("tokens_per_s")), key=lambda r: r["tokens_per_s"],
                       default={"method": "-"})["method"],
    }
    print("\nwinners: " + "; ".join(f"{k}: {v}" for k, v in best.items()))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in table:
        ax.errorbar(r["perplexity"], r["score"], yerr=[[r["score"] - r["ci"][0]], [r["ci"][1] - r["score"]]],
                    fmt="o", capsize=3)
        ax.annotate(r["method"], (r["perplexity"], r["score"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("base model perplexity of the answers (lower: more fluent)")
    ax.set_ylabel(f"{Path(args.reward_model).name} score")
    ax.set_title(f"{args.principle}: score against fluency, {len(rows)} prompts")
    fig.tight_layout()
    fig.savefig(out / "compare.png", dpi=120)
    print(f"plot: {out / 'compare.png'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"prompts": len(rows), "principle": args.principle,
                                               "reward_model": args.reward_model, "rows": table, "winners": best},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
