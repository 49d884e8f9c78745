"""benchmarks/compare.py's cross-principle table: length control over the table's own runs, and the checks
it reads off the table (the decoding itself is `pad decode`'s, tested there)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from bench_helpers import load_benchmark

from pad.evaluate.inputs import Row, Run
from pad.evaluate.report import Scores

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def compare():
    return load_benchmark("compare.py", "compare_bench")


def test_cross_table_is_length_controlled_over_its_own_runs(compare, capsys):
    # The worked example of pad.evaluate.length, plus an ARGS run of the same report the table must ignore.
    answers = {"vanilla": (["a b", "a b c d"], [1.0, 2.0]), "PAD concise w=1": (["a b c d e f", "a b c d"], [3.0, 2.5]),
               "ARGS w=1": (["a", "a"], [9.0, 9.0])}
    runs = [Run(name, Path(name), [Row(str(i), "p", t) for i, t in enumerate(texts)]) for name, (texts, _) in answers.items()]
    scores = {name: Scores({"rm": {str(i): v for i, v in enumerate(vals)}}) for name, (_, vals) in answers.items()}
    report = SimpleNamespace(runs=runs, dimensions=[SimpleNamespace(name="rm")], scores=scores)
    table = {"vanilla": {"length": 4.0, "capped": 0.5, "declines": 0.0, "perplexity": 2.0, "score": 1.5},
             "PAD concise w=1": {"length": 6.0, "perplexity": 3.0, "score": 2.75}}
    records = {"vanilla": [{"id": "0", "response": "a b"}, {"id": "1", "response": "a b c d"}],
               "PAD concise w=1": [{"id": "0", "response": "a b c d e f"}, {"id": "1", "response": "a b c d"}]}
    args = SimpleNamespace(cross_weight=1.0, principle="harmless", reward_model="rm", humor_judge="none")
    out = compare.cross_table({"none": "vanilla", "concise": "PAD concise w=1"}, table, records, report, args)
    rows = {r["guide"]: r for r in out["rows"]}
    assert (rows["none"]["score_lc"], rows["concise"]["score_lc"]) == (2.0, 2.25)  # slope 0.5, ARGS left out
    assert out["length_fits"]["rm"]["slope"] == 0.5 and rows["concise"]["x_vanilla_length"] == 1.5
    assert out["winners"]["length"] == {"principle": "concise", "won_by": "none", "own": False}
    printed = capsys.readouterr().out
    assert "| concise | 6.0 | 1.5 | - | - | 3.0 | 2.750 | 2.250 | - |" in printed
    assert "| none | 4.0 | 1.0 | 50% | 0% | 2.0 |" in printed
    assert rows["none"]["capped"] == 0.5


def test_answered_score_leaves_out_the_declines(compare, capsys):
    """A guide that declines one benign request and scores high for it: its raw mean rises, its mean over the
    answers that do not decline shows what remains (the worked example of the "answered" column)."""
    answers = {"vanilla": (["Paris is the capital.", "Boil the pasta for ten minutes."], [1.0, 2.0]),
               "PAD harmless w=1": (["I'm not sure what you're asking.", "Boil the pasta for ten minutes."], [5.0, 2.0])}
    runs = [Run(name, Path(name), [Row(str(i), "p", t) for i, t in enumerate(texts)]) for name, (texts, _) in answers.items()]
    scores = {name: Scores({"rm": {str(i): v for i, v in enumerate(vals)}}) for name, (_, vals) in answers.items()}
    results = [{"run": name, "dimension": "rm", "mean": sum(vals) / 2, "ci_low": min(vals), "ci_high": max(vals),
                "win": None, "lc_mean": sum(vals) / 2, "lc_win": None} for name, (_, vals) in answers.items()]
    report = SimpleNamespace(runs=runs, dimensions=[SimpleNamespace(name="rm")], scores=scores, results=results)
    records = {name: [{"id": str(i), "response": t} for i, t in enumerate(texts)] for name, (texts, _) in answers.items()}
    table = {name: {"length": 5.0, "perplexity": 2.0, "declines": 0.0} for name in answers}
    compare.fill_scores(table, report, {"rm": "score"}, records)  # as both prompt sets' tables fill theirs
    assert table["vanilla"]["score_answered"] == 1.5  # nothing declined: the raw mean
    assert table["PAD harmless w=1"]["score"] == 3.5 and table["PAD harmless w=1"]["score_answered"] == 2.0
    args = SimpleNamespace(cross_weight=1.0, principle="harmless", reward_model="rm", humor_judge="none")
    out = compare.cross_table({"none": "vanilla", "harmless": "PAD harmless w=1"}, table, records, report, args)
    assert {r["guide"]: r["score_answered"] for r in out["rows"]} == {"none": 1.5, "harmless": 2.0}
    assert "| harmless | 5.0 | 1.0 | - | 0% | 2.0 | 3.500 | 3.000 | 2.000 |" in capsys.readouterr().out  # raw, LC, answered


def test_declines_counts_non_answers_not_sympathy(compare):
    """What the "declines" column counts: an answer that opens by declining or deflecting (curly apostrophes too),
    not one that opens with sympathy and then answers, nor a refusal phrase past the opening."""
    yes = ["I'm sorry, I'm not sure what you're asking. Can you tell me what you're asking?",
           "I\u2019m not sure what you\u2019re asking. What\u2019s the question?",
           "I'm sorry for your loss, but as a chatbot, I don't have the ability to access personal data.",
           "I can't help with that.", "Could you please clarify what you mean by a layer?"]
    no = ["I'm sorry for your loss. Here is how to talk to your daughter: start by listening.",
          "The TCP/IP model has four layers: link, internet, transport and application.",
          "Basel is a fine start. " * 10 + "I can't help with the rest."]
    assert [compare.declines(t) for t in yes] == [True] * len(yes)
    assert [compare.declines(t) for t in no] == [False] * len(no)


def humor_judge_only(answers: dict) -> tuple:
    """A report, table, records and args for cross_table from {run: (two answers, their humor scores)}, with the
    humor judge as the only judge (--reward-model none)."""
    runs = [Run(name, Path(name), [Row(str(i), "p", t) for i, t in enumerate(texts)]) for name, (texts, _) in answers.items()]
    scores = {name: Scores({"judge": {str(i): v for i, v in enumerate(vals)}}) for name, (_, vals) in answers.items()}
    report = SimpleNamespace(runs=runs, dimensions=[SimpleNamespace(name="judge")], scores=scores)
    table = {name: {"length": sum(len(t.split()) for t in texts) / 2, "perplexity": 2.0,
                    "humor": sum(vals) / 2} for name, (texts, vals) in answers.items()}
    records = {name: [{"id": str(i), "response": t} for i, t in enumerate(texts)] for name, (texts, _) in answers.items()}
    args = SimpleNamespace(cross_weight=1.0, principle="harmless", reward_model="none", humor_judge="judge")
    return report, table, records, args


def test_cross_table_without_the_rm_and_with_a_synonym(compare, capsys):
    """--reward-model none: the humor judge is the only judge column. A synonym is a row, marked with the principle
    it stands for, but it never wins a column: here 'brief' is the shortest, and the length column still goes to
    the shortest trained guide."""
    answers = {"vanilla": (["a b c d", "a b c d"], [1.0, 1.0]), "PAD concise w=1": (["a b", "a b c"], [1.0, 2.0]),
               "PAD humor w=1": (["a b c", "a b c"], [3.0, 3.0]), "PAD brief w=1": (["a", "a"], [0.0, 0.0])}
    report, table, records, args = humor_judge_only(answers)
    cross = compare.cross_methods("harmless", ["concise", "humor", "brief"], 1.0, [])
    out = compare.cross_table(cross, table, records, report, args, {"brief": "concise"})
    rows = {r["guide"]: r for r in out["rows"]}
    assert rows["brief"]["synonym_of"] == "concise" and "synonym_of" not in rows["concise"]
    assert "score" not in rows["none"] and rows["humor"]["humor"] == 3.0
    assert out["winners"] == {"length": {"principle": "concise", "won_by": "concise", "own": True},
                              "humor": {"principle": "humor", "won_by": "humor", "own": True},
                              "humor_lc": {"principle": "humor", "won_by": "humor", "own": True}}
    printed = capsys.readouterr().out
    assert "| brief (~concise) | 1.0 | 0.25 | - | - | 2.0 | 0.000 |" in printed and "RM score" not in printed
    assert out["checks"] == ["concise length / next shortest 0.83 (target <= 0.85)"]


def test_opposite_checks(compare):
    rows = [{"guide": "none", "length": 100.0, "x_vanilla_length": 1.0, "humor": 0.5, "humor_lc": 0.4},
            {"guide": "concise", "length": 60.0, "x_vanilla_length": 0.6, "humor": 0.6, "humor_lc": 0.3},
            {"guide": "detailed", "length": 120.0, "x_vanilla_length": 1.2, "humor": 0.7, "humor_lc": 0.6},
            {"guide": "serious", "length": 80.0, "x_vanilla_length": 0.8, "humor": 0.2, "humor_lc": 0.35}]
    assert compare.opposite_checks(rows, has_humor=True) == [
        "concise length / next shortest 0.75 (target <= 0.85)", "detailed length x vanilla 1.2 (target > 1)",
        "lowest humor: serious (target serious)", "lowest humor_lc: concise (target serious)"]
    # Where vanilla's answers mostly reach the token cap, the detailed check says that length cannot show it.
    rows[0]["capped"], rows[2]["x_vanilla_length"] = 0.86, 1.0
    assert compare.opposite_checks(rows, has_humor=False)[1] == (
        "detailed length x vanilla 1.0 (target > 1; vanilla's answers reach the token cap on 86% of prompts, so a "
        "longer answer cannot show)")
    rows[0]["capped"] = 0.4
    assert compare.opposite_checks(rows, has_humor=False)[1] == "detailed length x vanilla 1.0 (target > 1)"


def test_prompting_rows_are_held_against_pad_on_each_measure(compare, capsys):
    """--prompted: 'prompted P' decodes the base reading P's prompt (no PersRM), is a row outside the winners,
    and the table says who is ahead on P's own measure: length for concise, the length-controlled judge for humor."""
    prompted = {"prompted concise": "concise", "prompted humor": "humor"}
    cross = compare.cross_methods("harmless", ["concise", "humor", *prompted], 1.0, [], prompted)
    assert cross["prompted concise"] == "prompted concise" and cross["humor"] == "PAD humor w=1"
    # With a main table, the main table's own "prompted" run is reused for --principle.
    assert compare.cross_methods("harmless", ["prompted harmless"], 1.0, [1.0], {"prompted harmless": "harmless"}) == {
        "none": "vanilla", "prompted harmless": "prompted"}
    assert compare.guide_change("prompted humor", 1.0, prompted) == {"principles": ["humor"], "baseline": "prompted"}
    assert compare.guide_change("humor", 0.5, prompted) == {"principles": ["humor=0.5"]}
    assert compare.guide_change("none", 1.0, prompted) == {"principles": []}
    answers = {"vanilla": (["a b c d", "a b c d"], [1.0, 1.0]), "PAD concise w=1": (["a b", "a b c"], [1.0, 2.0]),
               "PAD humor w=1": (["a b c", "a b c"], [3.0, 3.0]), "prompted concise": (["a", "a"], [0.0, 0.0]),
               "prompted humor": (["a b c", "a b c"], [4.0, 4.0])}
    report, table, records, args = humor_judge_only(answers)
    out = compare.cross_table(cross, table, records, report, args, {}, prompted)
    rows = {r["guide"]: r for r in out["rows"]}
    assert rows["prompted humor"]["prompted_of"] == "humor" and "prompted_of" not in rows["humor"]
    # prompted concise is the shortest and prompted humor the funniest, yet neither wins a column.
    assert out["winners"]["length"]["won_by"] == "concise" and out["winners"]["humor"]["won_by"] == "humor"
    lc = {g: r["humor_lc"] for g, r in rows.items()}
    assert lc["prompted humor"] > lc["humor"]  # the same length, a higher score: prompting ahead after control
    assert out["against_prompting"] == [
        "concise length: PAD 2.5, prompted 1 (prompting ahead)",
        f"humor humor_lc: PAD {lc['humor']:g}, prompted {lc['prompted humor']:g} (prompting ahead)"]
    assert not any("prompted" in k for k in out["identical"])
    assert "PAD against prompting" in capsys.readouterr().out
    ahead = [{"guide": "humor", "humor_lc": 2.0}, {"guide": "prompted humor", "prompted_of": "humor", "humor_lc": 1.0},
             {"guide": "concise", "length": 50.0}, {"guide": "prompted concise", "prompted_of": "concise", "length": 60.0},
             {"guide": "prompted harmless", "prompted_of": "harmless", "score_lc": 1.0}]  # no RM: no harmless check
    assert compare.prompting_checks(ahead, has_rm=False, has_humor=True, principle="harmless") == [
        "humor humor_lc: PAD 2, prompted 1 (PAD ahead)", "concise length: PAD 50, prompted 60 (PAD ahead)"]


def test_spearman_without_spread(compare):
    assert compare.spearman([8, 8, 8], [1.0, 2.0, 3.0]) is None
    assert compare.spearman([1, 2, 3], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_base_perplexity_is_the_bases_on_the_shared_backbone(tiny_llama, tiny_dir):
    """On the shared backbone `Models.base` is the PersRM's PeftModel; the benchmarks' "base perplexity" must
    switch its adapter off (it once measured the PersRM: 3.25 instead of 1.99 for SmolLM2's vanilla answers to P-Soups)."""
    import torch

    from pad.decode.config import DecodeConfig
    from pad.decode.run import Models
    from pad.models import load_causal_lm
    from pad.testing import save_tiny_lora

    base_perplexity = load_benchmark("quality.py", "quality_bench").base_perplexity
    lora = save_tiny_lora(tiny_llama, tiny_dir / "lora_ppl", seed=3, scale=1.0)
    models = Models(DecodeConfig(llm=str(tiny_llama), rm=str(lora), device="cpu"), need_rm=True)
    assert models.backbone == "shared"
    records = [{"prompt": "tell me a story", "response": "once upon a time there was", "finish_reason": "eos"},
               {"prompt": "hello", "response": "hi there friend", "finish_reason": "length"}]
    plain = base_perplexity(load_causal_lm(str(tiny_llama), "cpu", torch.float32), models.tok, records)
    assert base_perplexity(models.base, models.tok, records) == plain
    from peft import PeftModel

    merged = PeftModel.from_pretrained(load_causal_lm(str(tiny_llama), "cpu", torch.float32), str(lora)).merge_and_unload()
    assert base_perplexity(merged, models.tok, records) != plain  # the adapter does change it: the switch matters


def test_compare_adapters_reads_both_json_files(capsys, monkeypatch):
    """The side-by-side table of compare_cross.md, from the two committed compare.py JSON files."""
    module = load_benchmark("compare_adapters.py", "compare_adapters")
    results = BENCH / "results"
    monkeypatch.setattr(sys, "argv", ["compare_adapters.py", f"stage3={results / 'compare_cross_stage3.json'}",
                                      f"stage4={results / 'compare_cross_stage4.json'}"])
    module.main()
    out = capsys.readouterr().out
    assert "| guide | P-Soups stage3 | P-Soups stage4 | fresh stage3 | fresh stage4 |" in out
    assert "| concise | 73.8 / 1.937 / 1.920 | 83.9 / 1.876 / 1.862 | 83.0 / 1.854 / 1.860 | 92.8 / 1.852 / 1.855 |" in out
    assert "brief" not in out.split("cells:")[0]  # synonyms stay out of the table
    assert "fresh stage4: tokens over concise: detailed +8.6, serious +6.9" in out


def test_main_table_prints_declines_and_the_answered_score(compare, capsys):
    row = {"method": "PAD w=1", "score": -1.0, "score_ci": [-1.2, -0.8], "score_win": 0.58, "score_lc": -1.06,
           "score_lc_win": 0.5, "length": 79.4, "declines": 0.18, "score_answered": -1.102, "perplexity": 2.44,
           "tokens_per_s": 41.1}
    args = SimpleNamespace(principle="harmless", reward_model="rm", max_new_tokens=128, batch_size=8)
    out = compare.main_table([row], args, 50)
    assert "| PAD w=1 | -1.000 (-1.200 to -0.800) | 58% | -1.060 | 50% | 79.4 | 18% | -1.102 | 2.44 | 41.1 |" in (
        capsys.readouterr().out)
    assert out["winners"]["RM score"] == "PAD w=1"
