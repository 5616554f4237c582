"""``GRPOTrainer``: reward fine-tuning of a fusion network, one ``step()`` at a time.

Three modes share one trainer (``GRPOConfig.mode``):

``grpo`` (region GRPO)
    For each input pair: compute region masks once (SAM or superpixels) and share them across
    the group; draw G samples ``y = mu_old + sigma * xi``; score each with the frozen reward
    model; region reward ``r[g,k] = weighted score[g] - penalty * heatmap mass of sample g in
    region k``; advantages normalised within the group region by region and clipped; region
    log-ratio = mean over the region's pixels of ``log pi_theta - log pi_old``; loss = clipped
    surrogate + beta * closed-form KL to the frozen reference + fidelity * fusion loss.
``global``
    The ablation: one region (the whole image), one advantage per sample.
``refl``
    The original release's recipe: back-propagate the reward model's scores into the network
    (``ReFLWeights``), plus the fusion loss and an optional pseudo-fusion MSE.

The trainer owns the optimiser, the noise generator and the step counter; it never copies the
policy (callers that must not mutate their model, like the ComfyUI node, pass a copy). Under
``torch.distributed`` it averages gradients over ranks before clipping, so every rank applies
the same update.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..colour import luma, recolour
from ..losses import fusion_loss
from .config import GRPOConfig
from .objectives import (
    clipped_surrogate,
    gaussian_kl,
    group_advantages,
    log_ratio,
    refl_reward_loss,
    region_means,
    region_rewards,
    weighted_score,
)

log = logging.getLogger(__name__)

OVERALL = 4  # column of the reward model's scores (DIMENSIONS order)

RegionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_region_fn(config: GRPOConfig, sam: Any = None) -> tuple[RegionFn, str]:
    """The region proposer the config asks for, and a sentence saying which one it is (for the log)."""
    from ..regions import load_sam, propose_regions

    rc = config.regions
    if rc.method not in ("auto", "sam", "superpixels"):
        raise ValueError(f"unknown region method {rc.method!r}; choose auto, sam or superpixels")
    if sam is None and rc.method in ("auto", "sam") and rc.sam_checkpoint:
        sam = load_sam(rc.sam_checkpoint, rc.sam_model_type)
    if rc.method == "sam" and sam is None:
        raise ValueError("regions.method='sam' needs regions.sam_checkpoint (a .pth, a folder or a Hub id)")
    if sam is not None and rc.method != "superpixels":
        desc = f"SAM {getattr(sam, 'model_type', '')} automatic masks on the {rc.sam_on} image".replace("  ", " ")

        def fn(ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
            return propose_regions(ir, vis, fused, "sam", sam=sam, sam_on=rc.sam_on, min_area=rc.min_area,
                                   max_regions=rc.max_regions, points_per_side=rc.points_per_side,
                                   pred_iou_thresh=rc.pred_iou_thresh, stability_score_thresh=rc.stability_score_thresh)
    else:
        why = "chosen in the config" if rc.method == "superpixels" else "no SAM checkpoint configured"
        desc = f"{rc.superpixel_method} superpixels over IR + visible ({why})"

        def fn(ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
            return propose_regions(ir, vis, fused, "superpixels", superpixel_method=rc.superpixel_method,
                                   n_segments=rc.n_segments, min_area=rc.min_area, max_regions=rc.max_regions)
    return fn, desc


def _dist_world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GRPOTrainer:
    """Fine-tunes ``policy`` (a fusion network, trained in place) against a frozen ``reward_model``.

    ``step(ir, vis, regions=None)`` runs one batch and returns a dict of numbers for the log;
    ``train(batches, steps, on_step=..., should_stop=...)`` loops, for the CLI and the node.
    ``ir``/``vis`` are [B,C,H,W] in 0..1 (C 1 or 3; the network sees luma, the reward model the
    recoloured fusion). ``regions``: optional list of B label maps [H,W] (else proposed here).
    """

    def __init__(
        self,
        policy: nn.Module,
        reward_model: nn.Module,
        config: GRPOConfig | None = None,
        *,
        reference: nn.Module | None = None,
        region_fn: RegionFn | None = None,
        sam: Any = None,
        device: str | torch.device | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config or GRPOConfig()
        cfg = self.config
        self.device = torch.device(device) if device is not None else next(policy.parameters()).device
        self.policy = policy.to(self.device).eval()  # eval: no dropout/BN noise; mu_old and mu must agree
        for p in self.policy.parameters():
            p.requires_grad_(True)
        self.reference = freeze((reference if reference is not None else copy.deepcopy(policy)).to(self.device))
        self.reward_model = freeze(reward_model.to(self.device))
        self.optimizer = torch.optim.Adam(
            [p for p in self.policy.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay,
            betas=tuple(cfg.adam_betas),
        )
        warm = max(0, int(cfg.lr_warmup_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0
        )
        self.generator = torch.Generator().manual_seed(int(seed))
        self.step_count = 0
        self.region_desc = "whole image (global variant)" if cfg.mode == "global" else "none (refl)"
        self.region_fn = region_fn
        if cfg.mode == "grpo" and region_fn is None:
            self.region_fn, self.region_desc = make_region_fn(cfg, sam)
            log.info("GRPO regions: %s", self.region_desc)
        elif cfg.mode == "grpo":
            self.region_desc = "caller-provided"

    # -- reward ------------------------------------------------------------------------------
    def _reward_outputs(self, fused_y: torch.Tensor, ir_y: torch.Tensor, vis_c: torch.Tensor):
        """Scores [N,5] (0..1) and heatmap [N,1,H,W] (0..1, at the image size) for fused luma ``fused_y``."""
        fused_rgb = recolour(fused_y.clamp(0, 1), vis_c)
        out = self.reward_model(fused_rgb, ir_y, vis_c)
        heat = torch.sigmoid(out["heatmap_logits"].float())
        heat = F.interpolate(heat, size=fused_y.shape[-2:], mode="bilinear", align_corners=False)
        return out["scores"].float(), heat

    @torch.no_grad()
    def _score_chunked(self, fused_y, ir_y, vis_c) -> tuple[torch.Tensor, torch.Tensor]:
        n, chunk = fused_y.shape[0], max(1, self.config.reward_chunk)
        parts = [self._reward_outputs(fused_y[i : i + chunk], ir_y[i : i + chunk], vis_c[i : i + chunk])
                 for i in range(0, n, chunk)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    # -- one step ----------------------------------------------------------------------------
    def _prepare(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if ir.ndim == 3:
            ir, vis = ir[None], vis[None]
        if ir.shape[0] != vis.shape[0] or ir.shape[-2:] != vis.shape[-2:]:
            raise ValueError(f"IR {tuple(ir.shape)} and visible {tuple(vis.shape)} batches do not match")
        ir_y = luma(ir.float()).to(self.device)
        vis_c = vis.float().to(self.device)
        if vis_c.shape[1] == 1:
            vis_c = vis_c.expand(-1, 3, -1, -1)
        return ir_y, luma(vis_c), vis_c[:, :3]

    def step(self, ir: torch.Tensor, vis: torch.Tensor, regions: Sequence[torch.Tensor] | None = None) -> dict:
        """One batch: sample, score, update (``updates_per_batch`` times). Returns the log record."""
        t0 = time.perf_counter()
        ir_y, vis_y, vis_c = self._prepare(ir, vis)
        if self.config.mode == "refl":
            rec = self._step_refl(ir_y, vis_y, vis_c)
        else:
            rec = self._step_grpo(ir_y, vis_y, vis_c, regions)
        self.scheduler.step()
        self.step_count += 1
        rec.update(step=self.step_count, mode=self.config.mode, lr=self.optimizer.param_groups[0]["lr"],
                   sec=time.perf_counter() - t0)
        return rec

    def _apply(self, loss: torch.Tensor) -> float:
        """Backward, average gradients across ranks, clip, step; returns the pre-clip gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.policy.parameters() if p.requires_grad]
        world = _dist_world()
        if world > 1:
            import torch.distributed as dist

            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= world
            offset = 0
            for p in params:
                n = p.numel()
                p.grad = flat[offset : offset + n].view_as(p).clone()
                offset += n
        norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        return float(norm)

    def _regions_for(self, b: int, ir_y, vis_c, mu_old, regions) -> torch.Tensor:
        h, w = ir_y.shape[-2:]
        if self.config.mode == "global":
            return torch.ones(1, h, w, dtype=torch.bool, device=self.device)
        from ..regions import regions_to_masks

        if regions is not None:
            lab = torch.as_tensor(regions[b])
        else:
            fused = recolour(mu_old[b : b + 1], vis_c[b : b + 1])[0].cpu()
            lab = self.region_fn(ir_y[b].cpu(), vis_c[b].cpu(), fused)
        if tuple(lab.shape) != (h, w):
            raise ValueError(f"region map {tuple(lab.shape)} does not match the image size {(h, w)}")
        return regions_to_masks(lab.long()).to(self.device)

    def _step_grpo(self, ir_y, vis_y, vis_c, regions) -> dict:
        cfg = self.config
        b, g, sigma = ir_y.shape[0], cfg.group_size, cfg.sigma
        t0 = time.perf_counter()
        with torch.no_grad():
            mu_old = self.policy(ir_y, vis_y).float()
            mu_ref = self.reference(ir_y, vis_y).float()
        t_forward = time.perf_counter() - t0
        t0 = time.perf_counter()
        masks = [self._regions_for(i, ir_y, vis_c, mu_old, regions) for i in range(b)]
        t_regions = time.perf_counter() - t0

        t0 = time.perf_counter()
        xi = torch.randn((b, g, *mu_old.shape[1:]), generator=self.generator).to(self.device)
        y = mu_old[:, None] + sigma * xi  # [B,G,1,H,W]; the reward sees clamp(y), the log-prob uses y
        # Score the G samples, the noise-free mean (the clean learning curve) and the reference's output on
        # the same crop (its gain over the reference, free of crop-to-crop variation) in one pass.
        fused = torch.cat([mu_old[:, None], y, mu_ref[:, None]], dim=1).flatten(0, 1)
        rep = lambda t: t[:, None].expand(-1, g + 2, *t.shape[1:]).flatten(0, 1)  # noqa: E731
        scores, heat = self._score_chunked(fused, rep(ir_y), rep(vis_c))
        scores, heat = scores.view(b, g + 2, -1), heat.view(b, g + 2, *heat.shape[1:])
        score_w = weighted_score(scores.flatten(0, 1), cfg.rewards.as_list()).view(b, g + 2)
        ref_w, ref_scores, ref_heat = score_w[:, -1], scores[:, -1], heat[:, -1]
        score_w, scores, heat = score_w[:, :-1], scores[:, :-1], heat[:, :-1]
        advantages, stats_flat, stats_std, heat_mass, region_counts = [], [], [], [], []
        for i in range(b):
            r, mass = region_rewards(score_w[i, 1:], heat[i, 1:], masks[i], cfg.heatmap_penalty)
            adv, flat = group_advantages(r, eps=cfg.adv_eps, clip=cfg.adv_clip, flat_std=cfg.flat_std)
            advantages.append(adv)
            stats_flat.append(flat.float().mean())
            stats_std.append(r.std(0, unbiased=False).mean())
            heat_mass.append(mass.mean())
            region_counts.append(float(masks[i].shape[0]))
        t_reward = time.perf_counter() - t0

        t0 = time.perf_counter()
        for u in range(cfg.updates_per_batch):
            mu = self.policy(ir_y, vis_y).float()
            lr_pix = log_ratio(y, mu[:, None], mu_old[:, None], sigma)  # [B,G,1,H,W]
            pg_losses, ratio_stats = [], []
            for i in range(b):
                l_gk = region_means(lr_pix[i], masks[i])  # [G,K]
                weights = None
                if cfg.region_weighting == "area":
                    weights = masks[i].flatten(1).float().sum(1)[None] / masks[i][0].numel()
                pg, st = clipped_surrogate(l_gk, advantages[i], cfg.clip_eps, weights)
                pg_losses.append(pg)
                ratio_stats.append(st)
            pg_loss = torch.stack(pg_losses).mean()
            kl = gaussian_kl(mu, mu_ref, sigma)
            fid, fid_parts = fusion_loss(mu, ir_y, vis_y, cfg.fusion_loss)
            loss = pg_loss + cfg.beta * kl + cfg.fidelity * fid
            grad_norm = self._apply(loss)
            if u == 0:
                first = {"rho_first_max_dev": max(s["rho_max_dev"] for s in ratio_stats)}
        t_update = time.perf_counter() - t0

        adv_all = torch.cat([a.flatten() for a in advantages])
        return {
            "loss": loss.item(), "pg_loss": pg_loss.item(), "kl": kl.item(), "fidelity": fid.item(),
            "reward": float(score_w[:, 1:].mean()), "reward_mu": float(score_w[:, 0].mean()),
            "reward_std": float(torch.stack(stats_std).mean()),
            "overall": float(scores[:, 1:, OVERALL].mean() * 5), "overall_mu": float(scores[:, 0, OVERALL].mean() * 5),
            "heat_mass": float(torch.stack(heat_mass).mean()), "heat_mass_mu": float(heat[:, 0].mean()),
            "reward_gain": float((score_w[:, 0] - ref_w).mean()),
            "overall_gain": float((scores[:, 0, OVERALL] - ref_scores[:, OVERALL]).mean() * 5),
            "heat_gain": float((heat[:, 0] - ref_heat).mean()),
            "adv_abs": float(adv_all.abs().mean()), "adv_std": float(adv_all.std(unbiased=False)),
            "flat_frac": float(torch.stack(stats_flat).mean()), "regions": sum(region_counts) / len(region_counts),
            "rho_mean": sum(s["rho_mean"] for s in ratio_stats) / len(ratio_stats),
            "clip_frac": sum(s["clip_frac"] for s in ratio_stats) / len(ratio_stats),
            **first, "grad_norm": grad_norm,
            **{f"fid_{k}": v for k, v in fid_parts.items()},
            "t_forward": t_forward, "t_regions": t_regions, "t_reward": t_reward, "t_update": t_update,
        }

    def _step_refl(self, ir_y, vis_y, vis_c) -> dict:
        cfg, rw = self.config, self.config.refl
        t0 = time.perf_counter()
        mu = self.policy(ir_y, vis_y).float()
        scores, heat = self._reward_outputs(mu, ir_y, vis_c)
        white = (heat.detach() >= cfg.heatmap_threshold).float().flatten(1).mean(1)  # per image, not differentiated
        reward_loss = refl_reward_loss(scores, white, scale=rw.scale, artifacts=rw.artifacts, texture=rw.texture,
                                       thermal=rw.thermal, sharpness=rw.sharpness)
        fid, fid_parts = fusion_loss(mu, ir_y, vis_y, cfg.fusion_loss)
        loss = reward_loss + cfg.fidelity * fid
        with torch.no_grad():
            mu_ref = self.reference(ir_y, vis_y).float()
            ref_scores, ref_heat = self._reward_outputs(mu_ref, ir_y, vis_c)
        kl = gaussian_kl(mu, mu_ref, cfg.sigma)
        if rw.beta:
            loss = loss + rw.beta * kl
        pseudo = F.mse_loss(mu, mu_ref)
        if rw.pseudo:
            loss = loss + rw.pseudo * pseudo
        grad_norm = self._apply(loss)
        scores, heat = scores.detach(), heat.detach()
        score_w = weighted_score(scores, cfg.rewards.as_list())
        return {
            "loss": loss.item(), "reward_loss": reward_loss.item(), "kl": kl.item(), "fidelity": fid.item(),
            "pseudo_mse": pseudo.item(), "white_ratio": float(white.mean()),
            "reward": float(score_w.mean()), "reward_mu": float(score_w.mean()),
            "overall": float(scores[:, OVERALL].mean() * 5), "overall_mu": float(scores[:, OVERALL].mean() * 5),
            "heat_mass": float(heat.mean()), "heat_mass_mu": float(heat.mean()), "grad_norm": grad_norm,
            "reward_gain": float((score_w - weighted_score(ref_scores, cfg.rewards.as_list())).mean()),
            "overall_gain": float((scores[:, OVERALL] - ref_scores[:, OVERALL]).mean() * 5),
            "heat_gain": float((heat - ref_heat).mean()),
            **{f"fid_{k}": v for k, v in fid_parts.items()}, "t_update": time.perf_counter() - t0,
        }

    # -- loops and state -----------------------------------------------------------------------
    def train(
        self,
        batches: Callable[[int], tuple],
        steps: int,
        *,
        on_step: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[dict]:
        """Run ``steps`` steps; ``batches(i)`` returns ``(ir, vis)`` or ``(ir, vis, regions)``.
        ``on_step(record)`` after each step (progress bars, logs); ``should_stop()`` before each
        (cancel buttons, time budgets)."""
        records = []
        for i in range(steps):
            if should_stop is not None and should_stop():
                break
            batch = batches(i)
            rec = self.step(batch[0], batch[1], batch[2] if len(batch) > 2 else None)
            records.append(rec)
            if on_step is not None:
                on_step(rec)
        return records

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, scheduler, noise generator and step count (the policy's weights are saved apart)."""
        return {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(), "step": self.step_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.step_count = int(state["step"])
