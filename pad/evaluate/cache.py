"""A score cache per scorer: re-scoring a grown run file scores only its new rows.

One JSONL file per scorer identity in `<report>/cache/`; each line holds the hash of the exact text
the scorer read and its whole output vector (every label, every ArmoRM objective), or why it was
skipped. Lines are appended after each batch, so an interrupted evaluation keeps what it scored.
Caches of several machines merge by concatenating their files.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path


def text_key(identity: str, text: str) -> str:
    return hashlib.sha256(f"{identity}\x00{text}".encode()).hexdigest()[:32]


class ScoreCache:
    """`get(key)` -> list of floats, or a skip reason (str), or None when unseen."""

    def __init__(self, folder: str | Path | None, identity: str, label: str = "scorer"):
        self.identity = identity
        self.entries: dict[str, list[float] | str] = {}
        self.path: Path | None = None
        if folder is None:
            return
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")[:60] or "scorer"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
        self.path = Path(folder) / f"{slug}-{digest}.jsonl"
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
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
            for k, v in items.items():
                f.write(json.dumps({"k": k, "skip": v} if isinstance(v, str) else {"k": k, "v": v}) + "\n")
