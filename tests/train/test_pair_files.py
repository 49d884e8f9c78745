"""Bad pair files are named to the line, and a skipped source says why (issue 21, item 5).

Before: a bad JSON line gave datasets' "An error occurred while generating the dataset"; an HH-RLHF source
pointed at a file of prompt/chosen/rejected pairs said "96 malformed".
"""

from __future__ import annotations

import gzip
import json

import pytest
from typer.testing import CliRunner

from pad.cli import app

GOOD = {"prompt": "Tell me about cats.", "chosen": "Cats purr.", "rejected": "No.", "principle": "humor"}


def _error(tmp_path, tiny_llama, source: str) -> str:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"base_model: {tiny_llama}\nsources: [{source}]\n")
    r = CliRunner().invoke(app, ["train", "--config", str(recipe), "--output_dir", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.output.count("error: ") == 1, r.output
    return r.output.strip().splitlines()[-1]


@pytest.mark.parametrize("gz", [False, True])
def test_bad_json_line_names_file_and_line(tmp_path, tiny_llama, gz):
    text = json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "prompt": "Dogs?"}) + "\n" + '{"prompt": "x", "chosen": \n'
    path = tmp_path / ("d.jsonl.gz" if gz else "d.jsonl")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    last = _error(tmp_path, tiny_llama, f"{{kind: jsonl, path: {path}}}")
    assert last.startswith(f"error: source jsonl:{path.name}: {path}:4: not valid JSON ("), last


def test_bad_json_list_names_file_and_line(tmp_path, tiny_llama):
    path = tmp_path / "d.json"
    path.write_text("[\n" + json.dumps(GOOD) + ",\n" + json.dumps(GOOD)[:-1] + "\n]\n")
    last = _error(tmp_path, tiny_llama, f"{{kind: jsonl, path: {path}}}")
    assert last.startswith(f"error: source jsonl:d.json: {path}:4: not valid JSON ("), last


def test_hh_rlhf_source_on_a_pairs_file_says_why(tmp_path, tiny_llama):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({**GOOD, "prompt": f"q{i}"}) + "\n" for i in range(4)))
    last = _error(tmp_path, tiny_llama, f"{{kind: hh_rlhf, path: {path}, principles: {{harmless: chosen}}}}")
    assert "gives no preference pairs (4 not_a_transcript)" in last, last
    assert "whole transcripts" in last and "kind: jsonl" in last, last


def test_hh_rlhf_transcripts_of_different_conversations_are_counted_apart():
    from pad.train.pairs import SourceConfig, build_mixture

    src = SourceConfig(kind="hh_rlhf", path="hh.jsonl", principles={"harmless": "chosen"})
    rows = [{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: bye\n\nAssistant: no"},
            {"chosen": "just text", "rejected": "\n\nHuman: hi\n\nAssistant: go away"},
            {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}]
    mix = build_mixture([src], eval_size=0, rows=[rows])
    assert mix.counts["hh_rlhf:hh.jsonl"]["harmless"] == {"prompts_differ": 1, "not_a_transcript": 1, "pairs": 1, "train": 1}
