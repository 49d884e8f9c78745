"""`TrainConfig`: every setting of a `pad train` run. YAML recipe keys are exactly its field names."""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pad.errors import PadError
from pad.files import read_yaml_mapping
from pad.models import DEFAULT_BASE
from pad.principles import DEFAULT_TEMPLATE, check_template
from pad.train.pairs import SourceConfig

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down",
              "sigmoid_norm", "sft")
DTYPES = ("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16")


@dataclass
class TrainConfig:
    """Settings of one PersRM training run (DPO + LoRA, method.md section 2)."""

    # -- model and data
    kind: str = "persrm"
    """What is trained: 'persrm' (DPO, the principle-conditioned PersRM) or 'reward-model' (a Bradley-Terry
    sequence classifier with TRL's RewardTrainer, for ARGS and pad eval; the DPO settings do not apply)."""
    base_model: str = DEFAULT_BASE
    """Model the LoRA is trained on: hub id or checkpoint folder."""
    output_dir: str = "runs/persrm"
    """Where the adapter, tokenizer, pad_config.json and checkpoints go."""
    sources: list[SourceConfig] = field(default_factory=list)
    """Data mixture: each item {kind, path, principles: {principle: label}, limit, split, data_dir, name}."""
    cross_principle_pairs: bool | list[str] = False
    """Add cross-principle pairs: where a prompt has answer a chosen under P and b under Q, (P: a over b) and
    (Q: b over a), on each side of the held-out split (pad.train.contrastive). true: cross every principle the
    sources' own pairs teach (opposites left out); a list: only these (it may name a source's opposite)."""
    cross_principle_limit: int | None = None
    """Train on at most this many cross-principle couples per two principles (a seeded sample); None: all."""
    template: str = DEFAULT_TEMPLATE
    """Principle prompt template with {principles} and {prompt} (method.md section 1)."""
    eval_size: float = 0.1
    """Held-out pairs, grouped by prompt: a fraction when below 1, else a number of pairs; 0: none."""
    eval_limit: int | dict[str, int | None] | None = None
    """Measure on a seeded sample of at most this many held-out pairs per pair kind (source, opposite, cross)
    and principle, not all of them: a cheaper evaluation that leaves the split where eval_size put it, so a later stage keeps
    an earlier stage's held-out prompts. None: every held-out pair. A mapping gives principles their own limit
    ("*": every principle not named; null: all its pairs), e.g. {harmless: null, "*": 30}."""
    max_length: int = 512
    """Most tokens of prompt + response; longer responses are cut at the end."""
    max_prompt_length: int | None = None
    """Most prompt tokens: earlier turns are dropped to fit, then the pair; None: 3/4 of max_length."""
    # -- LoRA
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] | str = "all-linear"
    """Modules that get a LoRA: a list of names (q_proj, v_proj, ...) or 'all-linear'."""
    init_adapter: str | None = None
    """Continue training this LoRA adapter (a folder `pad train` wrote) instead of a fresh one: a second
    stage. TRL then measures the DPO reference against a frozen copy of it; the lora_* settings are its own."""
    eval_only: bool = False
    """Train nothing: measure init_adapter's held-out accuracy (against the base) and write it to output_dir."""
    # -- DPO
    beta: float = 0.1
    """DPO temperature: the implicit reward is beta * (log pi - log pi_ref)."""
    loss_type: str | list[str] = "sigmoid"
    """DPO loss variant (TRL loss_type): sigmoid is the original DPO loss. A list adds losses up, e.g.
    [sigmoid, sft]: DPO plus the chosen answers' negative log-likelihood (RPO), which keeps the PersRM's own
    generation on the chosen side instead of only pushing the rejected answers down."""
    loss_weights: list[float] | None = None
    """Weight of each loss in a loss_type list (default: 1 each)."""
    precompute_ref_log_probs: bool = True
    """Compute the reference log-probs once before training instead of in every step, where that saves work:
    only when the run reads a training pair more than once (more than one epoch). Held-out pairs never are:
    the held-out evaluation reuses the base's log-probs it computed the first time."""
    # -- optimisation
    learning_rate: float = 5e-5
    """Peak learning rate."""
    lr_scheduler_type: str = "cosine"
    """Learning-rate schedule (transformers names: linear, cosine, constant, ...)."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming up the learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    num_train_epochs: float = 1.0
    """Passes over the training pairs (ignored when max_steps > 0)."""
    max_steps: int = -1
    """Optimizer steps; -1: use num_train_epochs."""
    per_device_train_batch_size: int = 4
    """Pairs per process per forward."""
    per_device_eval_batch_size: int = 8
    """Pairs per process per evaluation forward."""
    gradient_accumulation_steps: int = 1
    """Forwards per optimizer step; the effective batch is this x batch size x processes."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""
    dtype: str = "auto"
    """Weights and compute: auto (bf16 on a GPU that has it, fp32 on CPU), fp32, bf16, fp16."""
    seed: int = 42
    """Seed of the data split, the LoRA initialisation and the data order."""
    # -- bookkeeping
    eval_steps: int = 50
    """Evaluate held-out preference accuracy and reward margin per principle every N steps; 0: only at the end."""
    logging_steps: int = 10
    """Log the training loss and rewards every N steps."""
    save_steps: int = 100
    """Save a resumable checkpoint every N steps; 0: none."""
    save_total_limit: int | None = 2
    """Checkpoints kept (the oldest are removed)."""
    resume: bool | str = False
    """Continue from the newest checkpoint in output_dir (true) or from this checkpoint folder."""
    overwrite: bool = False
    """Allow an output_dir that already holds a finished or started run."""
    decode_base_sees_principles: bool | None = None
    """Recorded in pad_config.json for `pad decode`: whether the base model should read the principle prompt
    too when this PersRM guides it (None: no advice, decode follows the reference and shows it). Small bases
    such as SmolLM2-135M answer the template itself ("The instructions are to..."), so their recipes say false."""
    report_to: list[str] | str = "none"
    """Experiment trackers (transformers names: tensorboard, wandb, ...) or none."""
    dpo_args: dict[str, Any] = field(default_factory=dict)
    """Further trl.DPOConfig fields passed as they are (e.g. {dataloader_num_workers: 2})."""

    def __post_init__(self):
        self.sources = [s if isinstance(s, SourceConfig) else _source(s, i) for i, s in enumerate(self.sources or [])]
        try:
            check_template(self.template)
        except ValueError as e:
            raise PadError(str(e)) from None
        if self.kind not in ("persrm", "reward-model"):
            raise PadError(f"kind {self.kind!r} is not one of persrm, reward-model")
        for name in ("max_length", "lora_r", "lora_alpha", "per_device_train_batch_size",
                     "per_device_eval_batch_size", "gradient_accumulation_steps", "logging_steps"):
            _require(self, name, lambda v: _is_int(v) and v >= 1, "a whole number >= 1")
        for name in ("eval_steps", "save_steps"):
            _require(self, name, lambda v: _is_int(v) and v >= 0, "a whole number >= 0")
        _require(self, "max_steps", lambda v: _is_int(v) and (v == -1 or v >= 1), "-1 or a whole number >= 1")
        _require(self, "max_prompt_length",
                 lambda v: v is None or (_is_int(v) and 1 <= v < self.max_length), f"None or 1..{self.max_length - 1}")
        _require(self, "eval_limit", lambda v: v is None or (_is_int(v) and v >= 1) or (
            isinstance(v, dict) and v and all(isinstance(k, str) and (n is None or (_is_int(n) and n >= 1))
                                              for k, n in v.items())),
                 "None, a whole number >= 1, or a mapping of principles ('*': the others) to such numbers or null")
        _require(self, "save_total_limit", lambda v: v is None or (_is_int(v) and v >= 1), "None or >= 1")
        for name in ("beta", "learning_rate", "num_train_epochs"):
            _require(self, name, lambda v: _is_num(v) and v > 0, "a number > 0")
        for name in ("weight_decay", "max_grad_norm", "eval_size"):
            _require(self, name, lambda v: _is_num(v) and v >= 0, "a number >= 0")
        _require(self, "lora_dropout", lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)")
        _require(self, "warmup_ratio", lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)")
        _require(self, "seed", _is_int, "a whole number")
        _require(self, "loss_type", lambda v: v in LOSS_TYPES or (isinstance(v, list) and v and all(x in LOSS_TYPES for x in v)),
                 f"one of {', '.join(LOSS_TYPES)}, or a list of them")
        _require(self, "loss_weights", lambda v: v is None or (isinstance(v, list) and len(v) == len(self.loss_types)
                                                              and all(_is_num(x) and x >= 0 for x in v)),
                 "null or one number >= 0 per loss_type")
        _require(self, "dtype", lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}")
        _require(self, "lora_target_modules",
                 lambda v: (isinstance(v, str) and v) or (isinstance(v, list) and v and all(isinstance(m, str) for m in v)),
                 "'all-linear' or a list of module names")
        _require(self, "resume", lambda v: isinstance(v, bool) or (isinstance(v, str) and v), "true, false or a folder")
        _require(self, "decode_base_sees_principles", lambda v: v is None or isinstance(v, bool), "true, false or null")
        _check_contrastive(self)
        if self.eval_only and not self.init_adapter:
            raise PadError("eval_only needs init_adapter: the adapter folder to measure")
        _require(self, "dpo_args", lambda v: isinstance(v, dict), "a mapping of trl.DPOConfig fields")
        if not self.output_dir or not isinstance(self.output_dir, str):
            raise PadError(f"output_dir must be a folder, got {self.output_dir!r}")

    @property
    def loss_types(self) -> list[str]:
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)

    @property
    def prompt_budget(self) -> int:
        return self.max_prompt_length or self.max_length * 3 // 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_contrastive(cfg: TrainConfig) -> None:
    from pad.train.contrastive import CROSS_SOURCE, OPPOSITE_SUFFIX

    _require(cfg, "cross_principle_pairs", lambda v: isinstance(v, bool) or (
        isinstance(v, list) and len(set(v)) >= 2 and all(isinstance(p, str) and p.strip() for p in v)),
        "true, false or a list of two or more principle names")
    _require(cfg, "cross_principle_limit", lambda v: v is None or (_is_int(v) and v >= 1), "None or a whole number >= 1")
    if cfg.kind != "persrm" and (cfg.cross_principle_pairs or any(s.opposites for s in cfg.sources)):
        raise PadError(f"cross_principle_pairs and source opposites apply to kind persrm, not {cfg.kind!r}")
    for s in cfg.sources:
        if s.label == CROSS_SOURCE or s.label.endswith(OPPOSITE_SUFFIX):
            raise PadError(f"source name {s.label!r} is kept for derived pairs; name the source otherwise")
    if isinstance(cfg.eval_limit, dict) and cfg.sources and all(s.principles for s in cfg.sources):
        known = {p for s in cfg.sources for p in s.principles} | {o for s in cfg.sources for o in s.opposites.values()}
        unknown = sorted(set(cfg.eval_limit) - known - {"*"})
        if unknown:
            raise PadError(f"eval_limit names {', '.join(map(repr, unknown))}, not a principle of this recipe "
                           f"({', '.join(sorted(known))}; '*' stands for the others)")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _require(cfg, name: str, ok, what: str) -> None:
    v = getattr(cfg, name)
    if not ok(v):
        raise PadError(f"{name} must be {what}, got {v!r}")


def _source(item, i: int) -> SourceConfig:
    where = f"sources[{i}]"
    if not isinstance(item, dict):
        raise PadError(f"{where} must be a mapping with kind, path and principles, got {item!r}")
    _check_keys(item, SourceConfig, where)
    if "kind" not in item or "path" not in item:
        raise PadError(f"{where} needs both 'kind' and 'path'")
    try:
        return SourceConfig(**{k: _coerce(SourceConfig, k, v, where) for k, v in item.items()})
    except PadError as e:
        raise PadError(f"{where}: {e}") from None


def _check_keys(data: dict, cls, where: str) -> None:
    known = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            raise PadError(f"{where}: unknown field {key!r}{hint}")


def _coerce(cls, name: str, value, where: str):
    """YAML reads 1e-4 as text and the command line gives only text: make numbers of number fields."""
    hint = str(typing.get_type_hints(cls)[name])  # e.g. "int | None", "<class 'float'>", "bool | str"
    if not isinstance(value, str):
        return float(value) if hint == "<class 'float'>" and _is_int(value) else value
    if "None" in hint and value.strip().lower() in ("none", "null", "~"):
        return None
    if "int" in hint or "float" in hint:
        for convert in (int, float) if "int" in hint else (float,):
            try:
                return convert(value)
            except ValueError:
                pass
        if "str" not in hint:
            raise PadError(f"{name} must be a number, got {value!r}")
    return value


def parse_value(text: str):
    """A command-line value as YAML would read it: 3, 0.5, true, [q_proj, v_proj], {a: b} or text."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A recipe (YAML of TrainConfig fields), then `overrides` on top; unknown keys name the file."""
    data: dict[str, Any] = {}
    where = "command line"
    if path is not None:
        where = str(path)
        data = read_yaml_mapping(path)
        _check_keys(data, TrainConfig, where)
    if overrides:
        _check_keys(overrides, TrainConfig, "command line")
        data = {**data, **overrides}
    try:
        values = {k: _coerce(TrainConfig, k, v, where) if k != "sources" else v for k, v in data.items()}
        return TrainConfig(**values)
    except PadError as e:
        raise PadError(f"{where}: {e}") from None


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--learning_rate 1e-4 --max-steps=100 --overwrite` -> {learning_rate: 1e-4, max_steps: 100, overwrite: True}."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise PadError(f"unexpected argument {arg!r}; give settings as --field value")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            else:
                value = "true"  # a bare flag
        out[key] = parse_value(value)
        i += 1
    return out
