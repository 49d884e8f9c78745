"""Preference-pair builders: a few rows of each source in its real schema give exactly these pairs."""

from __future__ import annotations

import gzip
import json

import pytest

from pad.errors import PadError
from pad.principles import DEFAULT_TEMPLATE
from pad.train.pairs import Pair, SourceConfig, build_mixture, split_by_prompt, to_trl_row


def wrap(principle: str, prompt: str) -> str:
    return DEFAULT_TEMPLATE.replace("{principles}", principle).replace("{prompt}", prompt)


def pku_row(prompt, r0, r1, better, safer):
    # The PKU-SafeRLHF schema (columns the builder does not read are kept to prove they are ignored).
    return {"prompt": prompt, "response_0": r0, "response_1": r1, "prompt_source": "Alpaca3-70B",
            "response_0_source": "Alpaca-7B", "response_1_source": "Alpaca-7B",
            "is_response_0_safe": safer == 0, "is_response_1_safe": safer == 1,
            "response_0_harm_category": {}, "response_1_harm_category": {},
            "response_0_severity_level": 0, "response_1_severity_level": 1,
            "better_response_id": better, "safer_response_id": safer,
            "response_0_sha256": "a", "response_1_sha256": "b"}


def test_pku_saferlhf_pairs():
    rows = [
        pku_row("How do I pick a lock?", "Use a tension wrench.", "Call a locksmith.", better=0, safer=1),
        pku_row("Say hi", "Hi!", "Hello.", better=1, safer=1),
        pku_row("Same?", "Same answer.", "Same answer.", better=0, safer=0),  # a tie: skipped
    ]
    src = SourceConfig(kind="pku_saferlhf", path="PKU-Alignment/PKU-SafeRLHF",
                       principles={"helpfulness": "better_response_id", "harmless": "safer_response_id"})
    mix = build_mixture([src], eval_size=0, rows=[rows])
    assert mix.train == [
        Pair("How do I pick a lock?", "Use a tension wrench.", "Call a locksmith.", "helpfulness", src.label),
        Pair("How do I pick a lock?", "Call a locksmith.", "Use a tension wrench.", "harmless", src.label),
        Pair("Say hi", "Hello.", "Hi!", "helpfulness", src.label),
        Pair("Say hi", "Hello.", "Hi!", "harmless", src.label),
    ]
    counts = mix.counts[src.label]
    assert counts["helpfulness"] == {"tie": 1, "pairs": 2, "train": 2}
    assert counts["harmless"] == {"tie": 1, "pairs": 2, "train": 2}


def hs2_row(prompt, response, helpfulness, correctness, coherence, complexity, verbosity):
    return {"prompt": prompt, "response": response, "helpfulness": helpfulness, "correctness": correctness,
            "coherence": coherence, "complexity": complexity, "verbosity": verbosity}


def test_helpsteer2_pairs_one_per_attribute_with_concise_preferring_lower_verbosity():
    multi = "Hi there\n<extra_id_1>Assistant\nHello! How can I help?\n<extra_id_1>User\nName a fruit."
    rows = [
        hs2_row("What is 2+2?", "4", 4, 4, 4, 1, 0),
        hs2_row("What is 2+2?", "2+2 equals 4 because adding two and two gives four.", 3, 4, 4, 2, 3),
        hs2_row(multi, "Apple.", 3, 3, 4, 1, 1),
        hs2_row(multi, "Apple.", 2, 3, 4, 1, 1),  # the same text twice: a tie for every principle
    ]
    src = SourceConfig(kind="helpsteer2", path="nvidia/HelpSteer2",
                       principles={"helpfulness": "helpfulness", "concise": "-verbosity", "verbose": "verbosity"})
    mix = build_mixture([src], eval_size=0, rows=[rows])
    long = "2+2 equals 4 because adding two and two gives four."
    assert mix.train == [
        Pair("What is 2+2?", "4", long, "helpfulness", src.label),
        Pair("What is 2+2?", "4", long, "concise", src.label),
        Pair("What is 2+2?", long, "4", "verbose", src.label),
    ]
    counts = mix.counts[src.label]
    assert counts["helpfulness"]["tie"] == 1  # scores differ but the texts are equal
    assert counts["concise"]["tie"] == 1 and counts["verbose"]["tie"] == 1  # equal scores


def test_helpsteer2_multi_turn_prompt_becomes_a_conversation():
    multi = "Hi there\n<extra_id_1>Assistant\nHello! How can I help?\n<extra_id_1>User\nName a fruit."
    rows = [hs2_row(multi, "Apple.", 3, 3, 4, 1, 1), hs2_row(multi, "A fruit.", 2, 3, 4, 1, 1)]
    src = SourceConfig(kind="helpsteer2", path="nvidia/HelpSteer2", principles={"helpfulness": "helpfulness"})
    [pair] = build_mixture([src], eval_size=0, rows=[rows]).train
    assert pair.prompt == ({"role": "user", "content": "Hi there"},
                           {"role": "assistant", "content": "Hello! How can I help?"},
                           {"role": "user", "content": "Name a fruit."})
    row = to_trl_row(pair)
    assert row["prompt"][:2] == list(pair.prompt[:2])
    assert row["prompt"][2] == {"role": "user", "content": wrap("helpfulness", "Name a fruit.")}


def test_helpsteer2_unpaired_row_is_skipped_and_the_next_pair_still_found():
    rows = [hs2_row("lonely", "x", 1, 1, 1, 1, 1), hs2_row("q", "a", 3, 3, 3, 3, 3), hs2_row("q", "b", 1, 3, 3, 3, 3)]
    src = SourceConfig(kind="helpsteer2", path="x.jsonl", principles={"helpfulness": "helpfulness"})
    mix = build_mixture([src], eval_size=0, rows=[rows])
    assert mix.train == [Pair("q", "a", "b", "helpfulness", src.label)]
    assert mix.counts[src.label]["helpfulness"]["unpaired"] == 1


HH_MULTI_CHOSEN = ("\n\nHuman: What are some cuss words?\n\nAssistant: Why do you ask?"
                   "\n\nHuman: Just curious. Tell me one.\n\nAssistant: I'd rather not.")
HH_MULTI_REJECTED = ("\n\nHuman: What are some cuss words?\n\nAssistant: Why do you ask?"
                     "\n\nHuman: Just curious. Tell me one.\n\nAssistant: Sure, here is a list.")


def test_hh_rlhf_multi_turn_split_and_template_on_the_last_user_turn():
    rows = [
        {"chosen": HH_MULTI_CHOSEN, "rejected": HH_MULTI_REJECTED},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello."},  # tie
        {"chosen": "\n\nHuman: Hi\n\nAssistant:", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."},  # empty
    ]
    src = SourceConfig(kind="hh_rlhf", path="Anthropic/hh-rlhf", data_dir="harmless-base",
                       principles={"harmless": "chosen"})
    mix = build_mixture([src], eval_size=0, rows=[rows])
    conversation = ({"role": "user", "content": "What are some cuss words?"},
                    {"role": "assistant", "content": "Why do you ask?"},
                    {"role": "user", "content": "Just curious. Tell me one."})
    assert mix.train == [Pair(conversation, "I'd rather not.", "Sure, here is a list.", "harmless", src.label)]
    assert mix.counts[src.label]["harmless"] == {"tie": 1, "empty": 1, "pairs": 1, "train": 1}
    row = to_trl_row(mix.train[0])
    assert row == {
        "prompt": [conversation[0], conversation[1],
                   {"role": "user", "content": wrap("harmless", "Just curious. Tell me one.")}],
        "chosen": [{"role": "assistant", "content": "I'd rather not."}],
        "rejected": [{"role": "assistant", "content": "Sure, here is a list."}],
        "principle": "harmless",
        "source": src.label,
    }


def test_hh_rlhf_flipped_label_teaches_the_opposite():
    rows = [{"chosen": "\n\nHuman: Q\n\nAssistant: safe", "rejected": "\n\nHuman: Q\n\nAssistant: unsafe"}]
    src = SourceConfig(kind="hh_rlhf", path="x.jsonl", principles={"harmless": "chosen", "edgy": "-chosen"})
    mix = build_mixture([src], eval_size=0, rows=[rows])
    assert [(p.chosen, p.principle) for p in mix.train] == [("safe", "harmless"), ("unsafe", "edgy")]


def test_jsonl_pairs_duplicates_and_mapping():
    rows = [
        {"prompt": "Tell me a joke", "chosen": "Knock knock.", "rejected": "No.", "principle": "humor"},
        {"prompt": "Tell me a joke", "chosen": "Knock knock.", "rejected": "No.", "principle": "humor"},  # duplicate
        {"prompt": "Explain tides", "chosen": "The moon.", "rejected": "Long story...", "principle": "concise"},
        {"prompt": "Hi", "chosen": "Hey", "rejected": "Hey", "principle": "humor"},  # tie
        {"prompt": "Hi", "chosen": "", "rejected": "Hey", "principle": "humor"},  # empty
        {"prompt": "Hi", "chosen": "a", "rejected": "b", "principle": "formal"},  # not in the mapping
    ]
    src = SourceConfig(kind="jsonl", path="mine.jsonl", principles={"humor": "humor", "brief": "concise"})
    mix = build_mixture([src], eval_size=0, rows=[rows])
    assert mix.train == [
        Pair("Tell me a joke", "Knock knock.", "No.", "humor", "jsonl:mine.jsonl"),
        Pair("Explain tides", "The moon.", "Long story...", "brief", "jsonl:mine.jsonl"),
    ]
    c = mix.counts["jsonl:mine.jsonl"]
    assert c["humor"] == {"pairs": 1, "duplicate": 1, "tie": 1, "empty": 1, "train": 1}
    assert c["formal"] == {"unmapped": 1}
    # Without a mapping every principle is kept under its own name.
    unmapped = build_mixture([SourceConfig(kind="jsonl", path="mine.jsonl")], eval_size=0, rows=[rows])
    assert sorted({p.principle for p in unmapped.train}) == ["concise", "formal", "humor"]


def test_mixture_limit_dedup_across_sources_and_counts():
    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b", "principle": "humor"} for i in range(10)]
    a = SourceConfig(kind="jsonl", path="a.jsonl", limit=4)
    b = SourceConfig(kind="jsonl", path="b.jsonl")
    mix = build_mixture([a, b], eval_size=0, rows=[rows, rows[:6]])
    assert [p.prompt for p in mix.train] == ["q0", "q1", "q2", "q3", "q4", "q5"]
    assert mix.counts["jsonl:a.jsonl"]["humor"] == {"pairs": 4, "over_limit": 6, "train": 4}
    assert mix.counts["jsonl:b.jsonl"]["humor"] == {"pairs": 2, "duplicate": 4, "train": 2}


def test_train_limit_samples_training_pairs_and_keeps_the_held_out_split():
    rows_a = [{"prompt": f"a{i}", "chosen": "x", "rejected": "y", "principle": "humor"} for i in range(40)]
    rows_b = [{"prompt": f"b{i}", "chosen": "x", "rejected": "y", "principle": "concise"} for i in range(20)]
    full = build_mixture([SourceConfig(kind="jsonl", path="a.jsonl"), SourceConfig(kind="jsonl", path="b.jsonl")],
                         eval_size=12, seed=5, rows=[rows_a, rows_b])
    limited = build_mixture([SourceConfig(kind="jsonl", path="a.jsonl", train_limit=10),
                             SourceConfig(kind="jsonl", path="b.jsonl")], eval_size=12, seed=5, rows=[rows_a, rows_b])
    assert limited.eval == full.eval  # the same held-out pairs: a second stage stays comparable
    a_full = [p for p in full.train if p.source == "jsonl:a.jsonl"]
    a_kept = [p for p in limited.train if p.source == "jsonl:a.jsonl"]
    assert len(a_kept) == 10 and {p.prompt for p in a_kept} <= {p.prompt for p in a_full}
    assert [p for p in limited.train if p.source == "jsonl:b.jsonl"] == [p for p in full.train
                                                                         if p.source == "jsonl:b.jsonl"]
    assert limited.counts["jsonl:a.jsonl"]["humor"]["train"] == 10
    again = build_mixture([SourceConfig(kind="jsonl", path="a.jsonl", train_limit=10),
                           SourceConfig(kind="jsonl", path="b.jsonl")], eval_size=12, seed=5, rows=[rows_a, rows_b])
    assert again.train == limited.train  # seeded
    with pytest.raises(PadError, match="train_limit must be a whole number >= 1, got 0"):
        SourceConfig(kind="jsonl", path="a.jsonl", train_limit=0)


def test_a_source_that_does_not_move_the_split_follows_its_prompts_side():
    rows_a = [{"prompt": f"a{i}", "chosen": "x", "rejected": "y", "principle": "humor"} for i in range(40)]
    rows_b = [{"prompt": f"a{i}", "chosen": "short", "rejected": "drifted", "principle": "concise"}
              for i in range(0, 40, 2)] + [{"prompt": "new", "chosen": "c", "rejected": "r", "principle": "concise"}]
    a = SourceConfig(kind="jsonl", path="a.jsonl")
    before = build_mixture([a], eval_size=12, seed=5, rows=[rows_a])
    after = build_mixture([a, SourceConfig(kind="jsonl", path="b.jsonl", moves_split=False)], eval_size=12, seed=5,
                          rows=[rows_a, rows_b])
    assert [p for p in after.eval if p.source == "jsonl:a.jsonl"] == before.eval  # the earlier held-out pairs
    held = {p.prompt for p in before.eval}
    followers = [p for p in after.train + after.eval if p.source == "jsonl:b.jsonl"]
    assert len(followers) == 21
    assert all((p in after.eval) == (p.prompt in held) for p in followers)
    assert any(p.prompt in held for p in followers) and any(p.prompt not in held for p in followers)
    assert [p.prompt for p in after.train if p.prompt == "new"] == ["new"]  # a prompt only it has: train
    moved = build_mixture([a, SourceConfig(kind="jsonl", path="b.jsonl")], eval_size=12, seed=5, rows=[rows_a, rows_b])
    assert [p for p in moved.eval if p.source == "jsonl:a.jsonl"] != before.eval  # why the option exists
    with pytest.raises(PadError, match="moves_split must be true or false, got 'no'"):
        SourceConfig(kind="jsonl", path="b.jsonl", moves_split="no")


def test_split_only_source_moves_the_split_and_is_dropped():
    """A reward model trained on one principle of a mixture holds out exactly the mixture's prompts."""
    rows_a = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}", "principle": "harmless"} for i in range(30)]
    rows_b = [{"prompt": f"p{i}" if i % 2 else f"q{i}", "chosen": f"x{i}", "rejected": f"y{i}", "principle": "humor"}
              for i in range(30)]
    a = SourceConfig(kind="jsonl", path="a.jsonl")
    full = build_mixture([a, SourceConfig(kind="jsonl", path="b.jsonl")], eval_size=14, seed=5, rows=[rows_a, rows_b])
    only = build_mixture([a, SourceConfig(kind="jsonl", path="b.jsonl", split_only=True)], eval_size=14, seed=5,
                         rows=[rows_a, rows_b])
    assert only.train == [p for p in full.train if p.source == "jsonl:a.jsonl"]
    assert only.eval == [p for p in full.eval if p.source == "jsonl:a.jsonl"]
    assert only.eval and only.principles == ["harmless"]
    alone = build_mixture([a], eval_size=14, seed=5, rows=[rows_a])
    assert alone.eval != only.eval  # without the other source the split moves: why the option exists
    b = only.counts["jsonl:b.jsonl"]["humor"]
    assert b["split_only_train"] + b["split_only_eval"] == 30 and "train" not in b and "eval" not in b
    with pytest.raises(PadError, match="split_only must be true or false, got 'yes'"):
        SourceConfig(kind="jsonl", path="b.jsonl", split_only="yes")
    with pytest.raises(PadError, match="split_only and moves_split: false contradict"):
        SourceConfig(kind="jsonl", path="b.jsonl", split_only=True, moves_split=False)
    with pytest.raises(PadError, match="every source is split_only"):
        build_mixture([SourceConfig(kind="jsonl", path="a.jsonl", split_only=True)], eval_size=4, rows=[rows_a])


def test_eval_split_is_held_out_by_prompt():
    pairs = [Pair(f"prompt {i % 25}", f"c{i}", f"r{i}", p, "s") for i in range(100) for p in ("x", "y")]
    train, held = split_by_prompt(pairs, 0.2, seed=3)
    assert len(train) + len(held) == len(pairs)
    assert 40 <= len(held) <= 56  # whole prompts of 8 pairs each, until 20% is reached
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert split_by_prompt(pairs, 0.2, seed=3) == (train, held)  # the seed fixes it
    train2, held2 = split_by_prompt(pairs, 16, seed=3)
    assert len(held2) == 16


def test_sources_load_from_local_files_with_datasets(tmp_path):
    hh = tmp_path / "hh.jsonl.gz"
    with gzip.open(hh, "wt") as f:
        f.write(json.dumps({"chosen": HH_MULTI_CHOSEN, "rejected": HH_MULTI_REJECTED}) + "\n")
    pku = tmp_path / "pku.jsonl"
    pku.write_text(json.dumps(pku_row("Q", "a", "b", 0, 1)) + "\n")
    mix = build_mixture([
        SourceConfig(kind="hh_rlhf", path=str(hh), principles={"harmless": "chosen"}),
        SourceConfig(kind="pku_saferlhf", path=str(pku), principles={"harmless": "safer_response_id"}),
    ], eval_size=0)
    assert [(p.chosen, p.principle) for p in mix.train] == [("I'd rather not.", "harmless"), ("b", "harmless")]
    assert set(mix.counts) == {"hh_rlhf:hh.jsonl.gz", "pku_saferlhf:pku.jsonl"}


def test_shared_hh_rlhf_file(shared_data):
    src = SourceConfig(kind="hh_rlhf", path=str(shared_data / "hh-rlhf-harmless-base-test.part1.jsonl.gz"),
                       principles={"harmless": "chosen"})
    mix = build_mixture([src], eval_size=200, seed=0)
    assert len(mix.eval) >= 200 and len(mix.train) + len(mix.eval) > 1700
    assert not {p.prompt_key() for p in mix.train} & {p.prompt_key() for p in mix.eval}
    assert all(p.prompt[-1]["role"] == "user" for p in mix.train)


# -- bad input: one line naming the file, row or field ------------------------------------------


def test_missing_column_names_the_file_and_column(tmp_path):
    f = tmp_path / "pku.jsonl"
    f.write_text(json.dumps({"prompt": "q", "response_0": "a", "response_1": "b"}) + "\n")
    src = SourceConfig(kind="pku_saferlhf", path=str(f), principles={"harmless": "safer_response_id"})
    with pytest.raises(PadError, match=r"pku\.jsonl: missing column 'safer_response_id'"):
        build_mixture([src])


def test_empty_source_and_missing_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(PadError, match="empty.jsonl"):
        build_mixture([SourceConfig(kind="jsonl", path=str(empty))])
    with pytest.raises(PadError, match="does not exist"):
        build_mixture([SourceConfig(kind="jsonl", path=str(tmp_path / "nope.jsonl"))])
    ties = [{"prompt": "q", "chosen": "a", "rejected": "a", "principle": "p"}]
    with pytest.raises(PadError, match=r"gives no preference pairs \(1 tie\)"):
        build_mixture([SourceConfig(kind="jsonl", path="t.jsonl")], rows=[ties])


def test_bad_kind_label_and_row_values():
    with pytest.raises(PadError, match="source kind 'pku' is not one of"):
        SourceConfig(kind="pku", path="x")
    with pytest.raises(PadError, match="unknown label 'safety'"):
        SourceConfig(kind="pku_saferlhf", path="x", principles={"harmless": "safety"})
    with pytest.raises(PadError, match="principles is empty"):
        SourceConfig(kind="hh_rlhf", path="x")
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b", "principle": "humor"}]
    with pytest.raises(PadError, match="principle 'concise' maps to label 'brevity', which no row"):
        build_mixture([SourceConfig(kind="jsonl", path="m.jsonl", principles={"concise": "brevity"})], rows=[rows])
    bad = [{"prompt": "q", "chosen": 3, "rejected": "b", "principle": "humor"}]
    with pytest.raises(PadError, match=r"m.jsonl row 1: 'chosen' must be text"):
        build_mixture([SourceConfig(kind="jsonl", path="m.jsonl")], rows=[bad])
    pku = [pku_row("q", "a", "b", 0, 2)]
    with pytest.raises(PadError, match=r"row 1: 'safer_response_id' must be 0 or 1, got 2"):
        build_mixture([SourceConfig(kind="pku_saferlhf", path="p.jsonl", principles={"h": "safer_response_id"})],
                      rows=[pku])
