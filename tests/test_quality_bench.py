"""benchmarks/quality.py's loop measure: the word 4-grams of an answer that repeat an earlier one."""

from __future__ import annotations

from bench_helpers import load_benchmark


def test_repeated_ngrams_counts_a_loop():
    quality = load_benchmark("quality.py", "quality_bench")
    # 12 words, 9 four-grams; only 4 differ (abcd, bcda, cdab, dabc): 5 repeat an earlier one.
    assert quality.repeated_ngrams("a b c d a b c d a b c d") == (9, 5)
    assert quality.repeated_ngrams("one two three four five") == (2, 0)
    assert quality.repeated_ngrams("too short") == (0, 0)
