"""Guides: the parts of the engine that turn the base's candidates into rewards (docs/style.md).

A step of `DecodeBatch` reads: base logits -> top-k candidates -> each guide's rewards -> select -> feed. A
guide is one small object with this life cycle, driven by the batch:

    plan(rows)     sequences the guide wants in the base model's own stream (PAD on the shared backbone, the
                   prompted-base reference); most guides want none
    join(rows)     rows joined the batch: prefill whatever the guide reads with its own models
    index(keys)    the live rows' keys in position order, after every join and leave
    rewards(...)   for one group of rows (rows sharing a top-k), each guided sequence's weighted reward
                   w_i r_i over its row's candidates, as (owner, wr): the batch adds wr[s] onto the row
                   owner[s]'s score, in order (score = z_b + sum_i w_i r_i, the order the uncached loops add in)
    commit(nxt)    every live row's chosen token, before finished rows leave
    leave(alive)   only rows whose keys are in `alive` stay

The guides: `PadGuide` (pad.decode.pad_guide: the PersRM on a separate model or on the shared backbone, any
reference), ARGS's readers (pad.decode.args: cached and texts) and the cross-tokenizer PersRM
(pad.decode.cross).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class GuideRow:
    """What a guide learns of a row when it joins."""

    key: int  # the row's key in the batch
    prompt: object  # the request's prompt: a string or chat messages
    principles: list = field(default_factory=list)  # active principles (weight != 0), in order
    rm_ids: list[list[int]] = field(default_factory=list)  # each one's PersRM principle prompt, in the PersRM's ids
    ref_ids: list[int] | None = None  # the PersRM's prompt without principles (reference "persrm"), or None
    reference: str = "base"
    weight: float = 0.0  # ARGS: the row's w


@dataclass
class Slot:
    """One sequence a row owns in a model's stream (a `Stream` tag)."""

    row: int  # the row's key in the batch
    role: str  # "base", "principle", "ref" (PersRM without principles) or "prompted" (base, principle prompt)
    weight: float = 0.0
    pair: int = -1  # principle streams and their "prompted" references share a number


class Guide:
    """The interface every guide implements; the defaults do nothing."""

    name = "none"
    one_topk = False  # True: the guide scores one top-k per batch (the batch refuses a request with another)

    def plan(self, rows: list[GuideRow]) -> tuple[list, list]:
        """(plain, adapter): (ids, tag) sequences to prefill in the base model's stream, tags with a `.row` key."""
        return [], []

    def room(self, row: GuideRow) -> int | None:
        """How many new tokens the row's sequences leave room for in the guide's models (None: no limit)."""
        return None

    def join(self, rows: list[GuideRow]) -> None:
        pass

    def index(self, keys: list[int]) -> None:
        pass

    def rewards(self, at: torch.Tensor | None, zb_c: torch.Tensor, cand: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """at: (B_g,) positions among the live rows of the group's rows (None: all rows, in order); zb_c, cand:
        (B_g, k) their candidates' base logits (float32) and ids. Returns (owner (S,) in 0..B_g-1, wr (S, k)
        float32) or None where the guide guides none of them."""
        return None

    def commit(self, nxt: torch.Tensor) -> None:
        pass

    def leave(self, alive: set[int]) -> None:
        pass

    @property
    def joinable(self) -> bool:
        """Whether rows can join now (False: a cache rows cannot be padded into is live)."""
        return True
