"""`pad eval` end to end on tiny models: report files, plots, win rates, the cache, CLI errors."""

import json

import pytest
from eval_helpers import RESPONSES, write_run
from typer.testing import CliRunner

from pad.evaluate import EvalConfig, build_dimensions, run_eval

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def sweep(tmp_path):
    """A vanilla baseline and a three-weight harmless sweep over the same four prompts."""
    paths = [write_run(tmp_path / "vanilla.jsonl", "vanilla", RESPONSES)]
    for k, w in enumerate((0.5, 1.0, 1.5)):
        responses = RESPONSES[k + 1:] + RESPONSES[: k + 1]  # different text per run
        paths.append(write_run(tmp_path / f"harmless_w{w}.jsonl", f"harmless_w{w}", responses, [("harmless", w)]))
    return paths


def test_sweep_report_plots_and_win_rates(tmp_path, sweep, tiny_rm, tiny_rm2):
    out = tmp_path / "report"
    cfg = EvalConfig(runs=[str(p) for p in sweep], scorers=[f"helpful={tiny_rm}", f"humor={tiny_rm2}"],
                     baseline="vanilla", out=str(out), progress=False)  # fmt: skip
    report = run_eval(cfg)
    doc = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in doc["runs"]] == ["vanilla", "harmless_w0.5", "harmless_w1.0", "harmless_w1.5"]
    assert [r["w"] for r in doc["runs"]] == [0.0, 0.5, 1.0, 1.5]
    assert len(doc["results"]) == 8 and {d["name"] for d in doc["dimensions"]} == {"helpful", "humor"}
    for res in doc["results"]:
        assert res["n"] == 4 and res["skipped"] == 0 and res["ci_low"] <= res["mean"] <= res["ci_high"]
        if res["run"] == "vanilla":
            assert res["win"] is None
        else:
            assert res["pairs"] == 4 and res["win"] + res["tie"] + res["loss"] == pytest.approx(1.0)
    # the same responses in another order: the win rate follows from the per-row scores
    scores = report.scores
    base, run = scores["vanilla"].values["helpful"], scores["harmless_w0.5"].values["helpful"]
    wins = sum(run[i] > base[i] for i in base) / 4
    assert next(r for r in doc["results"] if r["run"] == "harmless_w0.5" and r["dimension"] == "helpful")["win"] == wins
    csv_lines = (out / "report.csv").read_text().splitlines()
    assert csv_lines[0].startswith("run,principles,w,dimension,n,mean,std,ci_low,ci_high,skipped,empty")
    assert len(csv_lines) == 9
    for png in ("reward_vs_w.png", "bars.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    assert len((out / "scores.jsonl").read_text().splitlines()) == 16


def test_growing_run_file_scores_only_new_rows(tmp_path, tiny_rm):
    run = write_run(tmp_path / "run.jsonl", "run", RESPONSES[:3])
    cfg = EvalConfig(runs=[str(run)], scorers=[f"helpful={tiny_rm}"], out=str(tmp_path / "r"), plots=False,
                     progress=False)  # fmt: skip
    dims = build_dimensions(cfg.scorers)
    first = run_eval(cfg, dims)
    assert dims[0].scorer.texts_scored == 3
    write_run(run, "run", RESPONSES)  # the decoder appended a fourth row
    dims = build_dimensions(cfg.scorers)
    second = run_eval(cfg, dims)
    assert dims[0].scorer.texts_scored == 1  # only the new row reached the model
    assert second.scores["run"].values["helpful"]["0"] == first.scores["run"].values["helpful"]["0"]
    dims = build_dimensions(cfg.scorers)
    run_eval(cfg, dims)
    assert dims[0].scorer.texts_scored == 0 and dims[0].scorer.model is None  # all cached: never loaded


def test_skipped_and_empty_rows_are_counted(tmp_path, tiny_rm):
    from eval_helpers import run_row

    rows = [run_row(0, "r", "fine"), run_row(1, "r", "", finish="skipped"), run_row(2, "r", "   "),
            run_row(3, "r", "cat " * 300)]  # fmt: skip
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = EvalConfig(runs=[str(tmp_path / "r.jsonl")], scorers=["helpful=" + str(tiny_rm)], out=str(tmp_path / "o"),
                     plots=False, progress=False)  # fmt: skip
    dims = build_dimensions(cfg.scorers)
    dims[0].scorer.max_tokens = 100  # the tiny RM's limit stands in for GPT-2's 1,024 tokens
    report = run_eval(cfg, dims)
    (res,) = report.results
    assert (res["n"], res["skipped"], res["empty"]) == (2, 2, 1)
    lines = [json.loads(x) for x in (tmp_path / "o" / "scores.jsonl").read_text().splitlines()]
    assert lines[1]["skipped"] == {"helpful": "skipped by the decoder"}
    assert lines[2]["empty"] is True and lines[2]["scores"]["helpful"] is not None
    assert lines[3]["skipped"]["helpful"].startswith("too long")


def _cli(*args):
    from pad.cli import app

    return CliRunner(env={"COLUMNS": "200"}).invoke(app, ["eval", *args])


def test_cli_runs_and_prints_a_table(tmp_path, sweep, tiny_rm):
    r = _cli(*map(str, sweep), "--scorer", f"helpful={tiny_rm}", "--baseline", "vanilla", "--out",
             str(tmp_path / "o"), "--quiet", "--bootstrap", "200")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "harmless_w1.5" in r.output and "win/tie/loss" in r.output
    assert (tmp_path / "o" / "reward_vs_w.png").is_file()


@pytest.mark.parametrize("args,message", [
    (["--scorer", "helpfull"], "unknown scorer 'helpfull': not a preset (helpful, harmless, humor, armo-helpfulness"),
    (["--scorer", "helpful=/no/such/model"], "does not exist"),
    (["--baseline", "nope", "--scorer", "x/y"], "baseline 'nope' is none of the runs"),
    ([], "give at least one --scorer"),
])  # fmt: skip
def test_cli_bad_input_is_one_line(tmp_path, sweep, args, message):
    r = _cli(str(sweep[0]), "--out", str(tmp_path / "o"), *args)
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_cli_ids_that_do_not_match_the_baseline(tmp_path, tiny_rm):
    base = write_run(tmp_path / "vanilla.jsonl", "vanilla", RESPONSES)
    short = write_run(tmp_path / "short.jsonl", "short", RESPONSES[:2])
    (tmp_path / "bad.jsonl").write_text('{"id": "0", "prompt": "p", "response": "r"}\nnot json\n')
    r = _cli(str(base), str(short), "--scorer", f"helpful={tiny_rm}", "--baseline", "vanilla")
    assert r.exit_code == 2 and "ids do not match baseline 'vanilla'" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = _cli(str(tmp_path / "bad.jsonl"), "--scorer", f"helpful={tiny_rm}")
    assert r.exit_code == 2 and "bad.jsonl:2: not valid JSON" in r.output
    r = _cli(str(tmp_path / "missing.jsonl"), "--scorer", f"helpful={tiny_rm}")
    assert r.exit_code == 2 and "missing.jsonl: no such run file" in r.output
