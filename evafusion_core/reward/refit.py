"""Refit a reward model's score heads on frozen features.

Why: end-to-end training, with its ranking losses and a short schedule, need not leave the heads
at their best fit to the features they read. On samples drawn like the benchmark from its training
pairs, a ridge regression on the bundled model's head input scored higher than its heads (the
thirteenth session's probe, docs/RESULTS.md). With everything else frozen, the features of a few
thousand samples are computed once, and the heads (started from their trained weights) take
thousands of full passes over them in seconds. Each head keeps the pass with its best PLCC on
samples from a validation subset of the training pairs, so the held-out test pairs are never read.
The backbone, mixer and heatmap decoder are not touched, so the heatmap does not change.
:func:`with_head_pooling` first widens the heads to read more of what the frozen network computes.
On the training generator's own distribution the gains were small: about 0.003 mean PLCC from a
refit, and about 0.004 more from the wider ("rich") head input (fourteenth session).
:func:`with_cue_inputs` widens them to read measured per-image statistics too (``cues.py``; twenty-fourth session).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .evaluate import plcc
from .train import carry_state


@torch.no_grad()
def pooled_features(model: nn.Module, data: Any, n: int, batch_size: int = 16,
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """What the heads read ([n, F]) and the labels / 5 ([n, 5], the scale the heads predict) for
    samples ``0 .. n-1`` of ``data`` (anything with ``sample(i)``, e.g. ``SyntheticRewardData``)."""
    from ..data.synthetic import collate

    if n < 1:
        raise ValueError(f"need at least one sample, got n={n}")
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    xs, ys = [], []
    with tqdm(total=n, desc="features", unit="image", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            b = collate([data.sample(i) for i in range(start, min(n, start + batch_size))])
            out = model(b["fused"].to(device), b["ir"].to(device), b["vis"].to(device))
            xs.append(out["pooled"].float().cpu())
            ys.append(b["scores"] / 5.0)
            bar.update(len(b["scores"]))
    model.train(was)
    return torch.cat(xs), torch.cat(ys)


def head_plcc(heads: nn.ModuleList, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Each head's PLCC against its label column of ``y`` on the head inputs ``x``."""
    with torch.no_grad():
        return [plcc(torch.sigmoid(head(x)).squeeze(1).numpy(), y[:, k].numpy()) for k, head in enumerate(heads)]


def fit_heads(
    heads: nn.ModuleList,
    fit: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int = 3000,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    every: int = 25,
    keep: Sequence[int] = (),
    progress: bool = True,
) -> tuple[nn.ModuleList, dict[str, Any]]:
    """A copy of ``heads`` trained full-batch with AdamW on the MSE of ``sigmoid(head(x))`` against
    the labels / 5 (as in training), each head kept at the check (every ``every`` steps, step 0 =
    as given) with its best validation PLCC. Heads are independent, so one pass trains all five;
    the heads indexed by ``keep`` are left exactly as given.

    Returns the fitted heads and a record: per dimension the chosen step and validation PLCC
    before and after, and the validation PLCC curve."""
    (xf, yf), (xv, yv) = fit, val
    if xf.shape[1] != xv.shape[1] or yf.shape[1] != len(heads) or yv.shape[1] != len(heads):
        raise ValueError(f"features/labels do not match {len(heads)} heads: fit {tuple(xf.shape)}/{tuple(yf.shape)}, "
                         f"val {tuple(xv.shape)}/{tuple(yv.shape)}")
    fitted = copy.deepcopy(heads).float().train()
    start = head_plcc(fitted, xv, yv)
    best = [(r, 0, copy.deepcopy(h.state_dict())) for r, h in zip(start, fitted)]
    curve = [{"step": 0, "val_plcc": start}]
    if any(not 0 <= k < len(heads) for k in keep):
        raise ValueError(f"keep {list(keep)}: head indices run from 0 to {len(heads) - 1}")
    train = [k for k in range(len(heads)) if k not in keep]
    if not train:
        raise ValueError("every head is kept: nothing to fit")
    opt = torch.optim.AdamW([p for k in train for p in fitted[k].parameters()], lr=lr, weight_decay=weight_decay)
    for step in tqdm(range(1, steps + 1), desc="fit heads", disable=not progress):
        pred = torch.cat([torch.sigmoid(fitted[k](xf)) for k in train], dim=1)
        loss = (pred - yf[:, train]).square().mean(0).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            now = head_plcc(fitted, xv, yv)
            curve.append({"step": step, "val_plcc": now, "fit_loss": loss.item()})
            for k, (r, h) in enumerate(zip(now, fitted)):
                if k in train and r > best[k][0]:
                    best[k] = (r, step, copy.deepcopy(h.state_dict()))
    for (_, _, state), h in zip(best, fitted):
        h.load_state_dict(state)
    fitted.eval()
    record = {"steps": steps, "lr": lr, "weight_decay": weight_decay, "val_plcc_before": start,
              "val_plcc_after": [b[0] for b in best], "chosen_step": [b[1] for b in best], "curve": curve}
    return fitted, record


def refit_panels(record: dict[str, Any], names: Sequence[str]) -> dict[str, dict[str, tuple[list, list]]]:
    """The panels of a refit's ``plot.png`` (:func:`evafusion_core.plot.plot_panels`): each head's
    validation PLCC per check, where its chosen step shows as the peak, and the fit loss."""
    curve = record["curve"]
    steps = [c["step"] for c in curve]
    fit = [c for c in curve if "fit_loss" in c]
    return {"validation PLCC": {name: (steps, [c["val_plcc"][k] for c in curve]) for k, name in enumerate(names)},
            "fit loss (MSE, score/5)": {"mse": ([c["step"] for c in fit], [c["fit_loss"] for c in fit])}}


def with_head_pooling(model: nn.Module, pooling: str) -> nn.Module:
    """A copy of a reward model whose heads read ``pooling`` (see ``HEAD_POOLING``), computing exactly
    what ``model`` computes: the heads' weights for inputs ``model`` does not pool start at zero, so a
    refit can learn to use them while a head it keeps is unchanged."""
    if pooling == model.head_pooling:
        return copy.deepcopy(model)
    if model.head_pooling != "basic":
        raise ValueError(f"can only widen heads that read basic pooling, not {model.head_pooling!r}")
    wide = type(model)(**{**type(model).init_args(model.hub_config()), "head_pooling": pooling})
    skipped = carry_state(wide, model.state_dict())
    if skipped:
        raise RuntimeError(f"weights not carried over to the wider heads: {skipped}")
    device = next(model.parameters()).device
    return wide.to(device).train(model.training)


def with_cue_inputs(model: nn.Module, groups: Sequence[str]) -> nn.Module:
    """A copy of a reward model whose heads also read the cue ``groups`` (``cues.CUE_GROUPS``) it does not
    read yet, after those it does, computing exactly what ``model`` computes: the heads' weights for the
    new cues start at zero (a refit learns them), their standardisation as the identity
    (:func:`set_cue_scale` sets it), and the groups already read keep theirs."""
    added = [g for g in groups if g not in model.cue_inputs]
    if not added:
        return copy.deepcopy(model)
    wide = type(model)(**{**type(model).init_args(model.hub_config()), "cue_inputs": [*model.cue_inputs, *added]})
    saved = model.state_dict()
    skipped = set(carry_state(wide, saved)) - {"cue_mean", "cue_std"}
    if skipped:
        raise RuntimeError(f"weights not carried over to the wider heads: {sorted(skipped)}")
    with torch.no_grad():
        for name in ("cue_mean", "cue_std"):
            if name in saved:  # the groups already read keep their standardisation
                getattr(wide, name)[: saved[name].numel()] = saved[name]
    device = next(model.parameters()).device
    return wide.to(device).train(model.training)


def cue_columns(model: nn.Module, group: str) -> slice:
    """Where ``group``'s cues sit in the model's buffers ``cue_mean``/``cue_std`` (the pooled input's
    last columns hold all cue groups, in ``cue_inputs`` order)."""
    from .cues import CUE_GROUPS

    if group not in model.cue_inputs:
        raise ValueError(f"the model's heads do not read the {group!r} cues (they read {list(model.cue_inputs)})")
    start = sum(len(CUE_GROUPS[g][0]) for g in model.cue_inputs[: model.cue_inputs.index(group)])
    return slice(start, start + len(CUE_GROUPS[group][0]))


def set_cue_scale(model: nn.Module, group: str, fit_x: torch.Tensor, *others: torch.Tensor) -> None:
    """Standardise ``group``'s cues by their mean and spread over the fit samples' head inputs ``fit_x``,
    in ``model`` and in place in ``fit_x`` and ``others``, which must have been computed with that group's
    identity scale (as :func:`with_cue_inputs` leaves a new group). The heads' weights for new cues start at
    zero, so they learn at one rate whatever each cue's units."""
    cols = cue_columns(model, group)
    if not (torch.all(model.cue_mean[cols] == 0) and torch.all(model.cue_std[cols] == 1)):
        raise ValueError(f"the {group!r} cues are already standardised; set_cue_scale expects features computed "
                         "without it")
    k = model.cue_mean.numel()
    at = slice(fit_x.shape[1] - k + cols.start, fit_x.shape[1] - k + cols.stop)
    mean, std = fit_x[:, at].mean(0), fit_x[:, at].std(0).clamp(min=1e-3)
    for x in (fit_x, *others):
        x[:, at] = (x[:, at] - mean) / std
    model.cue_mean[cols] = mean.to(model.cue_mean.device)
    model.cue_std[cols] = std.to(model.cue_std.device)


def split_by_pair(keys: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Training pair keys -> (fit, validation) keys, stable per key (see ``stable_fraction``)."""
    from ..data.synthetic import stable_fraction

    val = [k for k in keys if stable_fraction(k, seed) < val_fraction]
    fit = [k for k in keys if stable_fraction(k, seed) >= val_fraction]
    if not fit or not val:
        raise ValueError(f"val_fraction {val_fraction} leaves {len(fit)} fit and {len(val)} validation pairs out of "
                         f"{len(keys)}; both need at least one")
    return fit, val
