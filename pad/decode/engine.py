"""The cached, batched PAD decoding engine.

Three kinds of parts (docs/style.md):
- streams (`pad.decode.streams`): one model's left-padded sequences and KV cache; rows join and leave;
- guides (`pad.decode.guides`): given the base's candidates for every row, each guided row's reward over them:
  PAD's PersRM on a separate model or on the shared backbone (`pad.decode.pad_guide`), ARGS's reward model
  (`pad.decode.args`), the PersRM of another tokenizer (`pad.decode.cross`); none for vanilla;
- the batch (`DecodeBatch`): who is live, who joins, who finished; one `step()` makes one token for every
  live row: base logits -> top-k -> the guides' rewards -> select -> feed. `PADDecoder.generate`, `pad decode`
  and a server all drive the same batch.

The batch runs the base model's stream (every row's base sequence, and the sequences a guide keeps in the base
model: PAD's adapter rows on the shared backbone, its prompted-base references); a guide runs its own models.
A step costs one forward per model, whatever the number of principles, and finished rows leave every cache at
once.
"""

from __future__ import annotations

import itertools
import math
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from pad.decode.guides import Guide, GuideRow, Slot
from pad.decode.scoring import candidates, kl_budget_scores, kl_from_base, row_key, row_uniforms, select_tokens
from pad.decode.streams import SliceLoRA, Stream
from pad.errors import PadError
from pad.principles import DEFAULT_TEMPLATE, Message, Principle, check_template, join_principles, principle_prompt

REFERENCES = ("base", "persrm", "prompted-base")
MODES = ("greedy", "sample")
BACKBONES = ("auto", "shared", "separate")


@dataclass
class SamplingSettings:
    """How one run decodes. Validated on creation.

    seed: the run's sampling seed; a row's samples depend only on it and the row's id. None: unseeded
    (a fresh random seed per batch).
    kl_budget: a per-token KL budget EPS in nats (method.md section 9): at every step the row's PAD reward
    R = sum_p w_p r_p is scaled by the largest lambda in [0, 1] with KL(p_lambda || p_0) <= EPS over the
    candidates, so guidance is strong where the base is unsure and light where it is sure. None: fixed
    weights (lambda = 1); 0: vanilla; inf: fixed weights, with lambda and the KL recorded.
    """

    topk: int = 10
    mode: str = "greedy"
    temperature: float = 1.0
    max_new_tokens: int = 128
    seed: int | None = 0
    kl_budget: float | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise PadError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not isinstance(self.topk, int) or self.topk < 1:
            raise PadError(f"topk must be a whole number >= 1, got {self.topk!r}")
        if not self.temperature > 0:
            raise PadError(f"temperature must be > 0, got {self.temperature!r}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise PadError(f"max_new_tokens must be >= 1, got {self.max_new_tokens!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise PadError(f"seed must be a whole number or None (unseeded), got {self.seed!r}")
        check_kl_budget(self.kl_budget)


def budget_f32(eps: list[float]) -> torch.Tensor:
    """(B,) the budgets as the largest float32 numbers <= them: a float32 KL then fits the float32 budget exactly
    when it fits the budget given (float32(0.3) is above 0.3, and a KL of that size would overspend)."""
    exact = torch.tensor(eps, dtype=torch.float64)
    f32 = exact.float()
    return torch.where(f32.double() > exact, torch.nextafter(f32, torch.tensor(-math.inf)), f32)


def check_kl_budget(eps) -> None:
    """Raise PadError unless `eps` is None or a number >= 0 (inf allowed: no limit)."""
    if eps is None:
        return
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or math.isnan(eps) or eps < 0:
        raise PadError(f"kl_budget must be a number >= 0 (nats per token) or None, got {eps!r}")


@dataclass
class DecodeRequest:
    """One prompt (a string or chat messages) and the principles that guide it.

    id: names the row in results, and keys its random stream when sampling (None: its position in the call).
    """

    prompt: str | list[Message]
    principles: list[Principle] = field(default_factory=list)
    id: str | None = None
    settings: SamplingSettings | None = None
    """This row's own top-k, mode, temperature, token cap and seed; None: the batch's."""
    reference: str | None = None
    """This row's reference (one of REFERENCES); None: the decoder's."""
    weight: float | None = None
    """ARGS: the reward model's weight w for this row; None: the decoder's `args_weight`."""


@dataclass
class DecodeResult:
    id: str | None
    token_ids: list[int]
    text: str
    finish_reason: str  # "eos", "length", "skipped" (longer than the context) or "cancelled"
    model_input: str  # the exact text the base model read
    persrm_inputs: list[str]
    seconds: float  # from the row's admission to its end
    lambdas: list[float] | None = None
    """Under a KL budget: the guidance scale lambda of each step; None without a budget."""
    kls: list[float] | None = None
    """Under a KL budget: each step's KL(p_lambda || p_0) over the candidates, in nats (never above the budget)."""


def end_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends a row: the generation config's end ids and the tokenizer's end-of-sequence."""
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(gen if isinstance(gen, list) else [gen] if gen is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(int(i) for i in ids)


def context_size(model) -> int | None:
    cfg = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _peft_base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else None


class PADDecoder:
    """Reward-guided decoding of a frozen base model with a principle-conditioned PersRM.

    base, persrm: loaded causal LMs (the PersRM may be a PEFT model); each stays on its own device
        and dtype. persrm=None decodes the base alone (vanilla).
    template: the principle prompt template (method.md section 1).
    reference: "base" scores r against the base's distribution (the reference code); "persrm"
        against the PersRM prompted without principles; "prompted-base" against the base reading each
        principle stream's own prompt, the reference DPO trained against (an extra base stream per
        principle stream, in the base's batch).
    base_sees_principles: whether the base reads the principle prompt too (the reference: yes).
    backbone: "shared" runs base and PersRM rows in one forward of one model: the PersRM must be a PEFT
        LoRA model on this very base (pass the PEFT model as both `base` and `persrm`, or the base and a
        PEFT model wrapping it); "separate" runs two models; "auto" picks shared where it applies.
    cross_tokenizer: how a PersRM reads the base's candidates through its own tokenizer (method.md section 8,
        `pad.decode.cross`): "exact" (each candidate's text re-encoded with the answer so far, scored by its
        log-likelihood), "first-subtoken" (the reference's rule), or None: "exact" where the two vocabularies
        differ, the same-tokenizer rule where they are one.
    """

    def __init__(
        self,
        base,
        tokenizer,
        persrm=None,
        rm_tokenizer=None,
        template: str = DEFAULT_TEMPLATE,
        reference: str = "base",
        base_sees_principles: bool = True,
        backbone: str = "auto",
        args=None,
        args_weight: float = 1.0,
        cross_tokenizer: str | None = None,
    ):
        if args is not None and persrm is not None:
            raise PadError("one guide at a time: ARGS's reward model or PAD's PersRM, not both")
        self.args, self.args_weight = args, args_weight
        if reference not in REFERENCES:
            raise PadError(f"reference {reference!r} is not one of {', '.join(REFERENCES)}")
        if backbone not in BACKBONES:
            raise PadError(f"backbone {backbone!r} is not one of {', '.join(BACKBONES)}")
        self.tok = tokenizer
        self.rm_tok = rm_tokenizer or tokenizer
        self.template = check_template(template)
        self.reference = reference
        self.base_sees_principles = base_sees_principles
        from pad.decode.cross import RULES

        if cross_tokenizer is not None and cross_tokenizer not in RULES:
            raise PadError(f"cross_tokenizer {cross_tokenizer!r} is not one of {', '.join(RULES)} (or None: auto)")
        differ = persrm is not None and self.rm_tok is not self.tok and self.rm_tok.get_vocab() != self.tok.get_vocab()
        self.cross = None if persrm is None else cross_tokenizer or ("exact" if differ else None)
        if self.cross is not None and reference != "base":
            raise PadError(f"the PersRM reads the base's candidates through its own tokenizer ({self.cross}): r is "
                           f"measured against the base only (reference 'base'), not {reference!r}")
        # One backbone: the PersRM is a PEFT model whose base model is the base itself.
        # (A plain model given as both is still two streams of that one model, as the reference runs it.)
        wraps_base = persrm is not None and _peft_base(persrm) is not None and (persrm is base or _peft_base(persrm) is base)
        if self.cross is not None and wraps_base:
            raise PadError("cross-tokenizer guidance runs the PersRM as a model of its own: load it apart from the "
                           "base (backbone 'separate')")
        if backbone == "shared" and not wraps_base:
            reason = SliceLoRA.why_not(persrm) if persrm is not None else "there is no PersRM"
            raise PadError(f"the shared backbone cannot apply: {reason or 'the PersRM wraps another base model'}")
        if wraps_base:
            if backbone == "separate":
                raise PadError("backbone 'separate' needs two models, but the PersRM's adapter is injected into "
                               "this very base; load the PersRM on its own copy of the base")
            # one set of hooks per model, however many decoders drive it
            if getattr(persrm, "_pad_slice_lora", None) is None:
                persrm._pad_slice_lora = SliceLoRA(persrm)
            self.shared = persrm._pad_slice_lora
            self.backbone = "shared"
            self.base = self.persrm = persrm.eval()
        else:
            self.shared = None
            if persrm is None and _peft_base(base) is not None:
                # A base that holds a PersRM's adapter (loaded for a shared backbone) but no PAD guide here:
                # every row is a plain row, the adapter off.
                if getattr(base, "_pad_slice_lora", None) is None:
                    base._pad_slice_lora = SliceLoRA(base)
                self.shared = base._pad_slice_lora
            self.backbone = "separate" if persrm is not None else "none"
            self.base = base.eval()
            self.persrm = persrm.eval() if persrm is not None else None
        self.eos_ids = torch.tensor(end_token_ids(base, tokenizer), dtype=torch.long)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0
        self.vocab = base.get_output_embeddings().weight.shape[0]
        self.device = next(self.base.parameters()).device
        self.guide = "args" if args is not None else "pad" if self.persrm is not None else "none"

    def new_guides(self, base_stream: Stream) -> list[Guide]:
        """The guides of a new batch whose base stream is `base_stream`."""
        if self.args is not None:
            from pad.decode.args import ArgsRows

            return [ArgsRows(self.args.new_reader(self.pad_id, self.template))]
        if self.persrm is None:
            return []
        if self.cross is not None:
            from pad.decode.cross import CrossTokenizerGuide

            return [CrossTokenizerGuide(self.persrm, self.rm_tok, self.tok, self.eos_ids.tolist(), rule=self.cross)]
        from pad.decode.pad_guide import PadGuide

        persrm = None if self.backbone == "shared" else self.persrm
        return [PadGuide(base_stream, persrm, self.pad_id, context_size(self.base), context_size(self.persrm))]

    def texts(self, req: DecodeRequest) -> tuple[str, list[str], str | None]:
        """(base input, PersRM inputs per active principle, PersRM reference input or None)."""
        reference = req.reference or self.reference
        active = [p for p in req.principles if p.weight != 0]
        joined = join_principles([p.name for p in req.principles]) or None
        base_text = principle_prompt(self.tok, req.prompt, joined if self.base_sees_principles else None,
                                     self.template)
        if self.persrm is None or not active:
            return base_text, [], None
        rm_texts = [principle_prompt(self.rm_tok, req.prompt, p.name, self.template) for p in active]
        ref_text = principle_prompt(self.rm_tok, req.prompt, None, self.template) if reference == "persrm" else None
        return base_text, rm_texts, ref_text

    def batch(self, settings: SamplingSettings | None = None) -> DecodeBatch:
        """An empty running batch: admit requests, step, collect finished rows."""
        s = settings or SamplingSettings()
        self.check(DecodeRequest("", settings=s))
        return DecodeBatch(self, s)

    def check(self, req: DecodeRequest) -> None:
        """Raise PadError if this decoder cannot run the request's own settings."""
        if req.settings is not None and req.settings.topk > self.vocab:
            raise PadError(f"topk {req.settings.topk} is larger than the vocabulary ({self.vocab} tokens)")
        if req.reference is not None and req.reference not in REFERENCES:
            raise PadError(f"reference {req.reference!r} is not one of {', '.join(REFERENCES)}")
        if req.reference not in (None, "base") and self.cross is not None:
            raise PadError(f"reference {req.reference!r}: across tokenizers r is measured against the base only")
        for p in req.principles:
            if p.weight is None:  # the CLI and the server resolve a run's weight before they get here
                raise PadError(f"principle {p.name!r} has no weight: give it one (Principle({p.name!r}, 1.0)) or "
                               "resolve the run's weight with Principle.with_default")

    @torch.inference_mode()
    def stream(
        self,
        requests: Iterable[DecodeRequest],
        settings: SamplingSettings | None = None,
        max_live: int = 8,
        on_token: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[int, DecodeResult]]:
        """Continuous batching over a (long) list of requests: up to `max_live` rows decode together, and a new
        request joins as soon as a row finishes, so the batch stays full instead of waiting for its slowest
        row. Yields (position in `requests`, result) as rows finish; results equal `generate`'s."""
        if max_live < 1:
            raise PadError(f"max_live must be >= 1, got {max_live!r}")
        batch = self.batch(settings)
        todo = iter(enumerate(requests))
        where: dict[int, int] = {}  # batch key -> position in `requests`
        more = True
        while True:
            if more and batch.live < max_live and batch.accepts_rows:
                joining = list(itertools.islice(todo, max_live - batch.live))
                more = len(joining) == max_live - batch.live
                if joining:
                    keys = batch.admit([r for _, r in joining])  # keys count requests: each one's position
                    where.update(zip(keys, (i for i, _ in joining)))
            if not batch.live:
                for key, res in batch.finished():
                    yield where.pop(key), res
                if not more:
                    return
                continue
            n = batch.live
            for key, res in batch.step():
                yield where.pop(key), res
            if on_token is not None:
                on_token(n)

    @torch.inference_mode()
    def generate(
        self,
        requests: Sequence[DecodeRequest],
        settings: SamplingSettings | None = None,
        on_token: Callable[[int], None] | None = None,
    ) -> list[DecodeResult]:
        """Decode a batch of requests; results in the same order. `on_token(n)` reports n new tokens."""
        batch = self.batch(settings)
        keys = batch.admit(requests)
        results = dict(batch.finished())  # key -> result; rows too long for the context end at once
        while batch.live:
            n = batch.live
            for key, res in batch.step():
                results[key] = res
            if on_token is not None:
                on_token(n)
        return [results[k] for k in keys]


@dataclass
class _Group:
    """Rows that share a top-k, guided together in a step (almost always all of them), and their base rows."""

    rows: torch.Tensor | None  # (B_g,) positions among the live rows; None: all of them
    k: int
    base_at: torch.Tensor | slice  # (B_g,) each row's base sequence in the base stream; a slice (a view, no
    # gather) where they are contiguous


@dataclass
class _Row:
    key: int
    request: DecodeRequest
    base_text: str
    rm_texts: list[str]
    limit: int
    started: float
    s: SamplingSettings


class DecodeBatch:
    """A running batch of rows: `admit` adds rows between steps, `step` makes one token for every live
    row, finished rows leave at once. Greedy results of a row do not depend on which rows share the batch
    or when they joined; sampled ones depend only on the seed and the row's id.

    The batch owns the base model's stream (each row's base sequence, and whatever sequences a guide keeps
    there) and the rows' bookkeeping; its guides (`pad.decode.guides`) own the rest.
    """

    def __init__(self, decoder: PADDecoder, settings: SamplingSettings):
        self.dec, self.s = decoder, settings
        self.seed = settings.seed if settings.seed is not None else secrets.randbits(31)
        self.dev = decoder.device
        self.eos = decoder.eos_ids.to(self.dev)
        self.base_stream = Stream(decoder.base, decoder.pad_id, lora=decoder.shared)
        self.ctx_b = context_size(decoder.base)
        self.guides: list[Guide] = decoder.new_guides(self.base_stream)
        self.rows: list[_Row] = []  # live rows in position order
        self.done: list[tuple[int, DecodeResult]] = []  # finished since the last collection
        self._next_key = 0
        self._cancelled: set[int] = set()
        self._made: tuple[list[_Row], torch.Tensor] = ([], torch.zeros(0, dtype=torch.long))
        self.keep_distributions = False  # a server's logprobs: keep each step's distributions (see distributions())
        self._dists: list[tuple] = []
        # per live row, (B,) each: tokens made so far, the token cap
        self.n_gen = torch.zeros(0, dtype=torch.long, device=self.dev)
        self.limit = torch.zeros(0, dtype=torch.long, device=self.dev)
        self.temp = torch.zeros(0, dtype=torch.float32, device=self.dev)  # per row, its temperature
        self.sample = torch.zeros(0, dtype=torch.bool, device=self.dev)  # per row, whether it samples
        self.eps = torch.zeros(0, dtype=torch.float32, device=self.dev)  # per row, its KL budget (inf: none)
        self.budget = torch.zeros(0, dtype=torch.bool, device=self.dev)  # per row, whether it has a budget
        self.out = torch.zeros((0, 1), dtype=torch.long, device=self.dev)  # (B, longest limit) tokens made
        # (B, longest limit) each budgeted row's lambda and KL of each step
        self.lam_out = torch.zeros((0, 1), dtype=torch.float32, device=self.dev)
        self.kl_out = torch.zeros((0, 1), dtype=torch.float32, device=self.dev)
        # (B, longest limit) each row's uniform number for each step, drawn at admission (zeros where greedy)
        self.unif = torch.zeros((0, 1), dtype=torch.float32, device=self.dev)

    @property
    def live(self) -> int:
        return len(self.rows)

    @property
    def streams(self) -> list[Stream]:
        """Every model stream the batch runs: the base's and the guides' own (a guide's `stream`, where it has
        one; PAD on the shared backbone keeps its rows in the base's)."""
        own = [getattr(g, "stream", None) for g in self.guides]
        return [self.base_stream] + [st for st in own if st is not None and st is not self.base_stream]

    @property
    def accepts_rows(self) -> bool:
        """Whether `admit` can add rows now. False only while rows decode in a cache that new rows cannot join
        (a quantized or static one): the batch then drains, and the next rows start a fresh one."""
        return self.base_stream.joinable and all(g.joinable for g in self.guides)

    # -- rows join ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def admit(self, requests: Sequence[DecodeRequest]) -> list[int]:
        """Prefill the requests and add them to the batch; returns their keys. A prompt that leaves no room
        in a model's context finishes at once as "skipped". A request without an id keys its random stream
        by its key: the number of requests this batch admitted before it, so no two requests of one batch
        share a stream. A request the decoder cannot run raises before any joins."""
        d = self.dec
        for req in requests:
            d.check(req)
            k = (req.settings or self.s).topk
            for g in self.guides:
                if g.one_topk and k != self.s.topk:
                    raise PadError(f"{g.name} scores one top-k per batch ({self.s.topk}); a request asked for {k}")
        enc = lambda tok, text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        keys, new_rows, joining = [], [], []
        base_seqs: list[tuple[list[int], Slot]] = []  # each row's own base sequence
        now = time.perf_counter()
        for req in requests:
            key = self._next_key
            self._next_key += 1
            keys.append(key)
            s = req.settings or self.s
            bt, rts, reft = d.texts(req)
            gr = GuideRow(key, req.prompt, [p for p in req.principles if p.weight != 0],
                          [enc(d.rm_tok, t) for t in rts], enc(d.rm_tok, reft) if reft else None,
                          req.reference or d.reference,
                          req.weight if req.weight is not None else d.args_weight)
            ids = enc(d.tok, bt)
            # every sequence the row owns must fit its model's context: the base's own and the guides'
            lims = [s.max_new_tokens] + ([self.ctx_b - len(ids)] if self.ctx_b is not None else [])
            lims += [lim for g in self.guides if (lim := g.room(gr)) is not None]
            limit = min(lims)
            rm_texts = rts + ([reft] if reft else [])
            if limit < 1:
                self.done.append((key, DecodeResult(req.id, [], "", "skipped", bt, rm_texts, 0.0)))
                continue
            base_seqs.append((ids, Slot(key, "base")))
            joining.append(gr)
            row_id = req.id if req.id is not None else str(key)
            seed = s.seed if s.seed is not None else self.seed
            new_rows.append((_Row(key, req, bt, rm_texts, limit, now, s), row_key(seed, row_id)))
        if not new_rows:
            return keys
        plain, adapter = list(base_seqs), []
        for g in self.guides:
            more_plain, more_adapter = g.plan(joining)
            plain += more_plain
            adapter += more_adapter
        unzip = lambda pairs: ([x for x, _ in pairs], [t for _, t in pairs])  # noqa: E731
        self.base_stream.add(*unzip(plain), *unzip(adapter))  # one prefill of every base-model sequence
        for g in self.guides:
            g.join(joining)
        self.rows += [r for r, _ in new_rows]
        n, dev = len(new_rows), self.dev
        width = max(self.out.shape[1], max(r.limit for r, _ in new_rows))
        widen = lambda t, dtype: torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])),  # noqa: E731
                                            torch.zeros((n, width), dtype=dtype, device=dev)])
        self.out = widen(self.out, torch.long)
        self.lam_out, self.kl_out = widen(self.lam_out, torch.float32), widen(self.kl_out, torch.float32)
        new_keys = torch.tensor([k for _, k in new_rows], dtype=torch.long, device=dev)
        unif = torch.zeros((n, width), dtype=torch.float32, device=dev)
        if any(r.s.mode == "sample" for r, _ in new_rows):  # all of a row's draws at once: a few ops per admission
            unif = row_uniforms(new_keys[:, None].expand(n, width), torch.arange(width, device=dev).expand(n, width))
        self.unif = torch.cat([torch.nn.functional.pad(self.unif, (0, width - self.unif.shape[1])), unif])
        self.n_gen = torch.cat([self.n_gen, torch.zeros(n, dtype=torch.long, device=dev)])
        self.limit = torch.cat([self.limit, torch.tensor([r.limit for r, _ in new_rows], device=dev)])
        self.temp = torch.cat([self.temp, torch.tensor([r.s.temperature for r, _ in new_rows], device=dev)])
        self.sample = torch.cat([self.sample, torch.tensor([r.s.mode == "sample" for r, _ in new_rows], device=dev)])
        eps = [r.s.kl_budget for r, _ in new_rows]
        self.eps = torch.cat([self.eps, budget_f32([math.inf if e is None else e for e in eps]).to(dev)])
        self.budget = torch.cat([self.budget, torch.tensor([e is not None for e in eps], device=dev)])
        self._index()
        return keys

    def new_tokens(self) -> list[tuple[int, int]]:
        """(key, token) of every row the last step made a token for, finished rows included (for streaming)."""
        rows, tokens = self._made
        return list(zip((r.key for r in rows), tokens.tolist()))

    def distributions(self) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """After a step with `keep_distributions` on: {key: (candidates, guided, base)} of every row it made a
        token for, each (k,): the candidates' ids, the log-probabilities of the distribution the token was
        chosen from (softmax of the guided score over the candidates, at the row's temperature when it
        samples), and the base model's over its whole vocabulary."""
        rows, out = self._made[0], {}
        for where, cand, guided, base in self._dists:
            pos = range(len(rows)) if where is None else where.tolist()
            for j, i in enumerate(pos):
                out[rows[i].key] = (cand[j], guided[j], base[j])
        return out

    def cancel(self, key: int) -> None:
        """Stop a live row at the next step; it finishes as "cancelled" with the tokens it has."""
        self._cancelled.add(key)

    def finished(self) -> list[tuple[int, DecodeResult]]:
        """Rows finished since the last call (by step, skip at admission or cancel), as (key, result)."""
        out, self.done = self.done, []
        return out

    # -- one step ----------------------------------------------------------------------------------

    def _index(self) -> None:
        """Rebuild what maps sequences to rows; runs only when rows join or leave. Rows that share a top-k form
        one group (almost always all of them). Indices are rows of the stream that holds the sequence, so a
        step reads each stream's logits in place."""
        pos = {r.key: i for i, r in enumerate(self.rows)}
        base_of = {sl.row: j for j, sl in enumerate(self.base_stream.tags) if sl.role == "base"}
        members: dict[int, list[int]] = {}
        for i, r in enumerate(self.rows):
            members.setdefault(r.s.topk, []).append(i)
        t = lambda xs: torch.tensor(xs, dtype=torch.long, device=self.dev)  # noqa: E731
        self.groups = []
        for k, rows in members.items():
            whole = len(rows) == len(self.rows)  # one group: no gathering of rows
            base_idx = [base_of[self.rows[i].key] for i in rows]
            contiguous = base_idx == list(range(base_idx[0], base_idx[0] + len(base_idx)))
            self.groups.append(_Group(
                rows=None if whole else t(rows), k=k,
                base_at=slice(base_idx[0], base_idx[0] + len(base_idx)) if contiguous else t(base_idx)))
        self.feed = t([pos[sl.row] for sl in self.base_stream.tags])  # each base-stream sequence's row
        keys = [r.key for r in self.rows]
        for g in self.guides:
            g.index(keys)
        self.any_sample = any(r.s.mode == "sample" for r in self.rows)
        self.any_budget = any(r.s.kl_budget is not None for r in self.rows)
        self.all_sample = all(r.s.mode == "sample" for r in self.rows)

    @torch.inference_mode()
    def step(self) -> list[tuple[int, DecodeResult]]:
        """Make one token for every live row: base logits -> top-k -> the guides' rewards -> select -> feed.
        Returns the rows that finished, as (key, result)."""
        self._made = ([], self._made[1][:0])
        self._dists = []
        if self._cancelled:
            self._finish(torch.tensor([r.key in self._cancelled for r in self.rows], device=self.dev), None)
            self._cancelled.clear()
        if not self.rows:
            return self.finished()
        u = self.unif.gather(1, self.n_gen[:, None]).squeeze(1) if self.any_sample else None  # (B,)
        mode = "sample" if self.all_sample else self.sample if self.any_sample else "greedy"
        nxt = torch.empty(len(self.rows), dtype=torch.long, device=self.dev)  # (B,)
        for g in self.groups:
            zb_c, cand = candidates(self.base_stream.logits[g.base_at], g.k)  # (B_g, k) float32 logits and ids
            rewards = [r for guide in self.guides if (r := guide.rewards(g.rows, zb_c, cand)) is not None]
            score = zb_c.clone()  # (B_g, k) z_b + sum_i w_i r_i, added sequence by sequence
            for owner, wr in rewards:
                score.index_add_(0, owner, wr)
            if self.any_budget:
                score = self._within_budget(g, zb_c, rewards, score)
            if self.keep_distributions:
                self._keep_distribution(g, zb_c, cand, score)
            if g.rows is None:
                nxt = select_tokens(cand, score, mode, self.temp, u)
            else:
                m = mode if isinstance(mode, str) else mode[g.rows]
                nxt[g.rows] = select_tokens(cand, score, m, self.temp[g.rows], u[g.rows] if u is not None else None)
        self._made = (self.rows, nxt)  # for new_tokens(); _finish replaces self.rows, never edits it
        for guide in self.guides:
            guide.commit(nxt)
        self.out[torch.arange(nxt.shape[0], device=self.dev), self.n_gen] = nxt
        self.n_gen += 1
        is_eos = torch.isin(nxt, self.eos)
        done = is_eos | (self.n_gen >= self.limit)
        if bool(done.any()):
            nxt = self._finish(done, is_eos, nxt)
        if self.base_stream.rows:
            self.base_stream.step(nxt[self.feed].to(self.base_stream.device))
        return self.finished()

    def _keep_distribution(self, g: _Group, zb_c, cand, score) -> None:
        t = self.temp if g.rows is None else self.temp[g.rows]
        t = torch.where(self.sample if g.rows is None else self.sample[g.rows], t, torch.ones_like(t))
        lse = self.base_stream.logits[g.base_at].float().logsumexp(-1, keepdim=True)  # (B_g, 1)
        self._dists.append((g.rows, cand, (score / t[:, None]).log_softmax(-1), zb_c - lse))  # (B_g, k) x 3

    def _within_budget(self, g: _Group, zb_c: torch.Tensor, rewards: list, score: torch.Tensor) -> torch.Tensor:
        """(B_g, k) the group's scores where some rows decode under a KL budget: z_b + lambda R on those rows,
        the fixed-weight score z_b + sum_i w_i r_i on the others; records each budgeted row's lambda and KL."""
        at = torch.arange(zb_c.shape[0], device=self.dev) if g.rows is None else g.rows  # (B_g,) live positions
        reward = torch.zeros_like(zb_c)  # (B_g, k) R = sum_i w_i r_i
        for owner, wr in rewards:
            reward.index_add_(0, owner, wr)
        lam, budgeted = kl_budget_scores(zb_c, reward, self.eps[at])  # (B_g,), (B_g, k)
        step = self.n_gen[at]  # (B_g,)
        self.lam_out[at, step] = lam
        self.kl_out[at, step] = kl_from_base(zb_c, budgeted)
        return torch.where(self.budget[at][:, None], budgeted, score)

    def _finish(self, done: torch.Tensor, is_eos: torch.Tensor | None, nxt: torch.Tensor | None = None):
        """Record the rows marked in `done` (B,) and drop them from every stream; returns `nxt` of the rest."""
        if not bool(done.any()):
            return nxt
        now = time.perf_counter()
        for i in done.nonzero().flatten().tolist():
            row = self.rows[i]
            toks = self.out[i, : int(self.n_gen[i])].tolist()
            reason = "cancelled" if is_eos is None else "eos" if bool(is_eos[i]) else "length"
            text = self.dec.tok.decode(toks[:-1] if reason == "eos" else toks, skip_special_tokens=True)
            lams = kls = None
            if row.s.kl_budget is not None:
                n = int(self.n_gen[i])
                lams, kls = self.lam_out[i, :n].tolist(), self.kl_out[i, :n].tolist()
            self.done.append((row.key, DecodeResult(row.request.id, toks, text, reason, row.base_text, row.rm_texts,
                                                    now - row.started, lams, kls)))
        keep = (~done).nonzero().flatten()  # (B',) surviving positions
        self.rows = [self.rows[i] for i in keep.tolist()]
        alive = {r.key for r in self.rows}
        self.out, self.n_gen, self.limit = self.out[keep], self.n_gen[keep], self.limit[keep]
        self.lam_out, self.kl_out, self.eps, self.budget = (self.lam_out[keep], self.kl_out[keep], self.eps[keep],
                                                            self.budget[keep])
        self.unif = self.unif[keep]
        self.temp, self.sample = self.temp[keep], self.sample[keep]
        for g in self.guides:
            g.leave(alive)
        st = self.base_stream
        st.keep(torch.tensor([j for j, sl in enumerate(st.tags) if sl.row in alive], dtype=torch.long))
        self._index()
        return nxt[keep] if nxt is not None else None
