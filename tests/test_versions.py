"""`pad --version`, `pad env`, and the dependency floors in pyproject.toml."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from typer.testing import CliRunner

from pad.cli import app

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# The oldest release of each library with what pad uses from it (see the comment in pyproject.toml).
NEEDED = {
    "trl": ("1.16", "the fused LM head (`fused_lm_head=True` -> `.log_probs`) held-out scoring uses, "
                    "working without Triton"),
    "peft": ("0.19", "imports with transformers 5 and leaves no peft_config on a merged model"),
}


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def _requirements(optional: bool) -> list[Requirement]:
    project = _project()
    lines = list(project["dependencies"])
    if optional:
        lines += [r for extra in project.get("optional-dependencies", {}).values() for r in extra]
    return [Requirement(r) for r in lines]


def test_version_option_prints_pad_and_its_libraries():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "pad 0.1.0"
    assert re.search(r"^\s+trl\s+\d+\.\d+", r.output, re.M), r.output
    assert re.search(rf"^\s+python\s+{re.escape('.'.join(map(str, sys.version_info[:3])))}$", r.output, re.M)
    for name in ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers"):
        assert re.search(rf"^\s+{name}\s+{re.escape(metadata.version(name))}$", r.output, re.M), name
    for name in ("deepspeed", "fastapi"):  # optional: a version or "not installed"
        assert re.search(rf"^\s+{name}\s+(\d+\.\S+|not installed)$", r.output, re.M), name


def test_version_option_imports_no_library():
    code = ("import sys; from typer.testing import CliRunner; from pad.cli import app; "
            "r = CliRunner().invoke(app, ['--version']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_env_command_adds_the_accelerators():
    import torch

    r = CliRunner().invoke(app, ["env"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == "pad 0.1.0"
    assert re.search(r"^\s+trl\s+\d+\.\d+", r.output, re.M)
    assert re.search(rf"^\s+CUDA available\s+{'yes' if torch.cuda.is_available() else 'no'}$", r.output, re.M)
    assert re.search(rf"^\s+CUDA devices\s+{torch.cuda.device_count()}$", r.output, re.M)


def test_installed_versions_meet_every_floor():
    assert Version(".".join(map(str, sys.version_info[:3]))) in SpecifierSet(_project()["requires-python"])
    checked = []
    for req in _requirements(optional=True):
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            if req in _requirements(optional=False):
                pytest.fail(f"{req.name} is a dependency but is not installed")
            continue  # an extra that is not installed here
        assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} does not meet {req}"
        checked.append(req.name)
    assert {"torch", "transformers", "trl", "peft", "accelerate", "datasets"} <= set(checked)


@pytest.mark.parametrize("name", sorted(NEEDED))
def test_floor_is_at_least_the_release_with_what_pad_uses(name):
    needed, what = NEEDED[name]
    (req,) = [r for r in _requirements(optional=False) if r.name == name]
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    assert floors and min(floors) >= Version(needed), f"{req}: pad needs {name} >= {needed} for {what}"


def test_installed_trl_has_the_fused_lm_head():
    from trl.trainer.utils import add_fused_lm_head  # noqa: F401 - what the trainer's held-out scoring calls
