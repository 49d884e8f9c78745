"""Summary statistics of scores: mean, spread, a bootstrap interval, and win rates against a baseline."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass


@dataclass
class Summary:
    n: int
    mean: float | None
    std: float | None  # sample standard deviation (n - 1); None below two values
    ci_low: float | None
    ci_high: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float] | tuple[None, None]:
    """Percentile bootstrap interval of the mean: resample the values with replacement `resamples`
    times and take the (1-c)/2 and (1+c)/2 percentiles of the resampled means.

    Worked example: values [0, 0, 3] have 27 equally likely resamples whose means are 0 (8 of them),
    1 (12), 2 (6) and 3 (1); 2.5% of the mass lies inside the 0s and 97.5% inside the 3s, so with
    enough resamples the 95% interval is (0, 3).
    """
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None, None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)  # (resamples,)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def summarize(values: Sequence[float], resamples: int = 1000, seed: int = 0) -> Summary:
    n = len(values)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    lo, hi = bootstrap_ci(values, resamples, seed=seed)
    return Summary(n, mean, std, lo, hi)


@dataclass
class WinRate:
    pairs: int  # prompts scored in both runs
    win: float | None
    tie: float | None
    loss: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def win_rates(scores: Mapping[str, float], baseline: Mapping[str, float], tolerance: float = 0.0) -> WinRate:
    """Share of prompts (matched by id, scored in both) where the run beats, ties or loses to the
    baseline; a tie is a difference of at most `tolerance`.

    Worked example: run {a: 2, b: 2, c: 1, d: 5} against baseline {a: 1, b: 2, c: 3, d: 4, e: 0} pairs
    a, b, c, d (e is not in the run): wins a and d, ties b, loses c -> win 0.5, tie 0.25, loss 0.25.
    """
    common = [k for k in scores if k in baseline]
    if not common:
        return WinRate(0, None, None, None)
    win = tie = loss = 0
    for k in common:
        d = scores[k] - baseline[k]
        if abs(d) <= tolerance:
            tie += 1
        elif d > 0:
            win += 1
        else:
            loss += 1
    n = len(common)
    return WinRate(n, win / n, tie / n, loss / n)
