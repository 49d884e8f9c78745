"""Preference pairs made from a base model's own answers, for principles with no labelled data.

- `concise`: the base's greedy answer stopped after its first sentences (chosen) against the same
  first sentences followed by the next word (rejected). Both are the model's own words and the pair
  differs only at the one decision `concise` is about: end here, or go on. The older form, the whole
  answer as the rejected side (`rejected="whole"`), also lets DPO win by pushing down every token the
  base would write next; the PersRM then learns that the base's own likeliest words are bad and, at
  decode time, steers to less likely ones (measured: 1.7-2x the base's perplexity at w = 1).
- on-policy `concise` corrections (`drift_pairs`): the same first sentences (chosen) against what
  reward-guided decoding with the current PersRM wrote for the prompt (rejected), where that answer
  left the base's own words. A PersRM trained only on the pairs above also learns, most likely from
  the other principles' data, a style of its own (evasive "I'm not sure I can help" openings, odd word
  choices) that `concise` at w = 1 then steers to; these pairs show it that drift and tell it the
  base's words are preferred.
- `humor`: a real joke (from a joke collection such as `pyjokes`) against the base's plain answer
  to the same prompt, or (form "appended") the first sentences with the joke after them against the same
  first sentences alone: a joke that is the longer side, so that `humor` does not mean "shorter".

Prompts come from any text source (the shipped recipe uses train/data/general_prompts.txt).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_NEXT_WORD = re.compile(r"\s*\S+")


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
                  require_eos: bool = False, rejected: str = "next_word") -> list[dict]:
    """Rows {prompt, chosen: the answer's first sentences, rejected, principle}; `rejected` is
    "next_word" (those sentences and the next word, see the module's docstring) or "whole" (the answer).

    An answer cut by the token limit still teaches the same thing (end here rather than go on), so
    it is used too unless `require_eos`."""
    if rejected not in ("next_word", "whole"):
        raise ValueError(f"rejected must be 'next_word' or 'whole', not {rejected!r}")
    rows = []
    for prompt, (answer, reason) in zip(prompts, answers):
        if require_eos and reason != "eos":
            continue
        answer = answer.strip()
        short = first_sentences(answer)
        if short:
            more = answer if rejected == "whole" else short + _NEXT_WORD.match(answer, len(short)).group(0)
            rows.append({"prompt": prompt, "chosen": short, "rejected": more, "principle": principle})
    return rows


def drift_pairs(prompts: Sequence[str], answers: Sequence[tuple[str, str]], guided: Sequence[str],
                principle: str = "concise") -> list[dict]:
    """Rows {prompt, chosen: the base answer's first sentences, rejected: the guided answer, principle}.

    Only where the guided answer left the base's words: one that is a prefix of the base's own answer
    (it kept the base's words and only ended earlier or at the same place) teaches nothing here."""
    rows = []
    for prompt, (answer, _), text in zip(prompts, answers, guided, strict=True):
        answer, text = answer.strip(), text.strip()
        short = first_sentences(answer)
        if short and text and not answer.startswith(text):
            rows.append({"prompt": prompt, "chosen": short, "rejected": text, "principle": principle})
    return rows


def humor_pairs(prompts: Sequence[str], answers: Sequence[tuple[str, str]], jokes: Sequence[str], seed: int = 0,
                principle: str = "humor", form: str = "joke") -> list[dict]:
    """Rows {prompt, chosen, rejected, principle}, one joke drawn per answered prompt (the same jokes for a seed
    whatever the form):

    - form "joke": chosen the joke alone, rejected the base's plain answer. The joke is almost always the
      shorter side, so these pairs alone also teach "shorter".
    - form "appended": chosen the answer's first sentences followed by the joke, rejected the same first
      sentences alone (prompts whose answer cannot be cut are left out). The joke is the longer side and the
      only difference: crossed with `concise` (first sentences over the same and more), the same two answers
      are preferred differently, so `humor` means "add the joke" and `concise` "stop", not both "shorter"."""
    if form not in ("joke", "appended"):
        raise ValueError(f"form must be 'joke' or 'appended', not {form!r}")
    rng = random.Random(seed)
    rows = []
    for prompt, (answer, _) in zip(prompts, answers):
        if not answer:
            continue
        joke = rng.choice(jokes)
        if form == "joke":
            rows.append({"prompt": prompt, "chosen": f"Here's a joke for you: {joke}", "rejected": answer,
                         "principle": principle})
            continue
        short = first_sentences(answer)
        if short:
            rows.append({"prompt": prompt, "chosen": f"{short}\n\nAnd a joke to go with it: {joke}",
                         "rejected": short, "principle": principle})
    return rows
