"""Every weight and schedule of reward fine-tuning, as dataclasses with their defaults.

``GRPOConfig`` holds what one optimisation step needs (policy noise, group size, clipping,
KL, fidelity, reward shaping, regions); ``RunConfig`` adds what a training run needs (data,
steps, crops, checkpoints, held-out early stopping). Both round-trip through plain dicts
(``to_dict`` / ``from_dict``), which is what JSON configs and ``--set key.sub=value``
overrides use; unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..losses import FusionLossWeights
from ..overrides import apply_overrides

MODES = ("grpo", "global", "refl")

T = TypeVar("T")


@dataclass
class RewardWeights:
    """Weights of the reward model's five dimensions in the scalar reward (normalised to sum 1).

    Overall carries double weight because it is the headline target; the other four keep the
    policy from trading one quality for another unnoticed.
    """

    thermal: float = 1.0
    texture: float = 1.0
    artifacts: float = 1.0
    sharpness: float = 1.0
    overall: float = 2.0

    def as_list(self) -> list[float]:
        """In ``reward.DIMENSIONS`` order: Thermal, Texture, Artifacts, Sharpness, Overall."""
        return [self.thermal, self.texture, self.artifacts, self.sharpness, self.overall]


@dataclass
class ReFLWeights:
    """The original release's differentiable-reward loss (the ``refl`` baseline):

    ``scale * mean(-artifacts * (1 + white_ratio) * Artifacts - texture * Texture - thermal * Thermal
    - sharpness * Sharpness)`` on 0..1 scores, + fidelity x fusion loss + ``pseudo`` x MSE to the
    pseudo-fusion target (here the frozen reference network's output; 0 disables it, the original
    used 100 with its own pseudo-fusion images), + ``beta`` x the same closed-form KL as GRPO
    (0 in the original).
    """

    scale: float = 0.5
    artifacts: float = 0.5
    texture: float = 2.0
    thermal: float = 1.0
    sharpness: float = 2.0
    pseudo: float = 0.0
    beta: float = 0.0


@dataclass
class RegionConfig:
    """Where region masks come from. ``method``: ``auto`` (SAM when ``sam_checkpoint`` is set, else
    superpixels, logged), ``sam`` (error without a checkpoint) or ``superpixels``."""

    method: str = "auto"
    sam_checkpoint: str | None = None
    sam_model_type: str = "vit_b"
    sam_on: str = "fused"
    points_per_side: int = 16
    pred_iou_thresh: float = 0.86
    stability_score_thresh: float = 0.92
    superpixel_method: str = "slic"
    n_segments: int = 24
    min_area: int | None = None
    max_regions: int = 32


@dataclass
class GRPOConfig:
    """One optimisation step. Defaults follow BRIEF.md (Flow-GRPO / DeepSeekMath / TRL) and were
    checked on CPU with ``light`` at 128-256 px crops."""

    mode: str = "grpo"
    group_size: int = 8
    sigma: float = 0.03
    lr: float = 3e-4
    weight_decay: float = 0.0
    #: Adam betas; a short fine-tune gains from a short memory of the noisy policy gradient.
    adam_betas: tuple[float, float] = (0.9, 0.99)
    lr_warmup_steps: int = 0
    #: Closed-form KL weight: beta * mean((mu - mu_ref)^2) / (2 sigma^2).
    beta: float = 0.04
    clip_eps: float = 0.2
    adv_clip: float = 5.0
    #: Added to the group's std (TRL uses 1e-4).
    adv_eps: float = 1e-4
    #: A group whose reward std is below this counts as "flat" and gets zero advantage.
    flat_std: float = 1e-6
    #: Policy updates per sampled batch (1 = REINFORCE with a group baseline; >1 uses the clipping).
    updates_per_batch: int = 1
    #: Penalty weight of the predicted artifact heatmap's mean inside a region (0..1 scale).
    heatmap_penalty: float = 1.0
    #: Heatmap values at or above this count as "white" (the original's white_ratio).
    heatmap_threshold: float = 0.5
    #: Weight of the fusion loss on the policy mean (the anti-reward-hacking fidelity term). At 1.0 its
    #: single-crop gradient is 10-20x the policy gradient's (measured with light at 192 px), so it would
    #: drown the reward signal; 0.1 keeps it a regulariser, with KL and held-out early stopping behind it.
    fidelity: float = 0.1
    fusion_loss: FusionLossWeights = field(default_factory=FusionLossWeights)
    grad_clip: float = 1.0
    #: How regions are averaged in the surrogate: ``uniform`` (each region counts once, as in
    #: the brief) or ``area`` (by pixel count).
    region_weighting: str = "uniform"
    #: Most images per reward-model forward pass (memory bound).
    reward_chunk: int = 16
    rewards: RewardWeights = field(default_factory=RewardWeights)
    refl: ReFLWeights = field(default_factory=ReFLWeights)
    regions: RegionConfig = field(default_factory=RegionConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode != "refl" and self.group_size < 2:
            raise ValueError(f"group_size must be at least 2 for group-relative advantages, got {self.group_size}")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if self.region_weighting not in ("uniform", "area"):
            raise ValueError(f"region_weighting must be 'uniform' or 'area', got {self.region_weighting!r}")
        if self.updates_per_batch < 1:
            raise ValueError(f"updates_per_batch must be at least 1, got {self.updates_per_batch}")


@dataclass
class EarlyStopConfig:
    """Stop when a held-out metric falls more than ``tolerance`` (relative) below the reference
    network's value at ``patience`` evaluations in a row; the run then keeps the best evaluation
    that passed (highest held-out weighted reward)."""

    metrics: list[str] = field(default_factory=lambda: ["Qabf", "VIF", "MI", "SSIM"])
    tolerance: float = 0.02
    patience: int = 2
    enabled: bool = True


@dataclass
class RunConfig:
    """A training run (``evafusion grpo`` / ``training/train_grpo.py``). Relative paths are resolved
    against the current folder by the CLI and against the repository root by the script."""

    seed: int = 0
    data: list[str] = field(default_factory=lambda: ["../shared/data/ivif/roadscene171"])
    #: Pairs of the training folders held out (evenly spaced by name) for early stopping.
    val_count: int = 8
    #: Separate validation folders; when set, no training pairs are held out.
    val_data: list[str] = field(default_factory=list)
    model: str = "light"
    reward: str = "small"
    steps: int = 1000
    batch_size: int = 1
    crop: int = 192
    device: str = "auto"
    out: str = "runs/grpo_light"
    checkpoint_every: int = 25
    eval_every: int = 50
    #: Held-out images are scaled so their longer side is at most this (0 = full size).
    eval_max_side: int = 320
    #: Stop (and finish normally) after this many minutes of training, summed over resumes; 0 = no limit.
    max_minutes: float = 0.0
    threads: int = 0
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)


# ------------------------------------------------------------------------------------------
# dict round trip and --set overrides
# ------------------------------------------------------------------------------------------


def to_dict(obj: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build dataclass ``cls`` from a (possibly partial) dict; nested dataclasses recurse."""
    data = dict(data or {})
    hints = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {', '.join(unknown)}; known: {', '.join(hints)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = _default_of(hints[name])
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            kwargs[name] = from_dict(type(default), value)
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def run_config_from(data: dict[str, Any] | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- ``data`` (a JSON config) <- ``overrides``, validated."""
    merged = to_dict(RunConfig())
    _deep_update(merged, data or {})
    apply_overrides(merged, overrides or [])
    return from_dict(RunConfig, merged)


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
