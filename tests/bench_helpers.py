"""Load a script of the repository (benchmarks/, train/) as a module, for the tests of its helpers (those folders
are not packages)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def load_script(path: str, alias: str):
    """The script at `path` (relative to the repository root) imported under `alias`; its folder is on sys.path
    only while it loads (the scripts of one folder import each other)."""
    script = ROOT / path
    sys.path.insert(0, str(script.parent))
    try:
        spec = importlib.util.spec_from_file_location(alias, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(script.parent))


def load_benchmark(script: str, alias: str):
    """benchmarks/`script` imported under `alias`."""
    return load_script(f"benchmarks/{script}", alias)
