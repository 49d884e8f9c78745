"""Streams: one model's left-padded sequences and their KV cache, which rows can join and leave.

A stream's rows come in two sections: rows [0, n_plain) run the model as it is; rows [n_plain, N) add a
LoRA adapter's delta (the shared-backbone path, where base and PersRM rows are rows of one model). On the
two-model path every row is plain. Rows keep their order when others leave, and new rows join at the end
of their section, so the adapter rows always form one contiguous slice.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import contextmanager

import torch

from pad.errors import PadError


class SliceLoRA:
    """Adds a PEFT LoRA adapter's delta to a contiguous slice of the batch rows, through PEFT's own layers.

    During a forward under `active(start)`, every LoRA layer computes its base output for all rows (its
    adapter switched off) and a hook adds `lora_B(lora_A(x[start:])) * scaling` to rows `start:`, exactly
    what PEFT's unmerged forward adds to a row that uses the adapter. Whole modules the adapter trained
    (`modules_to_save`, trainable tokens) work the same way: the original module serves every row, and a
    hook recomputes rows `start:` with the adapter's copy. Outside `active`, the model behaves as PEFT left
    it. Only plain LoRA on linear layers qualifies (no DoRA or other variants, no merged or stacked
    adapters); `SliceLoRA.why_not(model)` says why a model does not.
    """

    def __init__(self, model):
        reason = self.why_not(model)
        if reason:
            raise PadError(f"the shared backbone cannot apply: {reason}")
        from peft.tuners.lora import LoraLayer

        self.adapter = model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapters[0]
        self.layers = [m for m in model.modules() if isinstance(m, LoraLayer) and self.adapter in m.lora_A]
        self.wrappers = _trained_modules(model, self.adapter)
        # every flag `active` flips, listed once: it runs at every forward
        self._switches = self.layers + [m for w in self.wrappers for m in _switches(w)]
        self.start: int | None = None
        self._inside = False  # a wrapper's hook is computing the adapter rows: no second hook
        self._handles = [m.register_forward_hook(self._add_delta) for m in self.layers]
        self._handles += [m.register_forward_hook(self._swap_rows) for m in self.wrappers]

    @staticmethod
    def why_not(model) -> str | None:
        """None if the model is a PEFT model with one plain LoRA adapter on linear layers; else the reason."""
        try:
            from peft import PeftModel, PeftType
            from peft.tuners.lora import Linear as LoraLinear
            from peft.tuners.lora import LoraLayer
        except ImportError:
            return "peft is not installed"
        if not isinstance(model, PeftModel):
            return "the PersRM is not a LoRA adapter (a merged or standalone checkpoint)"
        adapters = list(getattr(model, "peft_config", {}))
        if len(adapters) != 1:
            return f"the PersRM holds {len(adapters)} adapters; one is needed"
        name = adapters[0]
        if model.peft_config[name].peft_type != PeftType.LORA:
            return f"adapter {name!r} is a {model.peft_config[name].peft_type} adapter, not LoRA"
        layers = [m for m in model.modules() if isinstance(m, LoraLayer) and name in m.lora_A]
        if not layers:
            return "the adapter has no LoRA layers"
        for m in layers:
            if not isinstance(m, LoraLinear):
                return f"a LoRA layer of type {type(m).__name__} (only linear layers are supported)"
            if name in getattr(m, "lora_variant", {}) or getattr(m, "use_dora", {}).get(name, False):
                return "the adapter uses a LoRA variant (DoRA or similar)"
            if m.merged:
                return "the adapter is merged into the weights"
        return None

    def _add_delta(self, module, args, output):
        if self.start is None or self.start >= output.shape[0]:
            return None
        x = args[0][self.start:]  # (N - start, T, H_in) a view of the adapter rows' inputs
        name = self.adapter
        lora_A, lora_B = module.lora_A[name], module.lora_B[name]
        a, b = lora_A.weight, lora_B.weight  # (r, H_in), (H_out, r)
        x = x.to(a.dtype)
        if module.training:
            x = module.lora_dropout[name](x)
        # PEFT's lora_B(lora_A(x)) * scaling, op for op, without three module calls per layer and step
        h = torch.nn.functional.linear(x, a, lora_A.bias)
        delta = torch.nn.functional.linear(h, b, lora_B.bias) * module.scaling[name]
        output[self.start:] += delta.to(output.dtype)
        return output

    def _swap_rows(self, module, args, output):
        """A whole module the adapter trained: rows start: get the adapter's copy's output."""
        if self.start is None or self.start >= output.shape[0] or self._inside:
            return None
        switches = _switches(module)
        self._inside = True
        try:
            for m in switches:
                m._disable_adapters = False
            adapted = module(args[0][self.start:], *args[1:])  # (N - start, ...) the adapter's module
        finally:
            for m in switches:
                m._disable_adapters = True
            self._inside = False
        output[self.start:] = adapted.to(output.dtype)  # in place, as the LoRA hook adds its delta: no (N, ...) copy
        return output

    @contextmanager
    def active(self, start: int):
        """Within: a forward applies the adapter to rows start: only."""
        # PEFT's switch is a flag on each layer; flipping it directly costs microseconds, where
        # `disable_adapter()` walks the whole module tree and touches requires_grad every step.
        saved = [m._disable_adapters for m in self._switches]
        for m in self._switches:
            m._disable_adapters = True
        self.start = start
        try:
            yield
        finally:
            self.start = None
            for m, s in zip(self._switches, saved):
                m._disable_adapters = s

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _trained_modules(model, adapter: str) -> list:
    """The whole modules an adapter trained beside its LoRA layers (PEFT's `modules_to_save` and trainable
    tokens): while the adapter is on they serve every row, so base rows need the original back."""
    try:
        from peft.utils.other import AuxiliaryTrainingWrapper
    except ImportError:  # older PEFT: only ModulesToSaveWrapper exists
        from peft.utils.other import ModulesToSaveWrapper as AuxiliaryTrainingWrapper
    return [m for m in model.modules() if isinstance(m, AuxiliaryTrainingWrapper)
            and adapter in getattr(m, "_adapters", getattr(m, "modules_to_save", {}))]


def _switches(wrapper) -> list:
    """The modules whose `_disable_adapters` flag decides what a trained-module wrapper computes."""
    inner = getattr(wrapper, "token_adapter", None)  # trainable tokens: the wrapper defers to its layer
    return [wrapper] + ([inner] if inner is not None else [])


def _cache_kind(layer) -> str | None:
    """"full" for a plain growing layer, "sliding" for a sliding-window one (keys and values of (N, H, T, D),
    the latter keeping only the last window - 1 columns); None for any other (quantized, static, offloaded,
    recurrent): rows cannot be padded into those or cut."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    if type(layer) is DynamicLayer:
        return "full"
    if type(layer) is DynamicSlidingWindowLayer and not layer.record_past:
        return "sliding"
    return None


def _joinable_layers(cache) -> list | None:
    """The cache's layers if rows can join and leave it (every layer full or sliding), else None."""
    layers = getattr(cache, "layers", None)
    if layers is None or any(_cache_kind(layer) is None for layer in layers):
        return None
    return layers


def _cache_layers(cache) -> list:
    layers = _joinable_layers(cache)
    if layers is None:
        raise PadError(f"rows cannot join a running batch with this model's cache ({type(cache).__name__}); "
                       "decode such prompts in separate batches")
    return layers


def _kept_width(layer, width: int) -> int:
    """How many columns a layer holds for a batch whose masks are `width` columns wide."""
    return width if _cache_kind(layer) == "full" else min(width, layer.sliding_window - 1)


def _join_rows(old: torch.Tensor, new: torch.Tensor, old_plain: int, new_plain: int, width: int | None = None,
               dim: int = 1) -> torch.Tensor:
    """One tensor with the rows of `old` and `new` (dim 0) in section order: old[:old_plain], new[:new_plain],
    old[old_plain:], new[new_plain:]. With `width`, each piece sits at the right end of `width` places along
    `dim`, zeros on the left (left padding)."""
    shape = list(old.shape)
    shape[0] = old.shape[0] + new.shape[0]
    if width is not None:
        shape[dim] = width
    out = old.new_zeros(shape)
    row = 0
    for t, a, b in ((old, 0, old_plain), (new, 0, new_plain), (old, old_plain, old.shape[0]),
                    (new, new_plain, new.shape[0])):
        if b > a:
            dst = out[row:row + b - a]
            if width is not None:
                dst = dst.narrow(dim, width - t.shape[dim], t.shape[dim])
            dst.copy_(t[a:b])
            row += b - a
    return out


class Stream:
    """One model's batch of left-padded sequences, its KV cache and its latest next-token logits.

    model: a causal LM; lora: a SliceLoRA on it for the shared-backbone path (rows n_plain: use the adapter).
    `tags` holds one caller's object per row (the engine's slots), kept in the rows' order as they join and leave.
    """

    def __init__(self, model, pad_id: int, lora: SliceLoRA | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.pad_id = pad_id
        self.lora = lora
        core = model.get_base_model() if hasattr(model, "get_base_model") else model
        # transformers 5 renamed `past_key_values` to `cache`; support both.
        self.cache_kw = "cache" if "cache" in inspect.signature(core.forward).parameters else "past_key_values"
        self.cache = None
        self._joinable = True  # the kind of cache the model makes: read once, at the first prefill
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)  # (N, W) 1 = a real token
        self.next_pos = torch.zeros((0,), dtype=torch.long, device=self.device)  # (N,) position of the next token
        self.logits: torch.Tensor | None = None  # (N, V) next-token logits of every row
        self.n_plain = 0
        self.tags: list = []

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def joinable(self) -> bool:
        """Whether rows can join now: the stream is empty, or its cache is one rows can be padded into."""
        return self.rows == 0 or self._joinable

    def add(self, plain: Sequence[list[int]], plain_tags: Sequence = (), adapter: Sequence[list[int]] = (),
            adapter_tags: Sequence = ()) -> None:
        """Prefill new rows and join them to the batch: plain rows after the plain section, adapter rows at the end."""
        seqs = [*plain, *adapter]
        if not seqs:
            return
        if adapter and self.lora is None:
            raise PadError("adapter rows need a stream on the shared backbone")
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):  # left padding: the last real token sits at -1 for every row
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        mask = mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self._forward(ids.to(self.device), mask, pos, None, start=len(plain))
        next_pos = torch.tensor([len(s) for s in seqs], device=self.device)
        if self.cache is None or self.rows == 0:
            self.cache, self.mask, self.next_pos, self.logits = cache, mask, next_pos, logits
            self._joinable = _joinable_layers(cache) is not None
            self.n_plain = len(plain)
            self.tags = [*plain_tags, *adapter_tags]
            return
        # Join: rows in section order (old plain, new plain, old adapter, new adapter), each batch right-aligned
        # in the joined width; every tensor is written once into its new place.
        W = max(self.mask.shape[1], width)
        split = (self.n_plain, len(plain))
        for mine, theirs in zip(_cache_layers(self.cache), _cache_layers(cache)):
            # A sliding layer holds each batch's last min(width, window - 1) columns, the right end of its
            # mask; right-aligned in the joined batch's count, they line up with the joined mask's end.
            w = _kept_width(mine, W)
            mine.keys = _join_rows(mine.keys, theirs.keys, *split, w, 2)
            mine.values = _join_rows(mine.values, theirs.values, *split, w, 2)
            if _cache_kind(mine) == "sliding":
                mine.cumulative_length = W  # the mask's width: what the attention mask is cut against
        self.mask = _join_rows(self.mask, mask, *split, W, 1)
        self.next_pos = _join_rows(self.next_pos, next_pos, *split)
        self.logits = _join_rows(self.logits, logits, *split)
        self.tags = [*self.tags[:self.n_plain], *plain_tags, *self.tags[self.n_plain:], *adapter_tags]
        self.n_plain += len(plain)

    def step(self, tokens: torch.Tensor) -> None:
        """Feed one token per row, (N,); the stream's logits become the next step's."""
        ones = torch.ones((self.rows, 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        pos = self.next_pos[:, None]
        self.next_pos = self.next_pos + 1
        self.logits, self.cache = self._forward(tokens.to(self.device)[:, None], self.mask, pos, self.cache,
                                                start=self.n_plain)

    def keep(self, idx: torch.Tensor) -> None:
        """Keep only the rows in `idx` (ascending), dropping the rest from the cache and the masks."""
        self.tags = [self.tags[j] for j in idx.tolist()]
        idx = idx.to(self.device)
        self.n_plain = int((idx < self.n_plain).sum())
        if idx.numel() == 0:
            self.cache, self.logits = None, None
            self.mask = self.mask[:0, :0]
            self.next_pos = self.next_pos[:0]
            return
        self.cache.batch_select_indices(idx)
        self.mask = self.mask[idx]
        self.next_pos = self.next_pos[idx]
        self.logits = self.logits[idx]
        # Columns that are padding for every row left are dead weight in each attention: cut them.
        first = int(self.mask.any(0).int().argmax())
        layers = _joinable_layers(self.cache) if first > 0 else None
        if layers is not None:
            W = self.mask.shape[1] - first
            for layer in layers:
                cut = layer.keys.shape[2] - _kept_width(layer, W)  # a sliding layer may not hold those columns
                layer.keys = layer.keys[:, :, cut:]
                layer.values = layer.values[:, :, cut:]
                if _cache_kind(layer) == "sliding":
                    layer.cumulative_length = W
            self.mask = self.mask[:, first:]

    def _forward(self, ids, mask, pos, cache, start: int):
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "use_cache": True,
                  "logits_to_keep": 1, self.cache_kw: cache}
        if self.lora is not None:
            with self.lora.active(start):
                out = self.model(**kwargs)
        else:
            out = self.model(**kwargs)
        new_cache = out["cache"] if "cache" in out else out["past_key_values"]
        return out.logits[:, -1, :], new_cache  # (N, V)
