"""Folding a PersRM's LoRA adapter into its base weights, and checking the result.

The reference released only merged checkpoints; merging makes a PersRM an ordinary checkpoint that
any loader (and any decoding engine) reads. `merge_adapter` merges with PEFT, saves safetensors, the
tokenizer and `pad_config.json`, then reloads what it wrote and compares its logits with the adapter
model's on probe prompts: a merge that does not reproduce the adapter fails instead of shipping.
All of it happens in a temporary folder beside `out`, moved into place only once verified, so a failed
merge leaves `out` as it was (absent, or the checkpoint `--overwrite` would have replaced).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pad.errors import PadError
from pad.models import (
    PAD_CONFIG,
    adapter_base,
    is_adapter,
    load_causal_lm,
    load_tokenizer,
    read_pad_config,
    resolve_device,
    resolve_dtype,
)
from pad.principles import DEFAULT_TEMPLATE, principle_prompt

PROBES = (
    "How do I bake bread?",
    "Tell me a joke about cats.",
    "Explain gravity to a child in one sentence.",
)
# Default largest logit difference, relative to the largest |logit| on the probes (at least 1), from the
# dtype's resolution alone. fp32 agrees to rounding noise (merging only reorders float operations); half
# precision rounds every merged weight once more, which moved a small, peaked test model's logits by about
# 8 steps of bf16's resolution (5.9%): 16 steps leave room. This check catches what is saved wrongly
# (config, tied or missing tensors); a wrong scale that is small against the logits is the weight check's.
RELATIVE_TOLERANCE = {"float32": 1e-5, "bfloat16": 16 * 2.0**-7, "float16": 16 * 2.0**-10}
# Rows of each LoRA layer's weight checked against W + scale * B @ A (computed in fp32): a sample, so the
# check holds a few MiB per layer instead of a second copy of the model; any wrong scale or lost layer
# moves every row.
CHECKED_ROWS = 32


@dataclass
class MergeResult:
    out: Path
    base: str
    dtype: str
    max_diff: float  # largest |logit difference| over every probe position and vocabulary entry
    tolerance: float
    probes: int
    adapter_effect: float  # largest |logit difference| between the adapter model and its base
    weights_checked: int = 0  # LoRA layers whose merged weights were checked against W + scale * B @ A


def _check_out(adapter: Path, out: Path, overwrite: bool) -> None:
    if out.resolve() == adapter.resolve():
        raise PadError(f"--out {out} is the adapter folder itself; choose another folder")
    if out.resolve() in adapter.resolve().parents:
        raise PadError(f"--out {out} holds the adapter folder {adapter}; choose another folder")
    if out.exists() and not out.is_dir():
        raise PadError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise PadError(f"--out {out} is not empty; pass --overwrite to replace it")


def _missing_ancestor(path: Path) -> Path | None:
    """The outermost folder of `path`'s parents that does not exist yet (None: the parent exists)."""
    missing = None
    for parent in path.parents:
        if parent.exists():
            break
        missing = parent
    return missing


def _move_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` (if any) by the verified `tmp`; the old `out` goes only once `tmp` took its place."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old)


def probe_texts(tokenizer, record: dict) -> list[str]:
    """Probe prompts as the PersRM reads them: with a trained principle, and once without."""
    template = record.get("template") or DEFAULT_TEMPLATE
    principles = record.get("principles") or ["harmless"]
    texts = [principle_prompt(tokenizer, p, principles[i % len(principles)], template) for i, p in enumerate(PROBES)]
    return [*texts, principle_prompt(tokenizer, PROBES[0], None, template)]


def probe_logits(model, tokenizer, texts: list[str]) -> list:
    """Full-sequence logits of each probe text, in fp32 on the CPU: [(T_i, V)]."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
            out.append(model(input_ids=ids, use_cache=False).logits[0].float().cpu())  # (T, V)
    return out


def _max_diff(a: list, b: list) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@dataclass
class ExpectedRows:
    """What a correct merge puts in sampled rows of one LoRA layer's weight, in fp32."""

    rows: object  # (R,) row indices
    merged: object  # (R, in) W + scale * B @ A
    bound: object  # (R, in) rounding allowance of a merge in the model's dtype, per element


def expected_merge(model, rows: int = CHECKED_ROWS) -> dict[str, ExpectedRows]:
    """{merged parameter name: ExpectedRows} of every plain LoRA linear layer of the PeftModel `model`.

    Computed by hand in fp32 from the adapter's own A, B and scale, not by PEFT's merge, so a merge that
    scales or drops an update is caught. The allowance is the merge's own rounding in the weights' dtype,
    each rounding at most one step of the dtype's resolution (eps) of what it rounds: the sum W + update
    once, the update (the scale, the product and its accumulation) 2 + log2(rank) times, bounded by the sum
    of the products' sizes. Layers of other kinds (DoRA, embeddings) are left to the logits check.
    """
    import torch
    from peft.tuners.lora import LoraLayer

    out: dict[str, ExpectedRows] = {}
    prefix = "base_model.model."
    for name, layer in model.named_modules():
        if not isinstance(layer, LoraLayer) or not isinstance(getattr(layer, "lora_A", None), torch.nn.ModuleDict):
            continue
        weight = layer.get_base_layer().weight
        if weight.dim() != 2 or any(a in getattr(layer, "lora_variant", {}) for a in layer.active_adapters):
            continue
        eps = torch.finfo(weight.dtype).eps
        with torch.no_grad():
            picked = torch.linspace(0, weight.shape[0] - 1, min(rows, weight.shape[0])).round().long().unique()
            w = weight.detach().float().cpu()
            delta = torch.zeros_like(w)
            size = torch.zeros_like(w)  # sum of |products| times the roundings it may go through
            for adapter in layer.active_adapters:
                if adapter not in layer.lora_A:
                    continue
                a = layer.lora_A[adapter].weight.detach().float().cpu()  # (r, in)
                b = layer.lora_B[adapter].weight.detach().float().cpu()  # (out, r)
                scale = float(layer.scaling[adapter])
                # The allowance for the update's own rounding grows with log2(rank): a GPU may sum the rank's
                # products in halves at the weights' precision.
                steps = 2 + math.ceil(math.log2(max(a.shape[0], 1)))
                d, m = (b @ a) * scale, (b.abs() @ a.abs()) * (abs(scale) * steps)
                if layer.fan_in_fan_out:  # GPT-2's Conv1D stores the weight as (in, out)
                    d, m = d.T, m.T
                delta += d
                size += m
            merged = (w + delta)[picked]
            bound = eps * (merged.abs() + size[picked]) + torch.finfo(weight.dtype).tiny
        out[name.removeprefix(prefix) + ".weight"] = ExpectedRows(picked, merged, bound)
    return out


def check_merged_weights(model, expected: dict[str, ExpectedRows]) -> None:
    """Refuse a merged model whose LoRA layers are not W + scale * B @ A to within the merge's rounding."""
    params = dict(model.named_parameters())
    for name, exp in expected.items():
        if name not in params:
            raise PadError(f"the merged model has no weight {name}, which the adapter updates")
        got = params[name].detach()[exp.rows.to(params[name].device)].float().cpu()
        excess = ((got - exp.merged).abs() - exp.bound).max().item()
        if excess > 0:
            err = (got - exp.merged).abs().max().item()
            raise PadError(f"the merged weight {name} differs from W + scale * B @ A by {err:.3g}, beyond the "
                           f"{str(params[name].dtype).removeprefix('torch.')} merge's rounding; a wrong scale "
                           "or a lost update")


@dataclass
class Reference:
    """What a correct merge must reproduce, taken from the adapter model before merging."""

    texts: list[str]  # the probe texts
    logits: list  # [(T_i, V)] the adapter model's logits on them, fp32
    effect: float  # largest |logit difference| between the adapter model and its base
    rows: dict[str, ExpectedRows]  # sampled rows of each LoRA layer's W + scale * B @ A


def reference(model, tokenizer, record: dict) -> Reference:
    texts = probe_texts(tokenizer, record)
    logits = probe_logits(model, tokenizer, texts)
    with model.disable_adapter():
        plain = probe_logits(model, tokenizer, texts)
    return Reference(texts, logits, _max_diff(logits, plain), expected_merge(model))


def default_tolerance(logits: list, dtype_name: str) -> float:
    """RELATIVE_TOLERANCE of the dtype times the largest |logit| on the probes (at least 1)."""
    return RELATIVE_TOLERANCE[dtype_name] * max(1.0, max(e.abs().max().item() for e in logits))


def write_merged(model, tokenizer, folder: Path, settings: dict) -> None:
    """Merge the LoRA into `model`'s weights (in place) and save the checkpoint, tokenizer and pad_config.json."""
    model.merge_and_unload().save_pretrained(folder)  # safetensors by default
    tokenizer.save_pretrained(folder)
    (folder / PAD_CONFIG).write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")


def verify_merged(folder: Path, tokenizer, ref: Reference, tolerance: float, device: str, dtype, kept: str) -> float:
    """Reload the saved checkpoint and check its weights and logits against `ref`; the largest logit difference."""
    reloaded = load_causal_lm(folder, device=device, dtype=dtype)
    try:
        check_merged_weights(reloaded, ref.rows)  # what was saved, read back
    except PadError as e:
        raise PadError(f"{e}; {kept}") from None
    max_diff = _max_diff(ref.logits, probe_logits(reloaded, tokenizer, ref.texts))
    if not max_diff <= tolerance:
        raise PadError(f"the merged model differs from the adapter by {max_diff:.3g} in logits "
                       f"(tolerance {tolerance:g}); {kept}")
    return max_diff


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` (same file system, so the final move is a rename), moved into place when
    the block succeeds; a failure at any point removes it, and what was created above it, and leaves `out`
    untouched."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    created = _missing_ancestor(tmp)
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a killed run with the same pid
    try:
        yield tmp
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def merge_adapter(
    adapter: str | Path,
    out: str | Path,
    dtype: str = "fp32",
    base: str | None = None,
    overwrite: bool = False,
    tolerance: float | None = None,
    device: str = "cpu",
) -> MergeResult:
    """Merge `adapter` into its base and save a standalone checkpoint in `out`, verified.

    base: the base model when the adapter records none (or to override the record).
    tolerance: largest accepted absolute logit difference; default RELATIVE_TOLERANCE[dtype] times the
        largest |logit| on the probes (at least 1). Either way, each LoRA layer's merged weights must be
        W + scale * B @ A (computed in fp32) to within the merge's rounding in `dtype`.
    """
    adapter, out = Path(adapter), Path(out)
    if not is_adapter(adapter):
        raise PadError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
    record = read_pad_config(adapter) or {}
    base = base or adapter_base(adapter)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    dtype_name = str(torch_dtype).removeprefix("torch.")
    _check_out(adapter, out, overwrite)

    tokenizer = load_tokenizer(adapter)
    model = load_causal_lm(adapter, device=device, dtype=torch_dtype, base=base)
    ref = reference(model, tokenizer, record)
    tolerance = default_tolerance(ref.logits, dtype_name) if tolerance is None else tolerance
    settings = {**record, "kind": "persrm-merged", "base_model": base, "merged_from": str(adapter.resolve()),
                "dtype": dtype_name}
    kept = f"{out} is left as it was" if out.exists() else f"nothing was written to {out}"
    with staged(out) as tmp:
        write_merged(model, tokenizer, tmp, settings)
        del model  # one copy of the weights at a time: the reloaded one comes next
        max_diff = verify_merged(tmp, tokenizer, ref, tolerance, device, torch_dtype, kept)
    return MergeResult(out, base, dtype_name, max_diff, float(tolerance), len(ref.texts), ref.effect, len(ref.rows))
