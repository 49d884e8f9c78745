"""Scorers: reward models that turn (prompt, response) rows into numbers, batched (method.md section 4).

Three kinds, one interface (`prepare` rows into token ids, then `score` them in length-sorted batches):

- `SequenceScorer` kind "classifier": a sequence classifier; the output vector is its logits (one
  value for the Ray2333 reward models, one per label for the humor classifier).
- `SequenceScorer` kind "armo": ArmoRM-style models whose output has `rewards` (B, 19) and `score`;
  the output vector is the 19 objectives then the gated score, so several objectives come from one
  forward pass. ArmoRM itself is computed by pad (pad/evaluate/armo.py; its remote code imports names
  transformers 5 removed); other ArmoRM-like checkpoints run their own remote code.
- `PersRMScorer`: the PersRM's implicit DPO reward of a response under a principle,
  beta * sum_t [log pi_PersRM(y_t | principle prompt, y_<t) - log pi_ref(y_t | prompt, y_<t)].

A `Dimension` is one number of one scorer's output vector under a name (`helpful`,
`armo-harmless`, `persrm:humor`). `build_dimensions` turns `--scorer` specs into dimensions, loading
each model once however many of its outputs are asked for. Models load on first use, so a fully
cached evaluation never loads one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pad.errors import PadError
from pad.evaluate.formats import FORMATS, render
from pad.evaluate.inputs import Row
from pad.models import ModelLoadError

ARMO_ID = "RLHFlow/ArmoRM-Llama3-8B-v0.1"
ARMO_OBJECTIVES = (
    "helpsteer-helpfulness", "helpsteer-correctness", "helpsteer-coherence", "helpsteer-complexity",
    "helpsteer-verbosity", "ultrafeedback-overall_score", "ultrafeedback-instruction_following",
    "ultrafeedback-truthfulness", "ultrafeedback-honesty", "ultrafeedback-helpfulness", "beavertails-is_safe",
    "prometheus-score", "argilla-overall_quality", "argilla-judge_lm", "code-complexity", "code-style",
    "code-explanation", "code-instruction-following", "code-readability",
)  # fmt: skip


class ScorerError(PadError, ValueError):
    """An unknown scorer, a bad selector, or a scorer model that cannot be used."""


@dataclass(frozen=True)
class Preset:
    """A paper evaluator: which model, which output, what text it reads and its length rule."""

    model: str
    kind: str  # "classifier" or "armo"
    output: int | str  # label index, or ArmoRM objective name / "score"
    fmt: str
    max_tokens: int | None  # longest input the paper scores
    overflow: str  # "skip" (and count) or "truncate" longer inputs
    about: str


PRESETS: dict[str, Preset] = {
    "helpful": Preset("Ray2333/gpt2-large-helpful-reward_model", "classifier", 0, "hh", 1023, "skip",
                      "GPT-2 large helpfulness RM, Human/Assistant text, 1,024+ tokens skipped"),
    "harmless": Preset("Ray2333/gpt2-large-harmless-reward_model", "classifier", 0, "hh", 1023, "skip",
                       "GPT-2 large harmlessness RM, Human/Assistant text, 1,024+ tokens skipped"),
    "humor": Preset("mohameddhiab/humor-no-humor", "classifier", 1, "response", 512, "truncate",
                    "humor classifier, logit of label 1 on the response, cut at 512 tokens"),
    "armo-helpfulness": Preset(ARMO_ID, "armo", "helpsteer-helpfulness", "chat", None, "skip",
                               "ArmoRM objective 0 (helpsteer-helpfulness)"),
    "armo-harmless": Preset(ARMO_ID, "armo", "beavertails-is_safe", "chat", None, "skip",
                            "ArmoRM objective 10 (beavertails-is_safe)"),
    "armo-score": Preset(ARMO_ID, "armo", "score", "chat", None, "skip", "ArmoRM gated total score"),
}  # fmt: skip
for _i, _name in enumerate(ARMO_OBJECTIVES):  # every objective by name (armo-code-style) and index (armo-15)
    for _alias in (f"armo-{_name}", f"armo-{_i}"):
        PRESETS.setdefault(_alias, Preset(ARMO_ID, "armo", _name, "chat", None, "skip", f"ArmoRM objective {_i}"))


def preset_names(short: bool = True) -> list[str]:
    """Preset names; `short` leaves out the per-objective `armo-<objective>` aliases."""
    core = ["helpful", "harmless", "humor", "armo-helpfulness", "armo-harmless", "armo-score"]
    return core + ([] if short else [n for n in PRESETS if n not in core])


# ---------------------------------------------------------------------------------------------------
# loading


def model_fingerprint(spec: str) -> str:
    """Names a model's exact files: a local folder by its files' names, sizes and times, a hub id by
    its cached commit. Part of every cache key, so a retrained model is never served old scores."""
    p = Path(spec).expanduser()
    if p.exists():
        files = sorted(f for f in (p.iterdir() if p.is_dir() else [p]) if f.is_file())
        h = hashlib.sha256()
        for f in files:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        return f"{p.resolve()}@{h.hexdigest()[:16]}"
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(spec, "config.json")
        if isinstance(hit, str):
            return f"{spec}@{Path(hit).parent.name}"
    except Exception:  # noqa: BLE001 - no cache information is not an error
        pass
    return spec


def load_model_config(spec: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    from pad.models import _with_fallback

    return _with_fallback(
        spec,
        lambda src, local_only: AutoConfig.from_pretrained(
            src.location, local_files_only=local_only, trust_remote_code=trust_remote_code, **src.kwargs()
        ),
    )


def load_sequence_classifier(spec: str, device: str = "cpu", dtype=None, trust_remote_code: bool = False):
    """A sequence classifier in eval mode: a hub id or a folder; remote code (ArmoRM) when allowed."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from pad.models import _with_fallback

    def load(src, local_only: bool):
        return AutoModelForSequenceClassification.from_pretrained(
            src.location,
            dtype=dtype or torch.float32,
            local_files_only=local_only,
            trust_remote_code=trust_remote_code,
            **src.kwargs(),
        )

    return _with_fallback(spec, load).to(device).eval()


def fuse_gelu_new(model) -> None:
    """Swap transformers' `gelu_new` for torch's one-kernel tanh GELU, the same formula.

    GPT-2 and the Ray2333 reward models use `gelu_new`, written as eight elementwise torch calls: on a
    CPU their passes over the (B, T, 4 * hidden) MLP activations cost an eighth of a GPT-2 small
    forward pass for one text, a quarter for 16 long texts, whose activations no longer fit in the
    cache; the fused kernel is 3-6x faster. Scores move by float rounding (~1e-6).
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())


def is_causal_model(model) -> bool:
    """A transformers decoder-only model: every attention layer is causal (GPT-2, Llama; not BERT)."""
    flags = [m.is_causal for m in model.modules() if isinstance(getattr(m, "is_causal", None), bool)]
    return bool(flags) and all(flags) and type(model).__module__.startswith(("transformers.", "pad.evaluate.armo"))


def _max_positions(config) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        v = getattr(config, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


# ---------------------------------------------------------------------------------------------------
# the common interface


@dataclass
class Prepared:
    """One row made ready for a scorer: the exact text it reads (the cache key) and its token ids."""

    text: str
    ids: Any = None  # list[int], or for the PersRM a (policy prompt, reference prompt, response) triple
    length: int = 0
    skip: str | None = None  # why it is not scored (too long)


# Padded tokens per batch on a CPU: of 1024 to 8192 and no cap, 1024 scored fastest (or within noise of it)
# on all three backbones of benchmarks/eval_speed.py.
CPU_BATCH_TOKENS = 1024


def default_batch_tokens(device: str) -> int | None:
    """A batch's padded-token cap when none is given: CPU_BATCH_TOKENS on a CPU, none elsewhere."""
    return CPU_BATCH_TOKENS if str(device).startswith("cpu") else None


def length_sorted_batches(lengths: Sequence[int], batch_size: int, batch_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (out-of-memory shows at once).

    A batch holds at most `batch_size` texts and, when `batch_tokens` is set, at most that many padded
    tokens (texts x its longest); a text longer than the budget goes alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            width = lengths[batch[0]]  # longest first: a batch's first text sets its padded width
            if len(batch) < batch_size and (batch_tokens is None or (len(batch) + 1) * width <= batch_tokens):
                batch.append(i)
                continue
        batches.append([i])
    return batches


class Scorer:
    label: str
    output_names: list[str]
    model_calls: int = 0  # forward passes
    texts_scored: int = 0  # texts sent through the model

    @property
    def identity(self) -> str:
        raise NotImplementedError

    def prepare(self, rows: Sequence[Row]) -> list[Prepared]:
        raise NotImplementedError

    def _forward(self, batch: list[Prepared]) -> list[list[float]]:
        raise NotImplementedError

    def score(self, items: Sequence[Prepared], batch_size: int = 16, batch_tokens: int | None = None,
              world=None) -> Iterator[tuple[list[int], list[list[float]]]]:
        """Yield (indices into `items`, output vectors) batch by batch; skipped items are not sent.

        `batch_tokens` caps a batch's padded tokens (see `length_sorted_batches`). Under several processes
        (`world`) each scores its share of the batches: every text in the very batch one process would
        put it in, so the scores do not depend on the number of processes.
        """
        import torch

        todo = [i for i, it in enumerate(items) if it.skip is None]
        batches = length_sorted_batches([items[i].length for i in todo], batch_size, batch_tokens)
        for batch in world.share(batches) if world is not None else batches:
            idx = [todo[b] for b in batch]
            with torch.inference_mode():
                vectors = self._forward([items[i] for i in idx])
            self.model_calls += 1
            self.texts_scored += len(idx)
            yield idx, vectors


@dataclass
class Dimension:
    """A named number of a scorer's output vector."""

    name: str
    scorer: Scorer
    index: int

    @property
    def output(self) -> str:
        return self.scorer.output_names[self.index]


# ---------------------------------------------------------------------------------------------------
# sequence classifiers and ArmoRM


class SequenceScorer(Scorer):
    """A sequence-classification reward model (kind "classifier") or an ArmoRM-like one (kind "armo")."""

    def __init__(self, model: str, kind: str = "classifier", fmt: str = "hh", max_tokens: int | None = None,
                 overflow: str = "skip", device: str = "cpu", dtype=None, trust_remote_code: bool = False,
                 label: str | None = None, config=None):
        import torch

        from pad.models import load_tokenizer

        dtype = dtype or torch.float32  # one spelling of the default, so cache identities agree
        if kind not in ("classifier", "armo"):
            raise ScorerError(f"unknown scorer kind {kind!r}")
        if fmt not in FORMATS:
            raise ScorerError(f"unknown text format {fmt!r}; choose one of {', '.join(FORMATS)}")
        if overflow not in ("skip", "truncate"):
            raise ScorerError(f"overflow must be skip or truncate, got {overflow!r}")
        self.model_spec, self.kind, self.fmt, self.overflow = str(model), kind, fmt, overflow
        self.device, self.dtype, self.trust_remote_code = device, dtype, trust_remote_code
        self.label = label or Path(self.model_spec).name
        self.config = config or load_model_config(self.model_spec, trust_remote_code)
        self.tokenizer = load_tokenizer(self.model_spec)
        if fmt == "chat" and not getattr(self.tokenizer, "chat_template", None):
            raise ScorerError(f"scorer {self.model_spec!r} reads chat messages but its tokenizer has no chat template")
        limit = _max_positions(self.config)
        self.max_tokens = max_tokens if max_tokens is not None else limit
        if self.overflow == "truncate" and self.max_tokens is None:
            self.overflow = "skip"
        if kind == "armo":
            n = int(getattr(self.config, "num_objectives", len(ARMO_OBJECTIVES)))
            names = list(ARMO_OBJECTIVES) if n == len(ARMO_OBJECTIVES) else [f"objective-{i}" for i in range(n)]
            self.output_names = [*names, "score"]
        else:
            n = int(getattr(self.config, "num_labels", 1) or 1)
            id2label = getattr(self.config, "id2label", None) or {}
            self.output_names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]
        self.model = None
        self.causal = False  # set on load: see `_forward`
        self.model_calls = 0
        self.texts_scored = 0
        self._identity = json.dumps({
            "kind": kind, "model": model_fingerprint(self.model_spec), "format": fmt, "max_tokens": self.max_tokens,
            "overflow": self.overflow, "dtype": str(dtype),
        }, sort_keys=True)  # fmt: skip

    @property
    def identity(self) -> str:
        return self._identity

    def output_index(self, selector: int | str | None) -> int:
        """The output a selector names: an index, a label or objective name, or `score` (ArmoRM)."""
        names = self.output_names
        if selector is None:
            if self.kind == "armo":
                return len(names) - 1
            if len(names) == 1:
                return 0
            raise ScorerError(f"scorer {self.model_spec!r} has {len(names)} labels ({', '.join(names)}); "
                              f"pick one with {self.model_spec}:LABEL")  # fmt: skip
        if isinstance(selector, int) or str(selector).lstrip("-").isdigit():
            i = int(selector)
            if 0 <= i < (len(names) - 1 if self.kind == "armo" else len(names)):
                return i
        elif str(selector) in names:
            return names.index(str(selector))
        choices = ", ".join(names)
        raise ScorerError(f"scorer {self.model_spec!r} has no output {selector!r}; choose an index or one of {choices}")

    def render(self, row: Row) -> str:
        """The exact text this scorer reads for a row."""
        return render(self.fmt, row.prompt, row.response, self.tokenizer)

    def prepare(self, rows: Sequence[Row]) -> list[Prepared]:
        # Chat templates already hold the special tokens (Llama 3's BOS): adding them again would double them.
        special = self.fmt != "chat"
        truncate = self.overflow == "truncate"
        texts = [self.render(row) for row in rows]
        kw = {"truncation": True, "max_length": self.max_tokens} if truncate else {}
        encoded = self.tokenizer(texts, add_special_tokens=special, **kw)["input_ids"] if texts else []
        out = []
        for text, ids in zip(texts, encoded):
            if not ids:  # an empty response read alone: a lone BOS/EOS stands for the empty text
                ids = [self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None
                       else self.tokenizer.eos_token_id]  # fmt: skip
            skip = None
            if not truncate and self.max_tokens is not None and len(ids) > self.max_tokens:
                skip = f"too long: {len(ids)} tokens > {self.max_tokens}"
            out.append(Prepared(text, ids, len(ids), skip))
        return out

    def load(self):
        if self.model is None:
            from pad.evaluate.armo import is_armorm, load_armorm

            if self.kind == "armo" and is_armorm(self.config):  # pad's own ArmoRM: its remote code no longer loads
                self.model = load_armorm(self.model_spec, self.tokenizer, self.device, self.dtype)
            else:
                self.model = load_sequence_classifier(self.model_spec, self.device, self.dtype,
                                                      self.trust_remote_code)
            fuse_gelu_new(self.model)
            self.causal = is_causal_model(self.model)
            # The model finds each text's last token by looking for padding, so it must know our pad id;
            # ArmoRM looks for the first pad, so its own pad token (not EOS, which its template uses) wins.
            cfg_pad = getattr(self.model.config, "pad_token_id", None)
            self.pad_id = cfg_pad if isinstance(cfg_pad, int) else self.tokenizer.pad_token_id
            self.model.config.pad_token_id = self.pad_id
        return self.model

    def _forward(self, batch: list[Prepared]) -> list[list[float]]:
        import torch

        model = self.load()
        longest = max(it.length for it in batch)
        # Right padding: every position keeps its index, so absolute and rotary positions are exact
        # and each text scores as it would alone.
        ids = torch.tensor([it.ids + [self.pad_id] * (longest - it.length) for it in batch])  # (B, T)
        if self.causal:
            # No real token attends to a later position, so the pads after a text change nothing it
            # reads: an all-ones mask gives the same scores and lets SDPA run its causal kernel, which
            # skips the blocks above the diagonal, instead of a materialized (B, 1, T, T) padding mask.
            # The classifier still finds each text's last token by the pad id, not by the mask; remote
            # code might use the mask for that, which is why `is_causal_model` admits transformers' own only.
            mask = torch.ones_like(ids)  # (B, T)
        else:
            lengths = torch.tensor([it.length for it in batch])  # (B,)
            mask = (torch.arange(longest) < lengths[:, None]).long()  # (B, T) 1 on real tokens
        out = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device))
        if self.kind == "armo":
            vec = torch.cat([out.rewards.float(), out.score.float().reshape(len(batch), -1)], dim=-1)  # (B, 20)
        else:
            vec = out.logits.float()  # (B, num_labels)
        return vec.cpu().tolist()


# ---------------------------------------------------------------------------------------------------
# the PersRM's implicit reward


class PersRMScorer(Scorer):
    """beta * sum over response tokens of log pi_PersRM(y_t | principle prompt, y_<t) - log pi_ref(y_t | prompt, y_<t).

    The reference is, by default, the PersRM's own base: the same network with the LoRA adapter
    disabled, or the `base_model` of a merged PersRM's pad_config.json; `reference` names another
    model (it must share the PersRM's tokenizer). The reference reads the plain prompt unless
    `reference_sees_principle`, which gives the exact DPO reward of training. The response is
    re-tokenized from its text, without an end-of-sequence token.
    """

    output_names = ["reward", "policy_logp", "reference_logp"]

    def __init__(self, persrm: str, principle: str, reference: str | None = None, beta: float | None = None,
                 reference_sees_principle: bool = False, device: str = "cpu", dtype=None,
                 template: str | None = None, model=None, reference_model=None):
        import torch

        from pad.models import adapter_base, is_adapter, load_tokenizer, read_pad_config
        from pad.principles import DEFAULT_TEMPLATE, check_template

        dtype = dtype or torch.float32

        self.persrm, self.principle = str(persrm), principle
        cfg = read_pad_config(self.persrm) or {}
        self.beta = float(beta if beta is not None else cfg.get("beta", 0.1))
        try:
            self.template = check_template(template or cfg.get("template") or DEFAULT_TEMPLATE)
        except ValueError as e:
            raise ScorerError(f"{self.persrm}: {e}") from None
        self.adapter = is_adapter(self.persrm)
        if reference is None and not self.adapter:
            reference = cfg.get("base_model")
            if not reference:
                raise ScorerError(f"{self.persrm}: a merged PersRM records no base_model in pad_config.json; "
                                  "name the reference with --persrm-reference")  # fmt: skip
        self.reference = str(reference) if reference is not None else None
        self.reference_sees_principle = reference_sees_principle
        self.device, self.dtype = device, dtype
        self.tokenizer = load_tokenizer(self.persrm)
        if self.reference is not None:
            ref_tok = load_tokenizer(self.reference)
            if ref_tok.get_vocab() != self.tokenizer.get_vocab():
                raise ScorerError(f"reference {self.reference!r} does not share the PersRM's tokenizer; "
                                  "the implicit reward needs the same tokens under both models")  # fmt: skip
        self.model, self.reference_model = model, reference_model
        self.label = f"persrm:{principle}"
        self.model_calls = 0
        self.texts_scored = 0
        base = adapter_base(self.persrm) if self.adapter else self.persrm
        self.max_tokens = _max_positions(load_model_config(base))
        self._identity = json.dumps({
            "kind": "persrm", "model": model_fingerprint(self.persrm),
            "reference": model_fingerprint(self.reference) if self.reference else "adapter-disabled",
            "beta": self.beta, "dtype": str(dtype),
        }, sort_keys=True)  # fmt: skip

    @property
    def identity(self) -> str:
        return self._identity

    def prompts(self, row: Row) -> tuple[str, str]:
        """(policy prompt, reference prompt): the exact chat texts each model reads before the response."""
        from pad.principles import principle_prompt

        policy = principle_prompt(self.tokenizer, row.prompt, self.principle, self.template)
        ref = policy if self.reference_sees_principle else principle_prompt(self.tokenizer, row.prompt, None)
        return policy, ref

    def prepare(self, rows: Sequence[Row]) -> list[Prepared]:
        enc = lambda t: self.tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
        out = []
        for row in rows:
            policy, ref = self.prompts(row)
            triple = (enc(policy), enc(ref), enc(row.response) if row.response else [])
            length = max(len(triple[0]), len(triple[1])) + len(triple[2])
            skip = None
            if self.max_tokens is not None and length > self.max_tokens:
                skip = f"too long: {length} tokens > {self.max_tokens}"
            out.append(Prepared(json.dumps([policy, ref, row.response]), triple, length, skip))
        return out

    def load(self):
        from pad.models import load_causal_lm

        if self.model is None:
            self.model = load_causal_lm(self.persrm, self.device, self.dtype).eval()
        if self.reference is not None and self.reference_model is None:
            self.reference_model = load_causal_lm(self.reference, self.device, self.dtype).eval()
        return self.model

    def _forward(self, batch: list[Prepared]) -> list[list[float]]:
        import contextlib

        model = self.load()
        responses = [it.ids[2] for it in batch]
        policy = response_logprob(model, [it.ids[0] for it in batch], responses, self.tokenizer.pad_token_id)
        if self.reference_model is not None:
            ref_model, ctx = self.reference_model, contextlib.nullcontext()
        else:  # the PersRM with its adapter switched off is its base model
            ref_model, ctx = model, model.disable_adapter()
        with ctx:
            ref = response_logprob(ref_model, [it.ids[1] for it in batch], responses, self.tokenizer.pad_token_id)
        return [[self.beta * (p - r), p, r] for p, r in zip(policy, ref)]


def response_logprob(model, prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> list[float]:
    """sum_t log p(response_t | prompt, response_<t) for each pair, in one left-padded forward pass."""
    import torch

    seqs = [p + r for p, r in zip(prompts, responses)]
    longest, r_max = max(map(len, seqs)), max(map(len, responses))
    if r_max == 0:
        return [0.0] * len(seqs)
    device = model.device
    # Left padding puts every response at the end, so only the last r_max + 1 positions need logits.
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros_like(ids)  # (B, T)
    for b, s in enumerate(seqs):
        ids[b, longest - len(s) :] = torch.tensor(s)
        mask[b, longest - len(s) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T) each text counts from 0, as alone
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position_ids.to(device),
                use_cache=False, logits_to_keep=r_max + 1)  # fmt: skip
    logits = out.logits[:, :-1]  # (B, r_max, V): position j predicts token T - r_max + j
    targets = ids[:, longest - r_max :].to(device)  # (B, r_max)
    sums = []
    for b, r in enumerate(responses):
        if not r:
            sums.append(0.0)
            continue
        lp = torch.log_softmax(logits[b, r_max - len(r) :].float(), dim=-1)  # (R_b, V), one row at a time
        sums.append(float(lp.gather(-1, targets[b, r_max - len(r) :, None]).sum()))
    return sums


# ---------------------------------------------------------------------------------------------------
# from --scorer specs to dimensions


def _split_spec(spec: str) -> tuple[str, str | None]:
    """'MODEL:SELECTOR' -> (MODEL, SELECTOR); a path that exists as given is never split."""
    if Path(spec).expanduser().exists() or ":" not in spec:
        return spec, None
    model, _, sel = spec.rpartition(":")
    if "/" in sel or not sel or not model:
        return spec, None
    return model, sel


def _looks_like_model(spec: str) -> bool:
    p = Path(spec).expanduser()
    return p.exists() or (spec.count("/") == 1 and not spec.startswith((".", "/", "~")))


def build_dimensions(specs: Sequence[str], device: str = "cpu", dtype=None, trust_remote_code: bool = False,
                     fmt: str = "auto") -> list[Dimension]:
    """Dimensions for `--scorer` specs; a model asked for several outputs is loaded once.

    `fmt` is the text format of non-preset classifiers: auto (their chat template if they have one,
    else the Human/Assistant transcript), hh, chat or response.
    """
    scorers: dict[tuple, SequenceScorer] = {}
    dims: list[Dimension] = []

    def scorer_for(model, kind, text_fmt, max_tokens, overflow, trust, config=None) -> SequenceScorer:
        key = (model, kind, text_fmt, max_tokens, overflow, trust)
        if key not in scorers:
            scorers[key] = SequenceScorer(model, kind, text_fmt, max_tokens, overflow, device, dtype, trust,
                                          label=Path(model).name, config=config)  # fmt: skip
        return scorers[key]

    for spec in specs:
        name, eq, path = spec.partition("=")
        if spec in PRESETS or (eq and name in PRESETS):
            p = PRESETS[name if eq else spec]
            model = path if eq else p.model
            if eq and not Path(path).expanduser().exists() and not _looks_like_model(path):
                raise ScorerError(f"scorer {spec!r}: model path {path!r} does not exist")
            try:
                s = scorer_for(model, p.kind, p.fmt, p.max_tokens, p.overflow, p.kind == "armo")
            except ModelLoadError as e:
                hint = "" if eq else f"; to use a local copy, pass --scorer {spec}=PATH"
                raise ScorerError(f"{str(e).rstrip('.')}{hint}") from None
            dims.append(Dimension(name if eq else spec, s, s.output_index(p.output)))
            continue
        model, selector = _split_spec(spec)
        if not _looks_like_model(model):
            raise ScorerError(f"unknown scorer {spec!r}: not a preset ({', '.join(preset_names())}, or "
                              "armo-<objective name or index>) and not a model path or hub id")  # fmt: skip
        config = load_model_config(model, trust_remote_code)
        kind = "armo" if getattr(config, "num_objectives", None) else "classifier"
        custom = bool((getattr(config, "auto_map", None) or {}).get("AutoModelForSequenceClassification"))
        if custom and kind == "armo":
            from pad.evaluate.armo import is_armorm

            custom = not is_armorm(config)  # pad computes ArmoRM itself and never runs its code
        if custom and not trust_remote_code:
            raise ScorerError(f"scorer {model!r} ships its own model code; pass --trust-remote-code to run it")
        text_fmt = fmt
        if kind == "armo":
            text_fmt = "chat"
        elif fmt == "auto":
            from pad.models import load_tokenizer

            text_fmt = "chat" if getattr(load_tokenizer(model), "chat_template", None) else "hh"
        s = scorer_for(model, kind, text_fmt, None, "skip", trust_remote_code, config)
        index = s.output_index(selector)
        short = Path(model).name
        dims.append(Dimension(f"{short}:{s.output_names[index]}" if selector or kind == "armo" else short, s, index))
    names = [d.name for d in dims]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ScorerError(f"scorer {dup[0]!r} is asked for twice")
    return dims


def persrm_dimensions(persrm: str, principles: Sequence[str], reference: str | None = None,
                      beta: float | None = None, reference_sees_principle: bool = False, device: str = "cpu",
                      dtype=None) -> list[Dimension]:
    """One `persrm:<principle>` dimension per principle; the models are loaded once and shared."""
    if not Path(persrm).expanduser().exists() and not _looks_like_model(persrm):
        raise ScorerError(f"PersRM {persrm!r} does not exist")
    dims, first = [], None
    for principle in principles:
        s = PersRMScorer(persrm, principle, reference, beta, reference_sees_principle, device, dtype)
        if first is not None:
            s.load = _shared_loader(s, first)
        first = first or s
        dims.append(Dimension(s.label, s, 0))
    return dims


def _shared_loader(scorer: PersRMScorer, owner: PersRMScorer):
    def load():
        scorer.model = owner.load()
        scorer.reference_model = owner.reference_model
        return scorer.model

    return load


def describe_presets() -> list[tuple[str, str, str]]:
    """(name, model, what) for the short list of presets, for help texts and errors."""
    return [(n, PRESETS[n].model, PRESETS[n].about) for n in preset_names()]

