"""Training checkpoints that survive a crash: written to a temporary file, then renamed.

A checkpoint holds weights, optimiser and scheduler state, the step, and every RNG
state (torch, CUDA, plus caller extras such as Python's ``random``), so a resumed run
continues exactly where a killed one stopped. A run's JSONL log is cut back to the
checkpoint's step on resume, so the steps a killed run logged after it appear once.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .io import atomic_write_bytes


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    step: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer else None,
        "scheduler": scheduler.state_dict() if scheduler else None,
        "step": step,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote; returns the state (``step``, ``extra``)."""
    # weights_only=False: the state holds Python RNG tuples; these files are our own, written by save_checkpoint.
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSONL log (empty when the file does not exist yet)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def truncate_jsonl(path: str | os.PathLike, step: int) -> None:
    """Drop the records after ``step`` (those a killed run logged after its last checkpoint)."""
    if not Path(path).exists():
        return
    keep = [json.dumps(r) for r in read_jsonl(path) if r.get("step", 0) <= step]
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())
