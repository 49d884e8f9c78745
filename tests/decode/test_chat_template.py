"""Bases without a chat template (pretrained models): a plain transcript, said in the log, or a template the user
passes with --chat-template; a broken template fails in one line naming its file."""

import json
import logging

import pytest
from typer.testing import CliRunner

from pad.cli import app
from pad.principles import read_chat_template

runner = CliRunner()


@pytest.fixture(scope="module")
def bare_base(tmp_path_factory):
    """A tiny base whose tokenizer has no chat template."""
    from pad.testing import build_tokenizer, save_tiny_model

    tok = build_tokenizer()
    tok.chat_template = None
    return save_tiny_model(tmp_path_factory.mktemp("bare") / "llama", "llama", seed=0, tokenizer=tok)


def _decode(*args):
    return runner.invoke(app, ["decode", "--prompt", "Tell me about cats", "--max-new-tokens", 2, "-q",
                               *map(str, args)])


def test_a_base_without_template_reads_a_plain_transcript_and_says_so(tmp_path, bare_base, caplog):
    out = tmp_path / "run.jsonl"
    with caplog.at_level(logging.WARNING, logger="pad.decode"):
        r = _decode("--llm", bare_base, "--out", out)
    assert r.exit_code == 0, r.output
    assert "has no chat template" in caplog.text and "--chat-template" in caplog.text
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["model_input"] == "\n\nHuman: Tell me about cats\n\nAssistant:"


def test_a_template_file_formats_the_base_prompt(tmp_path, bare_base, caplog):
    jinja = tmp_path / "plain.jinja"
    jinja.write_text("{% for m in messages %}Q: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}A:"
                     "{% endif %}")
    out = tmp_path / "run.jsonl"
    with caplog.at_level(logging.WARNING, logger="pad.decode"):
        r = _decode("--llm", bare_base, "--chat-template", jinja, "--out", out)
    assert r.exit_code == 0, r.output
    assert "has no chat template" not in caplog.text
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["model_input"] == "Q: Tell me about cats\nA:"


def test_bad_templates_fail_in_one_line_naming_them(tmp_path, bare_base):
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m['content'] }")
    r = _decode("--llm", bare_base, "--chat-template", broken)
    assert r.exit_code != 0 and "broken.jinja" in r.output and "does not render" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = _decode("--llm", bare_base, "--chat-template", tmp_path / "missing.jinja")
    assert r.exit_code != 0 and "missing.jinja" in r.output and "no such file" in r.output
    with pytest.raises(ValueError, match="no such file"):
        read_chat_template("plain words")
    assert read_chat_template("{{ messages[0]['content'] }}") == "{{ messages[0]['content'] }}"


def test_the_plain_transcript_starts_with_the_bos_the_tokenizer_adds():
    """A pretrained base such as Gemma needs its BOS; a chat template writes it, the plain transcript must too,
    but only where the tokenizer adds one to any text it encodes."""
    from tokenizers.processors import TemplateProcessing

    from pad.principles import principle_prompt
    from pad.testing import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = None
    assert principle_prompt(tok, "hi", None).startswith("\n\nHuman: hi")  # this tokenizer adds no BOS
    bos = tok.bos_token
    tok._tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.bos_token_id)])
    text = principle_prompt(tok, "hi", None)
    assert text == f"{bos}\n\nHuman: hi\n\nAssistant:"
    assert tok(text, add_special_tokens=False)["input_ids"][0] == tok.bos_token_id
