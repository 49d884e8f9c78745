"""Prompt files in, run files out.

Prompts: a JSON list or JSONL of objects with `prompt` (text or chat messages) and optional `id` and
`principle`. Run files: JSONL, one line per prompt, appended and flushed as each batch finishes, so
a run killed at any moment keeps everything before it; `--resume` repairs a torn last line and skips
the ids already written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pad.errors import PadError
from pad.files import check_chat_prompt, json_lines, load_json
from pad.principles import Principle, render_instruction


@dataclass
class PromptRow:
    id: str
    prompt: str | list[dict[str, str]]
    principles: list[Principle] | None = None  # None: the run's principles; a weight None: the run's weight


def parse_principle_field(value: Any, default_weight: float | None, where: str) -> list[Principle]:
    """A row's `principle`: 'harmless', 'harmless=1.5', a list of those, or {"harmless": 1.5}.

    A principle without a weight gets `default_weight`; None leaves it to the run (each run line's weight)."""
    try:
        if isinstance(value, str):
            return [Principle.parse(value, default_weight)]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [Principle.parse(v, default_weight) for v in value]
        if isinstance(value, dict):
            out = []
            for name, w in value.items():
                if isinstance(w, bool) or not isinstance(w, (int, float)):
                    raise ValueError(f"weight of {name!r} is not a number: {w!r}")
                out.append(Principle(str(name), float(w)))
            return out
    except ValueError as e:
        raise PadError(f"{where}: {e}") from None
    raise PadError(f"{where}: `principle` must be a string, a list of strings or a name: weight mapping")


def rows_from_objects(objs: list[tuple[str, Any]], default_weight: float | None = None) -> list[PromptRow]:
    """Validate (location, object) pairs into prompt rows; ids default to the position."""
    rows, seen = [], {}
    for i, (where, obj) in enumerate(objs):
        if not isinstance(obj, dict):
            raise PadError(f"{where}: each prompt is a JSON object with a `prompt` field")
        if "prompt" not in obj:
            raise PadError(f"{where}: no `prompt` field")
        prompt = check_chat_prompt(obj["prompt"], where)
        if isinstance(prompt, str) and not prompt.strip():
            raise PadError(f"{where}: `prompt` is empty")
        rid = str(obj["id"]) if obj.get("id") is not None else str(i)
        if rid in seen:
            raise PadError(f"{where}: id {rid!r} repeats the id at {seen[rid]}")
        seen[rid] = where
        principles = None
        if obj.get("principle") is not None:
            principles = parse_principle_field(obj["principle"], default_weight, where)
        rows.append(PromptRow(rid, prompt, principles))
    return rows


def load_prompts(path: str | Path, default_weight: float | None = None) -> list[PromptRow]:
    path = Path(path)
    if not path.is_file():
        raise PadError(f"prompts file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise PadError(f"{path}: the file is empty")
    objs: list[tuple[str, Any]] = []
    if text.lstrip().startswith("["):
        objs = [(f"{path} item {i}", o) for i, o in enumerate(load_json(path, text))]
    else:
        objs = list(json_lines(path, text))
    if not objs:
        raise PadError(f"{path}: no prompts in the file")
    return rows_from_objects(objs, default_weight)


def helpsteer2_prompts(rows) -> list[PromptRow]:
    """The paper's HelpSteer2 evaluation prompts: validation prompts of at most 100 characters, each
    distinct one once, in order of first appearance.

    A prompt's responses sit on consecutive rows, usually two but not always: taking every second
    short row would drift by one at a prompt with one or three rows, then skip or repeat prompts.
    """
    short = dict.fromkeys(r["prompt"] for r in rows if len(r["prompt"]) <= 100)  # ordered, unique
    return [PromptRow(f"hs2-{i}", p) for i, p in enumerate(short)]


def load_dataset_prompts(name: str) -> list[PromptRow]:
    if name != "helpsteer2":
        raise PadError(f"unknown dataset {name!r}; known: helpsteer2 (or pass --prompts FILE)")
    from pad.models import hub_reachable

    hub_reachable()  # offline: the datasets library then uses its cache only
    try:
        from datasets import load_dataset

        ds = load_dataset("nvidia/HelpSteer2", split="validation")
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PadError(f"cannot load nvidia/HelpSteer2 (validation): {first}") from None
    return helpsteer2_prompts(ds)


class RunWriter:
    """Appends whole JSON lines to a run file, flushed and synced after each batch."""

    def __init__(self, path: str | Path, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        self.done: set[str] = set()
        if self.path.exists() and self.path.stat().st_size > 0:
            if resume:
                self.done = self._repair_and_read()
            elif not overwrite:
                raise PadError(f"{self.path} exists: pass --resume to continue it or --overwrite to start over")
            else:
                self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _repair_and_read(self) -> set[str]:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
        if end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
        ids = set()
        for n, line in enumerate(data[:end].decode("utf-8").splitlines(), 1):
            if line.strip():
                try:
                    ids.add(str(json.loads(line)["id"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise PadError(f"{self.path}:{n}: not a run-file line; cannot resume this file") from None
        return ids

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        self._f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_run(path: str | Path) -> list[dict]:
    return [obj for _, obj in json_lines(path, Path(path).read_text(encoding="utf-8"))]


def export_reference(run_path: str | Path, out_path: str | Path) -> int:
    """Write a run as the reference's JSON list (`prompt`, `response` with the prompt, `method`)
    for older evaluation scripts. Returns the number of rows."""
    rows = []
    for r in read_run(run_path):
        if r.get("finish_reason") == "skipped":
            continue
        prompt = r["prompt"]
        if not isinstance(prompt, str):
            prompt = next(m["content"] for m in reversed(prompt) if m["role"] == "user")
        names = " and ".join(p["name"] for p in r.get("principles", []))
        shown = render_instruction(prompt, names or None, r["settings"]["template"])
        rows.append({"prompt": shown, "response": f"{shown} {r['response']}", "method": r["settings"]["run"]})
    Path(out_path).write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    return len(rows)
