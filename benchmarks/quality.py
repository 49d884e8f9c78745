"""Steering quality of the shipped PersRM on held-out prompts: a sweep of w per principle.

For each principle and w in the sweep, `pad decode` (greedy, k = 10) answers the held-out prompts with
SmolLM2-135M-Instruct as the base and the PersRM shipped in pad. Per run it measures:
- length: mean new tokens and words per answer (the measurable effect of `concise`), the share that ended
  before the cap, and how much of it loops: the share of word 4-grams that repeat an earlier one, and the
  distinct 4-grams (about the words that are not a repeat);
- fluency: the base model's own perplexity of the answers, given the plain prompt (no principle);
- the PersRM's implicit reward of the answers under the run's principle (pad eval's PersRM scorer).
It also reports the shipped PersRM's held-out preference accuracy per principle (from its
pad_config.json, measured by `pad train` on pairs held out by prompt).

    python benchmarks/quality.py                       # P-Soups prompts from ../shared/data, w in 0 0.5 1 1.5
    python benchmarks/quality.py --prompts my.jsonl --principles concise --weights 0 1

Run files go to --out (resumable: rerun to continue); quality.json, quality.md and quality.png too.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "koala_eval_50.json"


def base_perplexity(model, tok, records, batch_size: int = 8) -> float:
    """exp(-sum log p / sum tokens) of the answers under the base model, given the plain prompt.

    `model` may be the shared backbone (`Models.base` is then the PersRM's PeftModel): its adapter is switched
    off here, or this would be the PersRM's perplexity, not the base's."""
    from contextlib import nullcontext

    import torch

    from pad.evaluate.scorers import response_logprob
    from pad.principles import principle_prompt

    total_lp, total_n = 0.0, 0
    items = [r for r in records if r["finish_reason"] != "skipped" and r["response"].strip()]
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        prompts = [tok(principle_prompt(tok, r["prompt"], None), add_special_tokens=False)["input_ids"] for r in chunk]
        answers = [tok(r["response"], add_special_tokens=False)["input_ids"] for r in chunk]
        with torch.inference_mode(), (model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()):
            total_lp += sum(response_logprob(model, prompts, answers, tok.pad_token_id))
        total_n += sum(map(len, answers))
    return math.exp(-total_lp / max(total_n, 1))


def repeated_ngrams(text: str, n: int = 4) -> tuple[int, int]:
    """(word n-grams of the answer, how many of them repeat an earlier one). A greedy 135M base that loops
    ("IP (Internet Protocol)" line after line) fills the token cap with repeats: its length is not detail."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(grams), len(grams) - len(set(grams))


def main():
    from pad.decode.engine import REFERENCES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=str(DEFAULT_PROMPTS))
    ap.add_argument("--principles", nargs="+", default=["concise", "harmless", "humor"])
    ap.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.5, 1.0, 1.5])
    ap.add_argument("--rm", default=None, help="PersRM (default: the one shipped in pad)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--out", default="benchmarks/results/quality")
    ap.add_argument("--base-principles", action=argparse.BooleanOptionalAction, default=None,
                    help="whether the base reads the principle prompt (default: the PersRM's recommendation)")
    ap.add_argument("--reference", default="base", choices=REFERENCES,
                    help="what r is measured against (see pad decode --help)")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from pad.cli import quiet_libraries
    from pad.decode.config import DecodeConfig
    from pad.decode.io import load_prompts, read_run
    from pad.decode.run import Models, decode_run, default_persrm
    from pad.evaluate.inputs import Row
    from pad.evaluate.scorers import PersRMScorer
    from pad.models import DEFAULT_BASE, read_pad_config

    quiet_libraries()
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_prompts(args.prompts)
    cfg = DecodeConfig(rm=args.rm, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                       base_sees_principles=args.base_principles, reference=args.reference)
    rm_spec = args.rm or default_persrm(DEFAULT_BASE)
    models = Models(replace(cfg, rm=rm_spec), need_rm=True)

    def run(principle: str | None, w: float) -> list[dict]:
        name = "vanilla" if w == 0 else f"{principle}_w{w:g}"
        path = out / f"{name}.jsonl"
        if path.exists() and len(read_run(path)) >= len(rows):
            return read_run(path)
        c = replace(cfg, rm=rm_spec, principles=[] if w == 0 else [f"{principle}={w}"])
        decode_run(c, rows, models, path, run=name, resume=path.exists())
        return read_run(path)

    vanilla = run(None, 0.0)
    scorers = {p: PersRMScorer(rm_spec, p, model=models.rm) for p in args.principles}
    results = []
    for principle in args.principles:
        for w in args.weights:
            recs = vanilla if w == 0 else run(principle, w)
            loops = [repeated_ngrams(r["response"]) for r in recs]  # (4-grams, repeats) per answer
            prepared = scorers[principle].prepare([Row(r["id"], r["prompt"], r["response"]) for r in recs])
            rewards = [v[0] for _, vals in scorers[principle].score(prepared, batch_size=8) for v in vals]
            results.append({
                "principle": principle, "w": w, "n": len(recs),
                "tokens": sum(r["tokens"] for r in recs) / len(recs),
                "words": sum(len(r["response"].split()) for r in recs) / len(recs),
                "eos_share": sum(r["finish_reason"] == "eos" for r in recs) / len(recs),
                "repeated_4grams": sum(b / a for a, b in loops if a) / len(recs),
                "distinct_4grams": sum(a - b for a, b in loops) / len(recs),
                "ppl": base_perplexity(models.base, models.tok, recs),
                "persrm_reward": sum(rewards) / max(len(rewards), 1),
            })
    for r in results:
        v = next(x for x in results if x["principle"] == r["principle"] and x["w"] == 0)
        r["length_ratio"] = r["tokens"] / v["tokens"]
        r["ppl_ratio"] = r["ppl"] / v["ppl"]
    acc = (read_pad_config(rm_spec) or {}).get("eval", {}).get("principles", {})
    sees = args.base_principles if args.base_principles is not None else models.base_sees_principles

    rm_label = "shipped in pad" if args.rm is None else rm_spec
    lines = [f"Held-out prompts: {Path(args.prompts).name} ({len(rows)}); base {DEFAULT_BASE}; PersRM {rm_label}; "
             f"greedy, k = 10, up to {args.max_new_tokens} new tokens; the base reads the principle prompt: "
             f"{'yes' if sees else 'no'}.", "",
             "| principle | w | tokens | words | x vanilla length | base PPL | x vanilla PPL | ended (eos) | "
             "repeated 4-grams | distinct 4-grams | PersRM reward |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['principle']} | {r['w']:g} | {r['tokens']:.1f} | {r['words']:.1f} | "
                     f"{r['length_ratio']:.2f} | {r['ppl']:.2f} | {r['ppl_ratio']:.2f} | {r['eos_share']:.0%} | "
                     f"{r['repeated_4grams']:.0%} | {r['distinct_4grams']:.1f} | {r['persrm_reward']:+.3f} |")
    lines += ["", "Shipped PersRM, held-out preference accuracy (pairs held out by prompt):", ""]
    lines += [f"- {k}: {v['accuracy']:.3f} ({v['n']} pairs, mean reward margin {v['margin']:+.3f})"
              for k, v in acc.items()] if acc else ["- (no eval recorded in pad_config.json)"]
    table = "\n".join(lines)
    (out / "quality.md").write_text(table + "\n")
    (out / "quality.json").write_text(json.dumps({"runs": results, "persrm_eval": acc}, indent=1))

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for principle in args.principles:
        sel = [r for r in results if r["principle"] == principle]
        ws = [r["w"] for r in sel]
        axes[0].plot(ws, [r["tokens"] for r in sel], marker="o", label=principle)
        axes[1].plot(ws, [r["ppl"] for r in sel], marker="o", label=principle)
        axes[2].plot(ws, [r["persrm_reward"] for r in sel], marker="o", label=principle)
    for ax, title in zip(axes, ["mean answer length (tokens)", "base-model perplexity of answers",
                                "PersRM implicit reward (own principle)"]):
        ax.set_xlabel("guidance weight w")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"pad decode on {len(rows)} held-out prompts: SmolLM2-135M-Instruct + shipped PersRM")
    fig.tight_layout()
    fig.savefig(out / "quality.png", dpi=120)
    print(table)
    print(f"\nplot: {out / 'quality.png'}")


if __name__ == "__main__":
    main()
