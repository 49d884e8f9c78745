"""Length-controlled scores and win rates: a judge's score with the part its answer length predicts taken out.

Length is the first confound of every reward-model judge: the ones pad evaluates with mostly reward short
answers, so a guide that only shortens answers looks like it follows any principle. Per dimension, one least-
squares line `score = intercept + slope * words` is fitted over every scored answer of every run in the report,
and each answer's length-controlled score is its score moved along that line to the mean length:

    lc(answer) = score - slope * (words - mean_words)

that is, the residual of the fit plus the mean score. A run's length-controlled mean is the mean of its answers'
lc scores (the raw mean minus slope times how much longer than average its answers are); its length-controlled
win rate compares lc scores prompt by prompt with the baseline's. Over all answers lc and raw means agree, so the
two columns read on one scale. Length is counted in words (whitespace-separated), which needs no tokenizer and
means the same for every judge.

Worked example (`tests/evaluate/test_eval_length.py`): baseline answers of 2 and 4 words scored 1 and 2, a run's
answers of 6 and 4 words scored 3 and 2.5. Mean length 4, mean score 2.125; slope = sum((L - 4)(s - 2.125)) /
sum((L - 4)^2) = (2.25 + 1.75) / 8 = 0.5. lc: baseline 2 and 2, run 3 - 0.5 * 2 = 2 and 2.5. Raw means 1.5 and
2.75 with the run winning both prompts; length-controlled means 2 and 2.25, one tie and one win.

The fit is a description of the report's answers, not a causal model: a run whose answers are short for a good
reason (a concise principle) loses the credit length would have given it, which is the point when asking
whether a guide does more than shorten, and a reason to read both columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pad.evaluate.stats import summarize, win_rates

if TYPE_CHECKING:
    from pad.evaluate.inputs import Run
    from pad.evaluate.report import Scores
    from pad.evaluate.scorers import Dimension


def words(text: str) -> int:
    return len(text.split())


@dataclass
class LengthFit:
    """score = intercept + slope * words, fitted by least squares over n answers."""

    slope: float
    intercept: float
    mean_words: float
    n: int

    def adjust(self, score: float, length: float) -> float:
        """The score moved along the fitted line to the mean length."""
        return score - self.slope * (length - self.mean_words)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_length(lengths: Sequence[float], scores: Sequence[float]) -> LengthFit | None:
    """The least-squares line of scores on lengths; slope 0 when every length is the same. None without data."""
    n = len(scores)
    if n == 0:
        return None
    mx, my = math.fsum(lengths) / n, math.fsum(scores) / n
    var = math.fsum((x - mx) ** 2 for x in lengths)
    slope = math.fsum((x - mx) * (y - my) for x, y in zip(lengths, scores, strict=True)) / var if var > 0 else 0.0
    return LengthFit(slope, my - slope * mx, mx, n)


def length_fits(runs: Sequence[Run], dimensions: Sequence[Dimension], scores: Mapping[str, Scores]
                ) -> dict[str, LengthFit | None]:
    """One fit per dimension over every scored answer of every run."""
    fits = {}
    for d in dimensions:
        lengths, values = [], []
        for run in runs:
            got = scores[run.name].values.get(d.name, {})
            for row in run.rows:
                if row.id in got:
                    lengths.append(words(row.response))
                    values.append(got[row.id])
        fits[d.name] = fit_length(lengths, values)
    return fits


def controlled(run: Run, values: Mapping[str, float], fit: LengthFit | None) -> dict[str, float]:
    """id -> length-controlled score of the run's scored answers."""
    if fit is None:
        return {}
    rows = run.by_id()
    return {i: fit.adjust(v, words(rows[i].response)) for i, v in values.items()}


def add_length_control(results: list[dict], runs: Sequence[Run], dimensions: Sequence[Dimension],
                       scores: Mapping[str, Scores], baseline: Run | None = None, resamples: int = 1000,
                       seed: int = 0, tie_tolerance: float = 0.0) -> dict[str, LengthFit | None]:
    """Add to each result (one per run and dimension) `words` (mean answer length), `lc_mean` with its
    bootstrap interval `lc_ci_low`/`lc_ci_high`, and against the baseline `lc_win`, `lc_tie`, `lc_loss`.
    Returns the fit of each dimension."""
    fits = length_fits(runs, dimensions, scores)
    by_name = {r.name: r for r in runs}
    for res in results:
        run, fit = by_name[res["run"]], fits[res["dimension"]]
        values = scores[run.name].values.get(res["dimension"], {})
        rows = run.by_id()
        lengths = [words(rows[i].response) for i in values]
        lc = controlled(run, values, fit)
        s = summarize(list(lc.values()), resamples, seed)
        res.update({"words": math.fsum(lengths) / len(lengths) if lengths else None, "lc_mean": s.mean,
                    "lc_ci_low": s.ci_low, "lc_ci_high": s.ci_high})
        if baseline is not None and run is not baseline:
            base = controlled(baseline, scores[baseline.name].values.get(res["dimension"], {}), fit)
            wr = win_rates(lc, base, tie_tolerance)
            res.update({"lc_win": wr.win, "lc_tie": wr.tie, "lc_loss": wr.loss})
        else:
            res.update({"lc_win": None, "lc_tie": None, "lc_loss": None})
    return fits
