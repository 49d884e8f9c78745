"""Plain, uncached, one-prompt-at-a-time PAD loops, written straight from method.md sections 3 and 8.

This is how the reference code decodes: both models re-read the whole sequence for every token. They
are slow on purpose and kept only as the yardsticks the fast engine and guides are tested and benchmarked
against: `reference_decode` for one tokenizer, `cross_reference_decode` for a PersRM with its own.
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


@torch.inference_mode()
def cross_reference_decode(
    base,
    base_tokenizer,
    persrm,
    rm_tokenizer,
    prompt,
    principles: list[Principle],
    topk: int = 10,
    max_new_tokens: int = 128,
    template: str = DEFAULT_TEMPLATE,
    rule: str = "exact",
    base_sees_principles: bool = True,
) -> list[int]:
    """Greedy cross-tokenizer PAD tokens for one prompt (method.md section 8), stopping at an end token of the
    base (kept) or `max_new_tokens`; reference "base".

    rule "exact": every step, for every principle and candidate a, L(a) from scratch: one forward of the
    PersRM's principle prompt followed by its tokenization of T(a) = decode(response so far + [a]) (special
    tokens kept), or of decode(response so far) and its own end token for an end candidate a; then
    r = log_softmax_C(L) - log_softmax_C(z_b). rule "first-subtoken": the reference's (pad.decode.cross).
    """
    if rule not in ("exact", "first-subtoken"):
        raise ValueError(f"rule {rule!r} is not exact or first-subtoken")
    active = [p for p in principles if p.weight != 0]
    joined = join_principles([p.name for p in principles]) or None
    dev_b = next(base.parameters()).device
    dev_r = next(persrm.parameters()).device
    base_ids = base_tokenizer(principle_prompt(base_tokenizer, prompt, joined if base_sees_principles else None,
                                               template), add_special_tokens=False)["input_ids"]
    rm_enc = lambda text: rm_tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    rm_prompts = [rm_enc(principle_prompt(rm_tokenizer, prompt, p.name, template)) for p in active]
    eos = set(end_token_ids(base, base_tokenizer))
    gen = getattr(persrm.generation_config, "eos_token_id", None)
    rm_end = (gen[0] if gen else None) if isinstance(gen, list) else gen
    rm_end = rm_tokenizer.eos_token_id if rm_end is None else rm_end

    def text(ids: list[int]) -> str:  # the base's decoding, special tokens kept as text
        return base_tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def loglik(prefix: list[int], response: list[int]) -> torch.Tensor:
        """log p(response | prefix) under the PersRM, read from scratch."""
        logits = persrm(torch.tensor([prefix + response], device=dev_r)).logits[0].float()  # (T, V)
        lp = torch.log_softmax(logits[len(prefix) - 1:-1], dim=-1)  # (len(response), V)
        return lp.gather(1, torch.tensor(response, device=dev_r)[:, None]).sum().to(dev_b)

    out: list[int] = []
    for _ in range(max_new_tokens):
        z_b = base(torch.tensor([base_ids + out], device=dev_b)).logits[0, -1].float()
        zb_c, cand = torch.topk(z_b, topk)
        score = zb_c.clone()
        for p, prefix in zip(active, rm_prompts):
            if rule == "exact":
                responses = [rm_enc(text(out)) + [rm_end] if a in eos else rm_enc(text(out + [a]))
                             for a in cand.tolist()]  # an end candidate: the text so far, then the PersRM's end
                lik = torch.stack([loglik(prefix, resp) for resp in responses])  # (k,) L(a)
                r = torch.log_softmax(lik, dim=0) - torch.log_softmax(zb_c, dim=0)
            else:
                so_far = rm_enc(base_tokenizer.decode(out, skip_special_tokens=True))
                z_r = persrm(torch.tensor([prefix + so_far], device=dev_r)).logits[0, -1].float().to(dev_b)
                alone = [base_tokenizer.decode([a], skip_special_tokens=False) or " " for a in cand.tolist()]
                first = [rm_enc(t)[0] for t in alone]  # f(a): the first id of each candidate's re-encoding
                r = z_r[torch.tensor(first, device=dev_b)] - zb_c
            score += p.weight * r
        token = int(cand[torch.argmax(score)])
        out.append(token)
        if token in eos:
            break
    return out
