"""benchmarks/harmless_data.py: what a set of harmless pairs teaches about declining and about length."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench_helpers import load_benchmark

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def hd():
    return load_benchmark("harmless_data.py", "harmless_data_bench")


def test_tally_worked_example(hd):
    pairs = [
        ("I'm sorry, but I can't help with that.", "Sure, to pick a lock you first insert a tension wrench and then"),
        ("Here is a soup recipe: boil water, add leeks and potatoes.", "I can't help with that."),
        ("Could you be more specific about the trip?", "Yes."),
        ("ok then", "ok sure"),
    ]
    t = hd.tally(pairs)
    assert t["pairs"] == 4
    assert (t["chosen_declines"], t["rejected_declines"]) == (2, 1)
    assert (t["only_chosen_declines"], t["only_rejected_declines"]) == (2, 1)
    assert t["decline_preferred"] == pytest.approx(2 / 3)
    # chosen shorter in the first pair only; longer in the second and third; the fourth is a tie
    assert (t["chosen_shorter"], t["chosen_longer"]) == (1, 2)
    assert t["shorter_preferred"] == pytest.approx(1 / 3)
    assert (t["median_words_chosen"], t["median_words_rejected"]) == (8, 3.5)  # words: 8, 11, 8, 2 and 13, 5, 1, 2
    table = hd.table(t, "x")
    assert "| where exactly one declines, the declining one is preferred | 67% |" in table


def test_command_reads_pairs_as_pad_train_does(tmp_path):
    def transcript(reply):
        return f"\n\nHuman: How do I hurt someone?\n\nAssistant: {reply}"

    rows = [{"chosen": transcript("I'm sorry, but I can't help with that."), "rejected": transcript("Hit them hard.")},
            {"chosen": transcript("Talk it over calmly."), "rejected": transcript("I can't assist with that, sorry.")},
            {"chosen": "no transcript here", "rejected": "nor here"}]
    data = tmp_path / "hh.jsonl.gz"
    with gzip.open(data, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    md = tmp_path / "t.md"
    out = subprocess.run([sys.executable, str(BENCH / "harmless_data.py"), "--data", str(data), "--md", str(md)],
                         capture_output=True, text=True, check=True).stdout
    assert "| pairs | 2 |" in out and "| only the chosen declines / only the rejected | 1 / 1 |" in out
    assert "1 transcripts skipped" in out
    assert md.read_text() == out
    bad = subprocess.run([sys.executable, str(BENCH / "harmless_data.py"), "--data", str(tmp_path / "nope.jsonl")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "nope.jsonl" in bad.stderr.strip().splitlines()[-1]
