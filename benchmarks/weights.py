"""Choosing w: fixed weights against per-token KL budgets (method.md section 9), as Pareto fronts.

For each principle (concise, humor by default), the held-out prompts are answered (greedy, k = 10) by
- vanilla decoding (w = 0);
- PAD at fixed w in --weights (0.25, 0.5, 1, 1.5). These runs decode with an unbounded budget, so every row
  records its per-step KL(p_w || p_0); lambda is then 1 and the tokens are fixed weights' own
  (tests/decode/test_kl_budget.py: a budget above the fixed weights' KL equals fixed weights);
- PAD at w = --budget-weight (default: the largest fixed w) under KL budgets EPS. By default the budgets are
  the fixed-w runs' mean per-step KLs, so both families span the same range of divergence from the base.

Per run: the principle's own measure (concise: mean answer length in tokens, lower is better; humor: the
humor judge's mean score, higher is better) against the base model's perplexity of the answers given the
plain prompt (lower: more fluent), the budget runs' mean lambda, and each run's mean per-step KL. A point is
Pareto-optimal when no other point of its principle is at least as good on both measures and better on one.
Writes weights.md, weights.json and weights.png to --out and says whether the budget beats fixed weights.

    pad train --config recipes/smollm2-135m/train/config_rm_humor_judge_cpu.yaml    # the humor judge, once
    python benchmarks/weights.py                       # 50 P-Soups prompts, SmolLM2 + shipped PersRM (~1 h of CPU)
    python benchmarks/weights.py --limit 3 --max-new-tokens 16 --out /tmp/weights   # a quick check

Run files go to --out and resume (rerun to continue). --humor-judge none scores humor by the PersRM's own
implicit humor reward instead (labelled as such: it is the guide's own judgement, not an outside one).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DEFAULT_PROMPTS, base_perplexity  # noqa: E402

LOWER_IS_BETTER = {"concise": True, "humor": False}


def pareto(points: list[tuple[float, float]], lower_first: bool) -> list[bool]:
    """Which (measure, perplexity) points no other dominates; perplexity is always lower-is-better."""
    sign = 1 if lower_first else -1

    def dominates(a, b):
        at_least = sign * a[0] <= sign * b[0] and a[1] <= b[1]
        return at_least and (sign * a[0] < sign * b[0] or a[1] < b[1])

    return [not any(dominates(q, p) for q in points if q is not p) for p in points]


def verdict(rows: list[dict], lower_first: bool) -> str:
    """One sentence: which family's points dominate the other's, and which make up the front."""
    sign = 1 if lower_first else -1
    fixed = [r for r in rows if r["family"] == "fixed"]
    budget = [r for r in rows if r["family"] == "budget"]

    def dom(a, b):
        return (sign * a["measure"] <= sign * b["measure"] and a["ppl"] <= b["ppl"]
                and (sign * a["measure"] < sign * b["measure"] or a["ppl"] < b["ppl"]))

    fixed_beaten = sum(any(dom(b, f) for b in budget) for f in fixed)
    budget_beaten = sum(any(dom(f, b) for f in fixed) for b in budget)
    front = {fam: sum(r["pareto"] for r in rows if r["family"] == fam) for fam in ("fixed", "budget")}
    if fixed_beaten > budget_beaten and front["budget"] >= front["fixed"]:
        word = "the budget beats fixed weights"
    elif budget_beaten > fixed_beaten and front["fixed"] >= front["budget"]:
        word = "fixed weights beat the budget"
    else:
        word = "neither family beats the other"
    return (f"{word}: budget points dominate {fixed_beaten} of {len(fixed)} fixed points, fixed points dominate "
            f"{budget_beaten} of {len(budget)} budget points; the front holds {front['budget']} budget and "
            f"{front['fixed']} fixed points")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", default=None, help="base model (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--rm", default=None, help="PersRM (default: the shipped one)")
    ap.add_argument("--principles", nargs="+", default=["concise", "humor"], choices=sorted(LOWER_IS_BETTER))
    ap.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 1.0, 1.5])
    ap.add_argument("--budgets", type=float, nargs="+", default=None,
                    help="KL budgets in nats per token (default: the fixed-w runs' mean per-step KLs)")
    ap.add_argument("--budget-weight", type=float, default=None, help="w under the budgets (default: the largest --weights)")
    ap.add_argument("--humor-judge", default="runs/smollm2-135m-rm-humor-judge-cpu",
                    help="humor's measure: a reward model (pad eval scorer); 'none': the PersRM's implicit humor reward")
    ap.add_argument("--prompts", default=str(DEFAULT_PROMPTS))
    ap.add_argument("--limit", type=int)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default="runs/weights")
    args = ap.parse_args()

    from pad.cli import quiet_libraries
    from pad.decode.config import DecodeConfig
    from pad.decode.io import read_run
    from pad.decode.run import Models, decode_run, default_persrm, gather_prompts
    from pad.models import DEFAULT_BASE

    if not Path(args.prompts).is_file():
        sys.exit(f"{args.prompts} is absent (only development machines have ../shared)")
    judge = None if args.humor_judge == "none" or "humor" not in args.principles else args.humor_judge
    if judge is not None and not Path(judge).exists():
        sys.exit(f"--humor-judge {judge} is absent: train it first (see this script's --help), or pass "
                 "--humor-judge none to score humor by the PersRM's own implicit reward")
    quiet_libraries()
    rows = gather_prompts(args.prompts, limit=args.limit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    llm = args.llm or DEFAULT_BASE
    rm = args.rm or default_persrm(llm)
    base_cfg = DecodeConfig(llm=llm, rm=rm, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    models = Models(base_cfg, need_rm=True)
    top_w = args.budget_weight if args.budget_weight is not None else max(args.weights)

    def run(name: str, principles: list[str], kl_budget: float | None) -> list[dict]:
        path = out / f"{name}.jsonl"
        if not (path.exists() and len(read_run(path)) >= len(rows)):
            cfg = replace(base_cfg, principles=principles, kl_budget=kl_budget)
            decode_run(cfg, rows, models, path, run=name, resume=path.exists(), progress=True)
        return read_run(path)

    records = {"vanilla": run("vanilla", [], None)}
    plan: list[dict] = []
    for p in args.principles:
        plan.append({"principle": p, "family": "vanilla", "run": "vanilla", "w": 0.0, "budget": None})
        for w in args.weights:
            name = f"{p}_w{w:g}"
            records[name] = run(name, [f"{p}={w}"], math.inf)  # unbounded: fixed weights, KL recorded
            plan.append({"principle": p, "family": "fixed", "run": name, "w": w, "budget": None})
        budgets = args.budgets or [float(f"{mean_of(records[f'{p}_w{w:g}'], 'mean_kl'):.3g}") for w in args.weights]
        for eps in budgets:
            name = f"{p}_kl{eps:g}"
            records[name] = run(name, [f"{p}={top_w}"], eps)
            plan.append({"principle": p, "family": "budget", "run": name, "w": top_w, "budget": eps})

    humor = humor_scores(judge, [out / f"{r['run']}.jsonl" for r in plan if r["principle"] == "humor"], out, rm,
                         models) if "humor" in args.principles else {}
    ppl = {}
    for r in plan:
        recs = records[r["run"]]
        if r["run"] not in ppl:
            ppl[r["run"]] = base_perplexity(models.base, models.tok, recs)
        r["tokens"] = sum(x["tokens"] for x in recs) / len(recs)
        r["ppl"] = ppl[r["run"]]
        r["measure"] = r["tokens"] if r["principle"] == "concise" else humor[r["run"]]
        r["mean_lambda"] = mean_of(recs, "mean_lambda") if r["family"] == "budget" else None
        r["mean_kl"] = mean_of(recs, "mean_kl") if r["family"] != "vanilla" else 0.0
    result = {"prompts": len(rows), "llm": llm, "rm": rm, "max_new_tokens": args.max_new_tokens,
              "humor_measure": judge or "persrm:humor (implicit reward)", "budget_weight": top_w, "principles": {}}
    rm_label = "shipped in pad" if args.rm is None else rm
    lines = [f"{len(rows)} prompts ({Path(args.prompts).name}); base {llm}; PersRM {rm_label}; greedy, k = 10, up to "
             f"{args.max_new_tokens} new tokens; budgets guide at w = {top_w:g}; * marks Pareto-optimal points."]
    for p in args.principles:
        sel = [r for r in plan if r["principle"] == p]
        for r, front in zip(sel, pareto([(r["measure"], r["ppl"]) for r in sel], LOWER_IS_BETTER[p])):
            r["pareto"] = front
        say = verdict(sel, LOWER_IS_BETTER[p])
        what = "length (tokens, lower is better)" if p == "concise" else \
            f"humor ({Path(judge).name if judge else 'PersRM implicit reward'}, higher is better)"
        lines += ["", f"### {p}: {what} against base perplexity", "",
                  "| run | w | KL budget | mean lambda | mean KL / token | measure | tokens | base PPL | Pareto |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sel:
            budget = "-" if r["budget"] is None else f"{r['budget']:g}"
            lam = "-" if r["mean_lambda"] is None else f"{r['mean_lambda']:.3f}"
            lines.append(f"| {r['run']} | {r['w']:g} | {budget} | {lam} | {r['mean_kl']:.4f} | {r['measure']:.3f} | "
                         f"{r['tokens']:.1f} | {r['ppl']:.2f} | {'*' if r['pareto'] else ''} |")
        lines += ["", f"{p}: {say}."]
        result["principles"][p] = {"rows": sel, "verdict": say}
    table = "\n".join(lines)
    (out / "weights.md").write_text(table + "\n")
    (out / "weights.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.principles, out / "weights.png", len(rows))
    print(table)
    print(f"\nplot: {out / 'weights.png'}")


def mean_of(recs: list[dict], key: str) -> float:
    vals = [r[key] for r in recs if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else 0.0


def humor_scores(judge: str | None, files: list[Path], out: Path, rm: str, models) -> dict[str, float]:
    """Run name -> mean humor score: the judge through pad eval, or the PersRM's implicit humor reward."""
    from pad.decode.io import read_run

    if judge is not None:
        from pad.evaluate import EvalConfig, run_eval

        unique = list(dict.fromkeys(files))
        report = run_eval(EvalConfig(runs=[str(f) for f in unique], scorers=[judge], out=str(out / "report"),
                                     plots=False, progress=False))
        return {res["run"]: res["mean"] for res in report.results}
    from pad.evaluate.inputs import Row
    from pad.evaluate.scorers import PersRMScorer

    scorer = PersRMScorer(rm, "humor", model=models.rm)
    scores = {}
    for f in dict.fromkeys(files):
        recs = read_run(f)
        prepared = scorer.prepare([Row(r["id"], r["prompt"], r["response"]) for r in recs])
        vals = [v[0] for _, vs in scorer.score(prepared, batch_size=8) for v in vs]
        scores[f.stem] = sum(vals) / max(len(vals), 1)
    return scores


def plot(result: dict, principles: list[str], path: Path, prompts: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(principles), figsize=(6 * len(principles), 4.5), squeeze=False)
    for ax, p in zip(axes[0], principles):
        rows = result["principles"][p]["rows"]
        for fam, style in (("fixed", "o-"), ("budget", "s--")):
            sel = sorted((r for r in rows if r["family"] == fam), key=lambda r: r["mean_kl"])
            ax.plot([r["ppl"] for r in sel], [r["measure"] for r in sel], style,
                    label="fixed w" if fam == "fixed" else f"KL budget (w = {result['budget_weight']:g})")
            for r in sel:
                ax.annotate(f"w={r['w']:g}" if fam == "fixed" else f"eps={r['budget']:g}", (r["ppl"], r["measure"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
        van = next(r for r in rows if r["family"] == "vanilla")
        ax.plot([van["ppl"]], [van["measure"]], "k^", label="vanilla")
        front = [r for r in rows if r["pareto"]]
        ax.scatter([r["ppl"] for r in front], [r["measure"] for r in front], s=160, facecolors="none",
                   edgecolors="red", label="Pareto-optimal")
        ax.set_xlabel("base model perplexity of the answers (lower: more fluent)")
        ax.set_ylabel("mean answer length (tokens)" if p == "concise" else "humor score")
        ax.set_title(f"{p}: {'lower' if LOWER_IS_BETTER[p] else 'higher'} is better", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"fixed w against per-token KL budgets, {prompts} prompts")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
