"""Load a script of benchmarks/ as a module, for the tests of its helpers (benchmarks/ is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(script: str, alias: str):
    """benchmarks/`script` imported under `alias`; benchmarks/ is on sys.path only while it loads (the scripts
    import each other)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(alias, BENCH / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))
