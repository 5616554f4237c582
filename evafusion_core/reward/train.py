"""Training the reward model: synthetic artifacts (or a human-feedback folder), one or many processes.

    python training/train_reward.py --config training/configs/reward_small.json [--resume]
    torchrun --nproc_per_node 2 training/train_reward.py --config ... # DistributedDataParallel
    evafusion train-reward ...                                        # the same function

Data: synthetic samples from the training split of the configured IVIF sets (the source
pairs that ``is_test_pair`` holds out, which ``evafusion eval-reward --split test`` scores,
never appear), generated at the model's input size (or, with ``source_sizes``, from the sources
loaded at each listed size in turn, one size per batch: smaller ones reach the network upsampled, as
small inputs do); or, with ``--hf DIR``, the ``train``
split of a human-feedback folder; or a weighted mix (config ``sources``, or ``--feedback
DIR=W`` and ``--synthetic-weight W``) that adds feedback folders written by the Rate Fusion
and Compare Fusions nodes. ``init`` in the config starts from saved weights, and ``freeze:
"features"`` then trains the five score heads alone (what ``reward_feedback.json`` does), ``"encoder"``
the heads and the heatmap decoder (drawn artifact masks then train the heatmap).
Loss: MSE of the five sigmoid outputs against score/5 (optionally weighted per dimension),
plus MSE and BCE of the heatmap, plus a Bradley-Terry ranking loss on Overall for
pairwise preferences (``loss.ranking``, ``preference_batch`` pairs per step), and optionally
the same on every dimension between synthetic samples of one source pair (``loss.pair_ranking``
with ``synthetic.paired``).
AdamW with linear warm-up and a cosine decay. Every step is logged to ``<out>/log.jsonl``;
checkpoints (weights, optimiser, scheduler, step, RNG) are atomic, and a batch depends
only on (seed, step, rank), so ``--resume`` continues a killed run exactly, and DataLoader
workers (config ``workers``; by default none on the CPU, up to 8 on a GPU) build batches ahead. ``time_budget_s``
replaces ``steps``: the pace measured during the warm-up fixes the step count, fitted again on the
wall-clock pace at each checkpoint in the first half (the count is kept in the checkpoint, so a resumed run
keeps it), and the cosine schedule then ends on time.
``<out>/plot.png`` (losses, learning rate, validation PLCC and heatmap scores) is redrawn at
every checkpoint. The final
network is written with ``save_pretrained`` to ``<out>/final``.

Processes: under ``torchrun`` (WORLD_SIZE > 1) each rank draws its own samples, gradients
are averaged by DDP (gloo on CPU, nccl on CUDA), rank 0 logs and checkpoints.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .model import RewardModel

log = logging.getLogger("train_reward")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "training" / "configs" / "reward_small.json"


def resolve_path(path: str | os.PathLike) -> Path:
    """A path from a training config: absolute, or relative to the repository root (where configs name
    ``../shared/data/...``), whatever the working directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (ROOT / p).resolve()


def build_model(cfg: dict[str, Any]):
    """The network a training config describes. With ``init``, the architecture is the saved model's
    (its config.json) with the config's ``model`` values other than ``preset`` applied on top: a
    config that names only the preset must not build a network whose weights no longer fit (another
    input size, other heads) and so silently start part of the saved model afresh."""
    from .model import RewardModel, create_reward_model

    m = dict(cfg.get("model", {}))
    preset = m.pop("preset", "small")
    if not cfg.get("init"):
        return create_reward_model(preset, **m)
    path = resolve_path(cfg["init"]) / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"init: cannot read the saved model's config {path} ({exc})") from exc
    return RewardModel(**{**RewardModel.init_args(saved), "pretrained_backbone": False, **m})


def init_from(model, folder: str | os.PathLike) -> list[str]:
    """Start from saved weights (a ``save_pretrained`` folder); see :func:`carry_state`. Returns the
    names that could not be carried over (left as initialised)."""
    from safetensors.torch import load_file

    return carry_state(model, load_file(str(Path(folder) / "model.safetensors")))


def carry_state(model, saved: dict[str, torch.Tensor]) -> list[str]:
    """Copy ``saved`` into ``model`` in place: tensors of the same shape are copied; a convolution or
    linear layer that gained inputs keeps the old weights and zeroes the new, so the grown model starts
    out computing what the saved one did. Returns the names that could not be carried over."""
    state = model.state_dict()
    skipped = []
    with torch.no_grad():
        for name, t in state.items():
            old = saved.get(name)
            if old is None:
                skipped.append(name)
            elif old.shape == t.shape:
                t.copy_(old)
            elif old.ndim in (2, 4) and old.ndim == t.ndim and old.shape[0] == t.shape[0] \
                    and old.shape[2:] == t.shape[2:] and old.shape[1] < t.shape[1]:
                t.zero_()
                t[:, : old.shape[1]] = old
            else:
                skipped.append(name)
    return skipped


#: What a training config may ``freeze``, and which of the model's parts each setting leaves trainable:
#: nothing frozen (None); everything but the five score heads ("features": the heatmap, and every
#: normalisation statistic, then stay as saved); or the encoder ("encoder": the backbone, the early-fusion
#: branch and the token mixer stay, the heads and the heatmap decoder learn, so the artifact masks raters
#: draw train the heatmap while the features the heads read from the images keep their synthetic training).
FREEZE: tuple[str | None, ...] = (None, "features", "encoder")
TRAINABLE: dict[str, tuple[str, ...]] = {"features": ("heads",), "encoder": ("heads", *RewardModel.decoder_parts)}


def apply_freeze(model: torch.nn.Module, freeze: str | None) -> list[torch.nn.Parameter]:
    """Mark what ``freeze`` leaves trainable and return those parameters (for the optimiser).

    Why: in a short fine-tune on human ratings (``reward_feedback.json``), heads trained on frozen
    features took up the raters' taste as far as a whole-network fine-tune did for about half the loss
    of synthetic-benchmark PLCC, at about half the time per step (docs/RESULTS.md, fifteenth session)."""
    if freeze not in FREEZE:
        raise ValueError(f"freeze must be one of {FREEZE}, got {freeze!r}")
    for name, p in model.named_parameters():
        p.requires_grad_(freeze is None or name.split(".")[0] in TRAINABLE[freeze])
    return [p for p in model.parameters() if p.requires_grad]


def train_mode(model: torch.nn.Module, freeze: str | None) -> None:
    """``model.train()``, with the frozen parts kept in eval mode so their normalisation statistics
    stay as saved."""
    model.train()
    if freeze is not None:
        for name, child in model.named_children():
            if name not in TRAINABLE[freeze]:
                child.eval()


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine from 1 to ``min_ratio`` at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _map_losses(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE and BCE of predicted map logits against a 0..1 target pooled to their resolution."""
    if target.shape[-2:] != logits.shape[-2:]:
        target = F.adaptive_avg_pool2d(target, logits.shape[-2:])
    return F.mse_loss(torch.sigmoid(logits), target), F.binary_cross_entropy_with_logits(logits, target)


def heatmap_rank_loss(logits: torch.Tensor, target: torch.Tensor, per_side: int = 256) -> torch.Tensor:
    """Logistic loss on each damaged pixel's logit minus each undamaged pixel's, per image.

    AUC-Judd asks that every pixel the truth marks (however faintly) rank above the unmarked ones;
    MSE and BCE barely care about a faint edge at 0.05 against a clean pixel at 0.02, this loss does.
    Up to ``per_side`` evenly spaced pixels of each kind (deterministic); images whose pooled truth is
    empty or covers everything are skipped. Zero when no image has both kinds."""
    if target.shape[-2:] != logits.shape[-2:]:
        target = F.adaptive_avg_pool2d(target, logits.shape[-2:])
    from .evaluate import FIXATION_THRESHOLD

    losses = []
    for z, t in zip(logits.flatten(1), target.flatten(1)):
        marked = t > FIXATION_THRESHOLD
        pos, neg = z[marked], z[~marked]
        if not len(pos) or not len(neg):
            continue
        pos = pos[torch.linspace(0, len(pos) - 1, min(per_side, len(pos)), device=z.device).long()]
        neg = neg[torch.linspace(0, len(neg) - 1, min(per_side, len(neg)), device=z.device).long()]
        losses.append(F.softplus(neg[None, :] - pos[:, None]).mean())
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


def dimension_weights(weights: dict[str, Any]) -> list[float]:
    """The per-dimension weights of the score losses (``loss.dim_weights``); all 1 when not given."""
    from .model import DIMENSIONS

    return [float(w) for w in weights.get("dim_weights") or [1.0] * len(DIMENSIONS)]


def reward_loss(out: dict[str, torch.Tensor], scores: torch.Tensor, heatmap: torch.Tensor,
                weights: dict[str, float], dimension_maps: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE on score/5 (per dimension, averaged), heatmap MSE and BCE at the decoder's resolution (and
    with weight ``heatmap_rank`` the ranking loss of :func:`heatmap_rank_loss`), and
    the same for the dimension maps when the model predicts them and the batch has them (weights
    ``dimension_mse`` and ``dimension_bce``, by default the heatmap's)."""
    dim_w = torch.as_tensor(dimension_weights(weights), dtype=scores.dtype, device=scores.device)
    score_mse = ((out["scores"] - scores / 5.0).square().mean(0) * dim_w).sum() / dim_w.sum()
    heat_mse, heat_bce = _map_losses(out["heatmap_logits"], heatmap)
    loss = weights.get("score", 1.0) * score_mse + weights.get("heatmap_mse", 1.0) * heat_mse
    loss = loss + weights.get("heatmap_bce", 0.0) * heat_bce
    parts = {"score_mse": score_mse.item(), "heatmap_mse": heat_mse.item(), "heatmap_bce": heat_bce.item()}
    if weights.get("heatmap_rank", 0.0):
        rank = heatmap_rank_loss(out["heatmap_logits"], heatmap)
        loss = loss + weights["heatmap_rank"] * rank
        parts["heatmap_rank"] = rank.item()
    if "dimension_logits" in out and dimension_maps is not None:
        dmse, dbce = _map_losses(out["dimension_logits"], dimension_maps)
        loss = loss + weights.get("dimension_mse", weights.get("heatmap_mse", 1.0)) * dmse
        loss = loss + weights.get("dimension_bce", weights.get("heatmap_bce", 0.0)) * dbce
        parts.update(dimension_mse=dmse.item(), dimension_bce=dbce.item())
    return loss, parts


class _HFBatches:
    """Batches from the ``train`` split of a human-feedback folder, resized to the model's input."""

    def __init__(self, path: str, size: int, seed: int) -> None:
        from ..data.hf_format import HFRewardDataset

        self.data = HFRewardDataset(path, "train")
        self.size, self.seed = size, seed

    def batch(self, step: int, rank: int, batch_size: int) -> dict[str, torch.Tensor]:
        from ..data.synthetic import collate
        from ..io import resize_to

        g = np.random.default_rng([self.seed, step, rank])
        items = []
        for i in g.integers(len(self.data), size=batch_size):
            s = dict(self.data[int(i)])
            for k in ("fused", "ir", "vis", "heatmap"):
                s[k] = resize_to(s[k], (self.size, self.size))
            items.append(s)
        return collate(items)


class _FeedbackBatches:
    """Batches of pooled ratings from a feedback folder (already at the model's input size)."""

    def __init__(self, data, seed: int) -> None:
        self.data, self.seed = data, seed

    def batch(self, step: int, rank: int, batch_size: int) -> dict[str, torch.Tensor]:
        from ..data.synthetic import collate

        g = np.random.default_rng([self.seed, step, rank, 1])
        return collate([self.data.samples[int(i)] for i in g.integers(len(self.data.samples), size=batch_size)])


class _SyntheticBatches:
    """Batches of synthetic samples; with several datasets (one per source size), step k draws from
    dataset k mod n, so a batch has one image size and a paired sample keeps its partner."""

    def __init__(self, datasets: Sequence[Any], world: int) -> None:
        self.datasets, self.world = list(datasets), world

    def batch(self, step: int, rank: int, batch_size: int) -> dict[str, torch.Tensor]:
        from ..data.synthetic import collate

        data = self.datasets[step % len(self.datasets)]
        start = (step * self.world + rank) * batch_size
        return collate([data.sample(start + j) for j in range(batch_size)])


class _MixedBatches:
    """Each batch drawn from several sources, in proportion to their weights (a multinomial per step,
    seeded by step and rank, so a resumed run sees the same batches)."""

    def __init__(self, parts: list[tuple[Any, float]], seed: int) -> None:
        self.parts = [(b, w) for b, w in parts if w > 0]
        if not self.parts:
            raise ValueError("every training source has weight 0: nothing to train on")
        total = sum(w for _, w in self.parts)
        self.p = [w / total for _, w in self.parts]
        self.seed = seed

    def batch(self, step: int, rank: int, batch_size: int) -> dict[str, torch.Tensor]:
        if len(self.parts) == 1:
            return self.parts[0][0].batch(step, rank, batch_size)
        counts = np.random.default_rng([self.seed, step, rank, 2]).multinomial(batch_size, self.p)
        got = [b.batch(step, rank, int(n)) for (b, _), n in zip(self.parts, counts) if n > 0]
        # Keys every part has: synthetic dimension maps are dropped from a batch mixed with human ratings.
        return {k: torch.cat([g[k] for g in got]) for k in got[0] if all(k in g for g in got)}


class _StepBatches(torch.utils.data.Dataset):
    """Item ``step`` is that step's batch. A batch depends only on (seed, step, rank), so DataLoader
    workers can build batches ahead of the training loop and a resumed run still sees the same ones."""

    def __init__(self, batches: _MixedBatches, rank: int, batch_size: int) -> None:
        self.batches, self.rank, self.batch_size = batches, rank, batch_size

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        return self.batches.batch(step, self.rank, self.batch_size)


def _batch_stream(batches: _MixedBatches | None, rank: int, batch_size: int, start: int, workers: int, pin: bool):
    """Batches for steps ``start, start + 1, ...`` in order, without end (a time budget may move the end):
    built in this process (``workers`` 0), or by that many worker processes ahead of time, which keeps a
    GPU busy while the CPU makes synthetic samples."""
    import itertools

    if batches is None:
        return itertools.repeat(None)
    if workers <= 0:
        return (batches.batch(s, rank, batch_size) for s in itertools.count(start))
    from torch.utils.data import DataLoader

    return iter(DataLoader(_StepBatches(batches, rank, batch_size), batch_size=None, sampler=itertools.count(start),
                           num_workers=workers, pin_memory=pin, prefetch_factor=4))


_OPEN = 10**9  # the step count of a time-budget run until its warm-up has measured the pace


def data_workers(setting: int | str | None, device: torch.device, world: int = 1) -> int:
    """DataLoader workers per process: a number, or ``auto`` (the default): none on the CPU, where the
    workers would only take cores from training, and up to 8 on a GPU, which otherwise waits for samples."""
    if setting not in (None, "auto"):
        return max(0, int(setting))
    if device.type != "cuda":
        return 0
    return min(8, max(0, (os.cpu_count() or 1) // world - 1))


def fit_to_budget(seconds_left: float, step_seconds: list[float], done: int, reserve: float = 0.05) -> int:
    """The total step count that ends a run within ``seconds_left``: the pace is the median step time
    after the first five (worker start-up, kernel selection), or the one value given (a re-fit passes the
    wall-clock pace), and ``reserve`` of the time is kept for validation and saving."""
    import statistics

    pace = statistics.median(step_seconds[5:] or step_seconds)
    return done + max(1, int(seconds_left * (1 - reserve) / pace))


class _PreferencePairs:
    """Pairwise preferences from every feedback source, each pair weighted by its source's weight."""

    def __init__(self, sources: list[tuple[Any, float]], seed: int) -> None:
        self.pairs = [(p, w) for data, w in sources for p in data.pairs if w > 0]
        self.seed = seed

    def batch(self, step: int, rank: int, n: int) -> dict[str, torch.Tensor] | None:
        if not self.pairs or n <= 0:
            return None
        g = np.random.default_rng([self.seed, step, rank, 3])
        chosen = [self.pairs[int(i)] for i in g.integers(len(self.pairs), size=n)]
        stack = lambda k: torch.stack([p[k] for p, _ in chosen])  # noqa: E731
        return {"a": stack("a"), "b": stack("b"), "ir": stack("ir"), "vis": stack("vis"),
                "target": torch.tensor([p["target"] for p, _ in chosen]),
                "weight": torch.tensor([w for _, w in chosen], dtype=torch.float32)}


def ranking_loss(score_a: torch.Tensor, score_b: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                 sharpness: float = 2.0) -> torch.Tensor:
    """Bradley-Terry loss on a score (sigmoid outputs in 0..1, i.e. score/5): a one-point difference on
    the 1-5 scale gives P(A better) = sigmoid(sharpness). Ties pull the two together."""
    logits = sharpness * 5.0 * (score_a - score_b)
    per = F.binary_cross_entropy_with_logits(logits, target.to(logits), reduction="none")
    w = weight.to(per)
    return (per * w).sum() / w.sum()


def pair_ranking_loss(scores: torch.Tensor, labels: torch.Tensor, dim_weights: Sequence[float],
                      sharpness: float = 2.0) -> torch.Tensor:
    """Soft Bradley-Terry loss on every dimension between samples ``2k`` and ``2k + 1`` of a batch, which
    share a source pair (``synthetic.paired``). The target is sigmoid(sharpness x labelled difference in
    points), so the loss is least where the predicted difference equals the labelled one. It teaches the
    order among one pair's images, which a per-sample MSE teaches only through the absolute scores."""
    a, b = scores[0::2], scores[1::2]
    target = torch.sigmoid(sharpness * (labels[0::2] - labels[1::2]))
    weight = torch.as_tensor(dim_weights, dtype=a.dtype, device=a.device).expand_as(a)
    return ranking_loss(a.flatten(), b.flatten(), target.flatten(), weight.flatten(), sharpness)


def training_sources(cfg: dict[str, Any], hf: str | None = None) -> list[dict[str, Any]]:
    """The configured data sources: ``cfg["sources"]`` (kind synthetic / feedback / hf, path, weight),
    defaulting to synthetic data alone, or to the ``hf`` folder alone when one is given."""
    if cfg.get("sources"):
        return [dict(s) for s in cfg["sources"]]
    if hf:
        return [{"kind": "hf", "path": hf, "weight": 1.0}]
    return [{"kind": "synthetic", "weight": 1.0}]


def source_sizes(cfg: dict[str, Any], size: int) -> list[int]:
    """The sizes synthetic sources are loaded at (config ``source_sizes``; default the model's input
    ``size``), checked so that a typo fails before minutes of fusing."""
    sizes = cfg.get("source_sizes") or [size]
    if not isinstance(sizes, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 32
                                              for s in sizes):
        raise ValueError(f"source_sizes must be a list of sizes in pixels, each at least 32; got {sizes!r}")
    return sizes


def _sources(cfg: dict[str, Any], size: int, out: Path, rank: int, world: int, progress: bool = True):
    from ..data.synthetic import FUSION_BASELINES, PUBLISHED_METHODS, load_sources

    dirs = [resolve_path(d) for d in cfg["data"]]
    for d in dirs:
        if not d.is_dir():
            raise SystemExit(f"training data folder not found: {d}")
    methods = tuple(cfg.get("methods", FUSION_BASELINES + PUBLISHED_METHODS))
    cache = out / f"sources_{size}.pt"
    if world > 1 and rank != 0:
        torch.distributed.barrier()  # rank 0 builds the cache first
    pairs = load_sources(dirs, methods, size=size, cache=cache, progress=progress and rank == 0)
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    return pairs


@torch.no_grad()
def _validate(model, val: list[dict[str, Any]], freeze: str | None) -> dict[str, float]:
    from .evaluate import heatmap_metrics, plcc, predict_samples, srcc

    model.eval()
    preds = predict_samples(model, val, batch_size=16)
    train_mode(model, freeze)
    p = np.stack([r["scores"] for r in preds])
    t = np.stack([s["scores"].numpy() for s in val])
    out = {f"plcc_{k}": plcc(p[:, i], t[:, i]) for i, k in enumerate(("tr", "tp", "ar", "sh", "ov"))}
    out["srcc_ov"] = srcc(p[:, 4], t[:, 4])
    hm = heatmap_metrics((r["heatmap"] for r in preds), (s["heatmap"] for s in val))
    out.update({"heat_cc": hm["cc"], "heat_auc": hm["auc_judd"], "heat_mse": hm["mse_all"]})
    return out


_VAL_PLCC = {"plcc_tr": "Thermal", "plcc_tp": "Texture", "plcc_ar": "Artifacts", "plcc_sh": "Sharpness",
             "plcc_ov": "Overall"}


def reward_panels(records: list[dict]) -> dict[str, dict[str, tuple[list, list]]]:
    """The panels of ``<out>/plot.png``: loss terms and learning rate per step, and each validation's
    PLCC per dimension and heatmap CC / AUC-Judd (when the run validates)."""
    steps = [r["step"] for r in records]
    col = lambda k: [r.get(k, float("nan")) for r in records]  # noqa: E731
    panels = {"loss": {"total": (steps, col("loss"))}, "score MSE (score/5)": {"mse": (steps, col("score_mse"))},
              "heatmap MSE": {"mse": (steps, col("heatmap_mse"))}, "heatmap BCE": {"bce": (steps, col("heatmap_bce"))},
              "learning rate": {"lr": (steps, col("lr"))}}
    if any("dimension_mse" in r for r in records):
        panels["dimension maps MSE"] = {"mse": (steps, col("dimension_mse"))}
    if any("ranking" in r for r in records):
        panels["ranking loss (preferences)"] = {"bt": (steps, col("ranking"))}
    if any("pair_ranking" in r for r in records):
        panels["ranking loss (within source pairs)"] = {"bt": (steps, col("pair_ranking"))}
    vals = [r for r in records if "val" in r]
    if vals:
        vs = [r["step"] for r in vals]
        panels["validation PLCC"] = {name: (vs, [r["val"][k] for r in vals]) for k, name in _VAL_PLCC.items()}
        panels["validation heatmap"] = {m: (vs, [r["val"][k] for r in vals])
                                        for k, m in (("heat_cc", "CC"), ("heat_auc", "AUC-Judd"))}
    return panels


def save_reward_plot(out: Path) -> None:
    """Redraw ``<out>/plot.png`` from ``<out>/log.jsonl``."""
    from ..checkpoint import read_jsonl
    from ..plot import plot_panels, save_png

    records = read_jsonl(out / "log.jsonl")
    if records:
        img = plot_panels(reward_panels(records), smooth=max(1, len(records) // 50),
                          raw_panels=("validation PLCC", "validation heatmap"))
        save_png(img, out / "plot.png")


def _fitted_total(seconds_left: float, step_seconds: list[float], done: int, world: int) -> int:
    """:func:`fit_to_budget`, agreed across DDP ranks (the slowest rank's pace)."""
    total = fit_to_budget(seconds_left, step_seconds, done)
    if world > 1:
        import torch.distributed as dist

        t = torch.tensor([-total], dtype=torch.float64)  # the smallest total: MAX of its negative (gloo and nccl)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        total = int(-t.item())
    return total


def train(
    cfg: dict[str, Any],
    *,
    device: str = "auto",
    resume: bool = False,
    hf: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> Path:
    """Train per ``cfg`` (see training/configs/reward_small.json); returns the output folder.

    ``stop_after`` ends this run at that step (with a checkpoint) without finishing the
    schedule: a later ``resume`` continues as if never stopped.
    """
    from tqdm import tqdm

    from ..checkpoint import load_checkpoint, save_checkpoint, truncate_jsonl
    from ..data.synthetic import SyntheticConfig, SyntheticRewardData, is_test_pair
    from ..device import pick_device

    weights = cfg.get("loss", {"score": 10.0, "heatmap_mse": 1.0, "heatmap_bce": 0.5})
    pair_w, dim_w = float(weights.get("pair_ranking", 0.0)), dimension_weights(weights)
    if pair_w and not (SyntheticConfig.from_dict(cfg.get("synthetic")).paired and int(cfg["batch_size"]) % 2 == 0
                       and [s.get("kind") for s in training_sources(cfg, hf)] == ["synthetic"]):
        raise ValueError("loss.pair_ranking needs synthetic.paired, an even batch_size and synthetic data as the only "
                         "source (a mixed batch would not keep the pairs side by side)")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if world > 1:
        import torch.distributed as dist

        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cpu":
        threads = int(cfg.get("threads") or max(1, (os.cpu_count() or 1) // world))
        torch.set_num_threads(threads)

    out = resolve_path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        (out / "config.json").write_text(json.dumps({**cfg, "hf": hf, "world_size": world}, indent=2))

    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    model = build_model(cfg)
    if cfg.get("init"):
        skipped = init_from(model, resolve_path(cfg["init"]))
        if rank == 0:
            (log.warning if skipped else log.info)("initialised from %s (%d tensors not carried over: %s)",
                                                   cfg["init"], len(skipped), ", ".join(skipped[:8]))
    model = model.to(dev)
    size = model.image_size
    freeze = cfg.get("freeze")
    opt = torch.optim.AdamW(apply_freeze(model, freeze), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.05),
                            betas=tuple(cfg.get("betas", (0.9, 0.999))))
    warmup, min_ratio = int(cfg.get("warmup", 0)), float(cfg.get("min_lr_ratio", 0.05))
    budget = float(cfg.get("time_budget_s") or 0)
    if budget and warmup < 20:
        raise ValueError("time_budget_s needs a warm-up of at least 20 steps: the pace is measured during the "
                         "warm-up, whose learning rates do not depend on the step count")
    total = _OPEN if budget else int(cfg["steps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, total, warmup, min_ratio))
    step = 0
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, model=model, optimizer=opt, scheduler=sched)
        step = int(state["step"])
        total = int(state["extra"].get("total", total))
        if rank == 0:
            truncate_jsonl(out / "log.jsonl", step)
            log.info("resumed from %s at step %d", ckpt_path, step)
    sized = total != _OPEN

    split = cfg.get("split", {"test_fraction": 0.15, "seed": 0})
    val: list[dict[str, Any]] = []
    parts: list[tuple[Any, float]] = []
    feedback: list[tuple[Any, float]] = []
    n_train = 0
    for src in training_sources(cfg, hf):
        kind, weight = src.get("kind"), float(src.get("weight", 1.0))
        if kind == "hf":
            hfb = _HFBatches(str(resolve_path(src["path"])), size, seed)
            parts.append((hfb, weight))
            n_train += len(hfb.data)
        elif kind == "feedback":
            from ..feedback import FeedbackTrainingData

            data = FeedbackTrainingData(resolve_path(src["path"]), size, skip_bad=bool(src.get("skip_bad", False)))
            feedback.append((data, weight))
            if data.samples:
                parts.append((_FeedbackBatches(data, seed), weight))
            n_train += len(data.samples) + len(data.pairs)
            if rank == 0:
                log.info("feedback %s: %d rated images (%d with artifact masks), %d preferences, weight %g",
                         src["path"], len(data.samples), data.n_masked, len(data.pairs), weight)
                if data.n_masked and freeze == "features":
                    log.warning("feedback %s: %d rated images carry artifact masks, but freeze \"features\" keeps "
                                "the heatmap as saved, so the masks train nothing; use freeze \"encoder\" to train "
                                "the heatmap on them", src["path"], data.n_masked)
        elif kind == "synthetic":
            syn = SyntheticConfig.from_dict(cfg.get("synthetic"))
            datasets = []
            # The first size draws as a single-size run does; validation comes from it.
            for i, s in enumerate(source_sizes(cfg, size)):
                pairs = _sources(cfg, s, out, rank, world, progress)
                train_pairs = [p for p in pairs if not is_test_pair(p.key, split["test_fraction"], split["seed"])]
                datasets.append(SyntheticRewardData(train_pairs, seed=seed + 1000 * i, config=syn))
                if i == 0:
                    test_pairs = [p for p in pairs if is_test_pair(p.key, split["test_fraction"], split["seed"])]
                    n_train += len(train_pairs)
            parts.append((_SyntheticBatches(datasets, world), weight))
            if rank == 0 and test_pairs and cfg.get("val_samples", 0):
                # unpaired: twice as many source pairs for the same count
                vdata = SyntheticRewardData(test_pairs, seed=seed + 999, config=SyntheticConfig.from_dict(
                    {**(cfg.get("synthetic") or {}), "flip": False, "paired": False}))
                val = [vdata.sample(i) for i in range(int(cfg["val_samples"]))]
            if rank == 0:
                log.info("%d training pairs, %d held out", len(train_pairs), len(test_pairs))
        else:
            raise ValueError(f"training source kind {kind!r}: use synthetic, feedback or hf")
    batches = _MixedBatches(parts, seed) if parts else None
    prefs = _PreferencePairs(feedback, seed)
    n_pref = int(cfg.get("preference_batch", 4)) if prefs.pairs else 0
    if batches is None and not n_pref:
        raise ValueError("no training data: every source is empty or has weight 0")

    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # timm's features_only backbones keep (and run) the stages after the last feature used.
        net: Any = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                           find_unused_parameters=True)
    else:
        net = model
    if rank == 0:
        log.info("%d parameters, %d training items, world size %d, device %s", model.num_parameters(), n_train,
                 world, dev)
    bs = int(cfg["batch_size"])
    end = min(total, stop_after) if stop_after else total
    every, val_every = int(cfg.get("checkpoint_every", 100)), int(cfg.get("val_every", 0))
    train_mode(model, freeze)
    logf = open(out / "log.jsonl", "a") if rank == 0 else None  # closed in finally
    bar = tqdm(total=total if sized else None, initial=step, desc="train reward", disable=rank != 0 or not progress)
    stream = _batch_stream(batches, rank, bs, step, data_workers(cfg.get("workers"), dev, world), dev.type == "cuda")
    started, step_seconds, first_step, refit_until = time.perf_counter(), [], step, 0
    try:
        while step < end:
            t0 = time.perf_counter()
            b = next(stream)
            b = {k: v.to(dev, non_blocking=True) for k, v in b.items()} if b else None
            pb = prefs.batch(step, rank, n_pref)
            t1 = time.perf_counter()
            # One forward over rated images and both sides of each preference (DDP allows one per step).
            fused, irs, viss = [], [], []
            if b:
                fused, irs, viss = [b["fused"]], [b["ir"]], [b["vis"]]
            if pb:
                fused += [pb["a"].to(dev), pb["b"].to(dev)]
                irs += [pb["ir"].to(dev)] * 2
                viss += [pb["vis"].to(dev)] * 2
            out_ = net(torch.cat(fused), torch.cat(irs), torch.cat(viss))
            n = b["fused"].shape[0] if b else 0
            if b:
                loss, parts = reward_loss({k: v[:n] for k, v in out_.items()}, b["scores"], b["heatmap"], weights,
                                          b.get("dimension_maps"))
            else:
                loss, parts = out_["scores"].sum() * 0.0, {}
            if b and pair_w:
                pair_l = pair_ranking_loss(out_["scores"][:n], b["scores"], dim_w)
                loss = loss + pair_w * pair_l
                parts["pair_ranking"] = pair_l.item()
            if pb:
                overall = out_["scores"][n:, -1]
                rank_l = ranking_loss(overall[:n_pref], overall[n_pref:], pb["target"], pb["weight"])
                loss = loss + weights.get("ranking", 1.0) * rank_l
                parts["ranking"] = rank_l.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.get("grad_clip", 1.0))
            opt.step()
            sched.step()
            step += 1
            step_seconds.append(time.perf_counter() - t0)
            refit = refit_until and step % every == 0 and step <= refit_until
            if (not sized and step >= warmup) or refit:
                elapsed = time.perf_counter() - started
                # The warm-up's median step leaves out validation, checkpoints and slower later steps (an H200
                # run overran its budget by 17%), so the count is fitted again at each checkpoint in the first
                # half on the wall-clock pace so far; the cosine schedule is then still near its peak.
                paces = [elapsed / (step - first_step)] if refit else step_seconds
                total = _fitted_total(budget - elapsed, paces, step, world)
                if not sized:
                    sized, refit_until = True, total // 2
                end = min(total, stop_after) if stop_after else total
                bar.total = total
                bar.refresh()
                if rank == 0:
                    if not refit:
                        log.info("time budget %.0f s: %d steps in all", budget, total)
                    (out / "config.json").write_text(json.dumps({**cfg, "hf": hf, "world_size": world, "steps": total},
                                                                indent=2))
            if logf:
                rec = {"step": step, "loss": loss.item(), **parts, "grad_norm": float(gnorm),
                       "lr": sched.get_last_lr()[0], "data_sec": t1 - t0, "sec": time.perf_counter() - t0}
                if val and val_every and (step % val_every == 0 or step == total):
                    rec["val"] = _validate(model, val, freeze)
                    log.info("step %d val %s", step, {k: round(v, 4) for k, v in rec["val"].items()})
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if rank == 0 and (step % every == 0 or step == end):
                save_checkpoint(ckpt_path, model=model, optimizer=opt, scheduler=sched, step=step,
                                extra={"config": cfg, **({"total": total} if sized else {})})
                save_reward_plot(out)
        if rank == 0 and step >= total:
            model.eval().cpu()
            model.save_pretrained(out / "final")
            log.info("wrote %s", out / "final")
    finally:
        del stream  # stops the DataLoader workers, if any
        bar.close()
        if logf:
            logf.close()
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
    return out


def add_train_args(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config JSON")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    ap.add_argument("--steps", type=int, help="override the config's step count")
    ap.add_argument("--time-budget", type=float, metavar="SECONDS",
                    help="fit the step count to this many seconds of training (measured during the warm-up)")
    ap.add_argument("--stop-after", type=int, help="stop this run at this step (checkpointed; resume later)")
    ap.add_argument("--out", help="override the config's output folder")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda")
    ap.add_argument("--hf", help="train on the train split of a human-feedback (HF datasets) folder")
    ap.add_argument("--feedback", action="append", default=[], metavar="DIR[=WEIGHT]",
                    help="add a feedback folder (Rate Fusion / Compare Fusions) to the training mix; repeatable. "
                    "Its ratings join the batches in proportion to WEIGHT (default 1), its preferences train "
                    "through a ranking loss")
    ap.add_argument("--synthetic-weight", type=float,
                    help="weight of the synthetic data in the mix (default 1 with --feedback; 0 leaves it out)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override a config value, e.g. --set model.embed_dim=96 (repeatable)")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs still written)")
    return ap


def run_from_args(args: argparse.Namespace) -> int:
    cfg = json.loads(Path(args.config).read_text())
    if args.steps:
        cfg["steps"] = args.steps
    if args.time_budget:
        cfg["time_budget_s"] = args.time_budget
    if args.out:
        cfg["out"] = args.out
    from ..overrides import apply_overrides

    apply_overrides(cfg, args.set)
    if args.feedback or args.synthetic_weight is not None:
        sources = training_sources(cfg, args.hf)
        if args.synthetic_weight is not None:
            sources = [s for s in sources if s["kind"] != "synthetic"]
            sources.append({"kind": "synthetic", "weight": args.synthetic_weight})
        for item in args.feedback:
            path, weight = item, 1.0
            head, sep, tail = item.rpartition("=")
            if sep:
                try:
                    path, weight = head, float(tail)
                except ValueError:
                    pass  # an "=" that is part of the folder name
            sources.append({"kind": "feedback", "path": path, "weight": weight})
        cfg["sources"] = sources
    train(cfg, device=args.device, resume=args.resume, hf=args.hf, stop_after=args.stop_after,
          progress=not args.no_progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = add_train_args(argparse.ArgumentParser(description=__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return run_from_args(args)
