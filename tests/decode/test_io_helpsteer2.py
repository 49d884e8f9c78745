"""`--dataset helpsteer2`: which validation prompts are decoded."""

from __future__ import annotations

from pad.decode.io import helpsteer2_prompts


def test_helpsteer2_takes_each_short_prompt_once_whatever_its_row_count():
    # Two rows a prompt as usual, but "c" in the middle has three and "e" at the end only one; the long
    # prompt is dropped. Every second short row would give a, b, c, c, d: "c" twice and "e" lost.
    texts = ["a", "a", "b", "b", "x" * 101, "x" * 101, "c", "c", "c", "d", "d", "e"]
    got = helpsteer2_prompts([{"prompt": t} for t in texts])
    assert [r.prompt for r in got] == ["a", "b", "c", "d", "e"]
    assert [r.id for r in got] == ["hs2-0", "hs2-1", "hs2-2", "hs2-3", "hs2-4"]
    assert all(r.principles is None for r in got)


def test_helpsteer2_keeps_a_100_character_prompt_and_drops_a_101_character_one():
    rows = [{"prompt": p} for p in ["y" * 100, "y" * 100, "z" * 101, "z" * 101]]
    assert [r.prompt for r in helpsteer2_prompts(rows)] == ["y" * 100]
