"""Every recipe in recipes/ loads into its stage's config dataclass with no unknown keys.

recipes/<model>/<stage>/config_*.yaml; the stage folder names the dataclass. A stage whose config
class does not exist yet is skipped, not failed.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
import yaml

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
STAGES = {
    "train": ("pad.train.config", "TrainConfig"),
    "decode": ("pad.decode.config", "DecodeConfig"),
    "eval": ("pad.evaluate.config", "EvalConfig"),
}


def recipe_files() -> list[Path]:
    return sorted(RECIPES.glob("**/*.yaml")) + sorted(RECIPES.glob("**/*.yml"))


def config_class(stage: str):
    module, name = STAGES[stage]
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def test_there_are_train_recipes():
    assert any(p.parent.name == "train" for p in recipe_files())


@pytest.mark.parametrize("path", recipe_files(), ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_loads_with_no_unknown_keys(path: Path):
    stage = path.parent.name
    assert stage in STAGES, f"{path}: recipes live in recipes/<model>/<stage>/ with stage one of {sorted(STAGES)}"
    cls = config_class(stage)
    if cls is None:
        pytest.skip(f"{STAGES[stage][1]} does not exist yet")
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: a recipe is a mapping of field: value"
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    assert not unknown, f"{path}: unknown keys {sorted(unknown)}"
    if stage == "train":
        from pad.train.config import SourceConfig, load_train_config

        cfg = load_train_config(path)
        for i, item in enumerate(data.get("sources") or []):
            extra = set(item) - {f.name for f in dataclasses.fields(SourceConfig)}
            assert not extra, f"{path}: sources[{i}] unknown keys {sorted(extra)}"
        assert cfg.sources, f"{path}: a training recipe needs sources"
    else:
        cls(**data)  # validation in __post_init__ raises on bad values
