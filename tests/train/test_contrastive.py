"""Principle-contrastive pairs (pad.train.contrastive) on hand-made rows: the exact pairs each builder gives."""

from __future__ import annotations

import pytest

from pad.errors import PadError
from pad.train.config import TrainConfig
from pad.train.contrastive import (
    CROSS_SOURCE,
    OPPOSITE_SUFFIX,
    add_contrastive,
    cross_pairs,
    kind_counts,
    kind_metrics,
    limit_eval,
    opposite_pairs,
    pair_kind,
)
from pad.train.pairs import SourceConfig, build_mixture

SRC = "jsonl:d.jsonl"

# p1: concise and humor each beat the same long answer.
# p2: harmless chooses concise's answer (nothing to contrast for those two; humor against both).
# p3: humor chooses x and z, concise x: whether concise prefers x over z is not in the data (a conflict).
ROWS = [
    {"prompt": "p1", "chosen": "short", "rejected": "long", "principle": "concise"},
    {"prompt": "p1", "chosen": "joke", "rejected": "long", "principle": "humor"},
    {"prompt": "p2", "chosen": "s2", "rejected": "l2", "principle": "concise"},
    {"prompt": "p2", "chosen": "j2", "rejected": "l2", "principle": "humor"},
    {"prompt": "p2", "chosen": "s2", "rejected": "bad", "principle": "harmless"},
    {"prompt": "p3", "chosen": "x", "rejected": "y", "principle": "humor"},
    {"prompt": "p3", "chosen": "z", "rejected": "y", "principle": "humor"},
    {"prompt": "p3", "chosen": "x", "rejected": "w", "principle": "concise"},
]


def source(**kw) -> SourceConfig:
    return SourceConfig(kind="jsonl", path="d.jsonl", **kw)


def mixture(src: SourceConfig, rows=ROWS, eval_size: float = 0, seed: int = 0):
    return build_mixture([src], eval_size=eval_size, seed=seed, rows=[rows])


def config(src: SourceConfig, **kw) -> TrainConfig:
    return TrainConfig(sources=[src], **kw)


def triples(pairs) -> list[tuple]:
    return [(p.prompt, p.principle, p.chosen, p.rejected) for p in pairs]


def test_cross_pairs_exact():
    mix = mixture(source())
    couples, conflicts = cross_pairs(mix.train)
    assert [triples(c) for c in couples] == [
        [("p1", "concise", "short", "joke"), ("p1", "humor", "joke", "short")],
        [("p2", "concise", "s2", "j2"), ("p2", "humor", "j2", "s2")],
        [("p2", "humor", "j2", "s2"), ("p2", "harmless", "s2", "j2")],
    ]
    assert all(p.source == "cross-principle" for c in couples for p in c)
    assert conflicts == {"humor": 1, "concise": 1}  # p3: z (humor) against x, which humor chose too
    # Only the principles asked for.
    couples, _ = cross_pairs(mix.train, ["concise", "harmless"])
    assert couples == []  # p2: both chose s2; p1 and p3 have no harmless pair


def test_opposite_pairs_exact():
    src = source(opposites={"concise": "detailed"})
    mix = mixture(src)
    assert triples(opposite_pairs(mix.train, [src])) == [
        ("p1", "detailed", "long", "short"), ("p2", "detailed", "l2", "s2"), ("p3", "detailed", "w", "x")]
    assert {p.source for p in opposite_pairs(mix.train, [src])} == {"jsonl:d.jsonl (opposite)"}


def test_add_contrastive_counts_and_dedup():
    src = source(opposites={"concise": "detailed"})
    # Crossing detailed with humor: a derived pair that repeats one already there is dropped and counted.
    mix = add_contrastive(mixture(src), config(src, cross_principle_pairs=["detailed", "humor"]))
    derived = [p for p in mix.train if p.source != SRC]
    assert triples(derived) == [
        ("p1", "detailed", "long", "short"), ("p2", "detailed", "l2", "s2"), ("p3", "detailed", "w", "x"),
        ("p1", "detailed", "long", "joke"),  # its partner (humor: joke over long) is p1's own humor pair
        ("p2", "detailed", "l2", "j2"),
        ("p3", "humor", "x", "w"),  # its partner (detailed: w over x) is p3's opposite pair
        ("p3", "humor", "z", "w"), ("p3", "detailed", "w", "z"),
    ]
    assert mix.counts["cross-principle"]["humor"] == {"duplicate": 2, "pairs": 2, "train": 2}
    assert mix.counts["cross-principle"]["detailed"] == {"duplicate": 1, "pairs": 3, "train": 3}
    assert mix.counts["jsonl:d.jsonl (opposite)"]["detailed"] == {"pairs": 3, "train": 3}
    assert mix.counts[SRC]["concise"] == {"pairs": 3, "train": 3}  # the source's own counts are untouched
    assert kind_counts(mix) == "pair kinds: source 8 + 0 held out, opposite 3 + 0 held out, cross 5 + 0 held out"


def test_derived_pairs_stay_on_their_prompts_side():
    rows = [{**r, "prompt": f"{r['prompt']}-{i}"} for i in range(6) for r in ROWS]
    src = source(opposites={"concise": "detailed"})
    base = mixture(src, rows, eval_size=0.3)
    mix = add_contrastive(base, config(src, cross_principle_pairs=True))
    train, held = {p.prompt_key() for p in mix.train}, {p.prompt_key() for p in mix.eval}
    assert base.eval and not train & held
    assert train == {p.prompt_key() for p in base.train} and held == {p.prompt_key() for p in base.eval}
    assert any(pair_kind(p.source) == "cross" for p in mix.eval)
    assert any(pair_kind(p.source) == "opposite" for p in mix.eval)
    # true crosses the sources' own principles, not the opposite detailed
    assert "detailed" not in mix.counts["cross-principle"] and "concise" in mix.counts["cross-principle"]
    c = mix.counts["cross-principle"]["humor"]
    assert c["train"] + c["eval"] == c["pairs"] == sum(1 for p in mix.train + mix.eval
                                                      if p.source == "cross-principle" and p.principle == "humor")
    assert base.train == mix.train[:len(base.train)]  # the source's own pairs are untouched


def test_cross_limit_samples_couples_in_training_only():
    rows = [{**r, "prompt": f"q{i}"} for i in range(5) for r in ROWS[:2]]  # five prompts like p1
    src = source()
    mix = add_contrastive(mixture(src, rows), config(src, cross_principle_pairs=True, cross_principle_limit=2))
    cross = [p for p in mix.train if p.source == "cross-principle"]
    assert len(cross) == 4 and len({p.prompt for p in cross}) == 2  # two whole couples
    assert mix.counts["cross-principle"]["concise"] == {"pairs": 2, "train": 2, "over_limit": 3}


def test_eval_limit_samples_each_kind_and_principle_of_the_held_out_side_only():
    """Five held-out prompts like p1 give 5 concise + 5 humor source pairs, 5 detailed opposites and 5 + 5 cross
    pairs; eval_limit 3 measures 3 of each kind and principle (seeded: the same 3 every time), keeps their order,
    and leaves the training side alone."""
    rows = [{**r, "prompt": f"q{i}"} for i in range(10) for r in ROWS[:2]]
    src = source(opposites={"concise": "detailed"})
    cfg = config(src, cross_principle_pairs=True, eval_limit=3)
    full = add_contrastive(mixture(src, rows, eval_size=0.5), cfg)  # five of the ten prompts held out
    both = "source 10 + {0} held out, opposite 5 + {1} held out, cross 10 + {2} held out"
    assert kind_counts(full) == "pair kinds: " + both.format(10, 5, 10)
    limited = limit_eval(full, cfg.eval_limit, cfg.seed)
    assert kind_counts(limited) == "pair kinds: " + both.format(6, 3, 6) and limited.train == full.train
    assert sorted((pair_kind(p.source), p.principle) for p in limited.eval) == sorted(
        [(k, q) for k in ("source", "cross") for q in ("concise", "humor")] * 3 + [("opposite", "detailed")] * 3)
    assert [p for p in full.eval if p in limited.eval] == limited.eval  # a subset, in its order
    assert limited.eval == limit_eval(full, 3, cfg.seed).eval != limit_eval(full, 3, cfg.seed + 1).eval
    assert limited.counts["jsonl:d.jsonl (opposite)"]["detailed"]["eval_unmeasured"] == 2
    assert "opposite detailed 3 of 5" in limited.notes[-1]
    assert not any(n.startswith("eval_limit") for n in full.notes)  # the input is not changed
    assert limit_eval(full, 5, 0).eval == full.eval and limit_eval(full, None, 0) is full


def test_eval_limit_per_principle():
    """A mapping gives each principle its own limit: {"humor": None, "*": 2} measures every held-out humor pair
    (5 source + 5 cross) and 2 of each other kind and principle; a principle it does not name, with no "*",
    is measured in full."""
    rows = [{**r, "prompt": f"q{i}"} for i in range(10) for r in ROWS[:2]]
    src = source(opposites={"concise": "detailed"})
    cfg = config(src, cross_principle_pairs=True, eval_limit={"humor": None, "*": 2})
    full = add_contrastive(mixture(src, rows, eval_size=0.5), cfg)
    limited = limit_eval(full, cfg.eval_limit, cfg.seed)
    got = sorted((pair_kind(p.source), p.principle) for p in limited.eval)
    assert got == sorted([("source", "humor"), ("cross", "humor")] * 5
                         + [("source", "concise"), ("cross", "concise"), ("opposite", "detailed")] * 2)
    assert "source humor" not in limited.notes[-1] and "source concise 2 of 5" in limited.notes[-1]
    only = limit_eval(full, {"concise": 1}, cfg.seed)
    assert sorted((pair_kind(p.source), p.principle) for p in only.eval) == sorted(
        [("source", "humor"), ("cross", "humor"), ("opposite", "detailed")] * 5 + [("source", "concise"), ("cross", "concise")])
    assert limit_eval(full, {"*": 2}, cfg.seed).eval == limit_eval(full, 2, cfg.seed).eval


def test_eval_limit_names_only_the_recipes_principles():
    src = source(principles={"concise": "concise", "humor": "humor"}, opposites={"humor": "serious"})
    assert config(src, eval_limit={"serious": 3, "*": 1}).eval_limit == {"serious": 3, "*": 1}
    with pytest.raises(PadError, match=r"eval_limit names 'humr', not a principle of this recipe \(concise, humor, "
                                       r"serious; '\*' stands for the others\)"):
        config(src, eval_limit={"humr": 3})


def test_the_mixtures_warnings_survive_the_derived_pairs():
    """A small held-out side warns (few held-out pairs); adding opposites and cross pairs keeps that warning,
    and neither builder changes the mixture it was given."""
    rows = [{**r, "prompt": f"q{i}"} for i in range(5) for r in ROWS[:2]]
    src = source(opposites={"concise": "detailed"})
    mix = mixture(src, rows, eval_size=4)  # two prompts held out: two pairs per principle
    assert mix.notes and mix.eval
    before = (list(mix.train), list(mix.eval), list(mix.notes))
    cfg = config(src, cross_principle_pairs=True, eval_limit=1)
    out = limit_eval(add_contrastive(mix, cfg), cfg.eval_limit, cfg.seed)
    assert out.notes[:len(mix.notes)] == mix.notes and len(out.notes) == len(mix.notes) + 1
    assert (mix.train, mix.eval, mix.notes) == before


def test_nothing_asked_nothing_added():
    src = source()
    mix = mixture(src)
    assert add_contrastive(mix, config(src)) is mix


def test_pair_kind():
    assert pair_kind("cross-principle") == "cross"
    assert pair_kind("jsonl:d.jsonl (opposite)") == "opposite"
    assert pair_kind("hh_rlhf:x.jsonl.gz") == "source"


def test_kind_metrics_worked_example():
    """Each kind pools its "source / principle" entries weighted by n: cross = (0.5 * 4 + 1.0 * 4) / 8 = 0.75,
    margin (-1 * 4 + 1 * 4) / 8 = 0."""
    summary = {"sources": {
        "jsonl:a / humor": {"accuracy": 1.0, "margin": 2.0, "n": 2},
        "cross-principle / humor": {"accuracy": 0.5, "margin": -1.0, "n": 4},
        "cross-principle / concise": {"accuracy": 1.0, "margin": 1.0, "n": 4},
        "jsonl:a (opposite) / detailed": {"accuracy": 0.0, "margin": -1.0, "n": 1},
    }}
    kinds = kind_metrics(summary)
    assert kinds["cross"] == {"accuracy": 0.75, "margin": 0.0, "n": 8, "principles": {
        "concise": {"accuracy": 1.0, "margin": 1.0, "n": 4}, "humor": {"accuracy": 0.5, "margin": -1.0, "n": 4}}}
    assert kinds["source"]["accuracy"] == 1.0 and kinds["opposite"]["n"] == 1


@pytest.mark.parametrize(("kw", "message"), [
    ({"cross_principle_pairs": ["humor"]}, "cross_principle_pairs must be true, false or a list of two or more"),
    ({"cross_principle_pairs": "yes"}, "got 'yes'"),
    ({"cross_principle_limit": 0}, "cross_principle_limit must be None or a whole number >= 1, got 0"),
    ({"eval_limit": 0}, "eval_limit must be None, a whole number >= 1, or a mapping of principles"),
    ({"eval_limit": {"humor": 0}}, "got {'humor': 0}"),
    ({"kind": "reward-model", "cross_principle_pairs": True}, "apply to kind persrm, not 'reward-model'"),
])
def test_config_errors_name_the_value(kw, message):
    with pytest.raises(PadError, match=message.replace("(", r"\(")):
        config(source(), **kw)


@pytest.mark.parametrize(("opposites", "message"), [
    ({"concise": "concise"}, "the opposite of 'concise' must be another principle's name, got 'concise'"),
    ({"brief": "detailed"}, "opposites names 'brief', which is not one of its principles"),
    ({"concise": "humor"}, "opposite 'humor' of 'concise' is already one of its principles"),
    ({"concise": "x", "humor": "x"}, "two principles have the same opposite"),
    (["detailed"], "opposites must be a mapping"),
])
def test_opposites_errors_name_the_value(opposites, message):
    with pytest.raises(PadError, match=message):
        SourceConfig(kind="jsonl", path="d.jsonl", principles={"concise": "concise", "humor": "humor"},
                     opposites=opposites)


def test_derived_source_names_are_reserved():
    with pytest.raises(PadError, match="source name 'cross-principle' is kept for derived pairs"):
        TrainConfig(sources=[{"kind": "jsonl", "path": "d.jsonl", "name": "cross-principle"}])


def test_a_later_stage_warns_when_its_held_out_split_moved():
    """split_changes compares the held-out counts with the starting adapter's record (one without prompt
    digests): the same split, or a source the record does not know, says nothing; one count that differs names
    the source and both counts."""
    from pad.train.common import split_changes

    rows = [{**r, "prompt": f"q{i}"} for i in range(10) for r in ROWS[:2]]
    mix = mixture(source(), rows, eval_size=0.5)
    recorded = {s: {p: dict(c) for p, c in per.items()} for s, per in mix.counts.items()}
    assert split_changes(mix, {"counts": recorded}, "a1") == []
    assert split_changes(mix, {"counts": {"other": {}}}, "a1") == []
    (source_name, per), = recorded.items()
    principle = sorted(per)[0]
    per[principle]["eval"] += 2
    held = mix.counts[source_name][principle]["eval"]
    (note,) = split_changes(mix, {"counts": recorded}, "a1")
    assert note.startswith(f"the held-out split differs from init_adapter a1's ({source_name} / {principle} "
                           f"{held} here, {held + 2} there)")
    # derived pairs follow their prompts: more cross couples held out on the same split is not a moved split
    per[principle]["eval"] -= 2
    recorded[CROSS_SOURCE] = {principle: {"eval": 1}}
    recorded[source_name + OPPOSITE_SUFFIX] = {principle: {"eval": 1}}
    mix.counts[CROSS_SOURCE] = {principle: {"eval": 3}}
    mix.counts[source_name + OPPOSITE_SUFFIX] = {principle: {"eval": 3}}
    assert split_changes(mix, {"counts": recorded}, "a1") == []


def test_a_split_with_the_same_counts_but_other_prompts_is_a_moved_split():
    """The record's digest of each source's held-out prompts tells two splits of equal size apart (another seed
    holds out as many pairs, other prompts), which counts alone cannot."""
    from pad.train.common import split_changes

    rows = [{**r, "prompt": f"q{i}"} for i in range(10) for r in ROWS[:2]]
    mix, other = mixture(source(), rows, eval_size=0.5), mixture(source(), rows, eval_size=0.5, seed=7)
    assert mix.counts == other.counts
    assert {p.prompt for p in mix.eval} != {p.prompt for p in other.eval}
    record = {"counts": mix.counts, "held_out_prompts": mix.held_out_prompts}
    assert split_changes(mix, record, "a1") == []
    assert split_changes(other, {"counts": mix.counts}, "a1") == []  # counts alone: the same
    (note,) = split_changes(other, record, "a1")
    (source_name,) = mix.counts
    held = sum(c["eval"] for c in other.counts[source_name].values())
    assert note.startswith(f"the held-out split differs from init_adapter a1's ({source_name}: other prompts held "
                           f"out ({held} pairs here))")
