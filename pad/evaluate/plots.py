"""The paper's plots, drawn from report results (PNG, matplotlib's Agg canvas, no display needed).

- reward_vs_w.png: one panel per dimension; for each principle, the mean reward (with its 95%
  interval) of the runs of its sweep against their guidance weight w. A vanilla run stands for w = 0
  in every sweep that has no w = 0 run of its own.
- bars.png: one panel per dimension; one bar group per principle (colour), one bar per run, with
  the baseline's mean as a dashed line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path


def _figure(panels: int, width: float = 4.2, height: float = 3.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes


def _dimensions(results: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["dimension"] for r in results))


def _err(r: dict) -> tuple[float, float]:
    if r["ci_low"] is None:
        return 0.0, 0.0
    return max(r["mean"] - r["ci_low"], 0.0), max(r["ci_high"] - r["mean"], 0.0)


def sweeps(results: Sequence[dict], dimension: str) -> dict[str, list[dict]]:
    """Principle -> results of its runs on `dimension`, sorted by w; only sweeps of 2+ weights."""
    rows = [r for r in results if r["dimension"] == dimension and r["mean"] is not None and r["w"] is not None]
    vanilla = [r for r in rows if r["principles"] == "vanilla"]
    out = {}
    for label in dict.fromkeys(r["principles"] for r in rows if r["principles"] not in ("vanilla", "mixed")):
        points = [r for r in rows if r["principles"] == label]
        if not any(r["w"] == 0 for r in points) and vanilla:
            points = [*points, vanilla[0]]
        if len({r["w"] for r in points}) >= 2:
            out[label] = sorted(points, key=lambda r: r["w"])
    return out


def plot_reward_vs_w(results: Sequence[dict], path: str | Path) -> bool:
    """Draw reward against w; False (and no file) when no principle was run at two weights or more."""
    dims = [d for d in _dimensions(results) if sweeps(results, d)]
    if not dims:
        return False
    fig, axes = _figure(len(dims))
    for ax, dim in zip(axes, dims):
        for label, points in sweeps(results, dim).items():
            errs = list(zip(*[_err(r) for r in points]))
            ax.errorbar([r["w"] for r in points], [r["mean"] for r in points], yerr=errs, marker="o", capsize=3,
                        label=label)  # fmt: skip
        ax.set_title(dim)
        ax.set_xlabel("guidance weight w")
        ax.set_ylabel("mean reward (95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Reward against w")
    fig.savefig(path, dpi=110)
    return True


def plot_bars(results: Sequence[dict], path: str | Path, baseline: str | None = None) -> bool:
    """One bar group per principle on each dimension's panel; False when nothing was scored."""
    dims = [d for d in _dimensions(results) if any(r["dimension"] == d and r["mean"] is not None for r in results)]
    if not dims:
        return False
    labels = list(dict.fromkeys(r["principles"] for r in results))
    colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    n_runs = len({r["run"] for r in results})
    fig, axes = _figure(len(dims), width=max(4.2, 0.55 * n_runs + 1.5), height=3.8)
    for ax, dim in zip(axes, dims):
        x, ticks, seen = 0.0, [], set()
        for label in labels:
            for r in (r for r in results if r["dimension"] == dim and r["principles"] == label):
                if r["mean"] is None:
                    continue
                lo, hi = _err(r)
                ax.bar(x, r["mean"], yerr=[[lo], [hi]], capsize=3, color=colours[label],
                       label=None if label in seen else label)  # fmt: skip
                seen.add(label)
                ticks.append((x, r["run"]))
                if r["run"] == baseline:
                    ax.axhline(r["mean"], color="k", ls="--", lw=1, label=f"baseline ({baseline})")
                x += 1
            x += 0.6  # gap between principle groups
        ax.set_xticks([t for t, _ in ticks], [name for _, name in ticks], rotation=40, ha="right", fontsize="small")
        ax.set_title(dim)
        ax.set_ylabel("mean reward (95% CI)")
        ax.grid(axis="y", alpha=0.3)
    legend = {}
    for ax in axes[: len(dims)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=min(6, len(legend)),
               fontsize="small")  # fmt: skip
    fig.savefig(path, dpi=110)
    return True
