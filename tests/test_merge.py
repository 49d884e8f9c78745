"""`pad merge`: the merged checkpoint reproduces the adapter model, for logits and for PAD decoding."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pad.cli import app


@pytest.fixture(scope="module")
def merged(tmp_path_factory, tiny_lora):
    out = tmp_path_factory.mktemp("merge") / "merged"
    r = CliRunner().invoke(app, ["merge", str(tiny_lora), "--out", str(out), "--tolerance", "1e-4"])
    assert r.exit_code == 0, r.output
    return out, r.output


def test_merged_logits_equal_adapter_logits(merged, tiny_lora, tiny_tokenizer):
    import torch

    from pad.models import load_causal_lm

    out, output = merged
    assert "largest logit difference on 4 probe prompts" in output
    for name in ("model.safetensors", "config.json", "tokenizer.json", "pad_config.json"):
        assert (out / name).is_file(), name
    assert not (out / "adapter_config.json").exists()
    record = json.loads((out / "pad_config.json").read_text())
    assert record["kind"] == "persrm-merged" and record["dtype"] == "float32"
    assert record["merged_from"] == str(tiny_lora.resolve())

    adapter, plain = load_causal_lm(tiny_lora), load_causal_lm(out)
    ids = tiny_tokenizer(["Tell me a joke about cats. Why did the chicken cross the road?"],
                         return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, m = adapter(input_ids=ids).logits, plain(input_ids=ids).logits
        with adapter.disable_adapter():
            b = adapter(input_ids=ids).logits
    assert (a - m).abs().max().item() <= 1e-4
    assert (a - b).abs().max().item() > 1e-2  # the adapter does change the model, so the check means something


def test_decode_with_merged_equals_decode_with_adapter(merged, tiny_lora, tiny_llama, tiny_tokenizer):
    from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
    from pad.models import load_causal_lm
    from pad.principles import Principle

    out, _ = merged
    base = load_causal_lm(tiny_llama)
    requests = [DecodeRequest(p, [Principle("harmless", 1.0)]) for p in
                ("Tell me a joke about cats.", "How do I bake bread?", "Write a short poem.")]
    settings = SamplingSettings(max_new_tokens=16)
    with_adapter = PADDecoder(base, tiny_tokenizer, load_causal_lm(tiny_lora)).generate(requests, settings)
    with_merged = PADDecoder(base, tiny_tokenizer, load_causal_lm(out)).generate(requests, settings)
    assert [r.token_ids for r in with_merged] == [r.token_ids for r in with_adapter]
    assert all(len(r.token_ids) > 0 for r in with_adapter)


def test_non_empty_out_is_refused_without_overwrite(tmp_path, tiny_lora):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r = CliRunner().invoke(app, ["merge", str(tiny_lora), "--out", str(out)])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [f"error: --out {out} is not empty; pass --overwrite to replace it"]
    assert (out / "keep.txt").read_text() == "precious"
    r = CliRunner().invoke(app, ["merge", str(tiny_lora), "--out", str(out), "--overwrite", "--dtype", "bf16"])
    assert r.exit_code == 0, r.output
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert json.loads((out / "pad_config.json").read_text())["dtype"] == "bfloat16"


def test_bad_merge_input_is_one_line(tmp_path, tiny_llama, tiny_lora):
    import shutil

    r = CliRunner().invoke(app, ["merge", str(tiny_llama), "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "is not a LoRA adapter folder" in r.output and "Traceback" not in r.output

    # An adapter that records no base needs --base; a base that does not load is named.
    orphan = tmp_path / "orphan"
    shutil.copytree(tiny_lora, orphan)
    cfg = json.loads((orphan / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None
    (orphan / "adapter_config.json").write_text(json.dumps(cfg))
    r = CliRunner().invoke(app, ["merge", str(orphan), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "adapter records no base model" in r.output
    r = CliRunner().invoke(app, ["merge", str(orphan), "--out", str(tmp_path / "c"), "--base", "/no/such/base"])
    assert r.exit_code == 2 and "'/no/such/base' does not exist" in r.output
    r = CliRunner().invoke(app, ["merge", str(orphan), "--out", str(tmp_path / "d"), "--base", str(tiny_llama)])
    assert r.exit_code == 0, r.output


def _beside(out):
    """Anything merge_adapter left next to `out`: its temporary or backup folders."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_failed_verification_leaves_no_checkpoint(tmp_path, tiny_lora):
    from pad.errors import PadError
    from pad.merge import merge_adapter

    out = tmp_path / "new" / "merged"  # its parent does not exist either
    with pytest.raises(PadError, match="differs from the adapter") as e:
        merge_adapter(tiny_lora, out, tolerance=-1.0)  # no merge is within a negative tolerance
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder, nor the parent it needed
    assert f"nothing was written to {out}" in str(e.value)

    r = CliRunner().invoke(app, ["merge", str(tiny_lora), "--out", str(out), "--tolerance", "-1"])
    assert r.exit_code == 2 and "differs from the adapter" in r.output and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_failed_merge_with_overwrite_keeps_the_previous_checkpoint(tmp_path, tiny_lora, monkeypatch):
    import pad.merge
    from pad.errors import PadError
    from pad.merge import merge_adapter

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(PadError, match="differs from the adapter") as e:
        merge_adapter(tiny_lora, out, overwrite=True, tolerance=-1.0)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"
    assert _beside(out) == []
    assert f"{out} is left as it was" in str(e.value)

    # Any other failure on the way (here: reloading the merged checkpoint) is cleaned up the same way.
    load = pad.merge.load_causal_lm

    def failing_reload(spec, *args, **kwargs):
        if ".tmp-" in str(spec):
            raise RuntimeError("disk full")
        return load(spec, *args, **kwargs)

    monkeypatch.setattr(pad.merge, "load_causal_lm", failing_reload)
    with pytest.raises(RuntimeError, match="disk full"):
        merge_adapter(tiny_lora, out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and _beside(out) == []

    # A verified merge does replace it, and its files never name the temporary folder.
    monkeypatch.setattr(pad.merge, "load_causal_lm", load)
    result = merge_adapter(tiny_lora, out, overwrite=True, tolerance=1e-3)  # precision is tested above
    assert result.out == out and not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert _beside(out) == []
    for f in out.iterdir():
        if f.suffix == ".json":
            assert ".tmp-" not in f.read_text(), f.name
    assert json.loads((out / "pad_config.json").read_text())["merged_from"] == str(tiny_lora.resolve())


def test_out_holding_the_adapter_is_refused(tmp_path, tiny_lora):
    import shutil

    adapter = tmp_path / "runs" / "lora"
    shutil.copytree(tiny_lora, adapter)
    r = CliRunner().invoke(app, ["merge", str(adapter), "--out", str(tmp_path / "runs"), "--overwrite"])
    assert r.exit_code == 2 and "holds the adapter folder" in r.output
    assert (adapter / "adapter_config.json").is_file()
