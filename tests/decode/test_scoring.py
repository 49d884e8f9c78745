import math

import torch

from pad.decode.scoring import guided_scores, row_key, row_uniforms, select_tokens


def test_worked_example():
    """Vocabulary of 4, k = 2, one principle with w = 1.

    z_b = [2.0, 1.0, 0.0, -1.0]  -> C = {0, 1}, base candidate logits (2, 1)
    z_r = [0.0, 1.0, 5.0,  5.0]  -> PersRM candidate logits (0, 1); tokens 2, 3 are outside C
    log_softmax_C(z_b) = (2, 1) - log(e^2 + e^1) = (-0.31326, -1.31326)
    log_softmax_C(z_r) = (0, 1) - log(e^0 + e^1) = (-1.31326, -0.31326)
    r = (-1.0, +1.0)
    score = z_b + w r = (2 - 1, 1 + 1) = (1.0, 2.0)   -> greedy picks token 1, not the base's 0.
    """
    zb = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    zr = torch.tensor([[0.0, 1.0, 5.0, 5.0]])
    cand, score = guided_scores(zb, zr, torch.tensor([0]), torch.tensor([1.0]), k=2)
    assert cand.tolist() == [[0, 1]]
    assert torch.allclose(score, torch.tensor([[1.0, 2.0]]), atol=1e-6)
    assert select_tokens(cand, score).tolist() == [1]
    # w = 0.5: score = (2 - 0.5, 1 + 0.5) = (1.5, 1.5); with w = 0.4 the base's token wins again.
    _, score = guided_scores(zb, zr, torch.tensor([0]), torch.tensor([0.4]), k=2)
    assert torch.allclose(score, torch.tensor([[1.6, 1.4]]), atol=1e-6)


def test_two_principles_weighted_sum():
    """Row 0 has two principles (w = 1.5 and w = -0.5), row 1 none.

    k = 3, z_b row 0 = [3, 2, 1, 0] -> C = {0, 1, 2}, log_softmax_C(z_b) = (3,2,1) - L, L = log(e^3+e^2+e^1)
    z_r1 = [0, 0, 3, 0]  -> r1 = lsm(0,0,3) - lsm(3,2,1)
    z_r2 = [1, 1, 1, 9]  -> r2 = lsm(1,1,1) - lsm(3,2,1) = -log 3 - lsm(3,2,1)   (token 3 is not a candidate)
    score = z_b[C] + 1.5 r1 - 0.5 r2, computed below with math only.
    """
    zb = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    zr = torch.tensor([[0.0, 0.0, 3.0, 0.0], [1.0, 1.0, 1.0, 9.0]])
    cand, score = guided_scores(zb, zr, torch.tensor([0, 0]), torch.tensor([1.5, -0.5]), k=3)

    def lsm(xs):
        m = math.log(sum(math.exp(x) for x in xs))
        return [x - m for x in xs]

    base_lp = lsm([3, 2, 1])
    r1 = [a - b for a, b in zip(lsm([0, 0, 3]), base_lp)]
    r2 = [a - b for a, b in zip(lsm([1, 1, 1]), base_lp)]
    expected = [z + 1.5 * a - 0.5 * b for z, a, b in zip([3, 2, 1], r1, r2)]
    assert cand[0].tolist() == [0, 1, 2]
    assert torch.allclose(score[0], torch.tensor(expected), atol=1e-5)
    # A row without streams keeps the base logits of its candidates.
    assert cand[1].tolist() == [3, 2, 1] and score[1].tolist() == [3.0, 2.0, 1.0]


def test_reference_logits_replace_base():
    zb = torch.tensor([[2.0, 1.0, 0.0]])
    zr = torch.tensor([[1.0, 1.0, 0.0]])
    zref = torch.tensor([[1.0, 1.0, 7.0]])  # equal to z_r on the candidates -> r = 0
    _, score = guided_scores(zb, zr, torch.tensor([0]), torch.tensor([1.0]), k=2, ref_logits=zref)
    assert torch.allclose(score, torch.tensor([[2.0, 1.0]]))


def test_sampling_is_seeded():
    cand = torch.arange(5).repeat(3, 1)
    score = torch.zeros(3, 5)
    keys = lambda seed: torch.tensor([row_key(seed, r) for r in ("a", "b", "c")])  # noqa: E731
    draw = lambda seed, step=0: select_tokens(  # noqa: E731
        cand, score, "sample", 1.0, row_uniforms(keys(seed), torch.full((3,), step)))
    assert torch.equal(draw(7), draw(7))
    assert any(not torch.equal(draw(7), draw(s)) for s in range(8, 20))
    assert any(not torch.equal(draw(7, 0), draw(7, t)) for t in range(1, 10))


def test_row_uniforms_are_uniform_and_exact():
    """The 32-bit multiply agrees with Python's big integers, and a row's draws spread evenly over [0, 1)."""
    from pad.decode.scoring import _M32, _mix32

    xs = [0, 1, 0xFFFF, 0x10000, 0xDEADBEEF, _M32]
    def mix(x):
        x ^= x >> 16; x = (x * 0x7FEB352D) & _M32; x ^= x >> 15; x = (x * 0x846CA68B) & _M32  # noqa: E702
        return x ^ (x >> 16)
    assert _mix32(torch.tensor(xs)).tolist() == [mix(x) for x in xs]
    u = row_uniforms(torch.full((20000,), row_key(0, "row")), torch.arange(20000))
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    counts = torch.histc(u, bins=10, min=0.0, max=1.0)
    assert float(counts.min()) > 1800 and float(counts.max()) < 2200, counts
