"""`pad decode` end to end: run files, resume after a kill, run configs, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from pad.cli import app
from pad.decode.io import RunWriter, helpsteer2_prompts, load_prompts

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["decode", *map(str, args)])


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"id": f"p{i}", "prompt": f"Question number {i}: tell me about topic {i * 7}."} for i in range(12)]
    rows[3]["principle"] = {"humor": 2.0}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_run_file_fields_and_export(tmp_path, tiny_llama, tiny_persrm, prompts_file):
    out = tmp_path / "run.jsonl"
    r = _run("--llm", tiny_llama, "--rm", tiny_persrm, "--prompts", prompts_file, "-p", "harmless=1.5",
             "--max-new-tokens", 6, "--batch-size", 5, "--out", out, "--export-json", tmp_path / "ref.json", "-q")
    assert r.exit_code == 0, r.output
    recs = _lines(out)
    assert [x["id"] for x in recs] == [f"p{i}" for i in range(12)]
    first = recs[0]
    assert first["principles"] == [{"name": "harmless", "weight": 1.5}]
    assert recs[3]["principles"] == [{"name": "humor", "weight": 2.0}]  # per-prompt principle wins
    assert "[Principles] harmless [Instruction] Question number 0" in first["model_input"]
    assert first["settings"]["topk"] == 10 and first["settings"]["rm"] == str(tiny_persrm)
    assert first["finish_reason"] in ("eos", "length") and 1 <= first["tokens"] <= 6
    ref = json.loads((tmp_path / "ref.json").read_text())
    assert ref[0]["response"].startswith(ref[0]["prompt"]) and ref[0]["method"] == "run"


def test_existing_output_needs_resume_or_overwrite(tmp_path, tiny_llama, tiny_persrm, prompts_file):
    out = tmp_path / "run.jsonl"
    base = ["--llm", tiny_llama, "--rm", tiny_persrm, "--prompts", prompts_file, "--max-new-tokens", 3, "--out", out, "-q"]
    assert _run(*base).exit_code == 0
    before = out.read_text()
    r = _run(*base)
    assert r.exit_code == 2 and "exists: pass --resume" in r.output and out.read_text() == before
    assert _run(*base, "--overwrite").exit_code == 0 and len(_lines(out)) == 12


def test_killed_run_resumes_each_prompt_exactly_once(tmp_path, tiny_llama, tiny_persrm, prompts_file):
    out = tmp_path / "run.jsonl"
    args = [sys.executable, "-m", "pad.cli", "decode", "--llm", str(tiny_llama), "--rm", str(tiny_persrm),
            "--prompts", str(prompts_file), "-p", "harmless", "--max-new-tokens", "64", "--batch-size", "1",
            "--out", str(out), "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = out.read_text().count("\n")
    assert 2 <= n_before < 12, "the kill should land mid-run"
    with open(out, "a") as f:  # a kill in the middle of a write leaves a torn line
        f.write('{"id": "p9", "prom')
    r = _run("--llm", tiny_llama, "--rm", tiny_persrm, "--prompts", prompts_file, "-p", "harmless",
             "--max-new-tokens", 64, "--batch-size", 1, "--out", out, "--resume", "-q")
    assert r.exit_code == 0, r.output
    ids = [x["id"] for x in _lines(out)]
    assert sorted(ids) == sorted(f"p{i}" for i in range(12)) and len(ids) == 12
    # Resumed output equals an uninterrupted run.
    full = tmp_path / "full.jsonl"
    _run("--llm", tiny_llama, "--rm", tiny_persrm, "--prompts", prompts_file, "-p", "harmless",
         "--max-new-tokens", 64, "--batch-size", 1, "--out", full, "-q")
    resp = lambda p: {x["id"]: x["response"] for x in _lines(p)}  # noqa: E731
    assert resp(out) == resp(full)


def test_reference_run_configs_write_one_file_per_line(tmp_path, tiny_llama, tiny_persrm, prompts_file):
    cfg = tmp_path / "runs.config"
    cfg.write_text('{"rm_weight": 0.0, "topk": 10, "mode": "greedy", "sample_temp": null}\n'
                   '{"rm_weight": 1.0, "topk": 5, "mode": "topk", "sample_temp": 0.7}\n')
    r = _run("--llm", tiny_llama, "--rm", tiny_persrm, "--prompts", prompts_file, "-p", "harmless",
             "--config", cfg, "--max-new-tokens", 4, "--out", tmp_path / "sweep.jsonl", "-q")
    assert r.exit_code == 0, r.output
    a, b = _lines(tmp_path / "sweep_0.jsonl"), _lines(tmp_path / "sweep_1.jsonl")
    assert a[0]["principles"][0]["weight"] == 0.0 and b[0]["principles"][0]["weight"] == 1.0
    assert b[0]["settings"]["mode"] == "sample" and b[0]["settings"]["temperature"] == 0.7
    assert b[0]["settings"]["topk"] == 5 and a[0]["settings"]["run"] == "sweep_0"


def test_yaml_recipe(tmp_path, tiny_llama, prompts_file):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"llm: {tiny_llama}\nmax_new_tokens: 3\nbatch_size: 4\n")
    r = _run("--config", recipe, "--prompt", "a", "--prompt", "b", "--out", tmp_path / "o.jsonl", "-q")
    assert r.exit_code == 0, r.output
    assert all(x["tokens"] <= 3 for x in _lines(tmp_path / "o.jsonl"))
    recipe.write_text("llm: x\nmax_tokens: 3\n")
    r = _run("--config", recipe, "--prompt", "hi")
    assert r.exit_code == 2 and "unknown field 'max_tokens'" in r.output


@pytest.mark.parametrize("content,args,message", [
    (None, [], "does not exist"),
    ("", [], "the file is empty"),
    ('{"prompt": "ok"}\nnot json\n', [], "prompts.jsonl:2: not valid JSON"),
    ('{"id": 1, "text": "no prompt here"}\n', [], "prompts.jsonl:1: no `prompt` field"),
    ('{"prompt": "a", "principle": "harmless=lots"}\n', [], "weight 'lots' is not a number"),
    ('{"prompt": "a"}\n', ["-p", "harmless=x"], "weight 'x' is not a number"),
    ('{"prompt": "a"}\n', ["--topk", "0"], "topk must be a whole number >= 1, got 0"),
    ('{"prompt": "a"}\n', ["--topk", "100000"], "topk 100000 is larger than the vocabulary"),
    ('{"prompt": "a", "id": 1}\n{"prompt": "b", "id": 1}\n', [], "id '1' repeats"),
])
def test_bad_input_one_line(tmp_path, tiny_llama, content, args, message):
    path = tmp_path / "prompts.jsonl"
    if content is not None:
        path.write_text(content)
    r = _run("--llm", tiny_llama, "--prompts", path, "--max-new-tokens", 2, "-q", *args)
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_unknown_model_path(tmp_path):
    r = _run("--llm", tmp_path / "missing-model", "--prompt", "hi")
    assert r.exit_code == 2 and "missing-model' does not exist" in r.output


def test_resume_refuses_foreign_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("not a run file\n")
    with pytest.raises(Exception, match="x.jsonl:1: not a run-file line"):
        RunWriter(path, resume=True)


def test_prompt_formats(tmp_path, shared_data):
    koala = load_prompts(shared_data / "koala_eval_50.json")
    assert len(koala) == 50 and koala[0].id == "0" and isinstance(koala[0].prompt, str)


def test_helpsteer2_selection():
    rows = [{"prompt": p} for p in ["short a", "short a", "x" * 101, "x" * 101, "short b", "short b", "c", "c"]]
    assert [r.prompt for r in helpsteer2_prompts(rows)] == ["short a", "short b", "c"]


def test_persrm_can_advise_hiding_principles_from_the_base(tmp_path, tiny_llama, tiny_persrm, prompts_file):
    """A PersRM whose pad_config.json says decode.base_sees_principles: false keeps the principle prompt away
    from the base unless the command line says otherwise."""
    import shutil

    rm = tmp_path / "rm"
    shutil.copytree(tiny_persrm, rm)
    (rm / "pad_config.json").write_text(json.dumps({"kind": "merged", "decode": {"base_sees_principles": False}}))
    common = ["--llm", tiny_llama, "--rm", rm, "--prompts", prompts_file, "--limit", 2, "-p", "humor",
              "--max-new-tokens", 2, "-q"]
    assert _run(*common, "--out", tmp_path / "advised.jsonl").exit_code == 0
    assert _run(*common, "--base-principles", "--out", tmp_path / "told.jsonl").exit_code == 0
    advised, told = _lines(tmp_path / "advised.jsonl")[0], _lines(tmp_path / "told.jsonl")[0]
    assert advised["settings"]["base_sees_principles"] is False
    assert told["settings"]["base_sees_principles"] is True
    assert "[Principles]" not in advised["model_input"] and "Question number 0" in advised["model_input"]
    assert "[Principles] humor [Instruction] Question number 0" in told["model_input"]
