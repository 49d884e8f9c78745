"""`pad merge` refuses a merge that does not apply the whole LoRA update, in every dtype (issue 21, item 3).

Before the fix, bf16 accepted a merge that kept 60% or 90% of the update: its tolerance was half the adapter's
own effect on the logits. Now each LoRA layer's merged weights are checked against W + scale * B @ A computed
in fp32, and the logits against a tolerance from the dtype's resolution.
"""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("keep", [0.6, 0.9])
def test_a_merge_that_keeps_part_of_the_update_is_refused(tmp_path, tiny_lora, monkeypatch, dtype, keep):
    from peft.tuners.lora.layer import Linear

    from pad.errors import PadError
    from pad.merge import merge_adapter

    full = Linear.get_delta_weight
    monkeypatch.setattr(Linear, "get_delta_weight", lambda self, adapter: full(self, adapter) * keep)
    out = tmp_path / "merged"
    with pytest.raises(PadError, match="differs from") as e:
        merge_adapter(tiny_lora, out, dtype=dtype)
    assert f"nothing was written to {out}" in str(e.value)
    assert not out.exists()


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_a_correct_merge_passes_both_checks(tmp_path, tiny_lora, dtype):
    from pad.merge import merge_adapter

    result = merge_adapter(tiny_lora, tmp_path / "merged", dtype=dtype)
    assert result.weights_checked == 6  # q_proj, v_proj, up_proj in each of the 2 layers
    assert result.max_diff <= result.tolerance < result.adapter_effect / 4  # the tolerance is not the effect's


def test_the_weight_check_alone_sees_a_small_wrong_scale(tiny_lora):
    """The weight check on its own, with a scale error far below what bf16 logits could show."""
    import torch

    from pad.errors import PadError
    from pad.merge import check_merged_weights, expected_merge
    from pad.models import load_causal_lm

    model = load_causal_lm(tiny_lora, dtype=torch.bfloat16)
    expected = expected_merge(model)
    for module in model.modules():
        if isinstance(getattr(module, "scaling", None), dict):
            module.scaling = {k: v * 0.93 for k, v in module.scaling.items()}
    with pytest.raises(PadError, match="differs from W \\+ scale \\* B @ A"):
        check_merged_weights(model.merge_and_unload(), expected)
