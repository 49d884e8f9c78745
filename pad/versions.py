"""What pad runs on, for bug reports: `pad --version` and `pad env`.

`version_lines` reads installed package metadata only (importlib.metadata), so `pad --version` imports no
library and answers at once; `environment_lines` adds what torch sees (accelerators), which imports torch.
"""

from __future__ import annotations

import platform
from importlib import metadata

# The libraries pad's behaviour depends on, then optional ones (multi-GPU training, pad serve).
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers")
OPTIONAL = ("deepspeed", "fastapi")
NOT_INSTALLED = "not installed"


def library_versions() -> dict[str, str]:
    """{name: installed version, or "not installed"}: python, the libraries, the optional ones."""
    versions = {"python": platform.python_version()}
    for name in (*LIBRARIES, *OPTIONAL):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = NOT_INSTALLED
    return versions


def _aligned(pairs: dict[str, str]) -> list[str]:
    width = max(len(k) for k in pairs) + 2
    return [f"  {k:<{width}}{v}" for k, v in pairs.items()]


def version_lines() -> list[str]:
    """`pad 0.1.0`, then one indented line per library."""
    from pad import __version__

    return [f"pad {__version__}", *_aligned(library_versions())]


def torch_devices() -> dict[str, str]:
    """What torch sees: CUDA (its build, the devices) and Apple's MPS. Imports torch."""
    try:
        import torch
    except ImportError:
        return {"torch": NOT_INSTALLED}
    cuda = torch.cuda.is_available()
    out = {
        "platform": platform.platform(),
        "torch CUDA build": torch.version.cuda or "none (CPU build)",
        "CUDA available": "yes" if cuda else "no",
        "CUDA devices": str(torch.cuda.device_count() if cuda else 0),
    }
    for i in range(torch.cuda.device_count() if cuda else 0):
        out[f"cuda:{i}"] = torch.cuda.get_device_name(i)
    mps = getattr(torch.backends, "mps", None)
    out["MPS available"] = "yes" if mps is not None and mps.is_available() else "no"
    return out


def environment_lines() -> list[str]:
    """`version_lines`, then the platform and torch's accelerators."""
    from pad import __version__

    return [f"pad {__version__}", *_aligned({**library_versions(), **torch_devices()})]
