"""The reward model: scores a fused image against its sources and maps its artifacts.

``load_reward_model("small")`` loads the bundled weights (or a folder, a ``.safetensors``
file with its config, or a Hub repo id) through :func:`evafusion_core.hub.load_pretrained`;
``create_reward_model(preset)`` builds an untrained one.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .model import DIMENSIONS, PRESETS, RewardModel, create_reward_model, promote_rgb, scores_to_dict

REWARD_ARCHITECTURES: dict[str, type[RewardModel]] = {RewardModel.architecture: RewardModel}


def load_reward_model(
    source: str | os.PathLike = "small", device: str | torch.device = "cpu", **kwargs: Any
) -> RewardModel:
    """The reward model named by ``source``: a bundled name (``small``), a folder written by
    ``save_pretrained``, a ``.safetensors`` file with ``config.json`` beside it, or a Hub repo id.
    Returned in eval mode on ``device``."""
    from ..errors import ModelLoadError
    from ..hub import WEIGHTS_DIR, load_pretrained

    text = str(source)
    if text in PRESETS and not (WEIGHTS_DIR / "reward" / text / "config.json").is_file():
        raise ModelLoadError(
            f"no trained weights are bundled for the reward preset {text!r} (expected "
            f"{WEIGHTS_DIR / 'reward' / text}); train one with `evafusion train-reward`, pass a folder or Hub id, "
            f"or use create_reward_model({text!r}) for an untrained network"
        )
    model = load_pretrained(source, REWARD_ARCHITECTURES, kind="reward", **kwargs)
    return model.to(device).eval()


__all__ = [
    "DIMENSIONS",
    "PRESETS",
    "REWARD_ARCHITECTURES",
    "RewardModel",
    "create_reward_model",
    "load_reward_model",
    "promote_rgb",
    "scores_to_dict",
]
