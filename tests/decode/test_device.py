"""The engine's equalities on the device named by PAD_TEST_DEVICE (default cpu): what `benchmarks/gpu_check.sh`
runs on a GPU. On the CPU they run in every suite, so the GPU check cannot rot.

In fp32: shared backbone == separate models, cached and batched == the uncached loop of the rule, continuous
batching == each prompt alone, w = 0 == transformers' `generate`. In bf16: a smoke run that decodes and ends.
"""

import os

import pytest
import torch
from decode_helpers import PROMPTS, mixed_requests
from peft import PeftModel

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
from pad.decode.reference import reference_decode
from pad.models import load_causal_lm, load_tokenizer
from pad.principles import Principle

DEVICE = os.environ.get("PAD_TEST_DEVICE", "cpu")
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                reason=f"PAD_TEST_DEVICE={DEVICE} but torch sees no CUDA device")
N = 16


@pytest.fixture(scope="module")
def on_device(tiny_llama, tiny_persrm, tiny_lora):
    tok = load_tokenizer(tiny_llama)
    shared = PeftModel.from_pretrained(load_causal_lm(tiny_llama, device=DEVICE), str(tiny_lora)).eval()
    base = load_causal_lm(tiny_llama, device=DEVICE)
    return tok, shared, base, load_causal_lm(tiny_lora, device=DEVICE), load_causal_lm(tiny_persrm, device=DEVICE)


def test_models_are_on_the_device(on_device):
    _, shared, base, lora, rm = on_device
    for m in (shared, base, lora, rm):
        assert next(m.parameters()).device.type == torch.device(DEVICE).type


@pytest.mark.parametrize("reference", ["base", "prompted-base"])
def test_shared_equals_separate(on_device, reference):
    tok, shared, base, lora, _ = on_device
    s = SamplingSettings(max_new_tokens=N)
    one = PADDecoder(shared, tok, shared, reference=reference).generate(mixed_requests(), s)
    two = PADDecoder(base, tok, lora, reference=reference).generate(mixed_requests(), s)
    assert [r.token_ids for r in one] == [r.token_ids for r in two]


@pytest.mark.parametrize("reference", ["base", "persrm"])
def test_cached_batched_equals_the_uncached_loop(on_device, reference):
    tok, _, base, _, rm = on_device
    ps = [Principle("harmless", 1.0), Principle("humor", 0.5)]
    got = PADDecoder(base, tok, rm, reference=reference).generate([DecodeRequest(p, ps) for p in PROMPTS],
                                                                  SamplingSettings(max_new_tokens=N))
    for p, r in zip(PROMPTS, got):
        assert r.token_ids == reference_decode(base, tok, rm, p, ps, max_new_tokens=N, reference=reference)


@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_continuous_batching_equals_alone(on_device, mode):
    tok, shared, *_ = on_device
    dec = PADDecoder(shared, tok, shared)
    reqs = [DecodeRequest(p, [Principle("harmless", 1.0)], id=str(i),
                          settings=SamplingSettings(max_new_tokens=4 + 3 * i, mode=mode, temperature=1.5, seed=3))
            for i, p in enumerate(PROMPTS * 2)]
    alone = [dec.generate([r], r.settings)[0].token_ids for r in reqs]
    got = [None] * len(reqs)
    for i, res in dec.stream(reqs, SamplingSettings(max_new_tokens=32), max_live=3):
        got[i] = res.token_ids
    assert got == alone


def test_w0_equals_generate(on_device):
    tok, shared, base, *_ = on_device
    res = PADDecoder(shared, tok, shared).generate([DecodeRequest(p, [Principle("harmless", 0.0)]) for p in PROMPTS],
                                                   SamplingSettings(max_new_tokens=N))
    tok.padding_side = "left"
    enc = tok([r.model_input for r in res], return_tensors="pt", padding=True, add_special_tokens=False).to(DEVICE)
    out = base.generate(**enc, do_sample=False, max_new_tokens=N, pad_token_id=tok.pad_token_id)
    rows = out[:, enc["input_ids"].shape[1]:].tolist()
    assert [r.token_ids for r in res] == [row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row
                                          for row in rows]


def test_bf16_decodes_and_ends(tiny_llama, tiny_lora):
    """A smoke run: bf16 rounds differently from fp32, so only that it runs to an end is checked."""
    tok = load_tokenizer(tiny_llama)
    model = PeftModel.from_pretrained(load_causal_lm(tiny_llama, device=DEVICE, dtype=torch.bfloat16),
                                      str(tiny_lora)).eval()
    s = SamplingSettings(max_new_tokens=N)
    res = PADDecoder(model, tok, model).generate(mixed_requests(), s)
    assert all(r.finish_reason in ("eos", "length") and 0 < len(r.token_ids) <= N for r in res)
    sampled = PADDecoder(model, tok, model).generate(mixed_requests(), SamplingSettings(max_new_tokens=N, mode="sample"))
    assert all(r.finish_reason in ("eos", "length") for r in sampled)


# -- the script itself -----------------------------------------------------------------------------------------


def _script(*args, timeout=60):
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return subprocess.run(["bash", str(root / "benchmarks/gpu_check.sh"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=root)


def test_gpu_check_script_parses_and_refuses_bad_arguments():
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks/gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bad = _script("--device", "tpu")
    assert bad.returncode == 2 and "--device must be cuda or cpu, got tpu" in bad.stderr
    assert "under 8 minutes" in _script("--help").stdout


@pytest.mark.slow
def test_gpu_check_script_runs_on_the_cpu(tmp_path):
    """The reduced form: the equalities and both speed tables, named by the device."""
    res = _script("--device", "cpu", "--out", str(tmp_path), timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "passed" in (tmp_path / "equalities.log").read_text()
    for dt in ("fp32", "bf16"):
        table = (tmp_path / f"decode_speed_{dt}.md").read_text()
        assert "# decode_speed on CPU" in table and "| shared |" in table
