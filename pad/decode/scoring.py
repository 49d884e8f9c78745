"""The PAD scoring rule on one decoding step (method.md section 3).

    C        = top-k(z_b)
    r(a)     = log_softmax_C(z_r)(a) - log_softmax_C(z_ref)(a)     (z_ref = the row's z_b unless given)
    score(a) = z_b(a) + sum_i w_i * r_i(a)

Several PersRM passes ("streams") may serve one row: one per principle, each with its weight.
"""

from __future__ import annotations

import torch


def guided_scores(
    base_logits: torch.Tensor,
    rm_logits: torch.Tensor | None,
    owner: torch.Tensor | None,
    weights: torch.Tensor | None,
    k: int,
    ref_logits: torch.Tensor | None = None,
    ref_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate ids and their guided scores.

    base_logits: (B, V) base next-token logits z_b.
    rm_logits:   (S, V) PersRM logits, one row per stream (a row's principle), or None.
    owner:       (S,) which of the B rows each stream guides.
    weights:     (S,) the stream's weight w_i.
    ref_logits:  (R, V) reference logits; None means the base logits of the stream's row (the
                 reference code's choice).
    ref_index:   (S,) the row of each stream's reference in ref_logits (default: owner, one a row).
    Returns (cand, score), both (B, k); computed in float32.
    """
    zb = base_logits.float()
    zb_c, cand = zb.topk(k, dim=-1)  # (B, k) candidate logits and ids, best first
    score = zb_c.clone()
    if rm_logits is None or rm_logits.shape[0] == 0:
        return cand, score
    zr_c = rm_logits.float().gather(1, cand[owner])  # (S, k)
    if ref_logits is None:
        zref_c = zb_c[owner]  # (S, k)
    else:  # index the k candidates only, never a (S, V) copy
        rows = owner if ref_index is None else ref_index
        zref_c = ref_logits[rows[:, None], cand[owner]].float()  # (S, k)
    r = zr_c.log_softmax(-1) - zref_c.log_softmax(-1)  # (S, k) per-stream reward
    score.index_add_(0, owner, weights.float()[:, None] * r)  # sum_i w_i r_i per row
    return cand, score


def select_tokens(
    cand: torch.Tensor,
    score: torch.Tensor,
    mode: str = "greedy",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B,) next tokens: argmax of the score, or a sample from softmax(score / T) over the candidates."""
    if mode == "greedy":
        pick = score.argmax(-1, keepdim=True)  # (B, 1)
    else:
        probs = (score / temperature).softmax(-1)
        pick = torch.multinomial(probs, 1, generator=generator)
    return cand.gather(1, pick).squeeze(1)
