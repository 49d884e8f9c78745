"""A score cache per scorer: re-scoring a grown run file scores only its new rows.

One JSONL file per scorer identity in `<report>/cache/`; each line holds the hash of the exact text
the scorer read and its whole output vector (every label, every ArmoRM objective), or why it was
skipped. Lines are appended after each batch, so an interrupted evaluation keeps what it scored.
Caches of several machines merge by concatenating their files; several processes of one launch each
write their own part file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path


def text_key(identity: str, text: str) -> str:
    return hashlib.sha256(f"{identity}\x00{text}".encode()).hexdigest()[:32]


class ScoreCache:
    """`get(key)` -> list of floats, or a skip reason (str), or None when unseen.

    part: under several processes, each appends to its own part file (`<name>.part-<rank>.jsonl`) and reads
    every file of the scorer, so no two processes ever write one file; `fold()` merges the parts once all
    are done.
    """

    def __init__(self, folder: str | Path | None, identity: str, label: str = "scorer", part: int | None = None):
        self.identity = identity
        self.entries: dict[str, list[float] | str] = {}
        self.path: Path | None = None
        if folder is None:
            return
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")[:60] or "scorer"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
        self.main_path = Path(folder) / f"{slug}-{digest}.jsonl"
        self.path = self.main_path if part is None else Path(folder) / f"{slug}-{digest}.part-{part:03d}.jsonl"
        for path in [self.main_path, *self._parts()]:
            if path.is_file():
                self._read(path)

    def _parts(self) -> list[Path]:
        return sorted(self.main_path.parent.glob(self.main_path.stem + ".part-*.jsonl"))

    def _read(self, path: Path) -> None:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                obj = json.loads(line)
                self.entries[obj["k"]] = obj["skip"] if "skip" in obj else [float(v) for v in obj["v"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut short by an interruption: it is simply scored again

    def key(self, text: str) -> str:
        return text_key(self.identity, text)

    def get(self, key: str) -> list[float] | str | None:
        return self.entries.get(key)

    def put(self, items: dict[str, list[float] | str]) -> None:
        self.entries.update(items)
        if self.path is None or not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(_line(k, v) for k, v in items.items()))

    def fold(self) -> None:
        """Rewrite the scorer's main file with every entry and delete the part files (one process, once
        the others are done). Written beside it, then moved over it."""
        if self.path is None or not self._parts():
            return
        tmp = self.main_path.with_name(self.main_path.name + ".folding")
        tmp.write_text("".join(_line(k, v) for k, v in self.entries.items()), encoding="utf-8")
        os.replace(tmp, self.main_path)
        for p in self._parts():
            p.unlink()


def _line(k: str, v: list[float] | str) -> str:
    return json.dumps({"k": k, "skip": v} if isinstance(v, str) else {"k": k, "v": v}) + "\n"
