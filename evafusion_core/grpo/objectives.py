"""The pure math of policy-gradient fine-tuning for a deterministic fusion network.

Policy: ``y = mu_theta(ir, vis) + sigma * xi`` with ``xi ~ N(0, I)`` and ``sigma`` fixed, so
per pixel ``log pi(y) = -(y - mu)^2 / (2 sigma^2) - log(sigma) - log(2 pi) / 2``.

Everything here is a small function of tensors, testable on hand-made numbers: log-probs,
the closed-form KL between two such policies, group-normalised clipped advantages, region
means of per-pixel quantities, the clipped surrogate, and region rewards.
"""

from __future__ import annotations

import math

import torch

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_prob(y: torch.Tensor, mu: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-element log density of ``y`` under N(mu, sigma^2)."""
    return -((y - mu) ** 2) / (2 * sigma**2) - math.log(sigma) - _HALF_LOG_2PI


def log_ratio(y: torch.Tensor, mu_new: torch.Tensor, mu_old: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-element ``log pi_new(y) - log pi_old(y)`` for a shared sigma (the constants cancel)."""
    return ((y - mu_old) ** 2 - (y - mu_new) ** 2) / (2 * sigma**2)


def gaussian_kl(mu: torch.Tensor, mu_ref: torch.Tensor, sigma: float) -> torch.Tensor:
    """Mean per-pixel KL(N(mu, s^2) || N(mu_ref, s^2)) = mean((mu - mu_ref)^2) / (2 s^2), a scalar."""
    return ((mu - mu_ref) ** 2).mean() / (2 * sigma**2)


def group_advantages(
    rewards: torch.Tensor, *, eps: float = 1e-4, clip: float = 5.0, flat_std: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative advantages of ``rewards`` [G, ...] (group along dim 0, e.g. [G, K] regions).

    ``A = clip((r - mean_g r) / (std_g r + eps), -clip, clip)`` with the population std (the
    group is all there is, not a sample of a larger population). Groups whose std is below
    ``flat_std`` carry no signal, only float noise: their advantage is exactly 0.
    Returns ``(A, flat)`` where ``flat`` [...] marks those groups.
    """
    if rewards.shape[0] < 2:
        raise ValueError(f"a group needs at least 2 samples, got {rewards.shape[0]}")
    mean = rewards.mean(0, keepdim=True)
    std = rewards.std(0, unbiased=False, keepdim=True)
    adv = ((rewards - mean) / (std + eps)).clamp(-clip, clip)
    flat = std[0] < flat_std
    adv = torch.where(flat.unsqueeze(0), torch.zeros_like(adv), adv)
    return adv, flat


def region_means(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` [N, H, W] (or [N, 1, H, W]) over each of ``masks`` [K, H, W] -> [N, K]."""
    if x.ndim == 4:
        x = x[:, 0]
    m = masks.to(x.dtype).flatten(1)  # [K, HW]
    area = m.sum(1).clamp_min(1.0)
    return x.flatten(1) @ m.t() / area


def clipped_surrogate(
    logratio: torch.Tensor, advantages: torch.Tensor, clip_eps: float, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped objective as a loss to minimise: ``-mean(min(rho A, clip(rho, 1-eps, 1+eps) A))``.

    ``logratio`` and ``advantages`` have the same shape; ``weights`` (same shape, or broadcastable)
    turns the mean into a weighted mean. Also returns the ratio's statistics for the log.
    """
    rho = torch.exp(logratio)
    unclipped = rho * advantages
    clipped = rho.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    obj = torch.minimum(unclipped, clipped)
    if weights is None:
        loss = -obj.mean()
    else:
        w = weights.expand_as(obj)
        loss = -(obj * w).sum() / w.sum().clamp_min(1e-12)
    with torch.no_grad():
        stats = {
            "rho_mean": float(rho.mean()),
            "rho_max_dev": float((rho - 1).abs().max()),
            "clip_frac": float(((rho - 1).abs() > clip_eps).float().mean()),
        }
    return loss, stats


def weighted_score(scores: torch.Tensor, weights: list[float] | torch.Tensor) -> torch.Tensor:
    """[N, 5] reward-model scores (0..1) -> [N] weighted mean with ``weights`` (normalised to sum 1)."""
    w = torch.as_tensor(weights, dtype=scores.dtype, device=scores.device)
    if w.sum() <= 0:
        raise ValueError("reward weights must have a positive sum")
    return scores @ (w / w.sum())


def region_rewards(
    score: torch.Tensor, heatmap: torch.Tensor, masks: torch.Tensor, penalty: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-region rewards ``r[g, k] = score[g] - penalty * mean(heatmap[g] over region k)``.

    ``score`` [G], ``heatmap`` [G, 1, H, W] in 0..1, ``masks`` [K, H, W]. The global score says *how
    good* each sample is; the heatmap mass inside a region says *where* it went wrong, so after
    normalising within the group region by region, a sample's advantage differs between regions
    exactly where its artifacts differ from its siblings'. Returns ``(r [G, K], heat_mass [G, K])``.
    """
    mass = region_means(heatmap, masks)
    return score[:, None] - penalty * mass, mass


def refl_reward_loss(
    scores: torch.Tensor,
    white_ratio: torch.Tensor,
    *,
    scale: float = 0.5,
    artifacts: float = 0.5,
    texture: float = 2.0,
    thermal: float = 1.0,
    sharpness: float = 2.0,
) -> torch.Tensor:
    """The original release's reward term on [N,5] scores (0..1, DIMENSIONS order) and [N] white ratios:
    ``scale * mean(-artifacts * (1 + white) * Artifacts - texture * Texture - thermal * Thermal
    - sharpness * Sharpness)``. Every score enters with a negative sign: raising one lowers the loss."""
    per_image = -(artifacts * (1 + white_ratio) * scores[:, 2] + texture * scores[:, 1] + thermal * scores[:, 0]
                  + sharpness * scores[:, 3])
    return scale * per_image.mean()
