"""Preference pairs for the PersRM (method.md section 2), one builder per source.

A source is a dataset (hub id, local folder or file) plus a mapping `principle: label` that says which
principle each of its labels teaches; the mapping lives in the recipe, not here. A label with a
leading "-" prefers the other response (HelpSteer2 `concise: -verbosity` prefers the lower verbosity).

| kind           | labels                                                      | columns read                        |
| -------------- | ----------------------------------------------------------- | ----------------------------------- |
| `pku_saferlhf` | `better_response_id`, `safer_response_id`                   | prompt, response_0, response_1      |
| `helpsteer2`   | helpfulness, correctness, coherence, complexity, verbosity  | prompt, response (2 rows a prompt)  |
| `hh_rlhf`      | `chosen`                                                    | chosen, rejected transcripts        |
| `jsonl`        | the values of its `principle` column (all of them unmapped) | prompt, chosen, rejected, principle |

Ties, empty texts and duplicates are skipped and counted per source and principle; the evaluation
split is held out by prompt. `to_trl_row` gives TRL's conversational preference format with the
principle prompt of method.md section 1.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pad.errors import PadError
from pad.principles import DEFAULT_TEMPLATE, Message, to_messages

HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
LABELS: dict[str, tuple[str, ...] | None] = {
    "pku_saferlhf": ("better_response_id", "safer_response_id"),
    "helpsteer2": HELPSTEER2_ATTRIBUTES,
    "hh_rlhf": ("chosen",),
    "jsonl": None,  # any value of the `principle` column
}
KINDS = tuple(LABELS)
# Columns every row of a kind must have; label columns are added per recipe.
COLUMNS = {
    "pku_saferlhf": ("prompt", "response_0", "response_1"),
    "helpsteer2": ("prompt", "response"),
    "hh_rlhf": ("chosen", "rejected"),
    "jsonl": ("prompt", "chosen", "rejected", "principle"),
}
_FILE_TYPES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


@dataclass
class SourceConfig:
    """One data source of a training mixture (an item of `TrainConfig.sources`)."""

    kind: str
    """pku_saferlhf, helpsteer2, hh_rlhf or jsonl."""
    path: str
    """Hub dataset id (PKU-Alignment/PKU-SafeRLHF, nvidia/HelpSteer2, Anthropic/hh-rlhf) or a local file/folder."""
    principles: dict[str, str] = field(default_factory=dict)
    """principle: the label that teaches it; "-label" prefers the other response. jsonl: empty keeps all."""
    limit: int | None = None
    """Keep at most this many pairs from this source (in file order, after skipping)."""
    train_limit: int | None = None
    """After the held-out split, train on at most this many of this source's pairs (a seeded random sample).
    Rebalances a mixture, e.g. for a second stage, without moving any pair across the split."""
    moves_split: bool = True
    """False: this source's pairs do not move the train/held-out split. Each goes to the side its prompt
    landed on through the other sources (train when no other source has the prompt). For pairs added in a
    later stage, so its held-out prompts stay exactly the earlier stages' and none it trained on leaks in."""
    split_only: bool = False
    """True: this source's prompts take part in the held-out split, then its pairs are dropped (neither trained
    on nor evaluated). To hold out exactly the prompts another recipe held out, e.g. a harmless reward model
    trained on the harmless pairs of a three-principle PersRM's split and scored on the pairs it held out."""
    split: str = "train"
    """Dataset split (hub ids and folders); a single file is read whole."""
    data_dir: str | None = None
    """Subset folder of a hub dataset, e.g. harmless-base or helpful-base of Anthropic/hh-rlhf."""
    name: str | None = None
    """Name in the counts report; default kind:file-name-or-hub-id."""
    opposites: dict[str, str] = field(default_factory=dict)
    """principle: its opposite, e.g. {concise: detailed}; each pair under the principle also teaches the opposite,
    flipped (pad.train.contrastive). Counted under the source name plus " (opposite)"."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise PadError(f"source kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(self.path, str) or not self.path.strip():
            raise PadError(f"source {self.kind}: path must be a file, folder or hub id, got {self.path!r}")
        if self.principles is None:
            self.principles = {}
        if not isinstance(self.principles, dict):
            raise PadError(f"source {self.label}: principles must be a mapping principle: label, "
                           f"got {self.principles!r}")
        known = LABELS[self.kind]
        if not self.principles and known is not None:
            raise PadError(f"source {self.label}: principles is empty; map each principle to one of "
                           f"{', '.join(known)}")
        for principle, label in self.principles.items():
            if not isinstance(principle, str) or not principle.strip():
                raise PadError(f"source {self.label}: principle name {principle!r} is empty")
            if not isinstance(label, str) or not label.lstrip("-").strip():
                raise PadError(f"source {self.label}: principle {principle!r} needs a label, got {label!r}")
            if known is not None and label.lstrip("-") not in known:
                raise PadError(f"source {self.label}: principle {principle!r} maps to unknown label {label!r}; "
                               f"{self.kind} labels are {', '.join(known)} (a leading '-' prefers the other)")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise PadError(f"source {self.label}: limit must be a whole number >= 1, got {self.limit!r}")
        if self.train_limit is not None and (isinstance(self.train_limit, bool) or not isinstance(self.train_limit, int)
                                             or self.train_limit < 1):
            raise PadError(f"source {self.label}: train_limit must be a whole number >= 1, got {self.train_limit!r}")
        if not isinstance(self.moves_split, bool):
            raise PadError(f"source {self.label}: moves_split must be true or false, got {self.moves_split!r}")
        if not isinstance(self.split_only, bool):
            raise PadError(f"source {self.label}: split_only must be true or false, got {self.split_only!r}")
        _check_opposites(self)
        if self.split_only and not self.moves_split:
            raise PadError(f"source {self.label}: split_only and moves_split: false contradict each other "
                           "(a split-only source is there to move the split)")

    @property
    def label(self) -> str:
        local = Path(self.path).expanduser().exists() or _looks_like_file(self.path)
        return self.name or f"{self.kind}:{Path(self.path).name if local else self.path}"


def _check_opposites(src: SourceConfig) -> None:
    if src.opposites is None:
        src.opposites = {}
    if not isinstance(src.opposites, dict):
        raise PadError(f"source {src.label}: opposites must be a mapping principle: opposite, got {src.opposites!r}")
    for principle, opposite in src.opposites.items():
        if not isinstance(opposite, str) or not opposite.strip() or opposite == principle:
            raise PadError(f"source {src.label}: the opposite of {principle!r} must be another principle's name, "
                           f"got {opposite!r}")
        if src.principles and principle not in src.principles:
            raise PadError(f"source {src.label}: opposites names {principle!r}, which is not one of its principles "
                           f"({', '.join(src.principles)})")
        if opposite in src.principles:
            raise PadError(f"source {src.label}: opposite {opposite!r} of {principle!r} is already one of its "
                           "principles; map it with a '-' label instead")
    if len(set(src.opposites.values())) < len(src.opposites):
        raise PadError(f"source {src.label}: two principles have the same opposite in {src.opposites!r}")


@dataclass(frozen=True)
class Pair:
    """One preference: under `principle`, `chosen` beats `rejected` as the reply to `prompt`.

    prompt: a user message, or a conversation (tuple of messages) that ends with a user turn.
    """

    prompt: str | tuple[Message, ...]
    chosen: str
    rejected: str
    principle: str
    source: str = ""

    def prompt_key(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else json.dumps(self.prompt, sort_keys=True)


# -- loading -------------------------------------------------------------------------------------


def _looks_like_file(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path.lower().removesuffix(".gz")).suffix in _FILE_TYPES


def load_rows(src: SourceConfig):
    """The source's rows as a `datasets.Dataset` (hub id, local folder or single file)."""
    p = Path(src.path).expanduser()
    if not p.exists() and not _looks_like_file(src.path):
        from pad.models import hub_reachable

        hub_reachable()  # offline, this sets HF_HUB_OFFLINE so a missing dataset fails at once
    import datasets

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        datasets.config.HF_HUB_OFFLINE = True
    suffix = Path(p.name.lower().removesuffix(".gz")).suffix
    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its load errors become one line of ours, below
    try:
        if p.is_file():
            if suffix not in _FILE_TYPES:
                raise PadError(f"{src.path}: unknown file type {suffix!r}; use .jsonl, .json, .parquet or .csv")
            ds = datasets.load_dataset(_FILE_TYPES[suffix], data_files=str(p), split="train")
        elif p.is_dir() or not _looks_like_file(src.path):
            ds = datasets.load_dataset(str(p) if p.is_dir() else src.path, data_dir=src.data_dir, split=src.split)
        else:
            raise PadError(f"source {src.label}: file {src.path!r} does not exist")
    except PadError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
        bad_line = _bad_json_line(p) if p.is_file() and _FILE_TYPES.get(suffix) == "json" else None
        if bad_line:
            raise PadError(f"source {src.label}: {bad_line}") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PadError(f"source {src.label}: cannot load {src.path!r}: {first}") from None
    finally:
        datasets.logging.set_verbosity(level)
    if len(ds) == 0:
        raise PadError(f"source {src.label}: {src.path} has no rows")
    return ds


def _bad_json_line(path: Path) -> str | None:
    """'file:line: not valid JSON (...)' for a JSON or JSON Lines file datasets could not read (it says only
    that generating the dataset failed); None when the text parses and the fault is elsewhere."""
    import gzip

    from pad.files import json_lines, load_json

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    try:
        if text.lstrip().startswith("["):  # one JSON list
            load_json(path, text)
        else:
            for _ in json_lines(path, text):
                pass
    except PadError as e:
        return str(e)
    return None


def check_columns(src: SourceConfig, columns: Sequence[str]) -> None:
    need = list(COLUMNS[src.kind])
    if src.kind in ("pku_saferlhf", "helpsteer2"):
        need += [label.lstrip("-") for label in src.principles.values()]
    missing = [c for c in dict.fromkeys(need) if c not in columns]
    if missing:
        raise PadError(f"{src.path}: missing column {missing[0]!r} for source {src.label} "
                       f"(columns: {', '.join(columns)})")


# -- builders: rows -> (principle, Pair or skip reason) -------------------------------------------

Built = tuple[str, "Pair | str"]


def _text(src: SourceConfig, row: dict, i: int, col: str) -> str:
    v = row[col]
    if v is None:
        return ""
    if not isinstance(v, str):
        raise PadError(f"{src.path} row {i + 1}: {col!r} must be text, got {type(v).__name__}")
    return v.strip()


def _ordered(a: str, b: str, a_wins: bool, label: str) -> tuple[str, str]:
    """(chosen, rejected) when the label prefers `a` iff a_wins; "-label" flips it."""
    if label.startswith("-"):
        a_wins = not a_wins
    return (a, b) if a_wins else (b, a)


def _pair_or_skip(prompt, chosen: str, rejected: str, principle: str, source: str) -> Pair | str:
    if not chosen or not rejected or not prompt:
        return "empty"
    if chosen == rejected:
        return "tie"
    return Pair(prompt, chosen, rejected, principle, source)


def build_pku_saferlhf(src: SourceConfig, rows: Iterable[dict]) -> Iterator[Built]:
    """`better_response_id` / `safer_response_id` (0 or 1) name the preferred of response_0, response_1."""
    for i, row in enumerate(rows):
        prompt = _text(src, row, i, "prompt")
        r0, r1 = _text(src, row, i, "response_0"), _text(src, row, i, "response_1")
        for principle, label in src.principles.items():
            col = label.lstrip("-")
            winner = row[col]
            if isinstance(winner, bool) or winner not in (0, 1):
                raise PadError(f"{src.path} row {i + 1}: {col!r} must be 0 or 1, got {winner!r}")
            chosen, rejected = _ordered(r0, r1, winner == 0, label)
            yield principle, _pair_or_skip(prompt, chosen, rejected, principle, src.label)


_HELPSTEER2_TURN = re.compile(r"\s*<extra_id_1>(User|Assistant)[ \t]*\n?")


def helpsteer2_prompt(text: str) -> str | tuple[Message, ...]:
    """HelpSteer2 writes multi-turn prompts as 'q1\\n<extra_id_1>Assistant\\na1\\n<extra_id_1>User\\nq2'."""
    parts = _HELPSTEER2_TURN.split(text)
    if len(parts) == 1:
        return text.strip()
    messages = [{"role": "user", "content": parts[0].strip()}]
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": role.lower(), "content": content.strip()})
    return tuple(messages)


def build_helpsteer2(src: SourceConfig, rows: Iterable[dict]) -> Iterator[Built]:
    """Two responses per prompt on consecutive rows; one pair per mapped attribute whose scores differ."""
    rows = list(rows)
    i = 0
    while i < len(rows):
        first = rows[i]
        if i + 1 == len(rows) or rows[i + 1]["prompt"] != first["prompt"]:
            for principle in src.principles:  # an unpaired row; the next one starts the next pair
                yield principle, "unpaired"
            i += 1
            continue
        j, second = i + 1, rows[i + 1]
        prompt = helpsteer2_prompt(_text(src, first, i, "prompt"))
        a, b = _text(src, first, i, "response"), _text(src, second, j, "response")
        for principle, label in src.principles.items():
            attr = label.lstrip("-")
            sa, sb = first[attr], second[attr]
            for k, s in ((i, sa), (j, sb)):
                if isinstance(s, bool) or not isinstance(s, (int, float)):
                    raise PadError(f"{src.path} row {k + 1}: {attr!r} must be a score, got {s!r}")
            if sa == sb:
                yield principle, "tie"
                continue
            chosen, rejected = _ordered(a, b, sa > sb, label)
            yield principle, _pair_or_skip(prompt, chosen, rejected, principle, src.label)
        i += 2


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


def split_hh_transcript(text: str) -> tuple[tuple[Message, ...], str] | None:
    """'\\n\\nHuman: q\\n\\nAssistant: a ...' -> (conversation before the last reply, last reply).

    None when the transcript does not start with a Human turn or does not end with an Assistant turn.
    """
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 5 or parts[1] != "Human":
        return None
    turns: list[Message] = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        if turns and turns[-1]["role"] == role:  # two turns of one speaker in a row: one message
            turns[-1]["content"] = f"{turns[-1]['content']}\n\n{content.strip()}"
        else:
            turns.append({"role": role, "content": content.strip()})
    if turns[-1]["role"] != "assistant":
        return None
    return tuple(turns[:-1]), turns[-1]["content"]


def build_hh_rlhf(src: SourceConfig, rows: Iterable[dict]) -> Iterator[Built]:
    """Chosen and rejected transcripts that share every turn but the last Assistant reply."""
    for i, row in enumerate(rows):
        empty = not _text(src, row, i, "chosen") or not _text(src, row, i, "rejected")
        c = None if empty else split_hh_transcript(row["chosen"])
        r = None if empty else split_hh_transcript(row["rejected"])
        for principle, label in src.principles.items():
            if empty:
                yield principle, "empty"
            elif c is None or r is None:
                yield principle, "not_a_transcript"
            elif c[0] != r[0]:
                yield principle, "prompts_differ"
            else:
                chosen, rejected = _ordered(c[1], r[1], True, label)
                yield principle, _pair_or_skip(c[0], chosen, rejected, principle, src.label)


def _jsonl_prompt(src: SourceConfig, row: dict, i: int) -> str | tuple[Message, ...]:
    v = row["prompt"]
    if isinstance(v, list):  # a conversation
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in v):
            raise PadError(f"{src.path} row {i + 1}: 'prompt' list must hold {{role, content}} messages")
        if not v or v[-1]["role"] != "user":
            raise PadError(f"{src.path} row {i + 1}: 'prompt' conversation must end with a user turn")
        return tuple({"role": m["role"], "content": m["content"]} for m in v)
    return _text(src, row, i, "prompt")


def build_jsonl(src: SourceConfig, rows: Iterable[dict]) -> Iterator[Built]:
    """Rows {prompt, chosen, rejected, principle}; the recipe may rename, flip or select principles."""
    by_label: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for principle, label in src.principles.items():
        by_label[label.lstrip("-")].append((principle, label))
    values: set[str] = set()
    for i, row in enumerate(rows):
        value = _text(src, row, i, "principle")
        values.add(value)
        if not value:
            yield "?", "empty"
            continue
        targets = by_label.get(value, []) if src.principles else [(value, value)]
        if not targets:
            yield value, "unmapped"
            continue
        prompt = _jsonl_prompt(src, row, i)
        a, b = _text(src, row, i, "chosen"), _text(src, row, i, "rejected")
        for principle, label in targets:
            chosen, rejected = _ordered(a, b, True, label)
            yield principle, _pair_or_skip(prompt, chosen, rejected, principle, src.label)
    for principle, label in src.principles.items():
        if label.lstrip("-") not in values:
            raise PadError(f"source {src.label}: principle {principle!r} maps to label {label!r}, which no row "
                           f"of {src.path} has (its principles: {', '.join(sorted(values - {''}))})")


BUILDERS = {
    "pku_saferlhf": build_pku_saferlhf,
    "helpsteer2": build_helpsteer2,
    "hh_rlhf": build_hh_rlhf,
    "jsonl": build_jsonl,
}


# -- the mixture ---------------------------------------------------------------------------------


# Why a row gives no pair, for the skips a user can act on (said when a source gives none).
SKIP_HELP = {
    "not_a_transcript": "hh_rlhf reads chosen and rejected as whole transcripts '\\n\\nHuman: ...\\n\\nAssistant: "
                        "...' ending with an Assistant reply (rows of prompt, chosen, rejected, principle are kind: jsonl)",
    "prompts_differ": "hh_rlhf's chosen and rejected transcripts must share every turn but the last Assistant reply",
}
# Fewer held-out pairs of one principle than this, and its held-out accuracy is a coarse estimate: say so.
MIN_HELD_OUT = 10

Fit = Callable[[Pair], "Pair | None"]  # a pair's prompt fitted into a token budget; None: it cannot fit


@dataclass
class Mixture:
    """Pairs of every source, and what became of each row, per source and principle."""

    train: list[Pair]
    eval: list[Pair]
    counts: dict[str, dict[str, dict[str, int]]]  # source -> principle -> {pairs, tie, empty, train, eval, ...}
    notes: list[str] = field(default_factory=list)  # warnings for the user, with numbers
    held_out_prompts: dict[str, str] = field(default_factory=dict)  # source -> digest of its held-out prompts


    @property
    def principles(self) -> list[str]:
        return sorted({p.principle for p in self.train + self.eval})

    def copy(self, eval: list[Pair] | None = None) -> Mixture:
        """A copy to add to or count on (its warnings kept), with `eval` as its held-out side if given."""
        return Mixture(list(self.train), list(self.eval if eval is None else eval),
                       {s: {p: dict(c) for p, c in per.items()} for s, per in self.counts.items()}, list(self.notes),
                       dict(self.held_out_prompts))

    def count(self, pair: Pair, key: str, n: int = 1) -> None:
        c = self.counts.setdefault(pair.source, {}).setdefault(pair.principle, {})
        c[key] = c.get(key, 0) + n


def build_pairs(src: SourceConfig, rows: Iterable[dict]) -> tuple[list[Pair], dict[str, Counter]]:
    """One source's pairs (before deduplication and limit) and its skips per principle."""
    pairs, skipped = [], defaultdict(Counter)
    for principle, built in BUILDERS[src.kind](src, rows):
        if isinstance(built, Pair):
            pairs.append(built)
        else:
            skipped[principle][built] += 1
    return pairs, skipped


def build_mixture(sources: Sequence[SourceConfig], eval_size: float = 0.1, seed: int = 42,
                  rows: Sequence[Iterable[dict]] | None = None, fit: Fit | None = None,
                  progress: bool = False) -> Mixture:
    """Every source's pairs, deduplicated, limited and fitted, then split into train and eval by prompt.

    rows: each source's rows (lists of dicts), for tests; by default each source loads with `datasets`.
    fit: fits a pair's prompt into the token budget (None: it cannot fit, counted `too_long`). It runs before
        the split, so the held-out set is the size asked for and no held-out pair is dropped afterwards.
    progress: a bar per source while its pairs are fitted (the slow part of a large mixture).
    """
    seen: set[tuple] = set()
    kept: list[Pair] = []
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for n, src in enumerate(sources):
        data = rows[n] if rows is not None else load_rows(src)
        pairs, per = source_pairs(src, data, seen, fit, progress)
        if src.label in counts:
            raise PadError(f"two sources are named {src.label!r}; give one a distinct `name`")
        counts[src.label] = per
        kept += pairs
    return split_mixture(kept, sources, counts, eval_size, seed)


def source_pairs(src: SourceConfig, data, seen: set[tuple], fit: Fit | None = None,
                 progress: bool = False) -> tuple[list[Pair], dict[str, dict[str, int]]]:
    """One source's kept pairs (new to `seen`, within its limit, fitted) and its counts per principle."""
    from tqdm.auto import tqdm

    if hasattr(data, "column_names"):
        columns = data.column_names
    else:
        data = list(data)
        columns = list(dict.fromkeys(k for row in data for k in row))
    if not columns:
        raise PadError(f"source {src.label}: {src.path} has no rows")
    check_columns(src, columns)
    pairs, skipped = build_pairs(src, data)
    per: dict[str, dict[str, int]] = {p: dict(c) for p, c in skipped.items()}
    kept: list[Pair] = []

    def add(c: dict[str, int], key: str) -> None:
        c[key] = c.get(key, 0) + 1

    for pair in tqdm(pairs, desc=f"pairs of {src.label}", unit="pair", disable=not progress, leave=False,
                     mininterval=1.0):
        c = per.setdefault(pair.principle, {})
        key = (pair.principle, pair.prompt_key(), pair.chosen, pair.rejected)
        if key in seen:
            add(c, "duplicate")
            continue
        if src.limit is not None and len(kept) >= src.limit:
            add(c, "over_limit")
            continue
        seen.add(key)
        fitted = pair if fit is None else fit(pair)
        if fitted is None:
            add(c, "too_long")
            continue
        if fitted is not pair:
            add(c, "trimmed")
        add(c, "pairs")
        kept.append(fitted)
    if not kept:
        reasons = Counter()
        for c in per.values():
            reasons.update(c)
        why = ", ".join(f"{v} {k}" for k, v in reasons.most_common()) or "no rows"
        help_ = next((SKIP_HELP[k] for k, _ in reasons.most_common() if k in SKIP_HELP), None)
        raise PadError(f"source {src.label}: {src.path} gives no preference pairs ({why})"
                       + (f"; {help_}" if help_ else ""))
    return kept, per


def split_mixture(kept: list[Pair], sources: Sequence[SourceConfig], counts: dict, eval_size: float,
                  seed: int) -> Mixture:
    """Hold out by prompt (sources with moves_split: false follow their prompts), apply train_limit, drop the
    split_only sources, and count each pair's side."""
    followers = {s.label for s in sources if not s.moves_split}
    movers = [p for p in kept if p.source not in followers]
    train, held = split_by_prompt(movers, eval_size, seed)
    if followers:
        held_keys = {p.prompt_key() for p in held}
        for pair in (p for p in kept if p.source in followers):
            (held if pair.prompt_key() in held_keys else train).append(pair)
    train = limit_training(train, sources, seed)
    shaping = {s.label for s in sources if s.split_only}
    mix = Mixture([p for p in train if p.source not in shaping], [p for p in held if p.source not in shaping], counts)
    for part, name in ((train, "train"), (held, "eval")):
        for pair in part:
            mix.count(pair, f"split_only_{name}" if pair.source in shaping else name)
    if not mix.train and not mix.eval:
        raise PadError("every source is split_only: nothing is left to train on")
    mix.notes = split_notes(mix, eval_size, len(movers))
    mix.held_out_prompts = prompt_digests(held)
    return mix


def prompt_digests(pairs: Iterable[Pair]) -> dict[str, str]:
    """Per source, a short digest of the set of its pairs' prompts: two splits with equal digests hold out the
    same prompts (a later stage compares them with its starting adapter's record)."""
    import hashlib

    prompts: dict[str, set[str]] = defaultdict(set)
    for pair in pairs:
        prompts[pair.source].add(pair.prompt_key())
    return {source: hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
            for source, keys in sorted(prompts.items())}


def split_notes(mix: Mixture, eval_size: float, n_pairs: int) -> list[str]:
    """Warnings, with numbers, about a held-out set too small to mean much or a training set it starved."""
    notes = []
    if eval_size >= 1 and len(mix.eval) < eval_size:
        notes.append(f"eval_size {eval_size:g} asked, {len(mix.eval)} pairs held out of {n_pairs} (whole prompts; "
                     "training keeps at least one)")
    if mix.eval and len(mix.train) < len(mix.eval):
        notes.append(f"only {len(mix.train)} pairs left to train on against {len(mix.eval)} held out; "
                     "lower eval_size")
    for principle in sorted({p.principle for p in mix.eval}):
        n = sum(p.principle == principle for p in mix.eval)
        if n < MIN_HELD_OUT:
            notes.append(f"only {n} held-out {principle} pair{'s' if n > 1 else ''}: its held-out accuracy moves "
                         f"in steps of {1 / n:.2g}")
    return notes


def limit_training(train: list[Pair], sources: Sequence[SourceConfig], seed: int) -> list[Pair]:
    """Each source's `train_limit`: a seeded random sample of its training pairs, the rest in place."""
    limits = {s.label: s.train_limit for s in sources if s.train_limit is not None}
    if not limits:
        return train
    rng = random.Random(seed)
    keep: set[int] = set()
    for label in sorted({p.source for p in train}):  # sorted: set order changes between runs
        idx = [i for i, p in enumerate(train) if p.source == label]
        n = limits.get(label)
        keep.update(idx if n is None or n >= len(idx) else rng.sample(idx, n))
    return [p for i, p in enumerate(train) if i in keep]


def split_by_prompt(pairs: Sequence[Pair], eval_size: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Hold out whole prompts: every pair of one prompt lands on the same side.

    eval_size: a fraction of the pairs when below 1, else a number of pairs (reached or just passed).
    The training side always keeps at least one prompt.
    """
    if eval_size <= 0:
        return list(pairs), []
    if eval_size >= 1 and eval_size >= len(pairs):
        raise PadError(f"eval_size {eval_size:g} asks to hold out as many pairs as there are ({len(pairs)}, after "
                       f"skipping and fitting); give a number below {len(pairs)} or a fraction below 1")
    target = eval_size * len(pairs) if eval_size < 1 else eval_size
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        groups[p.prompt_key()].append(i)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    held: set[int] = set()
    for k in keys:
        if len(held) >= target or len(held) + len(groups[k]) >= len(pairs):
            break
        held.update(groups[k])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


def to_trl_row(pair: Pair, template: str = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """TRL's conversational preference row; the principle prompt wraps the last user turn."""
    prompt = pair.prompt if isinstance(pair.prompt, str) else list(pair.prompt)
    return {
        "prompt": to_messages(prompt, pair.principle, template),
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
        "principle": pair.principle,
        "source": pair.source,
    }
