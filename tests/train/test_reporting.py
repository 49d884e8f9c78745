"""Experiment trackers (`report_to`) are checked before any work, and the recipes' trackers can be installed
through an extra (issue 21, item 2: the paper recipe died after loading data and model, in a long traceback)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import yaml
from typer.testing import CliRunner

from pad.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_missing_tracker_is_one_line_before_any_work(tmp_path, tiny_llama, opposite_jsonl, monkeypatch):
    import pad.train.pairs

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "tensorboardX", None)

    def no_work(*args, **kwargs):
        raise AssertionError("the data was built before the tracker was checked")

    monkeypatch.setattr(pad.train.pairs, "load_rows", no_work)
    data = opposite_jsonl(tmp_path / "d.jsonl", 4)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"base_model: {tiny_llama}\nsources: [{{kind: jsonl, path: {data}}}]\nreport_to: tensorboard\n")
    r = CliRunner().invoke(app, ["train", "--config", str(recipe), "--output_dir", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [
        "error: report_to: tensorboard needs the tensorboard package, which is not installed: "
        "pip install 'pad-align[tensorboard]' (or set report_to: none)"]
    assert not (tmp_path / "o").exists()


def test_every_recipe_tracker_is_in_an_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    packages = {name: {req.split(">")[0].split("=")[0].split("[")[0].strip() for req in reqs}
                for name, reqs in extras.items()}
    for path in sorted((ROOT / "recipes").glob("**/train/*.yaml")):
        report_to = yaml.safe_load(path.read_text()).get("report_to", "none")
        for tracker in [report_to] if isinstance(report_to, str) else report_to:
            if tracker in ("none", "all"):
                continue
            assert tracker in packages.get(tracker, set()), f"{path.name}: no extra {tracker!r} installs {tracker}"
            assert "# " in path.read_text() and "pad-align[" in path.read_text(), f"{path.name}: say what to install"
    assert {"deepspeed", "tensorboard"} <= packages["paper"]
