"""`pad eval` end to end: load runs, score them through the cache, summarize, write the report.

Outputs in the report folder:
- report.json: settings, runs (principles, w), dimensions, and one result per run and dimension
  (n, mean, std, 95% bootstrap interval, skipped, empty, and win/tie/loss against the baseline);
- report.csv: the results, one line each;
- scores.jsonl: every row's score on every dimension, with skip reasons and the empty flag;
- reward_vs_w.png and bars.png (see `pad.evaluate.plots`);
- cache/: the score cache, one JSONL file per scorer.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pad.errors import PadError
from pad.evaluate.cache import ScoreCache
from pad.evaluate.config import EvalConfig
from pad.evaluate.inputs import Run, check_matches_baseline, find_run, load_runs
from pad.evaluate.length import LengthFit, add_length_control
from pad.evaluate.scorers import Dimension, Scorer, default_batch_tokens
from pad.evaluate.stats import summarize, win_rates
from pad.parallel import World

RESULT_FIELDS = ["run", "principles", "w", "dimension", "n", "mean", "std", "ci_low", "ci_high", "skipped", "empty",
                 "pairs", "win", "tie", "loss", "words", "lc_mean", "lc_ci_low", "lc_ci_high", "lc_win", "lc_tie",
                 "lc_loss"]  # fmt: skip


@dataclass
class Scores:
    """One run's scores: per dimension, id -> value for scored rows and id -> reason for skipped ones."""

    values: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Report:
    runs: list[Run]
    dimensions: list[Dimension]
    scores: dict[str, Scores]  # by run name
    results: list[dict]
    baseline: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    length_fits: dict[str, LengthFit | None] = field(default_factory=dict)  # by dimension (pad.evaluate.length)


def score_runs(runs: Sequence[Run], dimensions: Sequence[Dimension], cache_dir: str | Path | None = None,
               batch_size: int = 16, progress: bool = False, batch_tokens: int | None = None,
               world: World | None = None) -> dict[str, Scores]:
    """Score every row of every run on every dimension; only texts missing from the cache reach a model.

    Rows the decoder skipped are counted as skipped and never scored; identical texts (the same
    response in two runs) are scored once. A forward pass holds at most `batch_size` texts and
    `batch_tokens` padded tokens. Under several processes (`world`) each scores its share of the batches
    into its own part of the cache, and every process then reads all of them.
    """
    world = world or World()
    parallel = world.size > 1
    if parallel and cache_dir is None:
        raise PadError(f"{world.size} processes share their scores through the cache: drop --no-cache")
    out = {r.name: Scores() for r in runs}
    todo = [(run, row) for run in runs for row in run.rows if not row.decode_skipped]
    for scorer in dict.fromkeys(d.scorer for d in dimensions):  # each model once, in the order first asked
        items = scorer.prepare([row for _, row in todo])
        cache = ScoreCache(cache_dir, scorer.identity, scorer.label, part=world.rank if parallel else None)
        keys = [cache.key(it.text) for it in items]
        pending = _uncached(items, keys, cache, world)
        _score_into(cache, scorer, items, keys, pending, batch_size, batch_tokens, world, progress)
        if parallel:
            cache = _gathered_cache(cache_dir, scorer, world)
        _read_scores(out, todo, keys, cache, [d for d in dimensions if d.scorer is scorer])
    _mark_decoder_skips(out, runs, dimensions)
    return out


def _uncached(items: list, keys: list[str], cache: ScoreCache, world: World) -> list[int]:
    """Indices of the texts to score: each uncached text once. A text the scorer cannot read is cached with
    its reason (by the first process only) instead."""
    pending: dict[str, int] = {}
    for i, (key, it) in enumerate(zip(keys, items)):
        if cache.get(key) is None and key not in pending:
            if it.skip is not None:
                if world.main:
                    cache.put({key: it.skip})
            else:
                pending[key] = i
    return list(pending.values())


def _score_into(cache: ScoreCache, scorer: Scorer, items: list, keys: list[str], order: list[int], batch_size: int,
                batch_tokens: int | None, world: World, progress: bool) -> None:
    """Score the texts at `order` in batches (this process's share of them) and cache each vector."""
    if not order:
        return
    from tqdm.auto import tqdm

    parallel = world.size > 1
    bar = tqdm(total=len(order), desc=f"scoring {scorer.label}", unit="text",
               disable=not (progress and world.main), leave=False)  # fmt: skip
    for idx, vectors in scorer.score([items[i] for i in order], batch_size, batch_tokens, world if parallel else None):
        cache.put({keys[order[j]]: v for j, v in zip(idx, vectors)})
        bar.update(len(idx) * world.size)  # the others score as much meanwhile
    bar.close()


def _gathered_cache(cache_dir: str | Path, scorer: Scorer, world: World) -> ScoreCache:
    """Every process's part of the cache, read by all; the first then folds the parts into one."""
    world.barrier()  # every share is in its part of the cache
    cache = ScoreCache(cache_dir, scorer.identity, scorer.label)
    world.barrier()  # all have read the parts
    if world.main:
        cache.fold()
    return cache


def _read_scores(out: dict[str, Scores], todo: list, keys: list[str], cache: ScoreCache,
                 dims: Sequence[Dimension]) -> None:
    """Each row's value per dimension, or the reason it has none, from the cache."""
    for (run, row), key in zip(todo, keys):
        got = cache.get(key)
        for d in dims:
            if isinstance(got, str):
                out[run.name].skipped.setdefault(d.name, {})[row.id] = got
            else:
                out[run.name].values.setdefault(d.name, {})[row.id] = got[d.index]


def _mark_decoder_skips(out: dict[str, Scores], runs: Sequence[Run], dimensions: Sequence[Dimension]) -> None:
    for run in runs:
        for row in run.rows:
            if row.decode_skipped:
                for d in dimensions:
                    out[run.name].skipped.setdefault(d.name, {})[row.id] = "skipped by the decoder"


def summarize_runs(runs: Sequence[Run], dimensions: Sequence[Dimension], scores: dict[str, Scores],
                   baseline: Run | None = None, resamples: int = 1000, seed: int = 0,
                   tie_tolerance: float = 0.0) -> list[dict]:
    """One result per run and dimension, in run order then dimension order."""
    results = []
    for run in runs:
        empty = {r.id for r in run.rows if not r.decode_skipped and not r.response.strip()}
        for d in dimensions:
            values = scores[run.name].values.get(d.name, {})
            s = summarize([values[r.id] for r in run.rows if r.id in values], resamples, seed)
            res = {"run": run.name, "principles": run.label, "w": run.w, "dimension": d.name, **s.as_dict(),
                   "skipped": len(scores[run.name].skipped.get(d.name, {})), "empty": len(empty & values.keys())}
            if baseline is not None and run is not baseline:
                wr = win_rates(values, scores[baseline.name].values.get(d.name, {}), tie_tolerance)
                res.update(wr.as_dict())
            else:
                res.update({"pairs": None, "win": None, "tie": None, "loss": None})
            results.append(res)
    return results


def run_eval(config: EvalConfig, dimensions: Sequence[Dimension] | None = None, world: World | None = None) -> Report:
    """Everything `pad eval` does; `dimensions` replaces the ones the config names (tests, notebooks).

    Under `accelerate launch` (world: found from the environment by default) the processes split the texts
    and the first writes the report."""
    from pad.models import resolve_device, resolve_dtype
    from pad.parallel import current_world

    world = world or current_world()

    runs = load_runs(config.runs, config.template)
    baseline = find_run(runs, config.baseline) if config.baseline else None
    if baseline is not None:
        for run in runs:
            check_matches_baseline(run, baseline)
    device = world.device(resolve_device(config.device))
    if dimensions is None:
        from pad.evaluate.scorers import build_dimensions, persrm_dimensions

        dtype = resolve_dtype(config.dtype, device)
        dimensions = build_dimensions(config.scorers, device, dtype, config.trust_remote_code)
        if config.persrm:
            dimensions += persrm_dimensions(config.persrm, config.principles, config.persrm_reference, config.beta,
                                            config.reference_sees_principle, device, dtype)  # fmt: skip
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    batch_tokens = config.batch_tokens or default_batch_tokens(device)
    scores = score_runs(runs, dimensions, out / "cache" if config.cache else None, config.batch_size, config.progress,
                        batch_tokens, world)  # fmt: skip
    results = summarize_runs(runs, dimensions, scores, baseline, config.bootstrap, config.seed, config.tie_tolerance)
    fits = add_length_control(results, runs, dimensions, scores, baseline, config.bootstrap, config.seed,
                              config.tie_tolerance)
    report = Report(runs, list(dimensions), scores, results, baseline.name if baseline else None, length_fits=fits)
    if world.main:
        write_report(report, config, out)
    return report


def write_report(report: Report, config: EvalConfig, out: Path) -> None:
    doc = {
        "settings": asdict(config),
        "baseline": report.baseline,
        "runs": [{"name": r.name, "file": str(r.path), "principles": r.principles, "w": r.w, "rows": len(r.rows),
                  "skipped_by_decoder": sum(x.decode_skipped for x in r.rows)} for r in report.runs],
        "dimensions": [{"name": d.name, "scorer": d.scorer.label, "output": d.output,
                        "identity": json.loads(d.scorer.identity)} for d in report.dimensions],
        "results": report.results,
        "length_fits": {name: None if fit is None else fit.as_dict() for name, fit in report.length_fits.items()},
    }  # fmt: skip
    (out / "report.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    with (out / "report.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
        w.writeheader()
        for res in report.results:
            w.writerow({k: ("" if res.get(k) is None else res[k]) for k in RESULT_FIELDS})
    with (out / "scores.jsonl").open("w", encoding="utf-8") as f:
        for run in report.runs:
            s = report.scores[run.name]
            for row in run.rows:
                line = {"run": run.name, "id": row.id,
                        "scores": {d.name: s.values.get(d.name, {}).get(row.id) for d in report.dimensions},
                        "skipped": {d.name: s.skipped[d.name][row.id] for d in report.dimensions
                                    if row.id in s.skipped.get(d.name, {})},
                        "empty": not row.decode_skipped and not row.response.strip()}  # fmt: skip
                f.write(json.dumps(line) + "\n")
    report.files = {"json": str(out / "report.json"), "csv": str(out / "report.csv"),
                    "scores": str(out / "scores.jsonl")}  # fmt: skip
    if config.plots:
        from pad.evaluate.plots import plot_bars, plot_reward_vs_w

        if plot_reward_vs_w(report.results, out / "reward_vs_w.png"):
            report.files["reward_vs_w"] = str(out / "reward_vs_w.png")
        if plot_bars(report.results, out / "bars.png", report.baseline):
            report.files["bars"] = str(out / "bars.png")


def results_table(report: Report):
    """A rich Table of the results, one section per run, for the terminal."""
    from rich.table import Table

    title = "pad eval" + (f" (baseline: {report.baseline})" if report.baseline else "")
    table = Table(title=title, caption="mean and 95% bootstrap interval; skip = not scored (too long or not "
                  "decoded); empty = empty responses, scored; words = mean answer length; LC = length-controlled "
                  "(the score less what a least-squares line on words over all runs predicts, at the mean length; all "
                  "four in report.json and report.csv)",
                  caption_justify="left")  # fmt: skip
    for col, just in [("run", "left"), ("w", "right"), ("dimension", "left"), ("n", "right"), ("mean", "right"),
                      ("95% CI", "left"), ("std", "right"), ("skip", "right"), ("empty", "right"),
                      ("words", "right"), ("LC mean", "right")]:  # fmt: skip
        table.add_column(col, justify=just)
    if report.baseline:
        table.add_column("win/tie/loss", justify="right")
        table.add_column("LC win", justify="right")
    num = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    pct = lambda v: f"{100 * v:.0f}"  # noqa: E731
    by_run = {}
    for r in report.results:
        by_run.setdefault(r["run"], []).append(r)
    for results in by_run.values():
        for k, r in enumerate(results):
            first = k == 0
            run = r["run"] if first else f"[dim]{r['principles']}[/dim]" if k == 1 else ""
            if first and len(results) == 1:
                run += f" [dim]({r['principles']})[/dim]"
            w = ("?" if r["w"] is None else f"{r['w']:g}") if first else ""
            ci = "-" if r["ci_low"] is None else f"{num(r['ci_low'])} .. {num(r['ci_high'])}"
            cells = [run, w, r["dimension"], str(r["n"]), num(r["mean"]), ci, num(r["std"]), str(r["skipped"]),
                     str(r["empty"]), num(r.get("words")), num(r.get("lc_mean"))]  # fmt: skip
            if report.baseline:
                wins = "-" if r["win"] is None else f"{pct(r['win'])}/{pct(r['tie'])}/{pct(r['loss'])}%"
                lc_win = "-" if r.get("lc_win") is None else f"{pct(r['lc_win'])}%"
                cells += ["baseline", ""] if r["run"] == report.baseline else [wins, lc_win]
            table.add_row(*cells, end_section=k == len(results) - 1)
    return table
