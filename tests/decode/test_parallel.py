"""`pad decode` in two CPU processes (accelerate launch, gloo) writes what one process writes.

Each test starts real processes through accelerate's launcher (about 15 s each on two cores)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from parallel_helpers import ENV, LAUNCH, ROOT, alive, descendants, kill_tree, run
from typer.testing import CliRunner

from pad.cli import app


def prompts(path: Path, n: int) -> Path:
    topics = ["cats", "bread", "the moon", "trains", "tea", "rain", "chess", "bees"]
    rows = []
    for i in range(n):
        row = {"id": f"p{i}", "prompt": f"Tell me about {topics[i % len(topics)]}." + " Explain more." * (i % 3)}
        if i % 4 == 1:
            row["principle"] = ["humor=1.5", "concise=0.5"]
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path



def lines_without_timing(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        rec.pop("seconds")
        out.append(rec)
    return out



def test_two_processes_decode_what_one_does_greedy_and_sampled(tmp_path, tiny_llama, tiny_lora):
    data = prompts(tmp_path / "prompts.jsonl", 14)
    runs = tmp_path / "runs.config"
    runs.write_text('{"rm_weight": 1.0, "mode": "greedy"}\n{"rm_weight": 0.5, "mode": "topk", "sample_temp": 1.3}\n')
    common = ["--llm", str(tiny_llama), "--rm", str(tiny_lora), "--prompts", str(data), "-p", "harmless",
              "--config", str(runs), "--max-new-tokens", "12", "--batch-size", "3", "--quiet"]
    one = CliRunner().invoke(app, ["decode", *common, "--out", str(tmp_path / "one" / "run.jsonl")])
    assert one.exit_code == 0, one.output
    two = run([sys.executable, "-m", "pad.cli", "decode", *common, "--out", str(tmp_path / "two" / "run.jsonl"),
               "--num-processes", "2"])
    assert "14 written" in two.stdout and two.stdout.count("written") == 2  # the first process reports
    for k in (0, 1):
        a, b = tmp_path / "one" / f"run_{k}.jsonl", tmp_path / "two" / f"run_{k}.jsonl"
        assert lines_without_timing(a) == lines_without_timing(b)
        assert not (tmp_path / "two" / f"run_{k}.jsonl.parts").exists()
    sampled = lines_without_timing(tmp_path / "two" / "run_1.jsonl")
    assert sampled[0]["settings"]["mode"] == "sample" and sampled[0]["settings"]["seed"] == 0



def test_two_processes_killed_midway_resume_each_prompt_once(tmp_path, tiny_llama, tiny_lora):
    n = 120
    data = prompts(tmp_path / "prompts.jsonl", n)
    out = tmp_path / "run.jsonl"
    cmd = [*LAUNCH, "decode", "--llm", str(tiny_llama), "--rm", str(tiny_lora), "--prompts", str(data),
           "-p", "harmless", "--max-new-tokens", "40", "--batch-size", "1", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parts = out.with_name(out.name + ".parts")
    try:
        for _ in range(1200):  # until both processes have written some rows, at most 120 s
            written = [len(p.read_text().splitlines()) for p in parts.glob("part-*.jsonl")] if parts.is_dir() else []
            if len(written) == 2 and min(written) >= 3:
                break
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.1)
        else:
            pytest.fail("the two processes wrote nothing in 120 s")
        workers = descendants(proc.pid)
        kill_tree(proc)  # both processes and the launcher, mid-run
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    for _ in range(100):  # the workers are gone
        if not any(alive(w) for w in workers):
            break
        time.sleep(0.1)
    assert not out.exists()  # nothing merged: the parts hold what was done
    done_before = sum(len(p.read_text().splitlines()) for p in parts.glob("part-*.jsonl"))
    assert 6 <= done_before < n
    r = run([*LAUNCH, "decode", *cmd[len(LAUNCH) + 1:], "--resume"])
    assert f"{n - done_before} written, {done_before} already there" in r.stdout, r.stdout
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [f"p{i}" for i in range(n)]  # every prompt exactly once, in input order
    assert not parts.exists()
