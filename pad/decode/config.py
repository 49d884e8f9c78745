"""`DecodeConfig`: every setting of a `pad decode` run, and the reference's run-config lines."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from pad.decode.engine import BACKBONES, REFERENCES, check_kl_budget
from pad.errors import PadError
from pad.files import read_json_lines, read_yaml_mapping
from pad.models import DEFAULT_BASE
from pad.principles import DEFAULT_TEMPLATE, Principle, check_template

GUIDES = ("pad", "args")
MODE_ALIASES = {"greedy": "greedy", "sample": "sample", "topk": "sample"}  # "topk" is the reference's name


@dataclass
class DecodeConfig:
    """Settings of one decoding run. YAML recipe keys are exactly these field names."""

    llm: str = DEFAULT_BASE
    """Base model: hub id, checkpoint folder or .gguf file."""
    rm: str | None = None
    """PersRM: merged checkpoint, LoRA adapter folder (loads on its base) or .gguf; None: the shipped default (for
    the default base); "shipped": the shipped PersRM for any base (another tokenizer: the cross path)."""
    principles: list[str] = field(default_factory=list)
    """Principles as 'name' or 'name=weight'; several guide together (r = sum_i w_i r_i). Empty: vanilla."""
    weight: float = 1.0
    """Weight w of every principle given without one (the reference's `rm_weight`)."""
    topk: int = 10
    """Number of base-model candidates k the PersRM re-ranks at each step."""
    mode: str = "greedy"
    """'greedy' or 'sample' (softmax of the guided score over the candidates; 'topk' is an alias)."""
    temperature: float = 1.0
    """Sampling temperature T (mode 'sample')."""
    max_new_tokens: int = 128
    """Most tokens generated per prompt; each row also stops at its end-of-sequence token."""
    batch_size: int = 8
    """Rows decoded together: a continuous batch, where the next prompt joins as soon as a row finishes."""
    seed: int | None = 0
    """Seed of the sampler (mode 'sample'): a row's samples depend only on it and the row's id, whatever the
    batch size, order or resume. None: unseeded (fresh randomness; the run file records seed null)."""
    template: str = DEFAULT_TEMPLATE
    """Principle prompt template with {principles} and {prompt} (method.md section 1)."""
    chat_template: str | None = None
    """The base model's chat template: a Jinja file or Jinja text. None: the base's own; a base without one (a
    pretrained model) reads a plain transcript, "\\n\\nHuman: {the principle prompt}\\n\\nAssistant:" (logged)."""
    reference: str = "base"
    """What r is measured against: 'base' (the reference code), 'persrm' (the PersRM without principles) or
    'prompted-base' (the base reading the PersRM's principle prompt: the reference DPO trained against)."""
    base_sees_principles: bool | None = None
    """Whether the base model reads the principle prompt too. None: what the PersRM's pad_config.json
    recommends (`decode.base_sees_principles`), else yes (the reference)."""
    device: str = "auto"
    """Device of the base model: auto, cpu, cuda, cuda:1, ..."""
    rm_device: str | None = None
    """Device of the PersRM; None: same as the base."""
    dtype: str = "auto"
    """Base dtype: auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16."""
    rm_dtype: str | None = None
    """PersRM dtype; None: same as the base."""
    backbone: str = "auto"
    """'shared': base and PersRM rows in one forward of one model (the PersRM a LoRA adapter on this very base);
    'separate': two models (a LoRA PersRM merged into its own copy); 'auto': shared where it applies."""
    guide: str = "pad"
    """'pad': the PersRM guides (method.md); 'args': ARGS, a sequence reward model guides with weight `weight`:
    score(a) = z_b(a) + w * RM(x, y_<t + a) over the base's top-k."""
    reward_model: str | None = None
    """ARGS's reward model: a `pad eval` scorer (preset, PRESET=PATH, a classifier's path or hub id, MODEL:LABEL)."""
    reward_path: str = "auto"
    """How ARGS reads its RM: 'cached' (the base's tokenizer: incremental KV cache), 'texts' (re-tokenized
    texts in the RM's own format), 'auto': cached where it applies."""
    baseline: str | None = None
    """'prompted': the prompting baseline, the base reads the principle prompt and nothing guides it
    (every weight 0, the base sees the principles)."""
    cross_tokenizer: str | None = None
    """How a PersRM with another tokenizer than the base's reads the base's candidates (method.md section 8):
    'exact' (each candidate's text re-encoded with the answer so far and scored by the PersRM's log-likelihood)
    or 'first-subtoken' (the reference's rule: each candidate's first sub-token, raw logits). None: 'exact' where
    the vocabularies differ, the same-tokenizer rule where they are one; a value forces the cross path."""
    kl_budget: float | None = None
    """A per-token KL budget EPS in nats (method.md section 9): each step scales the PAD reward by the largest
    lambda in [0, 1] with KL(p_lambda || p_0) <= EPS over the candidates. None: fixed weights; 0: vanilla."""
    profile: str | None = None
    """A weights profile written by `pad fit-weights` (JSON): its principles and weights guide the run, as
    `pad decode --profile` does. `principles` is then filled from it: leave it empty (a different list is
    refused)."""

    def __post_init__(self):
        if isinstance(self.principles, str):
            self.principles = [self.principles]
        if self.mode not in MODE_ALIASES:
            raise PadError(f"mode {self.mode!r} is not one of greedy, sample (or topk)")
        self.mode = MODE_ALIASES[self.mode]
        if isinstance(self.topk, bool) or not isinstance(self.topk, int) or self.topk < 1:
            raise PadError(f"topk must be a whole number >= 1, got {self.topk!r}")
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight):
            raise PadError(f"weight must be a number, got {self.weight!r}")
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise PadError(f"temperature must be > 0, got {self.temperature!r}")
        for name in ("max_new_tokens", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PadError(f"{name} must be a whole number >= 1, got {v!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise PadError(f"seed must be a whole number or null (unseeded), got {self.seed!r}")
        if self.backbone not in BACKBONES:
            raise PadError(f"backbone {self.backbone!r} is not one of {', '.join(BACKBONES)}")
        if self.guide not in GUIDES:
            raise PadError(f"guide {self.guide!r} is not one of {', '.join(GUIDES)}")
        if self.guide == "args" and not self.reward_model:
            raise PadError("guide 'args' needs a reward model: --reward-model PRESET_OR_PATH (see pad eval --help)")
        if self.reward_path not in ("auto", "cached", "texts"):
            raise PadError(f"reward_path {self.reward_path!r} is not one of auto, cached, texts")
        if self.baseline not in (None, "prompted"):
            raise PadError(f"baseline {self.baseline!r} is not 'prompted'")
        if self.baseline == "prompted" and self.guide == "args":
            raise PadError("the prompting baseline guides nothing: drop --guide args")
        if isinstance(self.kl_budget, int) and not isinstance(self.kl_budget, bool):
            self.kl_budget = float(self.kl_budget)
        check_kl_budget(self.kl_budget)
        if self.kl_budget is not None and self.guide == "args":
            raise PadError("kl_budget scales PAD's PersRM reward; ARGS (guide 'args') has none to scale")
        if self.cross_tokenizer not in (None, "exact", "first-subtoken"):
            raise PadError(f"cross_tokenizer {self.cross_tokenizer!r} is not one of exact, first-subtoken")
        if self.reference not in REFERENCES:
            raise PadError(f"reference {self.reference!r} is not one of {', '.join(REFERENCES)}")
        try:
            check_template(self.template)
        except ValueError as e:
            raise PadError(str(e)) from None
        if self.profile is not None:
            self._principles_from_profile()
        self.parsed_principles()  # validates every spec

    def _principles_from_profile(self):
        from pad.decode.profiles import load_profile

        if isinstance(self.profile, Path):
            self.profile = str(self.profile)
        if not isinstance(self.profile, str) or not self.profile.strip():
            raise PadError(f"profile must be the path of a profile file, got {self.profile!r}")
        specs = load_profile(self.profile).specs()
        if self.principles and self.principles != specs:  # a replace() of a resolved config keeps them equal
            raise PadError(f"profile {self.profile} gives the principles and their weights: drop principles (-p)")
        self.principles = specs

    def parsed_principles(self) -> list[Principle]:
        try:
            return [Principle.parse(p, self.weight) for p in self.principles]
        except ValueError as e:
            raise PadError(str(e)) from None

    def settings_record(self, run: str) -> dict:
        """What a run file records of the settings, with each line."""
        keep = ("llm", "rm", "topk", "mode", "temperature", "max_new_tokens", "seed", "reference",
                "base_sees_principles", "template")
        out = {"run": run, **{k: getattr(self, k) for k in keep}}
        if self.guide == "args":
            out.update(guide="args", reward_model=self.reward_model, weight=self.weight)
        if self.baseline is not None:
            out["baseline"] = self.baseline
        if self.kl_budget is not None:  # JSON has no infinity: an unbounded budget is written "inf"
            out["kl_budget"] = self.kl_budget if math.isfinite(self.kl_budget) else "inf"
        return out


def load_decode_recipe(path: str | Path) -> DecodeConfig:
    """A YAML recipe whose keys are DecodeConfig fields."""
    data = read_yaml_mapping(path)
    known = {f.name for f in fields(DecodeConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PadError(f"{path}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return DecodeConfig(**data)


RUN_KEYS = {"rm_weight": "weight", "topk": "topk", "mode": "mode", "sample_temp": "temperature"}


def load_run_lines(path: str | Path, base: DecodeConfig) -> list[DecodeConfig]:
    """The reference's run configs: one JSON object a line, each a run derived from `base`.

    `{"rm_weight": 1.0, "topk": 10, "mode": "greedy", "sample_temp": null}`; a null leaves the setting as is.
    """
    path = Path(path)
    runs = []
    for where, obj in read_json_lines(path):
        if not isinstance(obj, dict):
            raise PadError(f"{where}: a run config is a JSON object")
        unknown = sorted(set(obj) - set(RUN_KEYS))
        if unknown:
            raise PadError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(RUN_KEYS)})")
        changes = {RUN_KEYS[k]: v for k, v in obj.items() if v is not None}
        try:
            runs.append(replace(base, **changes))
        except PadError as e:
            raise PadError(f"{where}: {e}") from None
    if not runs:
        raise PadError(f"{path}: no run configs in the file")
    return runs


def parse_seed(value: str) -> int | None:
    """A seed from the command line: a whole number, or 'none' (unseeded)."""
    if value.strip().lower() in ("none", "null"):
        return None
    try:
        return int(value)
    except ValueError:
        raise PadError(f"--seed {value!r} is not a whole number or 'none'") from None


def decode_configs(config: str | Path | None, overrides: dict) -> tuple[DecodeConfig, list[DecodeConfig], bool]:
    """The settings of one `pad decode` call: (the base config, one config per run, whether they came from the
    reference's run-config lines). `config` is a YAML recipe or a run-config file; `overrides` are the settings
    the command line gave, which win over the recipe's."""
    path = Path(config) if config is not None else None
    if path is not None and not path.is_file():
        raise PadError(f"config file {str(path)!r} does not exist")
    is_recipe = path is not None and path.suffix in (".yaml", ".yml")
    base = load_decode_recipe(path) if is_recipe else DecodeConfig()
    base = replace(base, **overrides)
    if path is not None and not is_recipe:
        return base, load_run_lines(path, base), True
    return base, [base], False
