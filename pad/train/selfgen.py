"""Preference pairs made from a base model's own answers, for principles with no labelled data.

- `concise`: the base's greedy answer to a prompt against the same answer stopped after its first
  sentences. Both texts are the model's own words; the pair differs only in where the answer ends,
  so DPO teaches the PersRM to prefer ending once the point is made.
- `humor`: a real joke (from a joke collection such as `pyjokes`) against the base's plain answer
  to the same prompt.

Prompts come from any text source (the shipped recipe uses single-turn HH-RLHF requests).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def hh_single_turn_prompts(rows, max_chars: int = 200) -> Iterator[str]:
    """First Human turns of single-turn HH-RLHF transcripts, deduplicated, in file order."""
    seen = set()
    for row in rows:
        text = row["chosen"]
        if text.count("\n\nHuman:") != 1:
            continue
        human = text.split("\n\nHuman:", 1)[1].split("\n\nAssistant:", 1)[0].strip()
        if human and len(human) <= max_chars and human not in seen:
            seen.add(human)
            yield human


def first_sentences(text: str, max_share: float = 0.5, min_chars: int = 20) -> str | None:
    """The longest run of whole leading sentences within `max_share` of the text, or None if the
    answer cannot be cut (one sentence, or its first sentence is already most of it)."""
    text = text.strip()
    cut = None
    for m in _SENTENCE_END.finditer(text):
        if m.start() > max_share * len(text):
            break
        if m.start() >= min_chars:
            cut = m.start()
    return text[:cut].rstrip() if cut else None


def base_answers(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 128, batch_size: int = 16,
                 on_batch=None) -> list[tuple[str, str]]:
    """Greedy answers of the base model alone, with pad's cached batched decoder.
    Returns (answer, finish_reason) per prompt."""
    from pad.decode import DecodeRequest, PADDecoder, SamplingSettings

    dec = PADDecoder(model, tokenizer)
    settings = SamplingSettings(max_new_tokens=max_new_tokens)
    out = []
    for i in range(0, len(prompts), batch_size):
        res = dec.generate([DecodeRequest(p) for p in prompts[i:i + batch_size]], settings)
        out += [(r.text.strip(), r.finish_reason) for r in res]
        if on_batch is not None:
            on_batch(len(res))
    return out


def concise_pairs(prompts: Sequence[str], answers: Sequence[tuple[str, str]], principle: str = "concise",
                  require_eos: bool = False) -> list[dict]:
    """Rows {prompt, chosen: the answer's first sentences, rejected: the whole answer, principle}.

    An answer cut by the token limit still teaches the same thing (end here rather than go on), so
    it is used too unless `require_eos`."""
    rows = []
    for prompt, (answer, reason) in zip(prompts, answers):
        if require_eos and reason != "eos":
            continue
        short = first_sentences(answer)
        if short:
            rows.append({"prompt": prompt, "chosen": short, "rejected": answer, "principle": principle})
    return rows


def humor_pairs(prompts: Sequence[str], answers: Sequence[tuple[str, str]], jokes: Sequence[str], seed: int = 0,
                principle: str = "humor") -> list[dict]:
    """Rows {prompt, chosen: a joke, rejected: the base's plain answer, principle}."""
    rng = random.Random(seed)
    rows = []
    for prompt, (answer, _) in zip(prompts, answers):
        if answer:
            joke = rng.choice(jokes)
            rows.append({"prompt": prompt, "chosen": f"Here's a joke for you: {joke}", "rejected": answer,
                         "principle": principle})
    return rows
