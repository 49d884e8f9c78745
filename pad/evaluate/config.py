"""`EvalConfig`: every setting of `pad eval`, documented once and checked on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pad.errors import PadError
from pad.principles import DEFAULT_TEMPLATE, check_template


class EvalConfigError(PadError, ValueError):
    """A bad `pad eval` setting; the message names the field and the value."""


@dataclass
class EvalConfig:
    runs: list[str]
    """Run files: `pad decode` JSONL files or the reference code's JSON lists."""

    scorers: list[str] = field(default_factory=list)
    """Scorer specs: a preset name (`helpful`), `preset=PATH` (the preset's rules on a local copy of its
    model), or any model by hub id or path, optionally `MODEL:SELECTOR` (a label index or name, an
    ArmoRM objective name or index, or `score`)."""

    baseline: str | None = None
    """The run the others are compared with (its name or file); its ids must match theirs."""

    out: str = "eval_report"
    """Report folder: report.json, report.csv, scores.jsonl, plots and the score cache."""

    batch_size: int = 16
    """Texts per forward pass; texts are sorted by length first so a batch pads little."""

    batch_tokens: int | None = None
    """Padded tokens per forward pass at most (texts x the longest); default: 1024 on a CPU, where larger
    batches push their activations out of the cache and score slower than small ones, no cap elsewhere."""

    device: str = "auto"
    """cpu, cuda, cuda:1, mps or auto."""

    dtype: str = "auto"
    """auto (bf16 on a GPU that has it, else fp32), fp32, fp16 or bf16."""

    persrm: str | None = None
    """A trained PersRM (adapter folder or merged checkpoint): adds its implicit reward as a dimension."""

    principles: list[str] = field(default_factory=list)
    """The principles the PersRM reward is computed under, one dimension each (`persrm:harmless`)."""

    persrm_reference: str | None = None
    """The reference model of the implicit reward; default: the PersRM's base (adapter disabled, or the
    `base_model` in its pad_config.json)."""

    reference_sees_principle: bool = False
    """Give the reference the principle prompt too (the exact DPO reward); default: the plain prompt."""

    beta: float | None = None
    """DPO beta of the implicit reward; default: `beta` in the PersRM's pad_config.json, else 0.1."""

    trust_remote_code: bool = False
    """Allow non-preset scorer models that ship their own code (the ArmoRM presets always may)."""

    bootstrap: int = 1000
    """Bootstrap resamples for the 95% interval of each mean."""

    seed: int = 0
    """Seed of the bootstrap."""

    tie_tolerance: float = 0.0
    """A run ties the baseline on a prompt when the scores differ by at most this."""

    plots: bool = True
    """Write reward_vs_w.png and bars.png."""

    cache: bool = True
    """Reuse and extend the per-scorer score cache in `out/cache/`."""

    progress: bool = True
    """Show progress bars while scoring."""

    template: str = DEFAULT_TEMPLATE
    """The principle prompt template, to strip from the prompts of reference JSON lists."""

    def __post_init__(self):
        self.runs = [str(r) for r in self.runs]
        self.scorers = [str(s) for s in self.scorers]
        if not self.runs:
            raise EvalConfigError("runs: give at least one run file")
        if not self.scorers and not self.persrm:
            raise EvalConfigError("scorers: give at least one --scorer (or --persrm with --principle)")
        if self.persrm and not self.principles:
            raise EvalConfigError("principles: --persrm needs at least one --principle to score under")
        if self.principles and not self.persrm:
            raise EvalConfigError("principles: --principle is for the PersRM reward; pass --persrm too")
        if self.batch_size < 1:
            raise EvalConfigError(f"batch_size: must be at least 1, got {self.batch_size}")
        if self.batch_tokens is not None and self.batch_tokens < 1:
            raise EvalConfigError(f"batch_tokens: must be at least 1, got {self.batch_tokens}")
        if self.bootstrap < 1:
            raise EvalConfigError(f"bootstrap: must be at least 1, got {self.bootstrap}")
        if not (math.isfinite(self.tie_tolerance) and self.tie_tolerance >= 0):
            raise EvalConfigError(f"tie_tolerance: must be a finite number >= 0, got {self.tie_tolerance}")
        if self.beta is not None and not (math.isfinite(self.beta) and self.beta > 0):
            raise EvalConfigError(f"beta: must be a positive number, got {self.beta}")
        try:
            check_template(self.template)
        except ValueError as e:
            raise EvalConfigError(f"template: {e}") from None
        if self.dtype not in ("auto", "fp32", "float32", "fp16", "float16", "bf16", "bfloat16"):
            raise EvalConfigError(f"dtype: unknown {self.dtype!r}; choose auto, fp32, fp16 or bf16")
