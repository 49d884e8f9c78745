"""Length-controlled scores and win rates (pad.evaluate.length): the module docstring's worked example, then
`pad eval` end to end."""

import json
from pathlib import Path

import pytest
from eval_helpers import RESPONSES, write_run

from pad.evaluate import EvalConfig, run_eval
from pad.evaluate.inputs import Row, Run
from pad.evaluate.length import add_length_control, fit_length, words
from pad.evaluate.report import RESULT_FIELDS, Scores


class Dim:
    def __init__(self, name):
        self.name = name


def run(name: str, responses: list[str]) -> Run:
    return Run(name, Path(f"{name}.jsonl"), [Row(str(i), "p", r) for i, r in enumerate(responses)])


def test_worked_example():
    """Baseline answers of 2 and 4 words scored 1 and 2; the run's of 6 and 4 words scored 3 and 2.5.
    Mean length 4, mean score 2.125, slope (2.25 + 1.75) / 8 = 0.5, intercept 0.125. Length-controlled:
    baseline 2 and 2, run 3 - 0.5 * (6 - 4) = 2 and 2.5: means 2 and 2.25 (raw 1.5 and 2.75); the run
    wins both prompts raw, one tie and one win controlled."""
    base, other = run("base", ["a b", "a b c d"]), run("run", ["a b c d e f", "a b c d"])
    scores = {"base": Scores({"judge": {"0": 1.0, "1": 2.0}}), "run": Scores({"judge": {"0": 3.0, "1": 2.5}})}
    results = [{"run": "base", "dimension": "judge"}, {"run": "run", "dimension": "judge"}]
    fits = add_length_control(results, [base, other], [Dim("judge")], scores, baseline=base)
    fit = fits["judge"]
    assert (fit.slope, fit.intercept, fit.mean_words, fit.n) == (0.5, 0.125, 4.0, 4)
    b, r = results
    assert (b["words"], b["lc_mean"], b["lc_win"]) == (3.0, 2.0, None)
    assert (r["words"], r["lc_mean"]) == (5.0, 2.25)
    assert (r["lc_win"], r["lc_tie"], r["lc_loss"]) == (0.5, 0.5, 0.0)
    assert r["lc_ci_low"] <= r["lc_mean"] <= r["lc_ci_high"]


def test_fit_edge_cases():
    assert fit_length([], []) is None
    same = fit_length([3, 3], [1.0, 2.0])  # no length spread: nothing to control, lc = raw
    assert (same.slope, same.intercept) == (0.0, 1.5) and same.adjust(2.0, 3) == 2.0
    assert words("  one\ttwo\nthree ") == 3 and words("") == 0


def test_pad_eval_reports_length_control(tmp_path, tiny_rm):
    import numpy as np

    short = [" ".join(r.split()[:3]) for r in RESPONSES]
    paths = [write_run(tmp_path / "vanilla.jsonl", "vanilla", RESPONSES),
             write_run(tmp_path / "short.jsonl", "short", short, [("concise", 1.0)])]
    out = tmp_path / "report"
    report = run_eval(EvalConfig(runs=[str(p) for p in paths], scorers=[f"helpful={tiny_rm}"], baseline="vanilla",
                                 out=str(out), progress=False, plots=False))
    doc = json.loads((out / "report.json").read_text())
    lengths = [len(r.split()) for r in RESPONSES + short]
    values = [report.scores[n].values["helpful"][str(i)] for n in ("vanilla", "short") for i in range(4)]
    slope, intercept = np.polyfit(lengths, values, 1)
    fit = doc["length_fits"]["helpful"]
    assert fit["slope"] == pytest.approx(slope) and fit["intercept"] == pytest.approx(intercept) and fit["n"] == 8
    mean_words = sum(lengths) / 8
    for res, lens, vals in ((doc["results"][0], lengths[:4], values[:4]), (doc["results"][1], lengths[4:], values[4:])):
        lc = [v - slope * (n - mean_words) for n, v in zip(lens, vals)]
        assert res["lc_mean"] == pytest.approx(sum(lc) / 4) and res["words"] == sum(lens) / 4
    assert doc["results"][1]["lc_win"] + doc["results"][1]["lc_tie"] + doc["results"][1]["lc_loss"] == pytest.approx(1)
    header = (out / "report.csv").read_text().splitlines()[0].split(",")
    assert header == RESULT_FIELDS and header[-7:] == ["words", "lc_mean", "lc_ci_low", "lc_ci_high", "lc_win",
                                                       "lc_tie", "lc_loss"]
