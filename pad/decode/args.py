"""ARGS (Khanov et al., ICLR 2024): reward-guided search with a sequence reward model, as a second guide of
the engine.

    C        = top-k(z_b)
    score(a) = z_b(a) + w * RM(x, y_<t + a)          for a in C

Two ways to read RM(x, y_<t + a) for every row and candidate in one batched forward per step:
- cached (`CachedReward`): the RM shares the base's tokenizer and is a causal transformer classifier. Each
  guided row keeps a KV cache of the RM's prefix (its prompt in the RM's chat format, then the answer so
  far); a step repeats each row's cache k times, feeds the k candidates as one token each, reads the reward
  head at that token, and keeps the chosen candidate's cache row. The reference re-reads everything, one
  prompt at a time.
- texts (`TextReward`): any other RM (another tokenizer, an encoder, the paper's GPT-2 RMs): each step renders
  the k candidate texts of every guided row in the RM's own format (`pad eval`'s scorers) and scores them in
  batches, uncached.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from pad.decode.guides import Guide, GuideRow
from pad.decode.scoring import args_scores
from pad.decode.streams import Stream
from pad.errors import PadError
from pad.principles import Message, chat_text, to_messages


def _reward_head(rm):
    for name in ("score", "classifier"):
        head = getattr(rm, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    return None


class RewardAsLM(torch.nn.Module):
    """A transformer sequence classifier presented as a causal LM whose "logits" are the reward head's outputs
    at each row's last token, so that a `Stream` can cache and extend it like any decoder."""

    def __init__(self, rm):
        super().__init__()
        self.rm = rm
        self.backbone = rm.base_model
        self.head = _reward_head(rm)
        if self.head is None or self.backbone is rm:
            raise PadError(f"{type(rm).__name__} has no reward head on a transformer backbone")
        import inspect

        params = inspect.signature(self.backbone.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True,
                logits_to_keep=1):
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=True, **{self._cache_kw: past_key_values})
        cache = out["cache"] if "cache" in out else out["past_key_values"]
        h = out.last_hidden_state[:, -1:]  # (N, 1, H) the last token of every row (left padding)
        return CausalLMOutputWithPast(logits=self.head(h).float(), past_key_values=cache)  # (N, 1, labels)


def cached_path_blocker(rm, rm_tokenizer, base_tokenizer) -> str | None:
    """Why the RM cannot be read incrementally (None: it can)."""
    if rm_tokenizer.get_vocab() != base_tokenizer.get_vocab():
        return "its tokenizer is not the base's"
    if getattr(rm.config, "is_encoder_decoder", False) or not any(
            a.endswith("ForSequenceClassification") for a in (getattr(rm.config, "architectures", None) or [])):
        return "it is not a decoder-only sequence classifier"
    model_type = getattr(rm.config, "model_type", "")
    if model_type in ("bert", "roberta", "deberta", "deberta-v2", "distilbert", "electra", "xlm-roberta"):
        return f"{model_type} is an encoder (it reads the whole text at once)"
    if _reward_head(rm) is None:
        return "it has no reward head (score or classifier)"
    return None


class CachedReward:
    """ARGS's RM over cached prefixes, one sequence per guided row (`Stream` with a reward head).

    A step scores each row's k candidates in one forward of k + 1 new tokens per row over the row's cache, with
    no copy of it: the token the row chose at the step before (not yet in the cache; a masked pad for a row
    just prefilled), then the k candidates, all at the next position. A 4D mask lets every candidate see the
    row's prefix, that chosen token and itself, never another candidate. Afterwards the cache keeps the chosen token's keys and values and drops
    the candidates'; `commit` then names the next chosen token."""

    path = "cached"

    def __init__(self, rm, rm_tokenizer, label: int, pad_id: int, template: str):
        self.model = RewardAsLM(rm).eval()
        self.tok = rm_tokenizer
        self.label = label
        self.template = template
        self.stream = Stream(self.model, pad_id)
        self.pad_id = pad_id
        dev = self.stream.device
        self.pending = torch.zeros((0,), dtype=torch.long, device=dev)  # (N,) chosen last step, not yet cached
        self.has_pending = torch.zeros((0,), dtype=torch.bool, device=dev)
        self._cand = None
        self.dtype = next(self.model.parameters()).dtype
        self.neg = torch.finfo(self.dtype).min

    @property
    def rows(self) -> int:
        return self.stream.rows

    @property
    def tags(self) -> list:
        return self.stream.tags

    def prefix_ids(self, prompt: str | Sequence[Message]) -> list[int]:
        text = chat_text(self.tok, to_messages(prompt, None, self.template))
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def add(self, prompts: Sequence, tags: Sequence) -> None:
        self.stream.add([self.prefix_ids(p) for p in prompts], tags)  # new rows join after the others
        dev, n = self.stream.device, len(prompts)
        self.pending = torch.cat([self.pending, torch.full((n,), self.pad_id, dtype=torch.long, device=dev)])
        self.has_pending = torch.cat([self.has_pending, torch.zeros((n,), dtype=torch.bool, device=dev)])

    @torch.inference_mode()
    def rewards(self, cand: torch.Tensor) -> torch.Tensor:
        """(N, k) RM(x, y_<t + a) for the k candidates of each of the stream's rows (cand: (N, k))."""
        st = self.stream
        n, k = cand.shape
        cand = cand.to(st.device)
        cached = st.mask.shape[1]
        ids = torch.cat([self.pending[:, None], cand], dim=1)  # (N, 1 + k); a row just prefilled has a pad first
        seen = torch.zeros((n, 1 + k, cached + 1 + k), dtype=torch.bool, device=st.device)
        seen[:, :, :cached] = st.mask.bool()[:, None, :]
        seen[:, :, cached:] = torch.eye(1 + k, dtype=torch.bool, device=st.device)  # each new token: itself
        seen[:, :, cached] |= self.has_pending[:, None]  # and the chosen token, where there is one
        mask = torch.zeros(seen.shape, dtype=self.dtype, device=st.device).masked_fill_(~seen, self.neg)
        step = self.has_pending.long()
        pos = torch.cat([st.next_pos[:, None], (st.next_pos + step)[:, None].expand(n, k)], dim=1)
        out = self.model.backbone(input_ids=ids, attention_mask=mask[:, None], position_ids=pos, use_cache=True,
                                  **{self.model._cache_kw: st.cache})
        st.cache = out["cache"] if "cache" in out else out["past_key_values"]
        st.cache.crop(-k)  # keep the chosen token's keys and values, drop the candidates'
        st.mask = torch.cat([st.mask, step[:, None].to(st.mask.dtype)], dim=1)
        st.next_pos = st.next_pos + step
        self._cand = cand
        return self.model.head(out.last_hidden_state[:, 1:]).float()[..., self.label]  # (N, k)

    def commit(self, pick: torch.Tensor) -> None:
        """Each row's chosen candidate (pick: (N,) index into its k) enters the cache at the next step."""
        rows = torch.arange(pick.shape[0], device=self.stream.device)
        self.pending = self._cand[rows, pick.to(self.stream.device)]
        self.has_pending = torch.ones_like(self.pending, dtype=torch.bool)
        self._cand = None

    def keep(self, idx: torch.Tensor) -> None:
        self.stream.keep(idx)
        idx = idx.to(self.stream.device)
        self.pending, self.has_pending = self.pending[idx], self.has_pending[idx]


class TextReward:
    """ARGS's RM on re-tokenized texts: each candidate's whole answer so far, in the RM's own format."""

    path = "texts"

    def __init__(self, scorer, label: int, base_tokenizer, batch_size: int = 64):
        self.scorer, self.label, self.tok, self.batch_size = scorer, label, base_tokenizer, batch_size
        self.prompts: list = []
        self.tokens: list[list[int]] = []
        self.tags: list = []

    @property
    def rows(self) -> int:
        return len(self.tags)

    def add(self, prompts: Sequence, tags: Sequence) -> None:
        self.prompts += list(prompts)
        self.tokens += [[] for _ in prompts]
        self.tags += list(tags)

    @torch.inference_mode()
    def rewards(self, cand: torch.Tensor) -> torch.Tensor:
        from pad.evaluate.inputs import Row

        n, k = cand.shape
        cands = cand.tolist()
        rows = [Row(str(i), self.prompts[i], self.tok.decode(self.tokens[i] + [a], skip_special_tokens=True))
                for i in range(n) for a in cands[i]]
        items = self.scorer.prepare(rows)
        out = torch.zeros(n * k)
        for i in range(0, len(items), self.batch_size):
            batch = items[i:i + self.batch_size]
            if any(it.skip for it in batch):
                raise PadError(f"ARGS reward model {self.scorer.model_spec}: {next(it.skip for it in batch if it.skip)}")
            vectors = self.scorer._forward(batch)
            out[i:i + len(batch)] = torch.tensor([v[self.label] for v in vectors])
        self._cand = cands
        return out.reshape(n, k)

    def commit(self, pick: torch.Tensor) -> None:
        for i, j in enumerate(pick.tolist()):
            self.tokens[i].append(self._cand[i][j])

    def keep(self, idx: torch.Tensor) -> None:
        keep = idx.tolist()
        self.prompts = [self.prompts[j] for j in keep]
        self.tokens = [self.tokens[j] for j in keep]
        self.tags = [self.tags[j] for j in keep]


class ArgsGuide:
    """Which RM, read how: `reward_model` is a `pad eval` scorer spec (preset, PRESET=PATH, a model path or
    hub id, MODEL:LABEL); `reward_path` "auto" takes the cached path where it applies."""

    def __init__(self, reward_model: str, base_tokenizer, device: str = "cpu", dtype=None, reward_path: str = "auto"):
        from pad.evaluate.scorers import ScorerError, build_dimensions

        if reward_path not in ("auto", "cached", "texts"):
            raise PadError(f"reward path {reward_path!r} is not one of auto, cached, texts")
        try:
            (dim,) = build_dimensions([reward_model], device=device, dtype=dtype)
        except ScorerError as e:
            raise PadError(f"--reward-model: {e}") from None
        self.spec, self.scorer, self.label = reward_model, dim.scorer, dim.index
        self.base_tok = base_tokenizer
        blocker = None
        if self.scorer.kind != "classifier":
            blocker = "it is not a plain sequence classifier"
        model = self.scorer.load()
        blocker = blocker or cached_path_blocker(model, self.scorer.tokenizer, base_tokenizer)
        if reward_path == "cached" and blocker:
            raise PadError(f"the reward model {reward_model} cannot be read incrementally: {blocker}")
        self.path = "texts" if blocker or reward_path == "texts" else "cached"
        self.note = blocker

    def new_reader(self, pad_id: int, template: str):
        if self.path == "cached":
            return CachedReward(self.scorer.load(), self.scorer.tokenizer, self.label, pad_id, template)
        return TextReward(self.scorer, self.label, self.base_tok)


class ArgsRows(Guide):
    """ARGS as a guide of the batch: the rows with w != 0 are rows of a reader (`CachedReward` or `TextReward`),
    whose rewards over the candidates, times w, the batch adds to z_b. One top-k per batch."""

    name = "args"
    one_topk = True

    def __init__(self, reader):
        self.reader = reader
        self.w = torch.zeros(0, dtype=torch.float32)  # (N,) each reader row's w
        self._feed: torch.Tensor | None = None  # (N,) each reader row's position among the live rows
        self._cand: torch.Tensor | None = None

    @property
    def stream(self) -> Stream | None:
        """The cached reader's stream (None for the texts reader)."""
        return getattr(self.reader, "stream", None)

    @property
    def joinable(self) -> bool:
        return self.stream is None or self.stream.joinable

    def join(self, rows: list[GuideRow]) -> None:
        rows = [r for r in rows if r.weight != 0]
        if rows:
            self.reader.add([r.prompt for r in rows], [r.key for r in rows])
            self.w = torch.cat([self.w, torch.tensor([r.weight for r in rows], dtype=torch.float32)])

    def index(self, keys: list[int]) -> None:
        pos = {k: i for i, k in enumerate(keys)}
        self._feed = torch.tensor([pos[key] for key in self.reader.tags], dtype=torch.long)

    def rewards(self, at, zb_c, cand):
        if not self.reader.rows:
            return None
        if at is not None:
            raise PadError("ARGS scores one top-k per batch")
        dev = zb_c.device
        feed = self._feed.to(dev)
        self._cand = cand[feed]  # (N, k)
        rm = self.reader.rewards(self._cand).to(dev)  # (N, k) RM(x, y_<t + a)
        return feed, args_scores(torch.zeros_like(rm), rm, self.w.to(dev))  # w * RM, as ARGS adds it to z_b

    def commit(self, nxt: torch.Tensor) -> None:
        if self._cand is not None:  # each guided row's RM cache keeps its chosen candidate
            self.reader.commit((self._cand == nxt[self._feed.to(nxt.device), None]).int().argmax(-1))
            self._cand = None

    def leave(self, alive: set[int]) -> None:
        if not self.reader.rows:
            return
        keep = [j for j, key in enumerate(self.reader.tags) if key in alive]
        if len(keep) < self.reader.rows:
            self.reader.keep(torch.tensor(keep, dtype=torch.long))
            self.w = self.w[keep]
