"""Two PersRMs' cross-principle tables side by side, from the JSON files benchmarks/compare.py wrote.

    python benchmarks/compare_adapters.py stage3=benchmarks/results/compare_cross_stage3.json \
        stage4=benchmarks/results/compare_cross_stage4.json

One row per guide, one column per prompt set and adapter: length in tokens / humor judge raw / length-controlled
(a judge the files lack prints as -). Then, per prompt set and adapter, how much longer each opposite (detailed,
serious) answers than `concise`, and each adapter's checks as compare.py printed them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SETS = (("cross", "P-Soups"), ("cross_fresh", "fresh"))


def cell(row: dict | None) -> str:
    if row is None:
        return "-"
    judge = [f"{row[k]:.3f}" if row.get(k) is not None else "-" for k in ("humor", "humor_lc")]
    return " / ".join([f"{row['length']:.1f}", *judge])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs=2, metavar="NAME=JSON", help="an adapter's name and its compare.py --json file")
    args = ap.parse_args()
    named = [tuple(x.split("=", 1)) for x in args.runs]
    if any(len(x) != 2 for x in named):
        raise SystemExit(f"give NAME=JSON twice, got {args.runs}")
    data = {name: json.loads(Path(path).read_text()) for name, path in named}
    tables = {(s, name): {r["guide"]: r for r in data[name][s]["rows"]}
              for s, _ in SETS for name in data if s in data[name]}
    guides = list(dict.fromkeys(g for t in tables.values() for g, r in t.items() if "synonym_of" not in r))
    cols = list(tables)
    print("| guide | " + " | ".join(f"{label} {name}" for s, label in SETS for name in data if (s, name) in tables)
          + " |\n|" + " --- |" * (len(cols) + 1))
    for g in guides:
        print(f"| {g} | " + " | ".join(cell(tables[c].get(g)) for c in cols) + " |")
    print("\ncells: length in tokens / humor judge / length-controlled")
    for (s, name), t in tables.items():
        label = dict(SETS)[s]
        if "concise" in t:
            longer = [f"{g} {t[g]['length'] - t['concise']['length']:+.1f}" for g in ("detailed", "serious") if g in t]
            print(f"{label} {name}: tokens over concise: " + ", ".join(longer))
        print(f"{label} {name}: checks: " + "; ".join(data[name][s].get("checks", [])))


if __name__ == "__main__":
    main()
