"""Reward fine-tuning of fusion networks: region-level GRPO, its global ablation, and the original
release's differentiable-reward (ReFL) recipe as a baseline.

* :class:`GRPOTrainer` - one ``step()`` per batch; used by the CLI, the training script and the
  ComfyUI node.
* :mod:`.objectives` - the math (log-probs, KL, advantages, surrogate, region rewards).
* :func:`run_training` - a whole run with checkpoints, resume, DDP, logs, plots, early stopping.
* :func:`evaluate_pairs` - reward scores, heatmap mass and objective metrics on held-out pairs.
"""

from __future__ import annotations

from ..plot import plot_panels
from .config import (
    MODES,
    EarlyStopConfig,
    GRPOConfig,
    ReFLWeights,
    RegionConfig,
    RewardWeights,
    RunConfig,
    apply_overrides,
    from_dict,
    run_config_from,
    to_dict,
)
from .evaluate import evaluate_pairs, fit_pair, load_pairs, relative_to
from .objectives import (
    clipped_surrogate,
    gaussian_kl,
    gaussian_log_prob,
    group_advantages,
    log_ratio,
    refl_reward_loss,
    region_means,
    region_rewards,
    weighted_score,
)
from .plot import save_training_plot, training_panels
from .run import load_policy, run_training, time_one_step
from .trainer import GRPOTrainer, make_region_fn

__all__ = [
    "MODES",
    "EarlyStopConfig",
    "GRPOConfig",
    "GRPOTrainer",
    "ReFLWeights",
    "RegionConfig",
    "RewardWeights",
    "RunConfig",
    "apply_overrides",
    "clipped_surrogate",
    "evaluate_pairs",
    "fit_pair",
    "from_dict",
    "gaussian_kl",
    "gaussian_log_prob",
    "group_advantages",
    "load_pairs",
    "load_policy",
    "log_ratio",
    "make_region_fn",
    "plot_panels",
    "refl_reward_loss",
    "region_means",
    "region_rewards",
    "relative_to",
    "run_config_from",
    "run_training",
    "save_training_plot",
    "time_one_step",
    "to_dict",
    "training_panels",
    "weighted_score",
]
