"""The PAD scoring rule on one decoding step (method.md section 3), and the token choice.

    C        = top-k(z_b)
    r(a)     = log_softmax_C(z_r)(a) - log_softmax_C(z_ref)(a)     (z_ref = the row's z_b unless given)
    score(a) = z_b(a) + sum_i w_i * r_i(a)

Several PersRM passes ("streams") may serve one row: one per principle, each with its weight.

Sampling draws one uniform number per row and step from a counter-based hash of (the row's key, the
step), not from a shared generator: a row's sample then depends on the run's seed and the row alone,
never on which rows share its batch, when they finish, or how the run was split and resumed.
"""

from __future__ import annotations

import hashlib

import torch


def guided_scores(
    base_logits: torch.Tensor,
    rm_logits: torch.Tensor | None,
    owner: torch.Tensor | None,
    weights: torch.Tensor | None,
    k: int,
    ref_logits: torch.Tensor | None = None,
    ref_index: torch.Tensor | None = None,
    rm_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate ids and their guided scores: `candidates` then `pad_scores`.

    base_logits: (B, V) base next-token logits z_b.
    rm_logits:   (S, V) PersRM logits, one row per stream (a row's principle), or None; with rm_index,
                 any (N, V) logits of which rows rm_index are the streams'.
    owner:       (S,) which of the B rows each stream guides.
    weights:     (S,) the stream's weight w_i.
    ref_logits:  (R, V) reference logits; None means the base logits of the stream's row (the
                 reference code's choice).
    ref_index:   (S,) the row of each stream's reference in ref_logits (default: owner, one a row).
    rm_index:    (S,) the row of each stream in rm_logits (default: 0..S-1).
    Returns (cand, score), both (B, k); computed in float32.
    """
    zb_c, cand = candidates(base_logits, k)
    return cand, pad_scores(zb_c, cand, rm_logits, owner, weights, ref_logits, ref_index, rm_index)


def candidates(base_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, k) the base's top-k logits in float32 and their ids, best first. Top-k reads the logits where they
    are, in their own dtype: only the (B, k) winners are converted."""
    zb_c, cand = base_logits.topk(k, dim=-1)
    return zb_c.float(), cand


def _at(logits: torch.Tensor, rows: torch.Tensor, cand: torch.Tensor, device) -> torch.Tensor:
    """(S, k) logits[rows[s], cand[s, j]] in float32 on `device`; gathered where the logits live, so a model on
    another device sends (S, k) numbers, never its (N, V) logits."""
    d = logits.device
    return logits[rows.to(d)[:, None], cand.to(d)].to(device).float()


def pad_scores(
    base_c: torch.Tensor,
    cand: torch.Tensor,
    rm_logits: torch.Tensor | None,
    owner: torch.Tensor | None,
    weights: torch.Tensor | None,
    ref_logits: torch.Tensor | None = None,
    ref_index: torch.Tensor | None = None,
    rm_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, k) z_b(a) + sum_i w_i r_i(a) over each row's candidates (base_c, cand: (B, k) from `candidates`);
    the other arguments as in `guided_scores`. Only the k candidates of each stream are ever indexed, never a
    (S, V) copy."""
    score = base_c.clone()
    if rm_logits is None or owner is None or owner.shape[0] == 0:
        return score
    # sum_i w_i r_i per row, added stream by stream onto z_b (the order the uncached reference adds them in)
    return score.index_add_(0, owner, stream_rewards(base_c, cand, rm_logits, owner, weights, ref_logits, ref_index,
                                                     rm_index))


def stream_rewards(
    base_c: torch.Tensor,
    cand: torch.Tensor,
    rm_logits: torch.Tensor,
    owner: torch.Tensor,
    weights: torch.Tensor,
    ref_logits: torch.Tensor | None = None,
    ref_index: torch.Tensor | None = None,
    rm_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """(S, k) w_i r_i of every stream over its row's candidates; arguments as in `pad_scores`."""
    cand_s = cand[owner]  # (S, k) each stream's row's candidates
    rows = torch.arange(owner.shape[0], device=owner.device) if rm_index is None else rm_index
    zr_c = _at(rm_logits, rows, cand_s, base_c.device)  # (S, k)
    if ref_logits is None:
        zref_c = base_c[owner]  # (S, k)
    else:
        zref_c = _at(ref_logits, owner if ref_index is None else ref_index, cand_s, base_c.device)  # (S, k)
    r = zr_c.log_softmax(-1) - zref_c.log_softmax(-1)  # (S, k) per-stream reward
    return weights.float()[:, None] * r


# -- a per-token KL budget (method.md section 9) ----------------------------------------------------------

KL_HALVINGS = 20


def kl_from_base(base_c: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """(B,) KL(softmax_C(score) || softmax_C(z_b)) in nats, at temperature 1; base_c, score: (B, k)."""
    logp0 = base_c.log_softmax(-1)  # (B, k)
    logp = score.log_softmax(-1)  # (B, k)
    return (logp.exp() * (logp - logp0)).sum(-1)


def kl_budget_scores(base_c: torch.Tensor, reward: torch.Tensor, eps: torch.Tensor,
                     halvings: int = KL_HALVINGS) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's guidance scale lambda under its KL budget, and its score z_b + lambda R.

    base_c: (B, k) the base's candidate logits z_b; reward: (B, k) R = sum_p w_p r_p over the same
    candidates; eps: (B,) each row's budget in nats (inf: no limit), float32 (`engine.budget_f32` rounds down). With p_lambda = softmax_C(z_b + lambda R),
    lambda is 1 where KL(p_1 || p_0) <= eps, else the lower end after `halvings` halvings of [0, 1] that keep
    it feasible. KL grows with lambda (its derivative is lambda Var_{p_lambda}(R)), so the lower end is the
    largest feasible lambda to within 2**-halvings, and lambda = 0 (vanilla) is always feasible.
    Returns (lambda (B,), score (B, k)), in float32.
    """
    base_c, reward = base_c.float(), reward.float()
    one = torch.ones_like(eps)  # (B,)
    lam = one
    full = kl_from_base(base_c, base_c + reward) <= eps  # (B,) rows where fixed weights fit the budget
    if not bool(full.all()):  # one sync per step, and only where a budget binds: no halving when all fit
        lo, hi = torch.zeros_like(eps), one.clone()  # (B,) lo stays feasible throughout
        for _ in range(halvings):
            mid = (lo + hi) / 2  # exact: dyadic numbers with at most 20 bits
            ok = kl_from_base(base_c, base_c + mid[:, None] * reward) <= eps  # (B,)
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        lam = torch.where(full, one, lo)
    return lam, base_c + lam[:, None] * reward


def args_scores(base_logits_c: torch.Tensor, rewards: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ARGS's score over the candidates: z_b(a) + w * RM(x, y_<t + a).

    base_logits_c, rewards: (B, k) the base's logits and the reward model's scores of each row's candidates;
    weights: (B,) each row's w. (B, k), in float32.
    """
    return base_logits_c.float() + weights.float()[:, None] * rewards.float()


def select_tokens(
    cand: torch.Tensor,
    score: torch.Tensor,
    mode: str | torch.Tensor = "greedy",
    temperature: float | torch.Tensor = 1.0,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) next tokens: argmax of the score, or a sample from softmax(score / T) over the candidates.

    mode: "greedy", "sample", or a (B,) bool tensor marking the rows that sample (the rest are greedy).
    temperature: T, one for all rows or (B,) one per row.
    uniform: (B,) numbers in [0, 1), one per row, that decide the samples (see `row_uniforms`);
    None draws them from torch's global generator.
    """
    greedy = score.argmax(-1, keepdim=True)  # (B, 1)
    if isinstance(mode, str) and mode == "greedy":
        return cand.gather(1, greedy).squeeze(1)
    if uniform is None:
        uniform = torch.rand(score.shape[0], device=score.device)
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.to(score.dtype)[:, None]  # (B, 1)
    cdf = (score / temperature).softmax(-1).cumsum(-1)  # (B, k)
    # inverse CDF: the first candidate whose cumulative probability passes u
    pick = (cdf < uniform[:, None].to(cdf.dtype) * cdf[:, -1:]).sum(-1, keepdim=True)
    pick = pick.clamp(max=cand.shape[1] - 1)
    if isinstance(mode, torch.Tensor):
        pick = torch.where(mode[:, None], pick, greedy)
    return cand.gather(1, pick).squeeze(1)


# -- a counter-based random stream per row ------------------------------------------------------------

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """x * c mod 2**32 for int64 tensors holding 32-bit values, with no int64 overflow."""
    return ((x & 0xFFFF) * c + ((((x >> 16) * c) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash with good avalanche (the 'lowbias32' constants)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def row_key(seed: int, row_id: str) -> int:
    """A row's 32-bit random key: a function of the run's seed and the row's id only."""
    digest = hashlib.blake2b(f"{seed}\x00{row_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def row_uniforms(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """(B,) uniform numbers in [0, 1): the `counters`-th draw of each row's stream.

    keys, counters: (B,) int64, keys < 2**32. Exact on any device: integer ops and a 24-bit float.
    """
    h = _mix32(keys ^ _mix32(counters & _M32))
    h = _mix32(h ^ 0x9E3779B9)
    return (h >> 8).to(torch.float32) / float(1 << 24)
