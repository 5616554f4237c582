"""Device and precision choice: the one place that decides where tensors live."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present, else the CPU; ``cuda`` without a GPU is an error, not a fallback."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available on this machine")
    return torch.device(name)


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Reduced precision only on GPU: half-precision convolutions on CPU are slow or unsupported."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        if precision in ("fp16", "bf16"):
            raise ValueError(f"precision {precision} needs a CUDA device; use fp32 (or auto) on {device.type}")
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float32
