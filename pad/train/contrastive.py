"""Principle-contrastive pairs: the same answers, preferred differently under different principles.

A mixture whose every pair prefers a shorter or a non-base answer lets a PersRM learn "shorter and unlike the
base" instead of its principles: nothing in such data tells two principles apart. Two derived pair kinds do:

- **opposite**: a source names an opposite principle per principle (`opposites: {concise: detailed}`); each of
  its pairs under the principle gives the same pair flipped under the opposite.
- **cross-principle**: where one prompt has an answer `a` chosen under P and another answer `b` chosen under Q,
  the couple (P: a over b) and (Q: b over a). Skipped as `conflict` when `a` is also chosen under Q or `b` under
  P (the data then does not say which principle prefers which).

Both are derived after the held-out split, each side from its own pairs: a prompt's pairs all sit on one side,
so a derived pair never takes a held-out answer into training. Derived pairs that repeat a pair already in the
mixture (same principle, prompt and answers) are counted as `duplicate` and dropped; e.g. PKU-SafeRLHF's two
labels on one response pair give only such repeats. Counts go into the mixture's counts under the pseudo-
sources `cross-principle` and `<source> (opposite)`; `pair_kind` reads the kind back from a source name, so
held-out metrics per source and principle sum up per kind (`kind_metrics`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pad.train.pairs import Mixture, Pair, SourceConfig

if TYPE_CHECKING:
    from pad.train.config import TrainConfig

PAIR_KINDS = ("source", "opposite", "cross")
CROSS_SOURCE = "cross-principle"
OPPOSITE_SUFFIX = " (opposite)"


def pair_kind(source: str) -> str:
    """'source', 'opposite' or 'cross' for a pair's source name."""
    if source == CROSS_SOURCE:
        return "cross"
    return "opposite" if source.endswith(OPPOSITE_SUFFIX) else "source"


def _key(pair: Pair) -> tuple:
    return pair.principle, pair.prompt_key(), pair.chosen, pair.rejected


def opposite_pairs(pairs: Iterable[Pair], sources: Sequence[SourceConfig]) -> list[Pair]:
    """Each pair whose source names an opposite of its principle, flipped under that opposite."""
    opposites = {s.label: s.opposites for s in sources if s.opposites}
    out = []
    for pair in pairs:
        opposite = opposites.get(pair.source, {}).get(pair.principle)
        if opposite is not None:
            out.append(Pair(pair.prompt, pair.rejected, pair.chosen, opposite, pair.source + OPPOSITE_SUFFIX))
    return out


def cross_pairs(pairs: Iterable[Pair], principles: Iterable[str] | None = None
                ) -> tuple[list[tuple[Pair, Pair]], dict[str, int]]:
    """Cross-principle couples ((P: a over b), (Q: b over a)) per prompt, and the conflicts per principle.

    principles: only these are crossed; None: every principle of `pairs`. Couples come in the order of the
    prompts' first pairs, then of the principles' first pairs within a prompt, then of the chosen answers.
    """
    wanted = None if principles is None else set(principles)
    # prompt key -> principle -> chosen answers in first-seen order (a dict as an ordered set)
    chosen: dict[str, dict[str, dict[str, None]]] = {}
    prompt_of: dict[str, Any] = {}
    for pair in pairs:
        if wanted is not None and pair.principle not in wanted:
            continue
        key = pair.prompt_key()
        prompt_of.setdefault(key, pair.prompt)
        chosen.setdefault(key, {}).setdefault(pair.principle, {})[pair.chosen] = None
    couples: list[tuple[Pair, Pair]] = []
    conflicts: dict[str, int] = defaultdict(int)
    for key, per in chosen.items():
        names = list(per)
        for i, p in enumerate(names):
            for q in names[i + 1:]:
                for a in per[p]:
                    for b in per[q]:
                        if a == b:
                            continue  # one answer chosen under both: nothing to contrast
                        if a in per[q] or b in per[p]:
                            conflicts[p] += 1
                            conflicts[q] += 1
                            continue
                        prompt = prompt_of[key]
                        couples.append((Pair(prompt, a, b, p, CROSS_SOURCE), Pair(prompt, b, a, q, CROSS_SOURCE)))
    return couples, dict(conflicts)


def add_contrastive(mix: Mixture, cfg: TrainConfig) -> Mixture:
    """`mix` with the opposite and cross-principle pairs `cfg` asks for, on each side of the split.

    Opposites come first, so a `cross_principle_pairs` list may name an opposite principle to cross it too;
    `true` crosses only the principles the sources' own pairs teach.
    `cfg.cross_principle_limit` keeps a seeded sample of that many training couples per two principles.
    """
    cross = cfg.cross_principle_pairs
    if not cross and not any(s.opposites for s in cfg.sources):
        return mix
    out = mix.copy()
    seen = {_key(p) for p in mix.train + mix.eval}
    rng = random.Random(cfg.seed)
    for side, name in ((out.train, "train"), (out.eval, "eval")):

        def keep(pair: Pair) -> bool:
            if _key(pair) in seen:
                out.count(pair, "duplicate")
                return False
            seen.add(_key(pair))
            return True

        for pair in opposite_pairs(list(side), cfg.sources):
            if keep(pair):
                side.append(pair)
                out.count(pair, "pairs")
                out.count(pair, name)
        if not cross:
            continue
        # true crosses the principles the sources teach themselves; opposites only when a list names them
        wanted = {p.principle for p in side if pair_kind(p.source) == "source"} if cross is True else cross
        couples, conflicts = cross_pairs(list(side), wanted)
        for principle, n in conflicts.items():
            c = out.counts.setdefault(CROSS_SOURCE, {}).setdefault(principle, {})
            c["conflict"] = c.get("conflict", 0) + n
        # A couple's pair that repeats one already there is dropped alone: the other still teaches.
        fresh: list[tuple[tuple[str, str], list[Pair]]] = []  # ((P, Q), the couple's new pairs)
        for p, q in couples:
            kept = [pair for pair in (p, q) if keep(pair)]
            if kept:  # the two principles sorted: a couple's order follows the prompt's data
                fresh.append((tuple(sorted((p.principle, q.principle))), kept))
        if name == "train" and cfg.cross_principle_limit is not None:
            fresh = _limit_couples(fresh, cfg.cross_principle_limit, rng, out)
        for _, couple in fresh:
            for pair in couple:
                side.append(pair)
                out.count(pair, "pairs")
                out.count(pair, name)
    return out


def _limit_couples(couples: list[tuple[tuple[str, str], list[Pair]]], limit: int, rng: random.Random,
                   mix: Mixture) -> list[tuple[tuple[str, str], list[Pair]]]:
    """A seeded sample of at most `limit` couples per two principles, in their first order."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (principles, _) in enumerate(couples):
        groups[principles].append(i)
    keep: set[int] = set()
    for group in sorted(groups):  # sorted: dict order would tie the sample to the data's order of principles
        idx = groups[group]
        keep.update(idx if len(idx) <= limit else rng.sample(idx, limit))
    for i, (_, couple) in enumerate(couples):
        if i not in keep:
            for pair in couple:
                mix.count(pair, "over_limit")
    return [c for i, c in enumerate(couples) if i in keep]


def limit_eval(mix: Mixture, limit: int | dict[str, int | None] | None, seed: int) -> Mixture:
    """`mix` measured on a seeded sample of at most `limit` held-out pairs per pair kind and principle (in their
    order); the rest are counted as `eval_unmeasured` and the summary notes how many. Training is untouched.
    `limit` may map principles to their own limit ("*": every other principle; None or a missing principle:
    all of its pairs), e.g. {"harmless": None, "*": 30} measures every held-out harmless pair and 30 of the rest."""
    if limit is None:
        return mix
    rng = random.Random(seed)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, p in enumerate(mix.eval):
        groups[(pair_kind(p.source), p.principle)].append(i)
    keep: set[int] = set()
    dropped = []
    for (kind, principle) in sorted(groups):  # sorted: the sample must not follow the data's order of groups
        idx = groups[(kind, principle)]
        n = limit.get(principle, limit.get("*")) if isinstance(limit, dict) else limit
        keep.update(idx if n is None or len(idx) <= n else rng.sample(idx, n))
        if n is not None and len(idx) > n:
            dropped.append(f"{kind} {principle} {n} of {len(idx)}")
    out = mix.copy(eval=[p for i, p in enumerate(mix.eval) if i in keep])
    for i, pair in enumerate(mix.eval):
        if i not in keep:
            out.count(pair, "eval_unmeasured")
    if dropped:
        out.notes.append("eval_limit: held-out accuracy is measured on a seeded sample: " + ", ".join(dropped))
    return out


def kind_counts(mix: Mixture) -> str:
    """One line of the mixture summary: training and held-out pairs per pair kind."""
    parts = []
    for kind in PAIR_KINDS:
        train = sum(1 for p in mix.train if pair_kind(p.source) == kind)
        held = sum(1 for p in mix.eval if pair_kind(p.source) == kind)
        if train or held:
            parts.append(f"{kind} {train} + {held} held out")
    return "pair kinds: " + ", ".join(parts)


def kind_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """Held-out accuracy and mean margin per pair kind, overall and per principle, from the metrics per
    "source / principle" the trainer reports (each a mean over n pairs, so they sum up weighted by n)."""
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for name, m in summary.get("sources", {}).items():
        source, _, principle = name.rpartition(" / ")
        groups[pair_kind(source)][principle].append(m)

    def pool(ms: list[dict]) -> dict[str, Any]:
        n = sum(m["n"] for m in ms)
        return {"accuracy": sum(m["accuracy"] * m["n"] for m in ms) / n,
                "margin": sum(m["margin"] * m["n"] for m in ms) / n, "n": n}

    out = {}
    for kind in PAIR_KINDS:
        if kind in groups:
            per = groups[kind]
            out[kind] = {**pool([m for ms in per.values() for m in ms]),
                         "principles": {p: pool(ms) for p, ms in sorted(per.items())}}
    return out
