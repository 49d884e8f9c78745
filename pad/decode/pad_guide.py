"""PAD's guide: the PersRM's reward over the base's candidates (method.md section 3), on a separate model or on
the shared backbone.

Every guided row owns one PersRM sequence per active principle, plus, for the references, one PersRM sequence
without principles ("persrm") or one base sequence per principle reading that principle's prompt
("prompted-base"). On the two-model path the PersRM's sequences are rows of the guide's own stream; on the
shared backbone they are the adapter rows of the base's stream (the batch feeds that stream), so a step costs
one forward per model either way, whatever the number of principles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pad.decode.guides import Guide, GuideRow, Slot
from pad.decode.scoring import stream_rewards
from pad.decode.streams import Stream


@dataclass
class _Part:
    """The guide's sequences of one group's rows that share a reference, and where their logits are."""

    reference: str
    pr_idx: torch.Tensor  # (S,) principle sequences in the PersRM's stream
    owner: torch.Tensor  # (S,) which of the group's rows each guides
    weight: torch.Tensor  # (S,)
    ref_idx: torch.Tensor | None  # (S,) each principle's reference sequence; None: the row's base logits


class PadGuide(Guide):
    """base_stream: the batch's base stream; persrm: the PersRM model for a stream of its own, or None on the
    shared backbone (its sequences then join base_stream's adapter section). ctx_b, ctx_r: the models'
    context sizes (None: unbounded)."""

    name = "pad"

    def __init__(self, base_stream: Stream, persrm, pad_id: int, ctx_b: int | None, ctx_r: int | None):
        self.base_stream = base_stream
        self.shared = persrm is None
        self.stream = base_stream if self.shared else Stream(persrm, pad_id)
        self.ctx_b, self.ctx_r = ctx_b, ctx_r
        self._next_pair = 0
        self._new: list[tuple[list[int], Slot]] = []  # sequences planned for the guide's own stream
        self._pending: torch.Tensor | None = None  # (N_rm,) tokens chosen, not yet fed to the own stream
        self._feed: torch.Tensor | None = None  # (N_rm,) each own-stream sequence's row position
        self._parts: dict = {}  # group -> [_Part], rebuilt at every index
        self._pos: dict[int, int] = {}

    @property
    def joinable(self) -> bool:
        return self.stream.joinable

    def room(self, row: GuideRow) -> int | None:
        lims = []
        if self.ctx_r is not None:
            lims += [self.ctx_r - len(ids) for ids in row.rm_ids + ([row.ref_ids] if row.ref_ids else [])]
        if self.ctx_b is not None and row.reference == "prompted-base":
            lims += [self.ctx_b - len(ids) for ids in row.rm_ids]
        return min(lims) if lims else None

    def plan(self, rows: list[GuideRow]) -> tuple[list, list]:
        plain, rm = [], []
        for row in rows:
            for p, ids in zip(row.principles, row.rm_ids):
                pair = self._next_pair
                self._next_pair += 1
                rm.append((ids, Slot(row.key, "principle", p.weight, pair)))
                if row.reference == "prompted-base":  # the base reading the same principle prompt
                    plain.append((ids, Slot(row.key, "prompted", 0.0, pair)))
            if row.ref_ids is not None:
                rm.append((row.ref_ids, Slot(row.key, "ref")))
        if self.shared:
            return plain, rm
        self._new = rm
        return plain, []

    def join(self, rows: list[GuideRow]) -> None:
        if self._new:
            self._flush()  # the rows decoding now take their last token before others join
            self.stream.add([ids for ids, _ in self._new], [tag for _, tag in self._new])
        self._new = []

    def index(self, keys: list[int]) -> None:
        self._pos = {k: i for i, k in enumerate(keys)}
        self._parts = {}
        if not self.shared:
            self._feed = torch.tensor([self._pos[sl.row] for sl in self.stream.tags], dtype=torch.long)

    def _build(self, at: torch.Tensor | None) -> list[_Part]:
        """The group's sequences by reference: rows with one reference read their references in one place."""
        rows = range(len(self._pos)) if at is None else at.tolist()
        local = {n: j for j, n in enumerate(rows)}  # row position -> position in the group
        prompted, ref_of_row = {}, {}
        for j, sl in enumerate(self.base_stream.tags):
            if sl.role == "prompted":
                prompted[sl.pair] = j
        tags = self.stream.tags
        for j, sl in enumerate(tags):
            if sl.role == "ref":
                ref_of_row[sl.row] = j
        by_ref: dict[str, list] = {}
        for j, sl in enumerate(tags):
            if sl.role != "principle" or self._pos.get(sl.row) not in local:
                continue
            kind = "persrm" if sl.row in ref_of_row else "prompted-base" if sl.pair in prompted else "base"
            ref = ref_of_row.get(sl.row) if kind == "persrm" else prompted.get(sl.pair)
            by_ref.setdefault(kind, []).append((j, local[self._pos[sl.row]], sl.weight, ref))
        dev = self.base_stream.device
        t = lambda xs, dtype=torch.long: torch.tensor(xs, dtype=dtype, device=dev)  # noqa: E731
        return [_Part(kind, t([s[0] for s in seqs]), t([s[1] for s in seqs]), t([s[2] for s in seqs], torch.float32),
                      t([s[3] for s in seqs]) if kind != "base" else None) for kind, seqs in by_ref.items()]

    def rewards(self, at, zb_c, cand):
        self._flush()
        memo = None if at is None else id(at)
        if memo not in self._parts:
            self._parts[memo] = (at, self._build(at))  # `at` kept alive with its entry: its id stays its own
        parts = self._parts[memo][1]
        if not parts:
            return None
        zr = self.stream.logits  # (N_rm, V), read at pr_idx, where it is
        owners, wrs = [], []
        for p in parts:
            zref = None if p.ref_idx is None else zr if p.reference == "persrm" else self.base_stream.logits
            owners.append(p.owner)
            wrs.append(stream_rewards(zb_c, cand, zr, p.owner, p.weight, zref, p.ref_idx, p.pr_idx))  # (S, k)
        if len(parts) == 1:
            return owners[0], wrs[0]
        return torch.cat(owners), torch.cat(wrs)

    def commit(self, nxt: torch.Tensor) -> None:
        if not self.shared and self.stream.rows:
            self._pending = nxt[self._feed.to(nxt.device)]  # fed at the next step, after finished rows leave

    def leave(self, alive: set[int]) -> None:
        tags = self.stream.tags
        if self.shared or not tags:
            return
        keep = [j for j, sl in enumerate(tags) if sl.row in alive]
        if len(keep) == len(tags):
            return
        idx = torch.tensor(keep, dtype=torch.long)
        if self._pending is not None:
            self._pending = self._pending[idx.to(self._pending.device)]
        self.stream.keep(idx)

    def _flush(self) -> None:
        """Feed the own stream the tokens its rows chose at the last step."""
        if self._pending is not None:
            if self.stream.rows:
                self.stream.step(self._pending)
            self._pending = None
