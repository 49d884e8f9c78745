"""The cross-tokenizer PersRM guide (pad.decode.cross, method.md section 8) against the uncached loops of its
rules (pad.decode.reference.cross_reference_decode) and, with one tokenizer, the same-tokenizer rule.

Until the engine takes guides, a small loop here drives the guide as the batch will: base forward (uncached)
-> top-k -> guide.rewards -> score = z_b + sum w r -> argmax -> commit -> finished rows leave; rows join
between steps."""

from __future__ import annotations

import pytest
import torch

from pad.decode.cross import CrossTokenizerGuide, exact_responses, persrm_end_id
from pad.decode.engine import end_token_ids
from pad.decode.guides import GuideRow
from pad.decode.reference import cross_reference_decode, reference_decode
from pad.errors import PadError
from pad.principles import DEFAULT_TEMPLATE, Principle, join_principles, principle_prompt
from pad.testing import SPECIAL_TOKENS, build_causal_lm, build_tokenizer, build_word_tokenizer

PROMPTS = ["Tell me a joke about cats.", "How do I bake bread?", "hi",
           [{"role": "user", "content": "Write a short poem."}, {"role": "assistant", "content": "Roses."},
            {"role": "user", "content": "Shorter."}]]
K, N = 4, 10


@pytest.fixture(scope="module")
def toks():
    """Two byte-level BPE tokenizers over the same words: "a" finer (320 tokens), "b" coarser (400, trained on
    the corpus backwards, its special tokens in the other order, so no id means the same in both)."""
    return {"a": build_tokenizer(320), "b": build_tokenizer(400, reverse_corpus=True,
                                                              special_tokens=SPECIAL_TOKENS[::-1])}


@pytest.fixture(scope="module")
def models(toks):
    """A base and a PersRM on each tokenizer (different seeds: four different networks)."""
    return {("base", "a"): build_causal_lm(toks["a"], seed=0), ("rm", "b"): build_causal_lm(toks["b"], seed=1),
            ("base", "b"): build_causal_lm(toks["b"], seed=2), ("rm", "a"): build_causal_lm(toks["a"], seed=3)}


@pytest.fixture(scope="module")
def word():
    tok = build_word_tokenizer()
    return tok, build_causal_lm(tok, seed=4), build_causal_lm(tok, seed=5)


def guided_rows(rm_tok, keys, principles, unguided=()):
    active = [p for p in principles if p.weight != 0]
    return [GuideRow(key=i, prompt=PROMPTS[i], principles=[] if i in unguided else active,
                     rm_ids=[] if i in unguided else [
                         rm_tok(principle_prompt(rm_tok, PROMPTS[i], p.name, DEFAULT_TEMPLATE),
                                add_special_tokens=False)["input_ids"] for p in active]) for i in keys]


@torch.inference_mode()
def drive(base, base_tok, guide, rm_tok, principles, join_at, k=K, n=N, unguided=(), front=False):
    """Greedy tokens of PROMPTS[i] for every i in join_at, which joins the batch at step join_at[i]; rows in
    `unguided` have no principle (vanilla); `front`: rows join at the front of the batch's positions, so
    positions are not the guide's join order."""
    eos = set(end_token_ids(base, base_tok))
    joined = join_principles([p.name for p in principles])
    ids = {i: base_tok(principle_prompt(base_tok, PROMPTS[i], None if i in unguided else joined, DEFAULT_TEMPLATE),
                       add_special_tokens=False)["input_ids"] for i in join_at}
    out = {i: [] for i in join_at}
    live: list[int] = []
    step = 0
    while any(s >= step for s in join_at.values()) or live:
        new = [i for i, s in join_at.items() if s == step]
        if new:
            guide.join(guided_rows(rm_tok, new, principles, unguided))
            live = new[::-1] + live if front else live + new
            guide.index(live)
        step += 1
        if not live:
            continue
        z_b = torch.stack([base(torch.tensor([ids[i] + out[i]])).logits[0, -1].float() for i in live])  # (B, V)
        zb_c, cand = z_b.topk(k)  # (B, k)
        score = zb_c.clone()
        got = guide.rewards(None, zb_c, cand)
        if got is not None:
            owner, wr = got
            assert wr.dtype == torch.float32 and wr.shape == (owner.shape[0], k)
            assert owner.tolist() == sorted(owner.tolist())  # the batch's order: rows by position, then principles
            score.index_add_(0, owner, wr)
        nxt = cand[torch.arange(len(live)), score.argmax(-1)]  # (B,)
        guide.commit(nxt)
        for i, t in zip(live, nxt.tolist()):
            out[i].append(t)
        done = {i for i in live if out[i][-1] in eos or len(out[i]) >= n}
        if done:
            live = [i for i in live if i not in done]
            guide.leave(set(live))
            guide.index(live)
    return [out[i] for i in sorted(join_at)]


def new_guide(base, base_tok, rm, rm_tok, rule="exact"):
    return CrossTokenizerGuide(rm, rm_tok, base_tok, end_token_ids(base, base_tok), rule=rule)


JOIN = {0: 0, 1: 0, 2: 2, 3: 5}  # rows 2 and 3 join a running batch


@pytest.mark.parametrize("w", [0.5, 1.0])
@pytest.mark.parametrize("names", [["humor"], ["harmless", "concise"]])
@pytest.mark.parametrize("pair", [("a", "b"), ("b", "a")])
def test_cached_batched_guide_equals_the_uncached_loop(toks, models, w, names, pair):
    """The exact rule: tokens made with the guide's cache, holes and one batched forward per step equal those
    of L(a) read from scratch for every candidate; rows joining mid-batch included. Both ways round: a base
    finer than the PersRM (candidates merge with the PersRM's last token) and coarser (a candidate is several
    PersRM tokens)."""
    bt, rt = toks[pair[0]], toks[pair[1]]
    base, rm = models[("base", pair[0])], models[("rm", pair[1])]
    principles = [Principle(name, w if j == 0 else w / 2) for j, name in enumerate(names)]
    guide = new_guide(base, bt, rm, rt)
    got = drive(base, bt, guide, rt, principles, JOIN)
    want = [cross_reference_decode(base, bt, rm, rt, PROMPTS[i], principles, K, N) for i in sorted(JOIN)]
    assert got == want
    if pair == ("a", "b") and names == ["humor"]:  # these seeds' answers merge: b re-reads cached tokens
        assert guide.rewound > 0
    vanilla = [cross_reference_decode(base, bt, rm, rt, PROMPTS[i], [], K, N) for i in sorted(JOIN)]
    assert got != vanilla  # the PersRM moved some choices


@pytest.mark.parametrize("w", [0.5, 1.0])
def test_first_subtoken_guide_equals_its_uncached_loop(toks, models, w):
    """The reference's rule, read through the same cache, equals its uncached loop; here rows join at the
    front of the batch's positions (the guide must add each sequence onto its row's position, not its join
    order), and row 1 has no principle (vanilla, unguided)."""
    bt, rt = toks["a"], toks["b"]
    base, rm = models[("base", "a")], models[("rm", "b")]
    principles = [Principle("humor", w), Principle("harmless", 1.0)]
    got = drive(base, bt, new_guide(base, bt, rm, rt, rule="first-subtoken"), rt, principles, JOIN, unguided={1},
                front=True)
    want = [cross_reference_decode(base, bt, rm, rt, PROMPTS[i], [] if i == 1 else principles, K, N,
                                   rule="first-subtoken") for i in sorted(JOIN)]
    assert got == want
    exact = [cross_reference_decode(base, bt, rm, rt, PROMPTS[i], [] if i == 1 else principles, K, N)
             for i in sorted(JOIN)]
    assert got != exact  # two rules, two decodings


def test_same_tokenizer_through_the_cross_guide_is_the_same_tokenizer_rule(word):
    """With the base's own (word-level) tokenizer every candidate's decoding re-encodes to the base's ids, so
    the cross rule must make the tokens of section 3's rule (pad.decode.reference.reference_decode)."""
    tok, base, rm = word
    for principles in ([Principle("humor", 1.0)], [Principle("harmless", 0.5), Principle("concise", 1.0)]):
        got = drive(base, tok, new_guide(base, tok, rm, tok), tok, principles, JOIN, k=5, n=12)
        want = [reference_decode(base, tok, rm, PROMPTS[i], principles, 5, 12) for i in sorted(JOIN)]
        assert got == want
        for out in got:  # the premise: the answers round-trip
            assert tok(tok.decode(out, skip_special_tokens=False), add_special_tokens=False)["input_ids"] == out


@torch.inference_mode()
def test_a_group_of_rows_is_read_at_its_positions(toks, models):
    """rewards(at=...) for a group given as live positions (here 2 and 0 of rows 0, 1, 2; row 1 unguided):
    owners are the group's rows, and the rewards are those of the whole batch's call. A group that leaves out
    a guided row is refused."""
    bt, rt = toks["a"], toks["b"]
    base, rm = models[("base", "a")], models[("rm", "b")]
    principles = [Principle("humor", 1.0), Principle("harmless", 0.5)]
    zb = torch.tensor([[3.0, 2.0, 1.0, 0.0], [1.0, 0.5, 0.0, -1.0], [2.0, 1.5, 1.0, 0.5]])
    cand = torch.tensor([bt.convert_tokens_to_ids(t) for t in (["T", "Ġ", "he", "x"], ["a", "b", "c", "d"],
                                                                ["Ġthe", "Ġfo", "ck", "<|im_start|>"])])
    whole, group = new_guide(base, bt, rm, rt), new_guide(base, bt, rm, rt)
    for g in (whole, group):
        g.join(guided_rows(rt, [0, 1, 2], principles, unguided={1}))
        g.index([0, 1, 2])
    owner, wr = whole.rewards(None, zb, cand)
    assert owner.tolist() == [0, 0, 2, 2]
    at = torch.tensor([2, 0])
    g_owner, g_wr = group.rewards(at, zb[at], cand[at])
    assert g_owner.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(g_wr, wr[[2, 3, 0, 1]], rtol=0, atol=1e-6)
    with pytest.raises(PadError, match="one group"):
        group.rewards(torch.tensor([2]), zb[[2]], cand[[2]])


# -- one step, against L(a) read from scratch -----------------------------------------------------------


def loglik(rm, prompt: list[int], response: list[int]) -> float:
    logits = rm(torch.tensor([prompt + response])).logits[0].float()
    lp = logits[len(prompt) - 1:-1].log_softmax(-1)
    return float(lp.gather(1, torch.tensor(response)[:, None]).sum())


@torch.inference_mode()
def step_after(guide, y: list[int], cands: list[list[int]], zb: list[list[float]]):
    """Feed the row's base response y to a joined guide one token a step (a rewards call each, as decoding
    does), then return rewards over `cands`."""
    for t in y:
        guide.rewards(None, torch.zeros((1, len(cands[0]))), torch.tensor([[t] * len(cands[0])]))
        guide.commit(torch.tensor([t]))
    return guide.rewards(None, torch.tensor(zb), torch.tensor(cands))


@torch.inference_mode()
def test_a_candidate_that_merges_with_the_last_cached_token(toks, models):
    """The base (tokenizer a) has said "The q"; the PersRM (tokenizer b) has cached ... "Ġ", "q". Candidate "u"
    makes "The qu", which b reads as ... "Ġ", "qu": the cached "q" must leave the attention, or L("u") is the
    likelihood of a token sequence b never makes. Every candidate's weighted reward equals the one computed
    from scratch."""
    bt, rt = toks["a"], toks["b"]
    rm = models[("rm", "b")]
    y = bt("The q", add_special_tokens=False)["input_ids"]
    cands = [bt.convert_tokens_to_ids(["u", "Ġ", "i", "x"])]
    assert rt.tokenize("The q")[-1] == "q" and rt.tokenize("The qu")[-1] == "qu"  # the premise: a merge
    guide = new_guide(models[("base", "a")], bt, rm, rt)
    guide.join(guided_rows(rt, [0], [Principle("humor", 0.7)]))
    guide.index([0])
    zb = [[3.0, 2.5, 1.0, 0.5]]
    owner, wr = step_after(guide, y, cands, zb)
    prompt = rt(principle_prompt(rt, PROMPTS[0], "humor"), add_special_tokens=False)["input_ids"]
    lik = torch.tensor([loglik(rm, prompt, rt(bt.decode(y + [a]), add_special_tokens=False)["input_ids"])
                        for a in cands[0]])
    want = 0.7 * (lik.log_softmax(0) - torch.tensor(zb[0]).log_softmax(0))
    assert owner.tolist() == [0]
    torch.testing.assert_close(wr[0], want, rtol=0, atol=1e-5)
    assert guide.rewound > 0


@torch.inference_mode()
def test_special_candidate_is_scored_by_its_text_and_end_candidate_by_the_persrm_end(toks):
    """Base tokenizer a, PersRM tokenizer b (other ids for the same special tokens). After "The quick":
    - "<|im_start|>" (special, not an end token) is read as its text: b's tokens of "The quick<|im_start|>",
      which end in b's own "<|im_start|>" id, not the text so far alone;
    - "<|im_end|>" (the base's end) is read as b's tokens of "The quick" then the PersRM's end token, its
      generation config's first end id ("<|endoftext|>" here), not its text."""
    bt, rt = toks["a"], toks["b"]
    rm = build_causal_lm(rt, seed=7)
    rm.generation_config.eos_token_id = [rt.convert_tokens_to_ids("<|endoftext|>"), rt.eos_token_id]
    assert persrm_end_id(rm, rt) == rt.convert_tokens_to_ids("<|endoftext|>") != rt.eos_token_id
    base = build_causal_lm(bt, seed=8)
    ends = end_token_ids(base, bt)
    y = bt("The quick", add_special_tokens=False)["input_ids"]
    start, end, fox = bt.convert_tokens_to_ids("<|im_start|>"), bt.eos_token_id, bt.convert_tokens_to_ids("Ġfo")
    assert start not in ends and end in ends
    so_far = rt("The quick", add_special_tokens=False)["input_ids"]
    (resp,) = exact_responses(bt, rt, [y], [[start, end, fox]], set(ends), persrm_end_id(rm, rt))
    assert resp[0] == so_far + [rt.convert_tokens_to_ids("<|im_start|>")]
    assert resp[1] == so_far + [rt.convert_tokens_to_ids("<|endoftext|>")]
    assert resp[2] == rt("The quick fo", add_special_tokens=False)["input_ids"]
    guide = CrossTokenizerGuide(rm, rt, bt, ends, rt.pad_token_id)
    guide.join(guided_rows(rt, [0], [Principle("humor", 1.0)]))
    guide.index([0])
    zb = [[1.0, 0.5, 0.25]]
    _, wr = step_after(guide, y, [[start, end, fox]], zb)
    prompt = rt(principle_prompt(rt, PROMPTS[0], "humor"), add_special_tokens=False)["input_ids"]
    lik = torch.tensor([loglik(rm, prompt, r) for r in resp])
    torch.testing.assert_close(wr[0], lik.log_softmax(0) - torch.tensor(zb[0]).log_softmax(0), rtol=0, atol=1e-5)
    rm.generation_config.eos_token_id = None  # no generation config end: the tokenizer's eos
    assert persrm_end_id(rm, rt) == rt.eos_token_id


class Pieces:
    """A base tokenizer stub: id i decodes to PIECES[i]."""

    PIECES = ["", "quick", " the", "<|im_end|>", "<|im_start|>"]

    def decode(self, ids, skip_special_tokens=False, **kw):
        return "".join(self.PIECES[i] for i in ids if not (skip_special_tokens and self.PIECES[i].startswith("<|")))

    def batch_decode(self, seqs, **kw):
        return [self.decode(s, **kw) for s in seqs]


@torch.inference_mode()
def test_first_subtoken_rule_on_a_hand_computed_example(toks):
    """The reference's rule. Base candidates 0..3 decode alone to "", "quick", " the", "<|im_end|>"; the
    PersRM's tokenizer (b) re-encodes them as " " -> [Ġ], "quick" -> [qu, ick], " the" -> [Ġthe] and
    "<|im_end|>" -> [<|im_end|>], and the first ids f(a) = Ġ, qu, Ġthe, <|im_end|> are kept. The PersRM here
    gives the same logits after any text: 1.0, 3.0, -1.0, 0.5 at those ids (0 elsewhere). With base logits
    z_b = 2.0, 1.0, 1.5, 0.0:
        r = z_r(f(a)) - z_b(a) = -1.0, 2.0, -2.5, 0.5            (raw logits: no softmax)
        w = 1:   w r = -1.0, 2.0, -2.5, 0.5     score = 1.0, 3.0, -1.0, 0.5     -> candidate 1
        w = 0.5: w r = -0.5, 1.0, -1.25, 0.25   score = 1.5, 2.0, 0.25, 0.25    -> candidate 1
    and with both principles on one row the scores add: 0.5, 4.0, -2.25, 0.75. The response so far, ids 1, 4, 2,
    is read as "quick the": special tokens skipped, as the reference decodes it."""
    rt = toks["b"]
    assert rt.tokenize("quick") == ["qu", "ick"]
    f = rt.convert_tokens_to_ids(["Ġ", "qu", "Ġthe", "<|im_end|>"])
    rm = build_causal_lm(rt, seed=9)
    head = torch.nn.Linear(rm.config.hidden_size, len(rt), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[f] = torch.tensor([1.0, 3.0, -1.0, 0.5])
    rm.lm_head = head
    guide = CrossTokenizerGuide(rm, rt, Pieces(), [3], rt.pad_token_id, rule="first-subtoken")
    guide.join(guided_rows(rt, [0], [Principle("humor", 1.0), Principle("harmless", 0.5)]))
    guide.index([0])
    zb = torch.tensor([[2.0, 1.0, 1.5, 0.0]])
    owner, wr = step_after(guide, [1, 4, 2], [[0, 1, 2, 3]], zb.tolist())
    humor = rt(principle_prompt(rt, PROMPTS[0], "humor"), add_special_tokens=False)["input_ids"]
    assert guide.seqs[0].cached == humor + rt("quick the", add_special_tokens=False)["input_ids"]
    assert owner.tolist() == [0, 0]
    torch.testing.assert_close(wr, torch.tensor([[-1.0, 2.0, -2.5, 0.5], [-0.5, 1.0, -1.25, 0.25]]))
    score = zb.clone().index_add_(0, owner, wr)
    torch.testing.assert_close(score, torch.tensor([[0.5, 4.0, -2.25, 0.75]]))
    assert int(score.argmax()) == 1


def test_what_the_guide_refuses(toks, models):
    """An unknown rule, a row scored against another reference than the base, and a PersRM whose cache has
    sliding-window layers (holes and per-candidate masks cannot be told to a window) are refused by name."""
    bt, rt = toks["a"], toks["b"]
    base, rm = models[("base", "a")], models[("rm", "b")]
    with pytest.raises(PadError, match="rule 'last-subtoken'"):
        new_guide(base, bt, rm, rt, rule="last-subtoken")
    row = guided_rows(rt, [0], [Principle("humor", 1.0)])[0]
    row.reference = "persrm"
    with pytest.raises(PadError, match="reference 'persrm'"):
        new_guide(base, bt, rm, rt).join([row])
    windowed = new_guide(base, bt, build_causal_lm(rt, arch="mistral", seed=6), rt)
    assert windowed.pad_id == rt.pad_token_id != bt.pad_token_id  # the PersRM's own pad by default
    with pytest.raises(PadError, match="full-attention"):
        windowed.join(guided_rows(rt, [0], [Principle("humor", 1.0)]))
