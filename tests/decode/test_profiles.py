"""Weights fitted from a user's choices: the Bradley-Terry fit, pair and profile files, and profiles in `pad decode`."""

import json

import pytest
import torch
from typer.testing import CliRunner

from pad.cli import app
from pad.decode.profiles import (
    FitConfig,
    Profile,
    accuracy,
    fit_bradley_terry,
    heldout_accuracy,
    load_profile,
    read_pairs,
    reward_differences,
)
from pad.errors import PadError
from pad.principles import Principle

runner = CliRunner()


def _choices(true_w, n=4000, seed=0):
    """(n, P) chosen-minus-rejected reward features of pairs a simulated user labelled by Bradley-Terry with
    weights true_w: answer a beats b with probability sigmoid(true_w . (f_a - f_b))."""
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor(true_w, dtype=torch.float64)
    fa = torch.randn(n, len(true_w), generator=g, dtype=torch.float64) * 2  # (n, P) answer a's rewards
    fb = torch.randn(n, len(true_w), generator=g, dtype=torch.float64) * 2
    a_wins = torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid((fa - fb) @ w)  # (n,)
    return torch.where(a_wins[:, None], fa - fb, fb - fa)


@pytest.mark.parametrize("true_w", [(1.2, 0.4), (0.3, 0.9)])
def test_fit_recovers_the_known_ratio(true_w):
    w = fit_bradley_terry(_choices(true_w), l2=1e-3)
    ratio, want = float(w[0] / w[1]), true_w[0] / true_w[1]
    assert abs(ratio - want) / want < 0.10, (w, want)
    assert bool((w > 0).all())


def test_an_unwanted_principle_gets_no_weight_and_signs_need_allow_negative():
    d = _choices((1.0, -0.5))  # the user dislikes principle 2
    w = fit_bradley_terry(d, l2=1e-3)
    assert 0 <= float(w[1]) < 0.01 < float(w[0])  # non-negative: principle 2 is ignored, not reversed
    free = fit_bradley_terry(d, l2=1e-3, nonnegative=False)
    assert abs(float(free[0] / free[1]) - (-2.0)) < 0.2


def test_accuracy_and_heldout_accuracy():
    d = _choices((1.0, 0.5), n=400)
    w = fit_bradley_terry(d)
    assert accuracy(d, w) > 0.75 and accuracy(d, -w) < 0.25
    held = heldout_accuracy(d, folds=5, l2=0.01, nonnegative=True)
    assert 0.7 < held <= accuracy(d, w) + 0.02
    assert accuracy(torch.tensor([[1.0], [0.0]]), torch.tensor([1.0])) == 0.75  # a tie counts half


def _write(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


GOOD = {"prompt": "Tell me about cats.", "chosen": "Cats purr.", "rejected": "Cats are mammals that purr often."}


@pytest.mark.parametrize("bad,msg", [
    ('{"prompt": "x", "chosen": ', ":2: not valid JSON"),
    (json.dumps({"prompt": "x", "chosen": "a"}), ":2: missing field 'rejected'"),
    (json.dumps({"chosen": "a", "rejected": "b"}), ":2: missing field 'prompt'"),
    (json.dumps({"prompt": "x", "chosen": 3, "rejected": "b"}), ":2: 'chosen' must be text"),
    (json.dumps(["x", "a", "b"]), ":2: a preference pair is a JSON object"),
    (json.dumps({"prompt": "x", "chosen": "a", "rejected": "b", "rejected_ended": "no"}),
     ":2: 'rejected_ended' must be true or false"),
])
def test_bad_pairs_are_one_line_naming_file_and_line(tmp_path, bad, msg):
    path = _write(tmp_path / "pairs.jsonl", [GOOD, bad, GOOD])
    with pytest.raises(PadError) as e:
        read_pairs(path)
    assert str(e.value).startswith(f"{path}{msg}") and "\n" not in str(e.value)
    r = runner.invoke(app, ["fit-weights", str(path), "-p", "concise", "--out", str(tmp_path / "p.json")])
    assert r.exit_code == 2 and f"{path}{msg}" in r.output and r.output.count("\n") == 1


def test_pairs_say_which_answer_was_cut_short(tmp_path):
    path = _write(tmp_path / "pairs.jsonl", [GOOD, {**GOOD, "rejected_ended": False}])
    assert [(p.chosen_ended, p.rejected_ended) for p in read_pairs(path)] == [(True, True), (True, False)]


def test_bad_profiles_and_settings(tmp_path):
    for text, msg in [("{", "not valid JSON"), ('{"principles": []}', "non-empty list"),
                      ('{"principles": [{"name": "x", "weight": "1"}]}', r"principles\[0\] must be")]:
        with pytest.raises(PadError, match=msg):
            load_profile(_write(tmp_path / "p.json", [text]))
    with pytest.raises(PadError, match="give the name only"):
        FitConfig(pairs="x", principles=["concise=1"])
    with pytest.raises(PadError, match="l2 must be a number >= 0, got -1"):
        FitConfig(pairs="x", principles=["concise"], l2=-1)


def test_profile_specs_read_back_exactly():
    p = Profile([Principle("concise", 0.1 + 0.2), Principle("tone=formal", 1 / 3)])
    back = [Principle.parse(s) for s in p.specs()]
    assert back == p.principles


def _decode(tmp_path, name, llm, rm, *extra):
    out = tmp_path / name / "run.jsonl"
    out.parent.mkdir()
    r = runner.invoke(app, ["decode", "--llm", str(llm), "--rm", str(rm), "--prompt", "Tell me a joke about cats.",
                            "--prompt", "hi", "--max-new-tokens", "12", "--out", str(out), "-q", *map(str, extra)])
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    for rec in recs:
        rec.pop("seconds")
    return recs


def test_decode_profile_equals_the_same_principles_given_explicitly(tmp_path, tiny_llama, tiny_persrm):
    profile = tmp_path / "me.json"
    profile.write_text(Profile([Principle("humor", 0.7371), Principle("concise", 0.2)], pairs=40).to_json())
    with_profile = _decode(tmp_path, "a", tiny_llama, tiny_persrm, "--profile", profile)
    explicit = _decode(tmp_path, "b", tiny_llama, tiny_persrm, "-p", "humor=0.7371", "-p", "concise=0.2")
    assert with_profile == explicit
    assert with_profile[0]["principles"] == [{"name": "humor", "weight": 0.7371}, {"name": "concise", "weight": 0.2}]
    vanilla = _decode(tmp_path, "c", tiny_llama, tiny_persrm)
    assert [r["response"] for r in with_profile] != [r["response"] for r in vanilla]  # the profile steers
    r = runner.invoke(app, ["decode", "--llm", str(tiny_llama), "--rm", str(tiny_persrm), "--prompt", "hi",
                            "--profile", str(profile), "-p", "humor"])
    assert r.exit_code == 2 and "drop -p" in r.output


def test_a_decode_recipe_names_a_profile_as_the_option_does(tmp_path, tiny_llama, tiny_persrm):
    """`profile:` in a YAML recipe guides as `--profile` and as the same weights given by -p; -p on the command
    line wins over the recipe's profile, as every option wins over the recipe."""
    from dataclasses import replace

    from pad.decode.config import DecodeConfig

    profile = tmp_path / "me.json"
    profile.write_text(Profile([Principle("humor", 0.8125), Principle("concise", 0.25)], pairs=30).to_json())
    recipe = tmp_path / "decode.yaml"
    recipe.write_text(f"profile: {profile}\ntopk: 4\n")
    from_recipe = _decode(tmp_path, "a", tiny_llama, tiny_persrm, "--config", recipe)
    explicit = _decode(tmp_path, "b", tiny_llama, tiny_persrm, "--topk", "4", "-p", "humor=0.8125", "-p", "concise=0.25")
    assert from_recipe == explicit
    assert from_recipe[0]["principles"] == [{"name": "humor", "weight": 0.8125}, {"name": "concise", "weight": 0.25}]
    overridden = _decode(tmp_path, "c", tiny_llama, tiny_persrm, "--config", recipe, "-p", "humor=0.8125")
    assert all(r["principles"] == [{"name": "humor", "weight": 0.8125}] for r in overridden)

    cfg = DecodeConfig(profile=str(profile))
    assert cfg.principles == ["humor=0.8125", "concise=0.25"]
    assert replace(cfg, topk=3).principles == cfg.principles  # a copy of a resolved config stays valid
    with pytest.raises(PadError, match="drop principles"):
        replace(cfg, principles=["humor=1"])
    with pytest.raises(PadError, match="drop principles"):
        DecodeConfig(profile=str(profile), principles=["concise"])
    (tmp_path / "bad.json").write_text('{"principles": []}')
    with pytest.raises(PadError, match="non-empty list"):
        DecodeConfig(profile=str(tmp_path / "bad.json"))


def test_fit_weights_command_end_to_end(tmp_path, tiny_llama, tiny_lora):
    """Through the CLI on a tiny LoRA PersRM: a profile with every principle, its accuracy and count, that
    `pad decode --profile` then reads."""
    pairs = _write(tmp_path / "pairs.jsonl", [
        {"prompt": f"Question {i}: tell me about topic {i}.", "chosen": "Short." if i % 2 else "A long answer " * 3,
         "rejected": "A long answer " * 3 if i % 2 else "Short."} for i in range(8)])
    out = tmp_path / "me.json"
    r = runner.invoke(app, ["fit-weights", str(pairs), "-p", "concise", "-p", "humor", "--rm", str(tiny_lora),
                            "--out", str(out), "--folds", "4"])
    assert r.exit_code == 0, r.output
    prof = json.loads(out.read_text())
    assert [p["name"] for p in prof["principles"]] == ["concise", "humor"]
    assert all(p["weight"] >= 0 for p in prof["principles"])
    assert prof["pairs"] == 8 and 0 <= prof["heldout_accuracy"] <= 1 and prof["fit"]["folds"] == 4
    assert f"{out}: concise" in r.output
    # the weights are the fit of the pairs' reward differences, scored apart from the command
    diffs, names, dropped = reward_differences(FitConfig(str(pairs), ["concise", "humor"], rm=str(tiny_lora)),
                                               read_pairs(pairs))
    assert diffs.shape == (8, 2) and names == ["concise", "humor"] and dropped == 0
    assert [p["weight"] for p in prof["principles"]] == [round(float(x), 6) for x in fit_bradley_terry(diffs)]
    # ... and with plain log-ratios and no end token, each difference is pad eval's implicit reward of the chosen
    # answer minus the rejected one's, over beta
    from pad.evaluate.inputs import Row
    from pad.evaluate.scorers import PersRMScorer

    plain, _, _ = reward_differences(FitConfig(str(pairs), ["concise", "humor"], rm=str(tiny_lora),
                                               features="log-ratio", score_end=False), read_pairs(pairs))
    scorer = PersRMScorer(str(tiny_lora), "concise")
    rows = [Row(str(j), p.prompt, a) for j, p in enumerate(read_pairs(pairs)) for a in (p.chosen, p.rejected)]
    reward = dict(x for idx, vals in scorer.score(scorer.prepare(rows)) for x in zip(idx, (v[0] for v in vals)))
    want = [(reward[2 * j] - reward[2 * j + 1]) / scorer.beta for j in range(8)]
    assert plain[:, 0].tolist() == pytest.approx(want, rel=1e-4, abs=1e-4)  # batched apart: float noise
    assert not torch.allclose(plain, diffs)  # the end token changes the features
    again = runner.invoke(app, ["fit-weights", str(pairs), "-p", "concise", "--rm", str(tiny_lora), "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    _decode(tmp_path, "d", tiny_llama, tiny_lora, "--profile", out)


def test_centred_features_and_the_end_token_equal_a_plain_loop(tiny_lora):
    """answer_stats, batched with left padding, against one answer at a time written out by hand: per step
    r_p(y_t) = log pi_p(y_t | principle prompt) - log pi_ref(y_t | plain prompt) and KL(pi_ref || pi_p), summed
    over the response, and both again at the end-of-sequence token after it."""
    from pad.decode.profiles import answer_stats
    from pad.evaluate.inputs import Row
    from pad.evaluate.scorers import persrm_dimensions

    rows = [Row("0", "Tell me about cats.", "Cats purr a lot."), Row("1", "hi", "Hello there, how are you today?"),
            Row("2", [{"role": "user", "content": "Why is the sky blue?"}], "Light scatters.")]
    scorers = [d.scorer for d in persrm_dimensions(str(tiny_lora), ["concise", "humor"])]
    got = dict(answer_stats(scorers, rows, score_end=True, batch_size=2))
    model, tok = scorers[0].load(), scorers[0].tokenizer
    for i, row in enumerate(rows):
        for p, s in enumerate(scorers):
            pol, ref, resp = s.prepare([row])[0].ids
            seq = resp + [tok.eos_token_id]
            with torch.inference_mode():
                lp = torch.log_softmax(model(input_ids=torch.tensor([pol + seq])).logits[0, len(pol) - 1 : -1], -1)
                with model.disable_adapter():
                    lq = torch.log_softmax(model(input_ids=torch.tensor([ref + seq])).logits[0, len(ref) - 1 : -1], -1)
            r = [float(lp[t, y] - lq[t, y]) for t, y in enumerate(seq)]
            kl = [float((lq[t].exp() * (lq[t] - lp[t])).sum()) for t in range(len(seq))]
            want = [sum(r[:-1]), sum(kl[:-1]), r[-1], kl[-1]]
            assert got[i][p].tolist() == pytest.approx(want, rel=1e-4, abs=1e-4), (i, p)
            assert min(kl) >= -1e-6
    without = dict(answer_stats(scorers, rows, score_end=False))
    assert torch.allclose(without[1][:, :2], got[1][:, :2], atol=1e-4) and bool((without[1][:, 2:] == 0).all())
    cut = dict(answer_stats(scorers, rows, score_end=True, ended=[True, False, True]))  # answer 1 was cut short
    assert bool((cut[1][:, 2:] == 0).all()) and torch.allclose(cut[1][:, :2], got[1][:, :2], atol=1e-4)
    assert torch.allclose(cut[0], got[0], atol=1e-4) and bool((got[1][:, 2:] != 0).any())
    with pytest.raises(PadError, match="features 'mean' is not one of log-ratio, centred"):
        FitConfig(pairs="x", principles=["concise"], features="mean")
