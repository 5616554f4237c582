"""The contract every fusion network follows.

A fusion network maps an infrared luma and a visible luma, both [B,1,H,W] in 0..1,
to a fused luma [B,1,H,W] in 0..1. Colour, padding, tiling and batching live in
:mod:`evafusion_core.inference`, so a network only has to be a network.

Networks inherit :class:`huggingface_hub.PyTorchModelHubMixin`: ``save_pretrained``
writes ``model.safetensors`` and ``config.json`` (the constructor arguments plus
``architecture``), which is the layout :func:`evafusion_core.hub.load_fusion_model`
reads from bundled folders, local folders and the Hub alike.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..hub import RecordsArchitecture


class FusionNet(
    RecordsArchitecture,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="evafusion",
    tags=["image-fusion", "infrared", "evafusion"],
    repo_url="https://github.com/evafusion/evafusion",
):
    """Base class: subclasses set ``architecture`` and implement ``forward(ir, vis)``."""

    architecture: ClassVar[str] = ""
    #: Spatial sizes must be a multiple of this (inference pads to it).
    pad_multiple: ClassVar[int] = 1
    #: Whether the network has trainable weights (baselines do not).
    trainable: ClassVar[bool] = True

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
