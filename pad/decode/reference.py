"""A plain, uncached, one-prompt-at-a-time PAD loop, written straight from method.md section 3.

This is how the reference code decodes: both models re-read the whole sequence for every token. It
is slow on purpose and kept only as the yardstick the fast engine is tested and benchmarked against.
"""

from __future__ import annotations

import torch

from pad.decode.engine import end_token_ids
from pad.principles import DEFAULT_TEMPLATE, Principle, join_principles, principle_prompt


@torch.inference_mode()
def reference_decode(
    base,
    tokenizer,
    persrm,
    prompt: str,
    principles: list[Principle],
    topk: int = 10,
    max_new_tokens: int = 128,
    template: str = DEFAULT_TEMPLATE,
    reference: str = "base",
    base_sees_principles: bool = True,
    stop_at_eos: bool = True,
    kl_budget: float | None = None,
    trace: list[tuple[float, float]] | None = None,
) -> list[int]:
    """Greedy PAD tokens for one prompt, stopping at an end token (kept) or `max_new_tokens`.

    The end tokens are the engine's (`end_token_ids`): the base's generation config and the tokenizer's.
    kl_budget: EPS of method.md section 9, the rule spelled out one step at a time (None: fixed weights).
    trace: under a budget, (lambda, KL(p_lambda || p_0)) of every step is appended to it.
    """
    active = [p for p in principles if p.weight != 0]
    joined = join_principles([p.name for p in principles]) or None
    dev_b = next(base.parameters()).device
    dev_r = next(persrm.parameters()).device if persrm is not None else dev_b
    enc = lambda text, dev: tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(dev)  # noqa: E731
    base_ids = enc(principle_prompt(tokenizer, prompt, joined if base_sees_principles else None, template), dev_b)
    rm_ids = [enc(principle_prompt(tokenizer, prompt, p.name, template), dev_r) for p in active]
    ref_ids = enc(principle_prompt(tokenizer, prompt, None, template), dev_r)
    eos = set(end_token_ids(base, tokenizer))
    out: list[int] = []
    for _ in range(max_new_tokens):
        z_b = base(base_ids).logits[0, -1].float()
        cand = torch.topk(z_b, topk).indices
        score = z_b[cand].clone()
        if kl_budget is not None:
            score = _budget_step(z_b[cand], _reward(base, persrm, z_b, cand, active, rm_ids, ref_ids, reference, dev_b),
                                 kl_budget, trace)
        elif active:
            if reference == "prompted-base":  # the base reading each principle's own prompt
                refs = [base(ids.to(dev_b)).logits[0, -1].float() for ids in rm_ids]
            else:
                refs = [z_b if reference == "base" else persrm(ref_ids).logits[0, -1].float().to(dev_b)] * len(rm_ids)
            for p, ids, z_ref in zip(active, rm_ids, refs):
                z_r = persrm(ids).logits[0, -1].float().to(dev_b)
                score += p.weight * (torch.log_softmax(z_r[cand], dim=0) - torch.log_softmax(z_ref[cand], dim=0))
        token = int(cand[torch.argmax(score)])
        out.append(token)
        if stop_at_eos and token in eos:
            break
        base_ids = torch.cat([base_ids, torch.tensor([[token]], device=dev_b)], dim=1)
        new = torch.tensor([[token]], device=dev_r)
        rm_ids = [torch.cat([ids, new], dim=1) for ids in rm_ids]
        ref_ids = torch.cat([ref_ids, new], dim=1)
    return out


def _reward(base, persrm, z_b, cand, active, rm_ids, ref_ids, reference, dev_b) -> torch.Tensor:
    """(k,) R = sum_p w_p r_p over the candidates, summed from zero principle by principle."""
    total = torch.zeros(cand.shape[0], device=dev_b)
    for p, ids in zip(active, rm_ids):
        if reference == "prompted-base":
            z_ref = base(ids.to(dev_b)).logits[0, -1].float()
        elif reference == "persrm":
            z_ref = persrm(ref_ids).logits[0, -1].float().to(dev_b)
        else:
            z_ref = z_b
        z_r = persrm(ids).logits[0, -1].float().to(dev_b)
        total = total + p.weight * (torch.log_softmax(z_r[cand], dim=0) - torch.log_softmax(z_ref[cand], dim=0))
    return total


def _budget_step(z: torch.Tensor, reward: torch.Tensor, eps: float, trace) -> torch.Tensor:
    """(k,) z + lambda R for one row, lambda by 20 halvings of [0, 1] (method.md section 9)."""

    def kl(lam: float) -> float:
        p0 = torch.log_softmax(z, dim=0)
        p = torch.log_softmax(z + lam * reward, dim=0)
        return float((p.exp() * (p - p0)).sum())

    if kl(1.0) <= eps:
        lam = 1.0
    else:
        lo, hi = 0.0, 1.0
        for _ in range(20):
            mid = (lo + hi) / 2
            if kl(mid) <= eps:
                lo = mid
            else:
                hi = mid
        lam = lo
    if trace is not None:
        trace.append((lam, kl(lam)))
    return z + lam * reward
