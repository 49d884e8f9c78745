"""Run files: `pad decode` JSONL and the reference's JSON lists, and the errors bad ones give."""

import json

import pytest
from eval_helpers import RESPONSES, run_row, write_run

from pad.errors import PadError
from pad.evaluate.inputs import check_matches_baseline, find_run, load_run, load_runs, strip_principle_prompt
from pad.principles import DEFAULT_TEMPLATE, render_instruction


def test_decode_run_file(tmp_path):
    rows = [run_row(0, "pad_w1", "a", [("harmless", 1.0), ("humor", 0.5)]),
            run_row(1, "pad_w1", "", [("harmless", 1.0), ("humor", 0.5)], finish="skipped")]
    rows[1]["prompt"] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = load_run(tmp_path / "r.jsonl")
    assert run.name == "pad_w1" and run.w == 1.5 and run.principles == ["harmless", "humor"]
    assert run.label == "harmless and humor"
    assert [r.decode_skipped for r in run.rows] == [False, True]
    assert run.rows[1].prompt[1] == {"role": "user", "content": "Hi"}


def test_vanilla_run_has_w_zero(tmp_path):
    run = load_run(write_run(tmp_path / "v.jsonl", "vanilla", RESPONSES))
    assert (run.w, run.label, len(run.rows)) == (0.0, "vanilla", 4)


def test_reference_json_strips_prompt_and_principle_template(tmp_path):
    shown = render_instruction("Tell me a joke.", "harmless and humor", DEFAULT_TEMPLATE)
    items = [{"prompt": shown, "response": shown + " Why did the cat sit?", "method": "greedy"},
             {"prompt": shown, "response": "  " + shown + "No.", "method": "greedy"}]
    (tmp_path / "ref.json").write_text(json.dumps(items))
    run = load_run(tmp_path / "ref.json")
    assert [r.id for r in run.rows] == ["0", "1"]
    assert run.rows[0].prompt == "Tell me a joke."
    assert run.rows[0].response == " Why did the cat sit?"
    assert run.rows[1].response == "No."
    assert run.principles == ["harmless", "humor"] and run.w is None
    assert strip_principle_prompt("plain prompt") == ("plain prompt", [])
    # the reference's system prompt came from shell line continuations: any whitespace matches
    messy = ("[Guidelines] Your task is to generate response by considering the following principle.  \n"
             "[Principles] harmless and helpfulness and humor \n[Instruction] What is 2+2?")
    assert strip_principle_prompt(messy) == ("What is 2+2?", ["harmless", "helpfulness", "humor"])


@pytest.mark.parametrize("content,message", [
    ('{"id": "0", "prompt": "p", "response": "r"}\n{"id": "1", "prompt": "p"', "r.jsonl:2: not valid JSON"),
    ('{"id": "0", "prompt": "p"}\n', "r.jsonl:1: missing 'response'"),
    ('{"prompt": "p", "response": "r"}\n', "r.jsonl:1: missing 'id'"),
    ('{"id": "0", "prompt": "p", "response": "r"}\n{"id": "0", "prompt": "p", "response": "r"}\n',
     "r.jsonl:2: duplicate id '0'"),
    ('{"id": "0", "prompt": 5, "response": "r"}\n', "r.jsonl:1: 'prompt' must be a string"),
    ("\n\n", "empty run file"),
])  # fmt: skip
def test_malformed_run_files_name_file_and_line(tmp_path, content, message):
    (tmp_path / "r.jsonl").write_text(content)
    with pytest.raises(PadError, match=message.replace("(", r"\(").replace("+", r"\+")) as e:
        load_run(tmp_path / "r.jsonl")
    assert "\n" not in str(e.value)


def test_missing_file_and_bad_reference(tmp_path):
    with pytest.raises(PadError, match="no such run file"):
        load_run(tmp_path / "nope.jsonl")
    (tmp_path / "ref.json").write_text(json.dumps([{"prompt": "abc", "response": "xyz", "method": "m"}]))
    with pytest.raises(PadError, match=r"item 0: 'response' does not start with its 'prompt'"):
        load_run(tmp_path / "ref.json")


def test_ids_must_match_the_baseline(tmp_path):
    base = write_run(tmp_path / "vanilla.jsonl", "vanilla", RESPONSES)
    short = write_run(tmp_path / "short.jsonl", "short", RESPONSES[:3], [("harmless", 1.0)])
    other = write_run(tmp_path / "other.jsonl", "other", RESPONSES, [("harmless", 1.0)], prompt="Another prompt")
    runs = load_runs([base, short, other])
    b = find_run(runs, "vanilla")
    assert find_run(runs, str(base)) is b
    with pytest.raises(PadError, match=r"short.jsonl: ids do not match baseline 'vanilla': 1 baseline id\(s\) missing"):
        check_matches_baseline(runs[1], b)
    with pytest.raises(PadError, match=r"other.jsonl: id '0' has a different prompt"):
        check_matches_baseline(runs[2], b)
    with pytest.raises(PadError, match="baseline 'nope' is none of the runs"):
        find_run(runs, "nope")
