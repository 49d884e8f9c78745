"""`pad eval` in two CPU processes (accelerate launch, gloo) gives the report one process gives."""

from __future__ import annotations

import json

from eval_helpers import RESPONSES, write_run
from parallel_helpers import LAUNCH, run
from typer.testing import CliRunner

from pad.cli import app
from pad.evaluate import EvalConfig, build_dimensions, run_eval


def test_two_processes_score_what_one_does(tmp_path, tiny_rm, tiny_rm2):
    base = write_run(tmp_path / "vanilla.jsonl", "vanilla", RESPONSES * 5)
    other = write_run(tmp_path / "pad.jsonl", "pad", [r + " Indeed." for r in RESPONSES * 5], [("harmless", 1.0)])
    args = ["eval", str(base), str(other), "--scorer", f"helpful={tiny_rm}", "--scorer", f"humor={tiny_rm2}",
            "--baseline", "vanilla", "--batch-size", "3", "--no-plots", "--quiet", "--bootstrap", "200"]
    one = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    run([*LAUNCH, *args, "--out", str(tmp_path / "two")])
    results = [json.loads((tmp_path / d / "report.json").read_text())["results"] for d in ("one", "two")]
    assert results[0] == results[1]
    assert (tmp_path / "one" / "scores.jsonl").read_text() == (tmp_path / "two" / "scores.jsonl").read_text()
    cache = sorted(p.name for p in (tmp_path / "two" / "cache").iterdir())
    assert len(cache) == 2 and not any(".part-" in c for c in cache)  # the parts were folded into one file each
    cfg = EvalConfig(runs=[str(base), str(other)], scorers=[f"helpful={tiny_rm}", f"humor={tiny_rm2}"],
                     out=str(tmp_path / "two"), plots=False, progress=False)
    dims = build_dimensions(cfg.scorers)
    run_eval(cfg, dims)
    assert all(d.scorer.texts_scored == 0 for d in dims)  # every text the two processes scored is in the cache
