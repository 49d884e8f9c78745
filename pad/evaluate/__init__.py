"""`pad eval` (method.md section 4): score decoding runs with reward models, summarize, plot."""

from pad.evaluate.config import EvalConfig
from pad.evaluate.inputs import Row, Run, load_run, load_runs
from pad.evaluate.report import Report, run_eval, score_runs, summarize_runs
from pad.evaluate.scorers import (
    ARMO_OBJECTIVES,
    PRESETS,
    Dimension,
    PersRMScorer,
    SequenceScorer,
    build_dimensions,
    persrm_dimensions,
)
from pad.evaluate.stats import bootstrap_ci, summarize, win_rates

__all__ = [
    "ARMO_OBJECTIVES", "PRESETS", "Dimension", "EvalConfig", "PersRMScorer", "Report", "Row", "Run",
    "SequenceScorer", "bootstrap_ci", "build_dimensions", "load_run", "load_runs", "persrm_dimensions",
    "run_eval", "score_runs", "summarize", "summarize_runs", "win_rates",
]  # fmt: skip
