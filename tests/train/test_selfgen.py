import pytest

from pad.train.selfgen import concise_pairs, drift_pairs, first_sentences, humor_pairs
from tests.bench_helpers import load_script


def test_first_sentences_keeps_whole_leading_sentences_within_half():
    text = "Sleep at the same time each day. Avoid screens before bed. Keep the room cool and dark, and quiet."
    assert first_sentences(text) == "Sleep at the same time each day."  # the second ends past half
    assert first_sentences("One long sentence without any break at all") is None
    assert first_sentences("Hi. " + "x" * 100) is None  # the first sentence is too short to stand alone


def test_concise_pairs_prefer_the_answer_stopped_early():
    prompts = ["a?", "b?", "c?"]
    answers = [("First point here. Second point here. Third point, longer than the others.", "eos"),
               ("First point here. Second point here. Cut off by the token limit, mid-sentence", "length"),
               ("No sentence break anywhere in this answer", "eos")]
    rows = concise_pairs(prompts, answers)
    # the pair differs only at the cut: end there (chosen) or go on with the next word (rejected)
    assert rows == [
        {"prompt": "a?", "chosen": "First point here. Second point here.",
         "rejected": "First point here. Second point here. Third", "principle": "concise"},
        {"prompt": "b?", "chosen": "First point here. Second point here.",
         "rejected": "First point here. Second point here. Cut", "principle": "concise"},
    ]
    whole = concise_pairs(prompts, answers, rejected="whole")
    assert [r["rejected"] for r in whole] == [answers[0][0], answers[1][0]]
    assert [r["prompt"] for r in concise_pairs(prompts, answers, require_eos=True)] == ["a?"]
    listed = "A first line that stands alone.\n\nSecond, a list item follows, and it goes on for a good while longer."
    nl = concise_pairs(["d?"], [(listed, "eos")])
    assert nl[0]["rejected"] == "A first line that stands alone.\n\nSecond,"


def test_drift_pairs_reject_guided_answers_that_left_the_base_words():
    answer = "Cats sleep a lot. They hunt at night. They like boxes and warm places to rest."
    prompts = ["kept", "drifted", "empty", "uncuttable"]
    answers = [(answer, "eos"), (answer, "eos"), (answer, "eos"), ("One sentence only here.", "eos")]
    guided = ["Cats sleep a lot.", "I'm not sure I can help with cats.", " ", "Something else."]
    rows = drift_pairs(prompts, answers, guided)
    assert rows == [{"prompt": "drifted", "chosen": "Cats sleep a lot. They hunt at night.",
                     "rejected": "I'm not sure I can help with cats.", "principle": "concise"}]
    with pytest.raises(ValueError):
        drift_pairs(prompts, answers, guided[:2])


def test_humor_pairs():
    out = humor_pairs(["p"], [("plain answer", "eos")], ["A joke."], seed=0)
    assert out == [{"prompt": "p", "chosen": "Here's a joke for you: A joke.", "rejected": "plain answer",
                    "principle": "humor"}]


def test_humor_pairs_appended():
    prompts = ["one sentence", "cats", "silent"]
    answers = [("Just one sentence here without a cut.", "eos"),
               ("Cats sleep a lot. They hunt at night. They purr when happy and also when nervous.", "eos"),
               ("", "length")]
    jokes = ["Joke one.", "Joke two.", "Joke three.", "Joke four."]
    plain = humor_pairs(prompts, answers, jokes, seed=1)
    out = humor_pairs(prompts, answers, jokes, seed=1, form="appended")
    # the joke is the longer side and the only difference; an answer that cannot be cut gives no pair
    assert out == [{"prompt": "cats", "chosen": "Cats sleep a lot. They hunt at night.\n\nAnd a joke to go with it: "
                    + plain[1]["chosen"].removeprefix("Here's a joke for you: "),
                    "rejected": "Cats sleep a lot. They hunt at night.", "principle": "humor"}]
    assert len(out[0]["chosen"]) > len(out[0]["rejected"])
    # the same joke per prompt as the plain form's (the uncut first prompt still draws one)
    assert [r["prompt"] for r in plain] == ["one sentence", "cats"] and plain[0]["chosen"] != plain[1]["chosen"]
    with pytest.raises(ValueError):
        humor_pairs(prompts, answers, jokes, form="pun")


def test_build_default_data_reuses_answers(tmp_path, monkeypatch):
    """--answers rebuilds every pair file from an earlier build's answers, without the model; the appended humor
    pairs carry the same joke per prompt as humor.jsonl; a prompt with no answer is a one-line error naming it."""
    import json
    import sys

    from pad.errors import PadError

    pytest.importorskip("pyjokes")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell me about cats.\nName a colour.\n")
    answers = tmp_path / "answers.jsonl"
    rows = [{"prompt": "Name a colour.", "answer": "Blue.", "finish_reason": "eos"},
            {"prompt": "Tell me about cats.", "answer": "Cats sleep a lot. They hunt at night. They purr when they "
             "are happy and sometimes when they are nervous, and they groom themselves, each other and their "
             "people for hours every day, which keeps their fur clean and their bonds strong.",
             "finish_reason": "length"}]  # longer than any pyjokes joke (140 characters at most)
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    builder = load_script("train/build_default_data.py", "build_default_data")
    monkeypatch.setattr(sys, "argv", ["build", "--prompts", str(prompts), "--answers", str(answers), "--out", str(out)])
    builder.main()
    read = {name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
            for name in ("answers", "concise", "humor", "humor_appended")}
    assert [r["prompt"] for r in read["answers"]] == ["Tell me about cats.", "Name a colour."]  # the prompts' order
    assert [r["chosen"] for r in read["concise"]] == ["Cats sleep a lot. They hunt at night."]
    (appended,) = read["humor_appended"]
    joke = read["humor"][0]["chosen"].removeprefix("Here's a joke for you: ")
    assert appended["chosen"] == "Cats sleep a lot. They hunt at night.\n\nAnd a joke to go with it: " + joke
    counts = json.loads((out / "counts.json").read_text())
    assert counts["humor_appended"] == 1 and counts["concise"] == 1
    # the joke alone is the shorter side against the long answer (not against "Blue."), the appended joke the longer
    assert counts["chosen_shorter"] == {"concise": 1, "concise_whole": 1, "humor": 1, "humor_appended": 0}
    answers.write_text(json.dumps(rows[1]) + "\n")
    with pytest.raises(PadError, match="no answer for 1 of the prompts, first 'Name a colour.'"):
        builder.main()
