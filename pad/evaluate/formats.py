"""The exact text each kind of reward model reads for a (prompt, response) pair (method.md section 4).

- `hh`: the Human/Assistant transcript of the Ray2333 GPT-2 reward models,
  "\\n\\nHuman: {prompt} \\n\\nAssistant: {response}"; earlier turns of a conversation come first in the
  same form.
- `chat`: user/assistant messages rendered by the scorer's own chat template (ArmoRM).
- `response`: the response alone (the humor classifier judges the text, not the exchange).

The response is stripped of surrounding whitespace: decoders differ in whether the text starts with
a space or a newline, and the reward models should not see that difference.
"""

from __future__ import annotations

from pad.evaluate.inputs import Prompt

FORMATS = ("hh", "chat", "response")


def prompt_messages(prompt: Prompt) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def chat_messages(prompt: Prompt, response: str) -> list[dict[str, str]]:
    """The conversation a chat-template reward model (ArmoRM) scores: the prompt turns plus the reply."""
    return [*prompt_messages(prompt), {"role": "assistant", "content": response.strip()}]


def hh_text(prompt: Prompt, response: str) -> str:
    """The Human/Assistant transcript, e.g. "\\n\\nHuman: Hi \\n\\nAssistant: Hello"."""
    parts = []
    for m in prompt_messages(prompt):
        if m["role"] == "user":
            parts.append(f"\n\nHuman: {m['content']} ")
        elif m["role"] == "assistant":
            parts.append(f"\n\nAssistant: {m['content']} ")
        else:  # a system turn has no place in the transcript form; it leads it
            parts.append(m["content"])
    return "".join(parts) + f"\n\nAssistant: {response.strip()}"


def render(fmt: str, prompt: Prompt, response: str, tokenizer=None) -> str:
    """The text a scorer of format `fmt` reads; `chat` needs the scorer's tokenizer."""
    if fmt == "hh":
        return hh_text(prompt, response)
    if fmt == "response":
        return response.strip()
    if fmt == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("format 'chat' needs a tokenizer with a chat template")
        return tokenizer.apply_chat_template(chat_messages(prompt, response), tokenize=False)
    raise ValueError(f"unknown text format {fmt!r}; choose one of {', '.join(FORMATS)}")
