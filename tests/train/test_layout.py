"""The two trainers share what they share through pad.train.common; neither imports the other (issue 21, item 8:
reward.py and trainer.py imported each other, four private names one way)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAIN = Path(__file__).resolve().parents[2] / "pad" / "train"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize(("module", "other"), [("trainer", "reward"), ("reward", "trainer")])
def test_neither_trainer_imports_the_other(module, other):
    imported = imported_modules(TRAIN / f"{module}.py")
    assert f"pad.train.{other}" not in imported
    assert "pad.train.common" in imported


def test_common_imports_neither_trainer():
    imported = imported_modules(TRAIN / "common.py")
    assert not {"pad.train.trainer", "pad.train.reward", "pad.train.run"} & imported
