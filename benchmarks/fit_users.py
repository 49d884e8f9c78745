"""Do fitted weights find what a user cares about? `pad fit-weights` on two simulated users.

- a "harmless user": HH-RLHF harmless-base test pairs (../shared/data; the user chose the harmless reply),
  single-turn, short; with --held-out-of RECIPE only pairs that the PersRM's recipe held out (the file is its
  training data too: without it, most of the first pairs are ones a PersRM trained on the file has seen);
- a "concise user": two sampled base answers per P-Soups prompt, the shorter one chosen (an answer cut by the
  length cap is marked so, and its end is not scored).

Each user's pairs are fitted over the candidate principles (concise, harmless, humor by default) with the
shipped PersRM (or --rm); the harmless user should put most weight on `harmless`, the concise user on
`concise`. The answers are scored once, and the fit is made with each kind of feature of `pad fit-weights`
(plain or centred log-ratios, with or without the end token; the first is its default). Prints the weights and
held-out accuracies and writes fit_users.md / fit_users.json and each user's pairs, scores (*_stats.pt, reused
when present) and default profile to --out.

    python benchmarks/fit_users.py --pairs 25                  # a few minutes to half an hour of CPU
    python benchmarks/fit_users.py --rm DIR --out runs/fit-other \
        --pairs-from harmless=benchmarks/results/fit_users/harmless_pairs.jsonl \
                     concise=benchmarks/results/fit_users/concise_pairs_4answers.jsonl   # same pairs, another PersRM
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DEFAULT_PROMPTS  # noqa: E402

HH_TEST = DEFAULT_PROMPTS.parent / "hh-rlhf-harmless-base-test.part1.jsonl.gz"


def held_out_harmless(recipe: str) -> set[tuple[str, str]]:
    """(last user turn, chosen reply) of every harmless pair that `recipe`'s split holds out: pairs a PersRM
    trained with that recipe (or a later stage keeping its sources and eval_size) never saw. The shared HH file
    is the PersRM's training data too, so a "harmless user" drawn from it elsewhere scores answers it learned."""
    from pad.models import load_tokenizer
    from pad.train.common import build_training_mixture
    from pad.train.config import load_train_config

    cfg = load_train_config(recipe, {"eval_limit": None})
    mix = build_training_mixture(cfg, load_tokenizer(cfg.base_model))
    return {(p.prompt if isinstance(p.prompt, str) else p.prompt[-1]["content"], p.chosen.strip())
            for p in mix.eval if p.principle == "harmless"}


def harmless_pairs(n: int, max_chars: int, only: set[tuple[str, str]] | None = None) -> list[dict]:
    """The first n single-turn pairs of the HH file whose texts stay under max_chars (and, given `only`, whose
    (prompt, chosen) is in it)."""
    from pad.train.pairs import split_hh_transcript

    out = []
    with gzip.open(HH_TEST, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            c, r = split_hh_transcript(row["chosen"]), split_hh_transcript(row["rejected"])
            if c is None or r is None or c[0] != r[0] or len(c[0]) != 1 or c[1].strip() == r[1].strip():
                continue
            prompt = c[0][0]["content"]
            if len(prompt) + len(c[1]) + len(r[1]) > max_chars or (only is not None and (prompt, c[1].strip()) not in only):
                continue
            out.append({"prompt": prompt, "chosen": c[1].strip(), "rejected": r[1].strip()})
            if len(out) == n:
                break
    return out


def concise_pairs(n: int, max_new_tokens: int, rm: str | None, out: Path, answers: int = 2) -> list[dict]:
    """`answers` sampled base answers per prompt (seeds 0, 1, ...), paired as seeds (0, 1), (2, 3), ...: in each
    pair the one with fewer tokens is chosen (equal lengths give no pair). An answer that reached the cap was cut,
    not ended: its pair says so ("..._ended": false), and its end is not scored. The sampled runs are kept in
    `out` (concise_seed0.jsonl, ...) and resume."""
    from dataclasses import replace

    from pad.decode.config import DecodeConfig
    from pad.decode.io import read_run
    from pad.decode.run import Models, decode_run, gather_prompts

    rows = gather_prompts(str(DEFAULT_PROMPTS), limit=n * 2)  # spare prompts: equal lengths give no pair
    cfg = DecodeConfig(rm=rm, mode="sample", max_new_tokens=max_new_tokens, batch_size=16)
    models = Models(cfg, need_rm=False)
    ids = {r.id for r in rows}
    runs = []
    for s in range(answers):
        path = out / f"concise_seed{s}.jsonl"
        decode_run(replace(cfg, seed=s), rows, models, path, run=f"seed{s}", resume=path.exists())
        runs.append([r for r in read_run(path) if r["id"] in ids])
    out_pairs = []
    for recs in zip(*runs):  # one prompt's answers
        for x, y in zip(recs[0::2], recs[1::2]):
            if x["tokens"] != y["tokens"] and x["response"].strip() and y["response"].strip():
                short, long = (x, y) if x["tokens"] < y["tokens"] else (y, x)
                out_pairs.append({"prompt": x["prompt"], "chosen": short["response"], "rejected": long["response"],
                                  "chosen_ended": short["finish_reason"] == "eos",
                                  "rejected_ended": long["finish_reason"] == "eos"})
        if len(out_pairs) >= n:
            break
    return out_pairs[:n]


VARIANTS = [("log-ratio", True), ("log-ratio", False), ("centred", True), ("centred", False)]
"""(features, score_end) of pad fit-weights; the first is its default (log-ratio since 2026-12-07; centred before)."""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rm", default=None, help="PersRM (default: the shipped one)")
    ap.add_argument("--principles", nargs="+", default=["concise", "harmless", "humor"])
    ap.add_argument("--pairs", type=int, default=40, help="pairs per user")
    ap.add_argument("--max-chars", type=int, default=700, help="longest HH pair (prompt + both replies), in characters")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="length cap of the concise user's base answers")
    ap.add_argument("--answers", type=int, default=2, help="sampled base answers per prompt of the concise user "
                    "(even: paired as seeds 0-1, 2-3, ...)")
    ap.add_argument("--users", nargs="+", default=["harmless", "concise"], choices=["harmless", "concise"])
    ap.add_argument("--pairs-from", nargs="+", default=[], metavar="USER=FILE",
                    help="take a user's pairs from FILE (a *_pairs.jsonl an earlier run wrote) instead of building "
                    "them: the same pairs scored by another PersRM (e.g. concise=benchmarks/results/fit_users/"
                    "concise_pairs_4answers.jsonl)")
    ap.add_argument("--held-out-of", default=None, metavar="RECIPE",
                    help="draw the harmless user's pairs only from the HH prompts this pad train recipe holds out "
                    "(e.g. recipes/smollm2-135m/train/config_persrm_contrastive.yaml): the PersRM never trained on "
                    "them. Without it they are the file's first pairs, which a PersRM trained on the file has seen. "
                    "With --pairs-from harmless=FILE it counts how many of FILE's pairs the recipe holds out")
    ap.add_argument("--out", default="runs/fit_users")
    args = ap.parse_args()

    import torch

    from pad.cli import quiet_libraries
    from pad.decode.profiles import FitConfig, differences, pair_stats, profile_from_differences, read_pairs

    if not HH_TEST.is_file() or not DEFAULT_PROMPTS.is_file():
        sys.exit(f"{HH_TEST.parent} lacks the data (only development machines have ../shared)")
    quiet_libraries()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    given = {}
    for item in args.pairs_from:
        user, _, file = item.partition("=")
        if user not in args.users or not Path(file).is_file():
            sys.exit(f"--pairs-from {item}: expected USER=FILE with USER one of {args.users} and FILE an existing file")
        given[user] = [json.loads(line) for line in Path(file).read_text().splitlines() if line.strip()]
    only = held_out_harmless(args.held_out_of) if args.held_out_of and "harmless" in args.users else None
    if only is not None and "harmless" in given:
        held = sum((p["prompt"], p["chosen"]) in only for p in given["harmless"])
        print(f"{held} of the {len(given['harmless'])} given harmless pairs are held out by {args.held_out_of}; "
              "the rest are on its training side", file=sys.stderr)
    users = {}
    for u in args.users:
        if u in given:
            users[f"{u} user"] = given[u]
        elif u == "harmless":
            users["harmless user"] = harmless_pairs(args.pairs, args.max_chars, only)
            if len(users["harmless user"]) < args.pairs:
                print(f"warning: {len(users['harmless user'])} harmless pairs of the {args.pairs} asked fit "
                      f"--max-chars {args.max_chars}{' and are held out' if only else ''}", file=sys.stderr)
        else:  # answers that both reach the cap tie: a higher cap gives more pairs
            users["concise user"] = concise_pairs(args.pairs, args.max_new_tokens, args.rm, out, args.answers)
    head = ("| user | features | end token | pairs | " + " | ".join(f"w {p}" for p in args.principles)
            + " | most weight | held-out accuracy | feature correlation ("
            + " / ".join(f"{a}-{b}" for i, a in enumerate(args.principles) for b in args.principles[i + 1:]) + ") |")
    result, lines = {}, [head, "|---" * (len(args.principles) + 7) + "|"]
    for user, pairs in users.items():
        stem = user.split()[0]
        path = out / f"{stem}_pairs.jsonl"
        path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
        cached = out / f"{stem}_stats.pt"  # the PersRM's per-answer sums, scored once for every variant
        key = {"pairs": pairs, "principles": list(args.principles), "rm": args.rm}
        saved = torch.load(cached) if cached.exists() else None
        if saved is not None and saved["key"] == key:
            stats, names = saved["stats"], saved["names"]
        else:
            stats, names = pair_stats(FitConfig(str(path), list(args.principles), rm=args.rm), read_pairs(path))
            torch.save({"key": key, "stats": stats, "names": names}, cached)
        result[user] = {}
        for features, score_end in VARIANTS:
            cfg = FitConfig(str(path), list(args.principles), rm=args.rm, features=features, score_end=score_end)
            diffs, dropped = differences(stats, features, score_end)
            prof = profile_from_differences(cfg, diffs, names, dropped)
            if (features, score_end) == VARIANTS[0]:
                (out / f"{stem}_profile.json").write_text(prof.to_json())
            w = {p.name: p.weight for p in prof.principles}
            top = max(w, key=w.get) if max(w.values()) > 0 else "none"  # every weight 0: the fit found nothing
            key = f"{features}{'+end' if score_end else ''}"
            corr = torch.corrcoef(diffs.T)  # (P, P): how alike the principles' features are on these pairs
            result[user][key] = {"pairs": prof.pairs, "weights": w, "most_weight": top,
                                 "heldout_accuracy": prof.heldout_accuracy, "train_accuracy": prof.train_accuracy,
                                 "feature_correlation": [[round(float(c), 3) for c in row] for row in corr]}
            pairwise = " / ".join(f"{float(corr[i, j]):.2f}" for i in range(len(names)) for j in range(i + 1, len(names)))
            lines.append(f"| {user} | {features} | {'yes' if score_end else 'no'} | {prof.pairs} | "
                         + " | ".join(f"{w[p]:.3g}" for p in args.principles)
                         + f" | {top} | {prof.heldout_accuracy:.3f} | {pairwise} |")
        if "concise" in user:
            result[user]["answers_cut_at_cap"] = {
                "chosen": sum(not p["chosen_ended"] for p in pairs), "rejected": sum(not p["rejected_ended"] for p in pairs)}
    table = "\n".join(lines)
    (out / "fit_users.md").write_text(table + "\n")
    (out / "fit_users.json").write_text(json.dumps(result, indent=1) + "\n")
    print(table)


if __name__ == "__main__":
    main()
