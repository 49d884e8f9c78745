"""Reading what is scored: `pad decode` run files and the reference code's JSON lists.

Both become a `Run` of `Row`s whose prompt is the raw user prompt (no principle prompt, no chat
template) and whose response is the generated text only, which is what every scorer wants.

- A `pad decode` run file is JSONL, one object per prompt (see decode/README.md): `id`, `prompt` (a
  string or chat messages), `principles` ([{name, weight}], empty for vanilla), `response`,
  `settings` (with `run`, the run's name) and `finish_reason` ("skipped" rows were never decoded).
- A reference list is JSON: `[{"prompt", "response", "method"}]` where `response` repeats the prompt
  and the prompt may carry the principle prompt (`[Guidelines] ... [Principles] X [Instruction] P`);
  the id of a row is its index.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pad.errors import PadError
from pad.files import check_chat_prompt, json_lines, load_json
from pad.principles import DEFAULT_TEMPLATE

Prompt = str | list[dict[str, str]]


class RunFileError(PadError, ValueError):
    """A run file is missing or malformed; the message names the file and line."""


@dataclass
class Row:
    id: str
    prompt: Prompt
    """The raw user prompt: a string or chat messages, with no principle prompt."""
    response: str
    """The generated text only."""
    decode_skipped: bool = False
    """The decoder skipped this prompt (too long for the model): counted, never scored."""
    finish_reason: str | None = None


@dataclass
class Run:
    name: str
    path: Path
    rows: list[Row]
    principles: list[str] = field(default_factory=list)
    """Principle names shared by every row ([] for vanilla); ["mixed"] when rows differ."""
    w: float | None = 0.0
    """Guidance weight: the sum of the principle weights (0 for vanilla); None when unknown or mixed."""
    settings: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return " and ".join(self.principles) if self.principles else "vanilla"

    def by_id(self) -> dict[str, Row]:
        return {r.id: r for r in self.rows}


def template_pattern(template: str = DEFAULT_TEMPLATE) -> re.Pattern:
    """A regex matching a filled-in principle template, capturing `principles` and `prompt`.

    Whitespace in the template matches any run of whitespace (the reference built its system prompt
    from shell line continuations).
    """
    regex = []
    for part in re.split(r"(\{principles\}|\{prompt\})", template.strip()):
        if part == "{principles}":
            regex.append(r"(?P<principles>.*?)")
        elif part == "{prompt}":
            regex.append(r"(?P<prompt>.*)")
        else:
            regex += [r"\s*" if piece.isspace() else re.escape(piece) for piece in re.split(r"(\s+)", part) if piece]
    return re.compile(r"\s*" + "".join(regex) + r"\s*\Z", re.DOTALL)


def strip_principle_prompt(prompt: str, template: str = DEFAULT_TEMPLATE) -> tuple[str, list[str]]:
    """(raw prompt, principle names) of a prompt that may carry the principle template."""
    m = template_pattern(template).match(prompt)
    if not m:
        return prompt, []
    names = [p.strip() for p in re.split(r"\s+and\s+", m.group("principles").strip()) if p.strip()]
    return m.group("prompt").lstrip(), names


def load_run(path: str | Path, template: str = DEFAULT_TEMPLATE) -> Run:
    """Read a run file of either format; every problem is a one-line `RunFileError`."""
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"{path}: no such run file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RunFileError(f"{path}: cannot read ({e})") from None
    if not text.strip():
        raise RunFileError(f"{path}: empty run file")
    if text.lstrip().startswith("["):
        return _load_reference(path, text, template)
    return _load_jsonl(path, text)


def _load_jsonl(path: Path, text: str) -> Run:
    rows: list[Row] = []
    seen: set[str] = set()
    principle_sets: set[tuple] = set()
    run_names: set[str] = set()
    settings: dict = {}
    for where, obj in json_lines(path, text, RunFileError):
        if not isinstance(obj, dict):
            raise RunFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        for key in ("id", "prompt"):
            if key not in obj:
                raise RunFileError(f"{where}: missing {key!r}")
        rid = str(obj["id"])
        if rid in seen:
            raise RunFileError(f"{where}: duplicate id {rid!r}")
        seen.add(rid)
        prompt = check_chat_prompt(obj["prompt"], where, RunFileError)
        skipped = obj.get("finish_reason") == "skipped"
        response = obj.get("response")
        if response is None and not skipped:
            raise RunFileError(f"{where}: missing 'response'")
        if response is not None and not isinstance(response, str):
            raise RunFileError(f"{where}: 'response' must be a string, got {type(response).__name__}")
        principles = obj.get("principles") or []
        if not isinstance(principles, list) or not all(isinstance(p, dict) and "name" in p for p in principles):
            raise RunFileError(f"{where}: 'principles' must be a list of {{name, weight}} objects")
        try:
            key = tuple((str(p["name"]), float(p.get("weight", 1.0))) for p in principles)
        except (TypeError, ValueError):
            raise RunFileError(f"{where}: a principle weight is not a number") from None
        principle_sets.add(key)
        s = obj.get("settings") or {}
        if not isinstance(s, dict):
            raise RunFileError(f"{where}: 'settings' must be an object")
        settings = settings or s
        if s.get("run"):
            run_names.add(str(s["run"]))
        rows.append(Row(rid, prompt, response or "", skipped, obj.get("finish_reason")))
    if not rows:
        raise RunFileError(f"{path}: no rows")
    if len(run_names) > 1:
        raise RunFileError(f"{path}: rows belong to several runs ({', '.join(sorted(run_names))}); one run a file")
    name = run_names.pop() if run_names else path.stem
    if len(principle_sets) == 1:
        (key,) = principle_sets
        names, w = [n for n, _ in key], math.fsum(wt for _, wt in key)
    else:
        names, w = ["mixed"], None
    return Run(name, path, rows, names, w, settings)


def _load_reference(path: Path, text: str, template: str) -> Run:
    items = load_json(path, text, RunFileError)
    if not isinstance(items, list) or not items:
        raise RunFileError(f"{path}: expected a non-empty JSON list of {{prompt, response, method}} objects")
    rows: list[Row] = []
    principle_sets: set[tuple] = set()
    methods: set[str] = set()
    for i, obj in enumerate(items):
        where = f"{path}: item {i}"
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not isinstance(
            obj.get("response"), str
        ):
            raise RunFileError(f"{where}: needs string fields 'prompt' and 'response'")
        prompt, full = obj["prompt"], obj["response"]
        if full.startswith(prompt):
            generated = full[len(prompt):]
        elif full.lstrip().startswith(prompt.strip()):  # decoders may add or drop leading whitespace
            generated = full.lstrip()[len(prompt.strip()):]
        else:
            raise RunFileError(f"{where}: 'response' does not start with its 'prompt' (expected prompt + generated)")
        raw, names = strip_principle_prompt(prompt, template)
        principle_sets.add(tuple(names))
        if obj.get("method"):
            methods.add(str(obj["method"]))
        rows.append(Row(str(i), raw, generated))
    names = list(next(iter(principle_sets))) if len(principle_sets) == 1 else ["mixed"]
    # The reference lists record no weight: w is unknown unless the run is vanilla.
    w = 0.0 if not names else None
    settings = {"run": path.stem, "method": ", ".join(sorted(methods)), "format": "reference"}
    return Run(path.stem, path, rows, names, w, settings)


def load_runs(paths: Sequence[str | Path], template: str = DEFAULT_TEMPLATE) -> list[Run]:
    """Load several runs; names must be unique (a clash falls back to the file names)."""
    runs = [load_run(p, template) for p in paths]
    names = [r.name for r in runs]
    for r in runs:
        if names.count(r.name) > 1:
            r.name = r.path.stem
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RunFileError(f"two run files are both named {dup[0]!r}; rename one of the files")
    return runs


def find_run(runs: Sequence[Run], ref: str) -> Run:
    """The run named `ref`, or loaded from the file `ref`."""
    for r in runs:
        if ref in (r.name, str(r.path), r.path.name, r.path.stem):
            return r
    for r in runs:
        if Path(ref).exists() and Path(ref).resolve() == r.path.resolve():
            return r
    raise RunFileError(f"baseline {ref!r} is none of the runs ({', '.join(r.name for r in runs)})")


def check_matches_baseline(run: Run, baseline: Run) -> None:
    """A run compared with the baseline must hold the same prompts under the same ids."""
    if run is baseline:
        return
    mine, theirs = run.by_id(), baseline.by_id()
    extra = [i for i in mine if i not in theirs]
    missing = [i for i in theirs if i not in mine]
    if extra or missing:
        what = []
        if extra:
            what.append(f"{len(extra)} id(s) not in the baseline (first {extra[0]!r})")
        if missing:
            what.append(f"{len(missing)} baseline id(s) missing (first {missing[0]!r})")
        raise RunFileError(f"{run.path}: ids do not match baseline {baseline.name!r}: {'; '.join(what)}")
    for i, row in mine.items():
        if row.prompt != theirs[i].prompt:
            raise RunFileError(f"{run.path}: id {i!r} has a different prompt than in baseline {baseline.name!r}")
