"""Reading the files users hand to pad, with one-line errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pad.errors import PadError


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML recipe: a mapping of field: value (empty file -> {})."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise PadError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise PadError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise PadError(f"{path}: a recipe is a mapping of field: value")
    return data


def json_lines(path: str | Path, text: str, error: type[Exception] = PadError) -> Iterator[tuple[str, Any]]:
    """('file:line', object) for every non-blank line of a JSONL text."""
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{n}", json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{n}: not valid JSON ({e.msg}, column {e.colno})") from None


def read_json_lines(path: str | Path) -> Iterator[tuple[str, Any]]:
    """`json_lines` of a JSONL file, which must be readable (PadError naming the file otherwise)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise PadError(f"{path}: cannot read ({e.strerror})") from None
    return json_lines(path, text)


def load_json(path: str | Path, text: str, error: type[Exception] = PadError) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None


def check_chat_prompt(prompt: Any, where: str, error: type[Exception] = PadError) -> str | list[dict[str, str]]:
    """A prompt is text or chat messages [{role, content}] with at least one user turn."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt
    ):
        if not any(m["role"] == "user" for m in prompt):
            raise error(f"{where}: 'prompt' conversation has no user turn")
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise error(f"{where}: 'prompt' must be a string or a list of {{role, content}} messages")
