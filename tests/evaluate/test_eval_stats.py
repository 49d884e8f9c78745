"""Bootstrap interval and win rates on worked examples (the docstrings of pad.evaluate.stats)."""

import math

import pytest

from pad.evaluate.stats import bootstrap_ci, summarize, win_rates


def test_win_rates_worked_example():
    run = {"a": 2.0, "b": 2.0, "c": 1.0, "d": 5.0}
    base = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 0.0}
    wr = win_rates(run, base)
    assert (wr.pairs, wr.win, wr.tie, wr.loss) == (4, 0.5, 0.25, 0.25)


def test_win_rates_tolerance_turns_small_differences_into_ties():
    wr = win_rates({"a": 1.05, "b": 0.5}, {"a": 1.0, "b": 1.0}, tolerance=0.1)
    assert (wr.win, wr.tie, wr.loss) == (0.0, 0.5, 0.5)
    assert win_rates({"x": 1.0}, {"y": 1.0}).pairs == 0


def test_bootstrap_interval_worked_example():
    # [0, 0, 3]: resampled means 0 (8/27), 1 (12/27), 2 (6/27), 3 (1/27): the 2.5th percentile is
    # inside the 0s (8/27 > 2.5%) and the 97.5th inside the 3s (26/27 < 97.5%).
    assert bootstrap_ci([0.0, 0.0, 3.0], resamples=20000, seed=0) == (0.0, 3.0)


def test_bootstrap_is_seeded_and_close_to_the_normal_interval():
    import numpy as np

    x = np.random.default_rng(1).normal(2.0, 1.0, size=400)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    lo, hi = bootstrap_ci(x, resamples=4000, seed=3)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert lo == pytest.approx(x.mean() - half, abs=0.02)
    assert hi == pytest.approx(x.mean() + half, abs=0.02)


def test_summarize():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean) == (4, 2.5)
    assert s.std == pytest.approx(math.sqrt(5 / 3))
    assert s.ci_low <= 2.5 <= s.ci_high
    one = summarize([7.0])
    assert (one.n, one.mean, one.std, one.ci_low, one.ci_high) == (1, 7.0, None, 7.0, 7.0)
    assert summarize([]).mean is None
