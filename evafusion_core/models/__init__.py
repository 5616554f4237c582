"""Fusion networks, constructed by name (timm style): ``create_model("light")``."""

from __future__ import annotations

from typing import Any

from .base import FusionNet
from .baselines import AverageFusion, LaplacianFusion, MaxFusion
from .light import LightFusionNet

ARCHITECTURES: dict[str, type[FusionNet]] = {
    cls.architecture: cls for cls in (LightFusionNet, AverageFusion, MaxFusion, LaplacianFusion)
}


def _register_dcevo() -> None:
    # DCEvo lives in its own module; registering it lazily keeps a failure there from hiding the others.
    from .dcevo import DCEvo

    ARCHITECTURES[DCEvo.architecture] = DCEvo


try:
    _register_dcevo()
except ImportError:  # pragma: no cover - only while dcevo.py is being written
    pass

BASELINES = tuple(name for name, cls in ARCHITECTURES.items() if not cls.trainable)


def create_model(architecture: str, **kwargs: Any) -> FusionNet:
    """A freshly initialised network of the named architecture (no weights loaded)."""
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None
    return cls(**kwargs)


__all__ = ["ARCHITECTURES", "BASELINES", "FusionNet", "create_model"]
