"""Principles and the principle-conditioned prompt (method.md section 1).

A preference is plain text: one principle ("harmless") or several joined with " and "
("harmless and helpfulness and humor"). The reference places it in the user turn with a fixed
template, then applies the model's chat template. Here the template is a setting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TEMPLATE = (
    "[Guidelines] Your task is to generate response by considering the following principle. "
    "[Principles] {principles} [Instruction] {prompt}"
)

# Used when a tokenizer ships no chat template (GPT-2 style models): the HH-RLHF transcript form.
FALLBACK_CHAT = "\n\nHuman: {content}\n\nAssistant:"

Message = dict[str, str]


def check_template(template: str) -> str:
    """Return `template` if it has both placeholders, else raise a one-line ValueError."""
    missing = [f"{{{k}}}" for k in ("principles", "prompt") if f"{{{k}}}" not in template]
    if missing:
        raise ValueError(f"principle template {template!r} lacks {' and '.join(missing)}")
    return template


def join_principles(names: Sequence[str]) -> str:
    """Combine principle names the way the reference does: 'a and b and c'."""
    return " and ".join(n.strip() for n in names if n.strip())


@dataclass(frozen=True)
class Principle:
    """One principle with its guidance weight `w` (method.md section 3); weight None: the run's weight."""

    name: str
    weight: float | None = 1.0

    @classmethod
    def parse(cls, spec: str, default_weight: float | None = 1.0) -> Principle:
        """Parse 'name' or 'name=weight', e.g. 'harmless=1.5'.

        A name that holds '=' is quoted: '"tone=formal"' or '"tone=formal"=0.5' (single quotes work too).
        """
        text = spec.strip()
        if text[:1] in ("'", '"'):
            close = text.find(text[0], 1)
            if close < 0:
                raise ValueError(f"principle {spec!r}: the quote {text[0]} is not closed")
            name, rest = text[1:close], text[close + 1:].strip()
            if rest and not rest.startswith("="):
                raise ValueError(f"principle {spec!r}: after the quoted name only '=weight' may follow")
            sep, w = ("=", rest[1:]) if rest else ("", "")
        else:
            name, sep, w = text.rpartition("=") if "=" in text else (text, "", "")
        name = name.strip()
        if not name:
            raise ValueError(f"principle {spec!r} has no name")
        if not sep:
            return cls(name, None if default_weight is None else float(default_weight))
        try:
            weight = float(w)
        except ValueError:
            hint = (f" (a name that holds '=' is quoted: '\"{text}\"')" if text[:1] not in ("'", '"') else "")
            raise ValueError(f"principle {spec!r}: weight {w.strip()!r} is not a number{hint}") from None
        if not math.isfinite(weight):
            raise ValueError(f"principle {spec!r}: weight must be finite")
        return cls(name, weight)

    def with_default(self, weight: float) -> Principle:
        """This principle with `weight` if it has none of its own."""
        return self if self.weight is not None else Principle(self.name, float(weight))


def render_instruction(prompt: str, principles: str | None, template: str = DEFAULT_TEMPLATE) -> str:
    """The user-turn text: the template filled in, or the bare prompt when there is no principle."""
    if not principles:
        return prompt
    # str.replace, not str.format: prompts often contain braces.
    return template.replace("{principles}", principles).replace("{prompt}", prompt)


def to_messages(
    prompt: str | Sequence[Message], principles: str | None, template: str = DEFAULT_TEMPLATE
) -> list[Message]:
    """Chat messages with the principle prompt wrapped around the last user turn.

    A string is one user turn. In a conversation, earlier turns stay as they are.
    """
    if isinstance(prompt, str):
        return [{"role": "user", "content": render_instruction(prompt, principles, template)}]
    messages = [dict(m) for m in prompt]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        raise ValueError("conversation has no user turn")
    messages[last_user]["content"] = render_instruction(messages[last_user]["content"], principles, template)
    return messages


def _leading_special(tokenizer) -> str:
    """The text of the special token the tokenizer puts before any text it encodes (a BOS, which models such as
    Gemma need), or "". A chat template writes it itself; the plain transcript has to."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos:
        return ""
    with_special = tokenizer("x")["input_ids"]
    if with_special[:1] == [tokenizer.bos_token_id] and tokenizer("x", add_special_tokens=False)["input_ids"][:1] != \
            with_special[:1]:
        return bos
    return ""


def chat_text(tokenizer, messages: Sequence[Message]) -> str:
    """The exact text the model reads: its chat template with the generation prompt."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    turns = [_leading_special(tokenizer)]
    for m in messages:
        if m["role"] == "assistant":
            turns.append(f" {m['content']}")
        elif m["role"] == "user":
            turns.append(FALLBACK_CHAT.format(content=m["content"]))
        else:  # system text leads the transcript
            turns.append(m["content"])
    return "".join(turns)


def read_chat_template(value: str, tokenizer=None) -> str:
    """A chat template given by the user: the text of a Jinja file, or Jinja text itself. With `tokenizer`, the
    template is tried on a one-message chat first, so a broken one fails here, naming its source."""
    from pathlib import Path

    src = value
    path = Path(value).expanduser() if len(value) < 4096 and "\n" not in value else None
    if path is not None and path.is_file():
        src, value = str(path), path.read_text(encoding="utf-8")
    elif "{{" not in value and "{%" not in value:
        raise ValueError(f"chat template {src!r}: no such file, and not Jinja text (no '{{{{' or '{{%')")
    if tokenizer is not None:
        try:
            tokenizer.apply_chat_template([{"role": "user", "content": "x"}], chat_template=value, tokenize=False,
                                          add_generation_prompt=True)
        except Exception as e:  # jinja's errors, whatever their class
            raise ValueError(f"chat template {src!r} does not render a one-message chat: {e}") from None
    return value


def principle_prompt(
    tokenizer,
    prompt: str | Sequence[Message],
    principles: str | None,
    template: str = DEFAULT_TEMPLATE,
) -> str:
    """Shortcut: principle-wrapped messages rendered through the chat template."""
    return chat_text(tokenizer, to_messages(prompt, principles, template))
