"""The PersRM's implicit DPO reward equals a token-by-token hand computation."""

import pytest
import torch
from eval_helpers import PROMPTS, RESPONSES

from pad.evaluate.inputs import Row
from pad.evaluate.scorers import ScorerError, persrm_dimensions
from pad.principles import DEFAULT_TEMPLATE

ROWS = [Row(str(i), p, r) for i, (p, r) in enumerate(zip(PROMPTS[:3], RESPONSES[:3]))]
ROWS.append(Row("3", PROMPTS[3], ""))  # nothing generated: reward 0


def score(dims, batch_size):
    from pad.evaluate.inputs import Run
    from pad.evaluate.report import score_runs

    return score_runs([Run("r", None, ROWS)], dims, None, batch_size)["r"].values


def response_logp_by_hand(model, tokenizer, user_text: str, response: str) -> float:
    """sum_t log softmax(logits at t - 1)[y_t] over the response, from one unpadded forward pass."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                           add_generation_prompt=True)  # fmt: skip
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    y = tokenizer(response, add_special_tokens=False)["input_ids"] if response else []
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([p + y])).logits[0].double(), -1)  # (P + R, V)
    return sum(float(logp[len(p) + t - 1, y[t]]) for t in range(len(y)))


def principle_text(principle: str, prompt: str) -> str:
    return (DEFAULT_TEMPLATE.replace("{principles}", principle).replace("{prompt}", prompt))


def test_implicit_reward_adapter_disabled_reference(tiny_lora, tiny_llama, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from pad.models import load_causal_lm

    beta = 0.5
    dims = persrm_dimensions(str(tiny_lora), ["harmless", "humor"], beta=beta)
    got = score(dims, batch_size=3)
    policy = load_causal_lm(tiny_lora).eval()  # base + LoRA
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()  # the reference, loaded on its own
    for principle in ("harmless", "humor"):
        for row in ROWS:
            expected = beta * (
                response_logp_by_hand(policy, tiny_tokenizer, principle_text(principle, row.prompt), row.response)
                - response_logp_by_hand(base, tiny_tokenizer, row.prompt, row.response)
            )
            assert got[f"persrm:{principle}"][row.id] == pytest.approx(expected, abs=2e-4)
    assert got["persrm:harmless"]["3"] == 0.0
    assert got["persrm:harmless"]["0"] != got["persrm:humor"]["0"]  # the principle matters


def test_implicit_reward_given_reference_and_principle_in_reference(tiny_persrm, tiny_llama, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    (dim,) = persrm_dimensions(str(tiny_persrm), ["concise"], reference=str(tiny_llama), beta=0.1,
                               reference_sees_principle=True)  # fmt: skip
    got = score([dim], batch_size=16)["persrm:concise"]
    policy = AutoModelForCausalLM.from_pretrained(tiny_persrm).eval()
    ref = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    for row in ROWS:
        text = principle_text("concise", row.prompt)
        expected = 0.1 * (response_logp_by_hand(policy, tiny_tokenizer, text, row.response)
                          - response_logp_by_hand(ref, tiny_tokenizer, text, row.response))  # fmt: skip
        assert got[row.id] == pytest.approx(expected, abs=1e-4)


def test_merged_persrm_needs_a_reference(tiny_persrm):
    with pytest.raises(ScorerError, match="records no base_model"):
        persrm_dimensions(str(tiny_persrm), ["harmless"])
