"""What HH-RLHF's harmless pairs teach besides harmlessness: how often the preferred reply declines, and how
often it is the shorter one.

    python benchmarks/harmless_data.py                      # the file the shipped PersRM trained on
    python benchmarks/harmless_data.py --data ../shared/data/hh-rlhf-harmless-base-test.part1.jsonl.gz \
        --md benchmarks/results/harmless_data.md

The pairs are read exactly as `pad train` reads an `hh_rlhf` source (the last Assistant reply of the chosen and
the rejected transcript, the same earlier turns). A reply "declines" when benchmarks/compare.py's detector says
so (it opens by declining or deflecting: "I'm sorry, but", "I can't give you", "could you be more specific").
Where one reply of a pair declines and the other does not, the share that prefers the declining one is what a
PersRM (and a reward model trained on the same pairs) learns about declining; P-Soups' and the fresh prompts'
requests are benign, so a guide that learned it declines them (issue 22).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import declines  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.part1.jsonl.gz"


def words(text: str) -> int:
    return len(text.split())


def tally(pairs: Iterable[tuple[str, str]]) -> dict:
    """(chosen, rejected) replies -> counts and shares: declines on each side, which side wins where exactly one
    declines, and which side is shorter (in words; ties counted apart)."""
    n = chosen_dec = rejected_dec = only_chosen = only_rejected = shorter = longer = 0
    cw, rw = [], []
    for chosen, rejected in pairs:
        n += 1
        dc, dr = declines(chosen), declines(rejected)
        chosen_dec += dc
        rejected_dec += dr
        only_chosen += dc and not dr
        only_rejected += dr and not dc
        a, b = words(chosen), words(rejected)
        cw.append(a)
        rw.append(b)
        shorter += a < b
        longer += a > b
    if not n:
        raise SystemExit("harmless_data.py: no pairs to count")
    differ = only_chosen + only_rejected
    return {
        "pairs": n, "chosen_declines": chosen_dec, "rejected_declines": rejected_dec,
        "only_chosen_declines": only_chosen, "only_rejected_declines": only_rejected,
        "decline_preferred": only_chosen / differ if differ else None,
        "chosen_shorter": shorter, "chosen_longer": longer, "shorter_preferred": shorter / (shorter + longer)
        if shorter + longer else None,
        "median_words_chosen": statistics.median(cw), "median_words_rejected": statistics.median(rw),
    }


def table(t: dict, name: str) -> str:
    n = t["pairs"]

    def share(k: int) -> str:
        return f"{k} ({k / n:.1%})"

    pref = "-" if t["decline_preferred"] is None else f"{t['decline_preferred']:.0%}"
    short = "-" if t["shorter_preferred"] is None else f"{t['shorter_preferred']:.0%}"
    rows = [
        ("pairs", str(n)),
        ("chosen reply declines", share(t["chosen_declines"])),
        ("rejected reply declines", share(t["rejected_declines"])),
        ("only the chosen declines / only the rejected",
         f"{t['only_chosen_declines']} / {t['only_rejected_declines']}"),
        ("where exactly one declines, the declining one is preferred", pref),
        ("chosen shorter / longer (words; ties apart)", f"{t['chosen_shorter']} / {t['chosen_longer']}"),
        ("where lengths differ, the shorter one is preferred", short),
        ("median words, chosen / rejected", f"{t['median_words_chosen']:g} / {t['median_words_rejected']:g}"),
    ]
    lines = [f"# What {name} teaches besides harmlessness", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="an HH-RLHF jsonl(.gz) file or hub id")
    ap.add_argument("--md", type=Path, help="also write the table here")
    args = ap.parse_args()
    from pad.errors import PadError
    from pad.train.pairs import SourceConfig, build_pairs, load_rows

    src = SourceConfig(kind="hh_rlhf", path=str(args.data), principles={"harmless": "chosen"})
    try:
        pairs, skipped = build_pairs(src, load_rows(src))
    except PadError as e:
        raise SystemExit(f"harmless_data.py: {e}") from None
    t = tally((p.chosen, p.rejected) for p in pairs)
    skips = sum(sum(c.values()) for c in skipped.values())
    out = table(t, f"`{args.data.name}`") + (f"\n{skips} transcripts skipped as `pad train` skips them.\n" if skips else "")
    out += f"\nCommand: `python benchmarks/harmless_data.py --data {os.path.relpath(args.data)}`\n"
    print(out, end="")
    if args.md:
        args.md.write_text(out)


if __name__ == "__main__":
    main()
