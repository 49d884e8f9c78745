"""Do fitted weights find what a user cares about? `pad fit-weights` on two simulated users.

- a "harmless user": held-out HH-RLHF harmless-base test pairs (../shared/data; the user chose the harmless
  reply), single-turn, short;
- a "concise user": two sampled base answers per P-Soups prompt, the shorter one chosen.

Each user's pairs are fitted over the candidate principles (concise, harmless, humor by default) with the
shipped PersRM (or --rm); the harmless user should put most weight on `harmless`, the concise user on
`concise`. Prints the weights and held-out accuracies and writes fit_users.md / fit_users.json and each
user's pairs and profile to --out.

    python benchmarks/fit_users.py --pairs 40                  # a few minutes to half an hour of CPU
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


def harmless_pairs(n: int, max_chars: int) -> list[dict]:
    """The first n single-turn pairs of the held-out file whose texts stay under max_chars."""
    from pad.train.pairs import split_hh_transcript

    out = []
    with gzip.open(HH_TEST, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            c, r = split_hh_transcript(row["chosen"]), split_hh_transcript(row["rejected"])
            if c is None or r is None or c[0] != r[0] or len(c[0]) != 1 or c[1].strip() == r[1].strip():
                continue
            prompt = c[0][0]["content"]
            if len(prompt) + len(c[1]) + len(r[1]) > max_chars:
                continue
            out.append({"prompt": prompt, "chosen": c[1].strip(), "rejected": r[1].strip()})
            if len(out) == n:
                break
    return out


def concise_pairs(n: int, max_new_tokens: int, rm: str | None) -> list[dict]:
    """Two sampled base answers per prompt (seeds 0 and 1); the one with fewer tokens is chosen."""
    from dataclasses import replace

    from pad.decode.config import DecodeConfig
    from pad.decode.run import Models, decode_run, gather_prompts

    rows = gather_prompts(str(DEFAULT_PROMPTS), limit=n * 2)  # spare prompts: equal lengths give no pair
    cfg = DecodeConfig(rm=rm, mode="sample", max_new_tokens=max_new_tokens, batch_size=16)
    models = Models(cfg, need_rm=False)
    a, b = (decode_run(replace(cfg, seed=s), rows, models, None, run=f"seed{s}").records for s in (0, 1))
    out = []
    for x, y in zip(a, b):
        if x["tokens"] != y["tokens"] and x["response"].strip() and y["response"].strip():
            short, long = (x, y) if x["tokens"] < y["tokens"] else (y, x)
            out.append({"prompt": x["prompt"], "chosen": short["response"], "rejected": long["response"]})
        if len(out) == n:
            break
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rm", default=None, help="PersRM (default: the shipped one)")
    ap.add_argument("--principles", nargs="+", default=["concise", "harmless", "humor"])
    ap.add_argument("--pairs", type=int, default=40, help="pairs per user")
    ap.add_argument("--max-chars", type=int, default=700, help="longest HH pair (prompt + both replies), in characters")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="length cap of the concise user's base answers")
    ap.add_argument("--users", nargs="+", default=["harmless", "concise"], choices=["harmless", "concise"])
    ap.add_argument("--out", default="runs/fit_users")
    args = ap.parse_args()

    from pad.cli import quiet_libraries
    from pad.decode.profiles import FitConfig, fit_profile

    if not HH_TEST.is_file() or not DEFAULT_PROMPTS.is_file():
        sys.exit(f"{HH_TEST.parent} lacks the data (only development machines have ../shared)")
    quiet_libraries()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    users = {}
    if "harmless" in args.users:
        users["harmless user"] = harmless_pairs(args.pairs, args.max_chars)
    if "concise" in args.users:  # answers that both reach the cap tie: a higher cap gives more pairs
        users["concise user"] = concise_pairs(args.pairs, args.max_new_tokens, args.rm)
    result, lines = {}, ["| user | pairs | " + " | ".join(f"w {p}" for p in args.principles)
                         + " | most weight | held-out accuracy |", "|---" * (len(args.principles) + 4) + "|"]
    for user, pairs in users.items():
        stem = user.split()[0]
        path = out / f"{stem}_pairs.jsonl"
        path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
        prof = fit_profile(FitConfig(str(path), list(args.principles), rm=args.rm))
        (out / f"{stem}_profile.json").write_text(prof.to_json())
        w = {p.name: p.weight for p in prof.principles}
        top = max(w, key=w.get)
        result[user] = {"pairs": prof.pairs, "weights": w, "most_weight": top, "heldout_accuracy": prof.heldout_accuracy,
                        "train_accuracy": prof.train_accuracy}
        lines.append(f"| {user} | {prof.pairs} | " + " | ".join(f"{w[p]:.3g}" for p in args.principles)
                     + f" | {top} | {prof.heldout_accuracy:.3f} |")
    table = "\n".join(lines)
    (out / "fit_users.md").write_text(table + "\n")
    (out / "fit_users.json").write_text(json.dumps(result, indent=1) + "\n")
    print(table)


if __name__ == "__main__":
    main()
