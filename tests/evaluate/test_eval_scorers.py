"""Scorers on tiny models built here, checked against scores computed independently of pad's code."""

import pytest
import torch
from eval_helpers import PROMPTS, RESPONSES

from pad.evaluate.formats import chat_messages, hh_text
from pad.evaluate.inputs import Row
from pad.evaluate.scorers import (
    ARMO_OBJECTIVES,
    ScorerError,
    SequenceScorer,
    build_dimensions,
    is_causal_model,
    length_sorted_batches,
)

ROWS = [Row(str(i), p, r) for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES))]


def score(dims, rows=ROWS, batch_size=16):
    from pad.evaluate.inputs import Run
    from pad.evaluate.report import score_runs

    run = Run("r", None, list(rows))
    return score_runs([run], dims, None, batch_size)["r"]


def test_exact_human_assistant_text_for_a_run_row():
    row = Row("0", "How do I bake bread?", " Mix flour, water, salt and yeast, then bake.\n")
    assert hh_text(row.prompt, row.response) == (
        "\n\nHuman: How do I bake bread? \n\nAssistant: Mix flour, water, salt and yeast, then bake.")
    convo = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "Tell me a joke."}]
    assert hh_text(convo, "No.") == "\n\nHuman: Hi \n\nAssistant: Hello! \n\nHuman: Tell me a joke. \n\nAssistant: No."


def test_exact_armorm_messages_and_chat_text(tiny_armo):
    row = Row("0", "Tell me a joke about cats.", " Why did the cat sit on the computer?  ")
    assert chat_messages(row.prompt, row.response) == [
        {"role": "user", "content": "Tell me a joke about cats."},
        {"role": "assistant", "content": "Why did the cat sit on the computer?"},
    ]
    (dim,) = build_dimensions([f"armo-helpfulness={tiny_armo}"])
    assert dim.scorer.render(row) == (
        "<|im_start|>user\nTell me a joke about cats.<|im_end|>\n"
        "<|im_start|>assistant\nWhy did the cat sit on the computer?<|im_end|>\n")


def test_one_logit_classifier_matches_independent_score(tiny_rm, tiny_tokenizer):
    from transformers import GPT2ForSequenceClassification

    (dim,) = build_dimensions([f"helpful={tiny_rm}"])
    got = score([dim]).values["helpful"]
    model = GPT2ForSequenceClassification.from_pretrained(tiny_rm).eval()
    for row in ROWS:
        text = f"\n\nHuman: {row.prompt} \n\nAssistant: {row.response.strip()}"
        ids = torch.tensor([tiny_tokenizer(text)["input_ids"]])
        with torch.no_grad():
            h = model.transformer(ids).last_hidden_state[0, -1]  # the last token's state, unpadded
            expected = float(h @ model.score.weight[0])
        assert got[row.id] == pytest.approx(expected, abs=1e-4)


def test_two_label_classifier_scores_label_one(tiny_rm2, tiny_tokenizer):
    from transformers import GPT2ForSequenceClassification

    (dim,) = build_dimensions([f"humor={tiny_rm2}"])
    assert dim.index == 1
    got = score([dim]).values["humor"]
    model = GPT2ForSequenceClassification.from_pretrained(tiny_rm2).eval()
    for row in ROWS:
        ids = torch.tensor([tiny_tokenizer(row.response.strip())["input_ids"]])
        with torch.no_grad():
            h = model.transformer(ids).last_hidden_state[0, -1]
            expected = float(h @ model.score.weight[1])
        assert got[row.id] == pytest.approx(expected, abs=1e-4)


def test_armo_like_objectives_and_gated_score_from_one_forward_pass(tiny_armo, tiny_tokenizer):
    from transformers import AutoModelForSequenceClassification

    dims = build_dimensions([f"armo-helpfulness={tiny_armo}", f"armo-harmless={tiny_armo}",
                             f"armo-score={tiny_armo}", f"armo-helpsteer-verbosity={tiny_armo}",
                             f"armo-15={tiny_armo}"])  # fmt: skip
    assert len({id(d.scorer) for d in dims}) == 1
    assert [d.index for d in dims] == [0, 10, 19, 4, 15]
    assert dims[1].output == ARMO_OBJECTIVES[10] == "beavertails-is_safe"
    got = score(dims, batch_size=2)
    assert dims[0].scorer.model_calls == 2 and dims[0].scorer.texts_scored == 4  # 4 texts, batches of 2, once

    model = AutoModelForSequenceClassification.from_pretrained(tiny_armo, trust_remote_code=True).eval()
    for row in ROWS:
        msgs = [{"role": "user", "content": row.prompt}, {"role": "assistant", "content": row.response.strip()}]
        text = tiny_tokenizer.apply_chat_template(msgs, tokenize=False)
        ids = torch.tensor([tiny_tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            h = model.model(ids).last_hidden_state[0, -1]
            rewards = model.regression_layer(h)
            gated = float((rewards * torch.softmax(model.gating(h), -1)).sum())
        assert got.values["armo-helpfulness"][row.id] == pytest.approx(float(rewards[0]), abs=1e-4)
        assert got.values["armo-harmless"][row.id] == pytest.approx(float(rewards[10]), abs=1e-4)
        assert got.values["armo-helpsteer-verbosity"][row.id] == pytest.approx(float(rewards[4]), abs=1e-4)
        assert got.values["armo-score"][row.id] == pytest.approx(gated, abs=1e-4)


def test_generic_model_specs_and_selectors(tiny_armo, tiny_rm2):
    dims = build_dimensions([f"{tiny_armo}:3", f"{tiny_armo}:code-style", f"{tiny_rm2}:LABEL_0"],
                            trust_remote_code=True)  # fmt: skip
    assert [d.name for d in dims] == ["armo:helpsteer-complexity", "armo:code-style", "rm2:LABEL_0"]
    with pytest.raises(ScorerError, match="ships its own model code; pass --trust-remote-code"):
        build_dimensions([str(tiny_armo)])
    with pytest.raises(ScorerError, match="has 2 labels"):
        build_dimensions([str(tiny_rm2)])
    with pytest.raises(ScorerError, match="has no output 'nope'"):
        build_dimensions([f"{tiny_rm2}:nope"])


def test_unknown_scorer_lists_presets():
    with pytest.raises(ScorerError, match=r"unknown scorer 'helpfull': not a preset \(helpful, harmless, humor"):
        build_dimensions(["helpfull"])


def test_batched_equals_one_at_a_time(tiny_rm, tiny_armo):
    dims = build_dimensions([f"helpful={tiny_rm}", f"armo-score={tiny_armo}"])
    one = score(dims, batch_size=1)
    dims = build_dimensions([f"helpful={tiny_rm}", f"armo-score={tiny_armo}"])
    many = score(dims, batch_size=16)
    for name in ("helpful", "armo-score"):
        for k, v in one.values[name].items():
            assert many.values[name][k] == pytest.approx(v, abs=1e-5)


def test_too_long_is_skipped_and_counted_truncation_cuts(tiny_rm, tiny_tokenizer):
    long_row = Row("9", "Tell me everything.", "cat " * 600)
    skipper = SequenceScorer(str(tiny_rm), "classifier", "hh", max_tokens=64, overflow="skip")
    prepared = skipper.prepare([ROWS[0], long_row])
    assert prepared[0].skip is None and prepared[1].skip.startswith("too long")
    cutter = SequenceScorer(str(tiny_rm), "classifier", "response", max_tokens=64, overflow="truncate")
    assert cutter.prepare([long_row])[0].length == 64


def test_empty_response_is_scored(tiny_rm2):
    (dim,) = build_dimensions([f"humor={tiny_rm2}"])
    got = score([dim], [Row("0", "Hi", ""), *ROWS])
    assert "0" in got.values["humor"] and not got.skipped


def test_batches_are_capped_by_texts_and_by_padded_tokens():
    lengths = [5, 100, 40, 90, 10, 60]  # longest first: 1 (100), 3 (90), 5 (60), 2 (40), 4 (10), 0 (5)
    assert length_sorted_batches(lengths, 3) == [[1, 3, 5], [2, 4, 0]]
    # at most 200 padded tokens: 2 x 100 fits, 3 x 100 does not; 3 x 60 fits; then 3 texts are the cap
    assert length_sorted_batches(lengths, 3, batch_tokens=200) == [[1, 3], [5, 2, 4], [0]]
    assert length_sorted_batches([300, 10], 16, batch_tokens=200) == [[0], [1]]  # too long for the budget: alone


def test_causal_scorer_drops_the_padding_mask_and_fuses_gelu_without_changing_scores(tiny_rm):
    from transformers.activations import NewGELUActivation

    rows = [*ROWS, Row("9", "Hi", "A much longer answer, so that the other texts in its batch are padded. " * 3)]
    scorer = SequenceScorer(str(tiny_rm), "classifier", "hh")
    items = scorer.prepare(rows)
    assert len({it.length for it in items}) == len(items)  # every text but the longest is padded
    one = {i: v for idx, vs in scorer.score(items, batch_size=1) for i, v in zip(idx, vs)}
    assert scorer.causal and scorer.model.config.activation_function == "gelu_new"
    assert not any(isinstance(m, NewGELUActivation) for m in scorer.model.modules())
    got = {}
    for causal in (True, False):  # all-ones mask, then the explicit padding mask
        scorer.causal = causal
        got[causal] = {i: v for idx, vs in scorer.score(items, batch_size=16) for i, v in zip(idx, vs)}
    for i, v in one.items():
        assert got[True][i] == pytest.approx(v, abs=1e-5)
        assert got[False][i] == pytest.approx(v, abs=1e-5)
    # ... and the fused GELU scores what the untouched model (transformers' own gelu_new) scores
    from transformers import AutoModelForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(str(tiny_rm)).eval()
    with torch.no_grad():
        for i, it in enumerate(items):
            assert plain(input_ids=torch.tensor([it.ids])).logits[0, 0].item() == pytest.approx(one[i][0], abs=1e-5)


def test_only_transformers_decoders_count_as_causal(tiny_rm, tiny_armo):
    from transformers import BertConfig, BertForSequenceClassification

    assert is_causal_model(SequenceScorer(str(tiny_rm), "classifier", "hh").load())
    bert = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32))  # fmt: skip
    assert not is_causal_model(bert)  # bidirectional: its pads must be masked
    armo = SequenceScorer(str(tiny_armo), "armo", "chat", trust_remote_code=True)
    assert not is_causal_model(armo.load())  # remote code may find a text's end by its mask
