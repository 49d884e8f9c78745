"""The cached, batched PAD decoding loop.

Both models run incrementally with their own KV caches. A batch of B prompts becomes B base
"streams" and S PersRM streams (one per row and active principle, plus one unprincipled stream per
row when the reference policy is the PersRM). Each model's streams are left-padded together, so a
step costs one forward of each model, whatever the number of principles. Rows that finish are
dropped from both caches, so the batch shrinks instead of decoding padding.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from pad.decode.scoring import guided_scores, select_tokens
from pad.errors import PadError
from pad.principles import DEFAULT_TEMPLATE, Message, Principle, check_template, join_principles, principle_prompt

REFERENCES = ("base", "persrm", "prompted-base")
MODES = ("greedy", "sample")


@dataclass
class SamplingSettings:
    """How one run decodes. Validated on creation."""

    topk: int = 10
    mode: str = "greedy"
    temperature: float = 1.0
    max_new_tokens: int = 128
    seed: int | None = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise PadError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not isinstance(self.topk, int) or self.topk < 1:
            raise PadError(f"topk must be a whole number >= 1, got {self.topk!r}")
        if not self.temperature > 0:
            raise PadError(f"temperature must be > 0, got {self.temperature!r}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise PadError(f"max_new_tokens must be >= 1, got {self.max_new_tokens!r}")


@dataclass
class DecodeRequest:
    """One prompt (a string or chat messages) and the principles that guide it."""

    prompt: str | list[Message]
    principles: list[Principle] = field(default_factory=list)
    id: str | None = None


@dataclass
class DecodeResult:
    id: str | None
    token_ids: list[int]
    text: str
    finish_reason: str  # "eos", "length" or "skipped"
    model_input: str  # the exact text the base model read
    persrm_inputs: list[str]
    seconds: float


def _context_size(model) -> int | None:
    cfg = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


class _Stream:
    """One model's batch of left-padded sequences and its KV cache."""

    def __init__(self, model, pad_id: int):
        self.model = model
        self.device = next(model.parameters()).device
        self.pad_id = pad_id
        core = model.get_base_model() if hasattr(model, "get_base_model") else model
        # transformers 5 renamed `past_key_values` to `cache`; support both.
        self.cache_kw = "cache" if "cache" in inspect.signature(core.forward).parameters else "past_key_values"
        self.cache = None

    def prefill(self, seqs: Sequence[list[int]]) -> torch.Tensor:
        """Run the prompts; (N, V) logits of the last position."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):  # left padding: the last real token sits at -1 for every row
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        self.mask = mask.to(self.device)
        self.next_pos = torch.tensor([len(s) for s in seqs], device=self.device)  # (N,)
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)
        return self._forward(ids.to(self.device), pos, None)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row, (N,); returns (N, V) logits."""
        ones = torch.ones((self.mask.shape[0], 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        pos = self.next_pos[:, None]
        self.next_pos = self.next_pos + 1
        return self._forward(tokens.to(self.device)[:, None], pos, self.cache)

    def keep(self, idx: torch.Tensor) -> None:
        """Drop every row not in `idx` from the cache and the masks."""
        idx = idx.to(self.device)
        self.cache.batch_select_indices(idx)
        self.mask = self.mask[idx]
        self.next_pos = self.next_pos[idx]

    def _forward(self, ids, pos, cache) -> torch.Tensor:
        out = self.model(
            input_ids=ids, attention_mask=self.mask, position_ids=pos, use_cache=True, logits_to_keep=1,
            **{self.cache_kw: cache},
        )
        self.cache = out["cache"] if "cache" in out else out["past_key_values"]
        return out.logits[:, -1, :]  # (N, V)


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
    ):
        if reference not in REFERENCES:
            raise PadError(f"reference {reference!r} is not one of {', '.join(REFERENCES)}")
        self.base, self.tok = base.eval(), tokenizer
        self.persrm = persrm.eval() if persrm is not None else None
        self.rm_tok = rm_tokenizer or tokenizer
        self.template = check_template(template)
        self.reference = reference
        self.base_sees_principles = base_sees_principles
        if self.persrm is not None and self.rm_tok is not self.tok and self.rm_tok.get_vocab() != self.tok.get_vocab():
            raise PadError(
                "the base model and the PersRM have different vocabularies; PAD needs one shared tokenizer "
                "(cross-tokenizer guidance is not supported yet)"
            )
        gen_eos = getattr(base.generation_config, "eos_token_id", None)
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_ids = torch.tensor(sorted(eos), dtype=torch.long)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0
        self.vocab = base.get_output_embeddings().weight.shape[0]

    def texts(self, req: DecodeRequest) -> tuple[str, list[str], str | None]:
        """(base input, PersRM inputs per active principle, PersRM reference input or None)."""
        active = [p for p in req.principles if p.weight != 0]
        joined = join_principles([p.name for p in req.principles]) or None
        base_text = principle_prompt(self.tok, req.prompt, joined if self.base_sees_principles else None,
                                     self.template)
        if self.persrm is None or not active:
            return base_text, [], None
        rm_texts = [principle_prompt(self.rm_tok, req.prompt, p.name, self.template) for p in active]
        ref_text = principle_prompt(self.rm_tok, req.prompt, None, self.template) if self.reference == "persrm" else None
        return base_text, rm_texts, ref_text

    @torch.inference_mode()
    def generate(
        self,
        requests: Sequence[DecodeRequest],
        settings: SamplingSettings | None = None,
        on_token: Callable[[int], None] | None = None,
    ) -> list[DecodeResult]:
        """Decode a batch of requests; results in the same order. `on_token(n)` reports n new tokens."""
        s = settings or SamplingSettings()
        if s.topk > self.vocab:
            raise PadError(f"topk {s.topk} is larger than the vocabulary ({self.vocab} tokens)")
        t0 = time.perf_counter()
        B = len(requests)
        enc = lambda tok, text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        base_texts, base_ids, limits = [], [], []
        rm_texts: list[list[str]] = []
        rm_ids, rm_owner, rm_weight, ref_ids = [], [], [], []
        ctx_b = _context_size(self.base)
        ctx_r = _context_size(self.persrm) if self.persrm is not None else None
        for b, req in enumerate(requests):
            bt, rts, reft = self.texts(req)
            base_texts.append(bt)
            rm_texts.append(rts + ([reft] if reft else []))
            ids = enc(self.tok, bt)
            base_ids.append(ids)
            lim = s.max_new_tokens if ctx_b is None else min(s.max_new_tokens, ctx_b - len(ids))
            active = [p for p in req.principles if p.weight != 0]
            for p, text in zip(active, rts):
                rid = enc(self.rm_tok, text)
                if ctx_r is not None:
                    lim = min(lim, ctx_r - len(rid))
                rm_ids.append(rid)
                rm_owner.append(b)
                rm_weight.append(p.weight)
            if reft:
                rid = enc(self.rm_tok, reft)
                if ctx_r is not None:
                    lim = min(lim, ctx_r - len(rid))
                ref_ids.append((b, rid))
            limits.append(lim)

        results: list[DecodeResult | None] = [None] * B
        for b in range(B):
            if limits[b] < 1:
                results[b] = DecodeResult(requests[b].id, [], "", "skipped", base_texts[b], rm_texts[b], 0.0)
        live = [b for b in range(B) if results[b] is None]
        if not live:
            return results  # type: ignore[return-value]

        # Keep only the streams of rows that fit the context.
        keep_stream = [i for i, o in enumerate(rm_owner) if results[o] is None]
        pos_of = {b: i for i, b in enumerate(live)}
        rm_ids = [rm_ids[i] for i in keep_stream]
        owner = torch.tensor([pos_of[rm_owner[i]] for i in keep_stream], dtype=torch.long)
        weight = torch.tensor([rm_weight[i] for i in keep_stream], dtype=torch.float32)
        ref_rows = [(pos_of[b], rid) for b, rid in ref_ids if results[b] is None]

        dev = next(self.base.parameters()).device
        guided = len(rm_ids) > 0
        # Every stream of either model belongs to one row (`*_owner`), so finished rows are shed from both
        # caches the same way. The base's streams are the rows, then, for "prompted-base", a copy of every
        # principle stream: the base reading that stream's principle prompt, its reference.
        prompted = guided and self.reference == "prompted-base"
        n_rows = len(live)
        owner, weight = owner.to(dev), weight.to(dev)
        base_owner = torch.cat([torch.arange(n_rows, device=dev), owner if prompted else owner[:0]])
        base = _Stream(self.base, self.pad_id)
        zb_all = base.prefill([base_ids[b] for b in live] + (rm_ids if prompted else []))
        if guided:
            rm = _Stream(self.persrm, self.pad_id)
            # One PersRM batch: principle streams first, then the reference streams (if any).
            zr_all = rm.prefill(rm_ids + [rid for _, rid in ref_rows]).to(dev)
            ref_owner = torch.tensor([r for r, _ in ref_rows], dtype=torch.long, device=dev)
            all_owner = torch.cat([owner, ref_owner])  # (S_all,) row of every PersRM stream

        def reference_index() -> torch.Tensor | None:
            """(S,) each principle stream's row in the reference logits; None: the base rows themselves."""
            if self.reference == "persrm":  # the stream's row's one reference stream
                slot = torch.empty(n_rows, dtype=torch.long, device=dev)
                slot[ref_owner] = torch.arange(ref_owner.shape[0], device=dev)
                return slot[owner]
            return torch.arange(owner.shape[0], device=dev) if prompted else None

        ref_index = reference_index() if guided else None
        gen = None
        if s.mode == "sample":
            gen = torch.Generator(device=dev)
            gen.manual_seed(0 if s.seed is None else s.seed)
        eos = self.eos_ids.to(dev)
        rows = torch.tensor(live, dtype=torch.long, device=dev)  # original index of each live row
        limit = torch.tensor([limits[b] for b in live], device=dev)
        # (B, longest limit) generated ids; every live row makes one token per step, so a row that
        # finishes at step t owns out[b, :t]. Filled with one indexed write per step, no Python loop.
        out = torch.empty((B, max(limits[b] for b in live)), dtype=torch.long, device=dev)
        step = 0
        while True:
            zb = zb_all[:n_rows]  # (B', V)
            if guided:
                S = owner.shape[0]
                zref = zb_all[n_rows:] if prompted else zr_all[S:] if self.reference == "persrm" else None
                cand, score = guided_scores(zb, zr_all[:S], owner, weight, s.topk, zref, ref_index)
            else:
                cand, score = guided_scores(zb, None, None, None, s.topk)
            nxt = select_tokens(cand, score, s.mode, s.temperature, gen)  # (B',)
            out[rows, step] = nxt
            step += 1
            if on_token is not None:
                on_token(nxt.shape[0])
            is_eos = torch.isin(nxt, eos)
            done = is_eos | (step >= limit)
            if bool(done.any()):
                now = time.perf_counter() - t0
                for i in done.nonzero().flatten().tolist():
                    b = int(rows[i])
                    toks = out[b, :step].tolist()
                    reason = "eos" if bool(is_eos[i]) else "length"
                    text = self.tok.decode(toks[:-1] if reason == "eos" else toks, skip_special_tokens=True)
                    results[b] = DecodeResult(requests[b].id, toks, text, reason, base_texts[b], rm_texts[b], now)
                if bool(done.all()):
                    break
                keep = (~done).nonzero().flatten()  # (B'',) surviving positions
                rows, limit, nxt = rows[keep], limit[keep], nxt[keep]
                n_rows = keep.shape[0]
                remap = torch.full((done.shape[0],), -1, dtype=torch.long, device=dev)
                remap[keep] = torch.arange(n_rows, device=dev)
                b_keep = (remap[base_owner] >= 0).nonzero().flatten()
                base.keep(b_keep)
                base_owner = remap[base_owner[b_keep]]
                if guided:
                    s_keep = (remap[all_owner] >= 0).nonzero().flatten()
                    rm.keep(s_keep)
                    all_owner = remap[all_owner[s_keep]]
                    n_principle = int((s_keep < owner.shape[0]).sum())
                    owner, weight = all_owner[:n_principle], weight[s_keep[:n_principle]]
                    ref_owner = all_owner[n_principle:]
                    ref_index = reference_index()
            zb_all = base.step(nxt[base_owner])
            if guided:
                zr_all = rm.step(nxt.to(rm.device)[all_owner.to(rm.device)]).to(dev)
        return results  # type: ignore[return-value]
