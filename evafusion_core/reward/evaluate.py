"""How good is a reward model? The RichHF protocol, plus ranking checks.

* Scores: PLCC and SRCC per dimension (scipy.stats), and the mean absolute error on 1..5.
* Heatmaps: MSE over all images and over images whose truth is empty; on the others CC,
  KLD, SIM, NSS and AUC-Judd following the MIT saliency benchmark definitions (Bylinskii
  et al., TPAMI 2018): KLD and SIM on maps normalised to sum 1 (SIM after min-max scaling),
  CC and NSS on maps standardised to mean 0 / std 1, AUC-Judd with thresholds at the
  predicted values of the "fixations". Fixations are the truth's non-zero pixels on its
  8-bit scale (value >= 1/255), as for a heatmap stored as a grey PNG.
* Pairwise accuracy on strength ladders: the clean image must score above each degraded
  copy, and a milder copy above a stronger one, on Overall.
* Rank check on real pairs: IR alone, visible alone and a blurred average must score below
  the ``light`` fusion on Overall.

:func:`evaluate_reward` writes ``reward_eval.json``, ``reward_eval.md`` and example
heatmap overlays (PNG).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model import DIMENSIONS

log = logging.getLogger(__name__)

EPS = 2.2204e-16  # MATLAB's eps, as the MIT benchmark code uses
FIXATION_THRESHOLD = 0.5 / 255.0


# --------------------------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------------------------
def plcc(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import pearsonr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(pearsonr(a, b)[0])


def srcc(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(spearmanr(a, b)[0])


def score_correlations(pred: np.ndarray, true: np.ndarray) -> dict[str, dict[str, float]]:
    """Per dimension: PLCC, SRCC and MAE of [N,5] predictions against [N,5] truths (1..5)."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    return {
        name: {
            "plcc": plcc(pred[:, k], true[:, k]),
            "srcc": srcc(pred[:, k], true[:, k]),
            "mae": float(np.abs(pred[:, k] - true[:, k]).mean()) if len(pred) else float("nan"),
        }
        for k, name in enumerate(DIMENSIONS)
    }


def plcc_intervals(pred: np.ndarray, true: np.ndarray, groups: Sequence[Any], *, n_boot: int = 1000,
                   level: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Per dimension, a bootstrap interval for PLCC that resamples whole groups (source pairs).

    Samples made from one source pair share its content, so they are not independent; resampling
    the pairs says how much a benchmark of 25 pairs can move with the pairs that happened to be
    held out. Percentile interval at ``level``.
    """
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    _, which = np.unique(np.asarray([str(k) for k in groups]), return_inverse=True)
    members = [np.flatnonzero(which == i) for i in range(int(which.max()) + 1)]
    g = np.random.default_rng(seed)
    draws = np.full((n_boot, pred.shape[1]), np.nan)
    for b in range(n_boot):
        idx = np.concatenate([members[i] for i in g.integers(len(members), size=len(members))])
        for k in range(pred.shape[1]):
            p, t = pred[idx, k], true[idx, k]
            if p.std() > 0 and t.std() > 0:
                draws[b, k] = np.corrcoef(p, t)[0, 1]
    lo, hi = np.nanpercentile(draws, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return {name: (float(lo[k]), float(hi[k])) for k, name in enumerate(DIMENSIONS[: pred.shape[1]])}


def within_group_plcc(pred: np.ndarray, true: np.ndarray, groups: Sequence[Any], min_size: int = 10
                      ) -> dict[str, float]:
    """Per dimension, the mean PLCC among the samples of each group (groups under ``min_size`` skipped).

    With the fusion method as the group this leaves out how methods differ from each other, which
    labels that charge a method for what it fails to keep make easy to predict: what remains is how
    well the model ranks damage within one method's images.
    """
    keys = np.asarray(groups)
    out = {}
    for k, name in enumerate(DIMENSIONS):
        values = [plcc(pred[keys == g, k], true[keys == g, k]) for g in np.unique(keys)
                  if (keys == g).sum() >= min_size]
        values = [v for v in values if np.isfinite(v)]
        out[name] = float(np.mean(values)) if values else float("nan")
    return out


# --------------------------------------------------------------------------------------------
# heatmap metrics on 2-D numpy maps
# --------------------------------------------------------------------------------------------
def _f64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(a.shape[-2:]) if a.ndim > 2 else a


def fixations(gt: Any, threshold: float = FIXATION_THRESHOLD) -> np.ndarray:
    """Boolean fixation map: the truth's non-zero pixels (on the 8-bit scale by default)."""
    return _f64(gt) > threshold


def _standardise(a: np.ndarray) -> np.ndarray:
    s = a.std()
    return (a - a.mean()) / s if s > 0 else np.zeros_like(a)


def heat_cc(pred: Any, gt: Any) -> float:
    """Linear correlation coefficient of two maps (nan when either is constant)."""
    p, g = _f64(pred), _f64(gt)
    if p.std() == 0 or g.std() == 0:
        return float("nan")
    return float((_standardise(p) * _standardise(g)).mean())


def heat_kld(pred: Any, gt: Any) -> float:
    """KL divergence of the prediction from the truth, both normalised to sum 1 (lower is better)."""
    p, g = _f64(pred), _f64(gt)
    if g.sum() <= 0:
        return float("nan")
    q = p / p.sum() if p.sum() > 0 else np.full_like(p, 1.0 / p.size)
    g = g / g.sum()
    return float((g * np.log(EPS + g / (q + EPS))).sum())


def _minmax_sum1(a: np.ndarray) -> np.ndarray:
    lo, hi = a.min(), a.max()
    a = (a - lo) / (hi - lo) if hi > lo else np.ones_like(a)
    return a / a.sum()


def heat_sim(pred: Any, gt: Any) -> float:
    """Similarity (histogram intersection) of the maps, each min-max scaled and normalised to sum 1."""
    p, g = _f64(pred), _f64(gt)
    if g.max() <= 0:
        return float("nan")
    return float(np.minimum(_minmax_sum1(p), _minmax_sum1(g)).sum())


def heat_nss(pred: Any, fix: Any) -> float:
    """Normalised scanpath saliency: the standardised prediction averaged over fixations."""
    p, f = _f64(pred), np.asarray(fix, dtype=bool).reshape(_f64(pred).shape)
    if not f.any():
        return float("nan")
    return float(_standardise(p)[f].mean())


def heat_auc_judd(pred: Any, fix: Any, jitter: bool = True) -> float:
    """AUC-Judd: ROC area with one threshold per fixated pixel's predicted value.

    As in the MIT code, a tiny deterministic jitter breaks ties (so a flat map scores about
    0.5), the map is min-max scaled, true positives are fixations above the threshold and
    false positives the other pixels above it. nan when there are no fixations or no others.
    """
    s = _f64(pred).ravel().copy()
    f = np.asarray(fix, dtype=bool).ravel()
    n_fix, n = int(f.sum()), s.size
    if n_fix == 0 or n_fix == n:
        return float("nan")
    if jitter:
        s += np.random.default_rng(0).random(n) / 1e7
    lo, hi = s.min(), s.max()
    s = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
    thresholds = np.sort(s[f])[::-1]
    ordered = np.sort(s)
    above = n - np.searchsorted(ordered, thresholds, side="left")  # pixels >= threshold
    k = np.arange(1, n_fix + 1)
    tp = np.concatenate([[0.0], k / n_fix, [1.0]])
    fp = np.concatenate([[0.0], (above - k) / (n - n_fix), [1.0]])
    return float(np.trapezoid(tp, fp) if hasattr(np, "trapezoid") else np.trapz(tp, fp))


def heatmap_metrics(preds: Iterable[Any], gts: Iterable[Any]) -> dict[str, float]:
    """Aggregate heatmap metrics over images (RichHF protocol; see the module docstring)."""
    mse_all, mse_empty = [], []
    per: dict[str, list[float]] = {"cc": [], "kld": [], "sim": [], "nss": [], "auc_judd": []}
    for pred, gt in zip(preds, gts):
        p, g = _f64(pred), _f64(gt)
        if p.shape != g.shape:
            raise ValueError(f"heatmap shapes differ: prediction {p.shape}, truth {g.shape}")
        mse = float(((p - g) ** 2).mean())
        mse_all.append(mse)
        fix = fixations(g)
        if not fix.any():
            mse_empty.append(mse)
            continue
        per["cc"].append(heat_cc(p, g))
        per["kld"].append(heat_kld(p, g))
        per["sim"].append(heat_sim(p, g))
        per["nss"].append(heat_nss(p, fix))
        per["auc_judd"].append(heat_auc_judd(p, fix))
    out: dict[str, float] = {
        "mse_all": float(np.mean(mse_all)) if mse_all else float("nan"),
        "mse_empty": float(np.mean(mse_empty)) if mse_empty else float("nan"),
        "n_images": len(mse_all),
        "n_empty": len(mse_empty),
    }
    for k, vals in per.items():
        v = [x for x in vals if not math.isnan(x)]
        out[k] = float(np.mean(v)) if v else float("nan")
        out[f"n_{k}"] = len(v)
    return out


# --------------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------------
def pairwise_accuracy(ladders: Iterable[Sequence[float]]) -> dict[str, float]:
    """Each ladder is predicted Overall for [clean, weakest, ..., strongest]. Clean must beat every
    degraded copy; a milder copy must beat each stronger one. Ties count as wrong."""
    clean_ok = clean_n = order_ok = order_n = 0
    for lad in ladders:
        v = list(lad)
        for j in range(1, len(v)):
            clean_n += 1
            clean_ok += v[0] > v[j]
            for i in range(1, j):
                order_n += 1
                order_ok += v[i] > v[j]
    total = clean_n + order_n
    return {
        "accuracy": (clean_ok + order_ok) / total if total else float("nan"),
        "clean_vs_degraded": clean_ok / clean_n if clean_n else float("nan"),
        "milder_vs_stronger": order_ok / order_n if order_n else float("nan"),
        "n_pairs": total,
    }


# --------------------------------------------------------------------------------------------
# pictures
# --------------------------------------------------------------------------------------------
def colormap(h: torch.Tensor) -> torch.Tensor:
    """[1,H,W] 0..1 -> [3,H,W] jet-like colours (blue, cyan, yellow, red)."""
    h = h.clamp(0, 1)
    r = (1.5 - (4 * h - 3).abs()).clamp(0, 1)
    g = (1.5 - (4 * h - 2).abs()).clamp(0, 1)
    b = (1.5 - (4 * h - 1).abs()).clamp(0, 1)
    return torch.cat([r, g, b], dim=0)


def heatmap_overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.6) -> torch.Tensor:
    """Colour the heatmap [1,H,W] over the image [C,H,W]; zero heat leaves the image as it is."""
    from ..io import resize_to

    img = image.float().cpu()
    img = img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]
    h = heat.float().cpu().reshape(1, *heat.shape[-2:])
    if h.shape[-2:] != img.shape[-2:]:
        h = resize_to(h, tuple(img.shape[-2:])).clamp(0, 1)
    w = (alpha * (h * 1.5).clamp(0, 1)).expand(3, -1, -1)
    return (img * (1 - w) + colormap(h) * w).clamp(0, 1)


# --------------------------------------------------------------------------------------------
# running a model over samples
# --------------------------------------------------------------------------------------------
def predict_samples(model, samples: Iterable[dict[str, Any]], batch_size: int = 8,
                    on_batch: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Run ``model.predict`` over sample dicts (fused/ir/vis); images of one size are batched."""
    results: list[dict[str, Any]] = []
    buf: list[dict[str, Any]] = []

    def flush() -> None:
        if not buf:
            return
        from .model import promote_rgb

        fused = torch.cat([promote_rgb(s["fused"][None]) for s in buf])
        ir = torch.cat([promote_rgb(s["ir"][None]) for s in buf])
        vis = torch.cat([promote_rgb(s["vis"][None]) for s in buf])
        out = model.predict(fused, ir, vis)
        for k in range(len(buf)):
            results.append({"scores": out["scores"][k].numpy(), "heatmap": out["heatmap"][k]})
            if "dimension_maps" in out:
                results[-1]["dimension_maps"] = out["dimension_maps"][k]
        if on_batch:
            on_batch(len(buf))
        buf.clear()

    for s in samples:
        if buf and (s["fused"].shape[-2:] != buf[0]["fused"].shape[-2:] or len(buf) >= batch_size):
            flush()
        buf.append(s)
    flush()
    return results


def evaluate_reward(
    model,
    samples: Sequence[dict[str, Any]],
    out_dir: str | os.PathLike | None = None,
    *,
    ladders: Sequence[Sequence[dict[str, Any]]] = (),
    examples: int = 6,
    batch_size: int = 8,
    title: str = "reward model evaluation",
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores, heatmaps and (with ``ladders``) pairwise accuracy of ``model`` on labelled samples.

    ``samples`` are dicts with ``fused``, ``ir``, ``vis``, ``heatmap`` [1,H,W] and ``scores`` [5]
    (1..5), as the synthetic generator and the HF-format loader yield them. With ``out_dir``
    the JSON, the markdown report and example overlays are written there.
    """
    from tqdm import tqdm

    with tqdm(total=len(samples) + sum(len(lad) for lad in ladders), desc="eval reward", unit="image",
              disable=not progress) as bar:
        preds = predict_samples(model, samples, batch_size, on_batch=bar.update)
        ladder_preds = []
        for lad in ladders:
            p = predict_samples(model, lad, batch_size, on_batch=bar.update)
            ladder_preds.append([float(r["scores"][DIMENSIONS.index("Overall")]) for r in p])
    pred = np.stack([p["scores"] for p in preds]) if preds else np.zeros((0, 5))
    true = np.stack([np.asarray(s["scores"], dtype=np.float64) for s in samples]) if preds else np.zeros((0, 5))
    result: dict[str, Any] = {
        "title": title,
        "n_samples": len(samples),
        "scores": score_correlations(pred, true),
        "heatmap": heatmap_metrics((p["heatmap"] for p in preds), (s["heatmap"] for s in samples)),
    }
    keys = [s.get("key") for s in samples]
    if None not in keys and len(set(keys)) > 1:
        for name, ci in plcc_intervals(pred, true, keys).items():
            result["scores"][name]["plcc_ci95"] = list(ci)
    methods = [s.get("method") for s in samples]
    if None not in methods and len(set(methods)) > 1:
        for name, value in within_group_plcc(pred, true, methods).items():
            result["scores"][name]["plcc_within_method"] = value
    maps = dimension_map_metrics(preds, samples)
    if maps:
        result["dimension_maps"] = maps
    groups = errors_by_group(pred, true, samples)
    if groups:
        result["errors_by_group"] = groups
    by_artifact = heatmap_by_artifact(preds, samples)
    if by_artifact:
        result["heatmap_by_artifact"] = by_artifact
    if ladders:
        result["pairwise"] = pairwise_accuracy(ladder_preds)
        result["pairwise"]["n_ladders"] = len(ladders)
    if extra:
        result.update(extra)
    if out_dir is not None:
        write_report(result, out_dir, samples=samples, preds=preds, examples=examples)
    return result


def dimension_map_metrics(preds: Sequence[dict[str, Any]], samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per dimension map (Thermal, Texture, Artifacts, Sharpness): the mean CC over images whose true
    map is not flat, and the MSE over all images. Empty when the model or the labels have no maps."""
    pairs = [(p["dimension_maps"], s["dimension_maps"]) for p, s in zip(preds, samples)
             if "dimension_maps" in p and "dimension_maps" in s]
    if not pairs:
        return {}
    out = {}
    for k, name in enumerate(DIMENSIONS[:4]):
        ccs = [heat_cc(p[k], t[k]) for p, t in pairs if float(t[k].max()) > float(t[k].min())]
        mse = float(np.mean([float(((p[k] - t[k].to(p.dtype)) ** 2).mean()) for p, t in pairs]))
        out[name] = {"cc": float(np.mean(ccs)) if ccs else float("nan"), "n_cc": len(ccs), "mse": mse}
    return out


def errors_by_group(pred: np.ndarray, true: np.ndarray, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean signed error (prediction - label) and mean absolute error per dimension, for the samples
    carrying each artifact and for each clean fusion method.

    PLCC says how well a model ranks; this says where it goes wrong: a positive bias on an artifact
    means the model does not see it, or does not judge it as harsh as the labels do. Samples without
    synthetic provenance (human ratings) are left out; an empty dict when none has it.
    """
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if "artifacts" not in s or "method" not in s:
            continue
        for name in sorted({a[0] for a in s["artifacts"]}) or ["clean"]:
            groups.setdefault(f"artifact {name}", []).append(i)
        groups.setdefault(f"method {s['method']}", []).append(i)
    err = pred - true
    return {g: {"n": len(idx), "bias": dict(zip(DIMENSIONS, err[idx].mean(0).tolist())),
                "mae": dict(zip(DIMENSIONS, np.abs(err[idx]).mean(0).tolist()))}
            for g, idx in sorted(groups.items())}


def heatmap_by_artifact(preds: Sequence[dict[str, Any]], samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Heatmap CC, NSS and AUC-Judd for the samples carrying one artifact, per artifact, and for those
    carrying several ("several").

    The mean AUC-Judd hides which damage the heatmap misses; this names it. Samples without synthetic
    provenance, or whose truth is empty or covers the whole image, are left out.
    """
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        names = sorted({a[0] for a in s.get("artifacts", ())})
        if names:
            groups.setdefault(names[0] if len(names) == 1 else "several", []).append(i)
    out = {}
    for name, idx in sorted(groups.items()):
        m = heatmap_metrics((preds[i]["heatmap"] for i in idx), (samples[i]["heatmap"] for i in idx))
        if m["n_auc_judd"]:
            out[name] = {"n": m["n_auc_judd"], "cc": m["cc"], "nss": m["nss"], "auc_judd": m["auc_judd"]}
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def markdown_report(result: dict[str, Any]) -> str:
    lines = [f"# {result.get('title', 'reward model evaluation')}", "", f"{result['n_samples']} labelled images.", ""]
    within = "plcc_within_method" in result["scores"].get("Overall", {})
    lines += ["## Scores", "", "| dimension | PLCC | SRCC | MAE (1-5) |" + (" PLCC within method |" if within else ""),
              "|---|---|---|---|" + ("---|" if within else "")]
    for name, m in result["scores"].items():
        ci = f" ({m['plcc_ci95'][0]:.2f}-{m['plcc_ci95'][1]:.2f})" if "plcc_ci95" in m else ""
        extra_col = f" {_fmt(m['plcc_within_method'])} |" if within else ""
        lines.append(f"| {name} | {_fmt(m['plcc'])}{ci} | {_fmt(m['srcc'])} | {_fmt(m['mae'])} |{extra_col}")
    if any("plcc_ci95" in m for m in result["scores"].values()):
        lines += ["", "In brackets: 95% interval of PLCC when the source pairs are resampled (bootstrap, 1000 draws)."]
    if within:
        lines += ["", "Last column: mean PLCC among each fusion method's own images (how well damage is ranked "
                  "within one method)."]
    h = result["heatmap"]
    lines += ["", "## Artifact heatmap", "",
              f"MSE all {_fmt(h['mse_all'])} ({h['n_images']} images), MSE on empty truth {_fmt(h['mse_empty'])} "
              f"({h['n_empty']} images).", "",
              "| CC | KLD | SIM | NSS | AUC-Judd |", "|---|---|---|---|---|",
              f"| {_fmt(h['cc'])} | {_fmt(h['kld'])} | {_fmt(h['sim'])} | {_fmt(h['nss'])} | {_fmt(h['auc_judd'])} |"]
    if "heatmap_by_artifact" in result:
        lines += ["", "By artifact (images carrying only that one; worst AUC-Judd first):", "",
                  "| artifact | images | CC | NSS | AUC-Judd |", "|---|---|---|---|---|"]
        rows = sorted(result["heatmap_by_artifact"].items(), key=lambda kv: kv[1]["auc_judd"])
        lines += [f"| {name} | {m['n']} | {_fmt(m['cc'])} | {_fmt(m['nss'])} | {_fmt(m['auc_judd'])} |"
                  for name, m in rows]
    if "dimension_maps" in result:
        lines += ["", "## Dimension maps (where each score loses points)", "",
                  "| map | CC (images with damage there) | MSE |", "|---|---|---|"]
        lines += [f"| {name} | {_fmt(m['cc'])} ({m['n_cc']}) | {_fmt(m['mse'])} |"
                  for name, m in result["dimension_maps"].items()]
    if "pairwise" in result:
        p = result["pairwise"]
        lines += ["", "## Pairwise accuracy (Overall)", "",
                  f"accuracy {_fmt(p['accuracy'])} over {p['n_pairs']} pairs from {p.get('n_ladders', '?')} ladders; "
                  f"clean > degraded {_fmt(p['clean_vs_degraded'])}, "
                  f"milder > stronger {_fmt(p['milder_vs_stronger'])}."]
    if "errors_by_group" in result:
        short = "".join(f" {d.split()[0]} |" for d in DIMENSIONS)
        lines += ["", "## Where the scores go wrong", "",
                  "Mean signed error (prediction - label, 1-5 scale) per dimension; positive: rated too high.", "",
                  f"| group | n |{short}", "|---|---|" + "---|" * len(DIMENSIONS)]
        for name, g in result["errors_by_group"].items():
            lines.append(f"| {name} | {g['n']} |" + "".join(f" {g['bias'][d]:+.2f} |" for d in DIMENSIONS))
    if "rank_check" in result:
        lines += ["", "## Rank check (Overall below the light fusion)", "",
                  "| set | pairs | IR alone | visible alone | blurred average | all three |",
                  "|---|---|---|---|---|---|"]
        for name, r in result["rank_check"].items():
            lines.append(f"| {name} | {r['n_pairs']} | {_fmt(r['ir_alone'])} | {_fmt(r['vis_alone'])} | "
                         f"{_fmt(r['blurred_average'])} | {_fmt(r['all'])} |")
        failed = [(name, stem, f) for name, r in result["rank_check"].items()
                  for stem, f in r.get("failures", {}).items()]
        if failed:
            lines += ["", "Pairs where `light` is not rated highest (Overall):", "",
                      "| set | pair | light | IR alone | visible alone | blurred average |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {name} | {stem} | {f['light']:.2f} | {f['ir_alone']:.2f} | {f['vis_alone']:.2f} | "
                      f"{f['blurred_average']:.2f} |" for name, stem, f in failed]
    if "speed" in result:
        lines += ["", f"Scoring speed: {result['speed']}"]
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out_dir: str | os.PathLike, *, samples=(), preds=(), examples: int = 6):
    from ..io import atomic_write_bytes, save_image, side_by_side

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "reward_eval.json", json.dumps(result, indent=2, default=float).encode())
    atomic_write_bytes(out / "reward_eval.md", markdown_report(result).encode())
    if examples and len(preds):
        # Spread examples over the set, preferring images with an artifact.
        order = [i for i, s in enumerate(samples) if float(s["heatmap"].max()) > 0] or list(range(len(samples)))
        pick = order[:: max(1, len(order) // examples)][:examples]
        for n, i in enumerate(pick):
            s, p = samples[i], preds[i]
            true = ", ".join(f"{v:.1f}" for v in np.asarray(s["scores"]))
            guess = ", ".join(f"{v:.1f}" for v in p["scores"])
            tiles = [s["fused"], heatmap_overlay(s["fused"], s["heatmap"]), heatmap_overlay(s["fused"], p["heatmap"])]
            sheet = side_by_side(tiles, ["fused", f"truth {true}", f"predicted {guess}"])
            save_image(sheet, out / "examples" / f"example_{n:02d}.png")
    return out / "reward_eval.md"


# --------------------------------------------------------------------------------------------
# real pairs: the rank check
# --------------------------------------------------------------------------------------------
def rank_check(model, set_dir: str | os.PathLike, *, light=None, max_pairs: int | None = None,
               blur_sigma: float = 2.0, progress: bool = True) -> dict[str, Any]:
    """Fraction of pairs where IR alone, visible alone and a blurred average score below ``light``
    fusion on Overall. ``blur_sigma`` is in pixels of a 256-pixel image (scaled with the size).

    ``overall`` holds every pair's four Overall scores; ``failures`` the pairs (by file stem) where
    something scored at least as high as ``light``, so that a report can name them."""
    from tqdm import tqdm

    from ..data.synthetic import _fusion_models, gaussian_blur
    from ..inference import fuse
    from ..io import find_pairs, load_pair
    from .model import promote_rgb

    root = Path(set_dir)
    models = _fusion_models(("light", "average"))
    if light is not None:
        models["light"] = light
    pairs = find_pairs(root / "ir", root / "vi")[: max_pairs or None]
    wins = {"ir_alone": 0, "vis_alone": 0, "blurred_average": 0, "all": 0}
    rows, failures = {}, {}
    o = DIMENSIONS.index("Overall")
    for stem, (a, b) in tqdm(pairs, desc=f"rank check {root.name}", disable=not progress):
        ir, vis = load_pair(a, b, resize=True)
        fused = fuse(models["light"], ir[None], vis[None])[0]
        avg = fuse(models["average"], ir[None], vis[None])[0]
        blurred = gaussian_blur(avg, blur_sigma * min(avg.shape[-2:]) / 256.0)
        cands = torch.cat([promote_rgb(c[None]) for c in (fused, ir, vis, blurred)])
        out = model.predict(cands, promote_rgb(ir[None]).expand(4, -1, -1, -1),
                            promote_rgb(vis[None]).expand(4, -1, -1, -1))
        ov = out["scores"][:, o].tolist()
        ok = [ov[k] < ov[0] for k in (1, 2, 3)]
        for name, flag in zip(("ir_alone", "vis_alone", "blurred_average"), ok):
            wins[name] += flag
        wins["all"] += all(ok)
        rows[stem] = dict(zip(("light", "ir_alone", "vis_alone", "blurred_average"), ov))
        if not all(ok):
            failures[stem] = rows[stem]
    n = len(pairs)
    return {**{k: v / n if n else float("nan") for k, v in wins.items()}, "n_pairs": n, "overall": rows,
            "failures": failures}


# --------------------------------------------------------------------------------------------
# synthetic held-out sets
# --------------------------------------------------------------------------------------------
def synthetic_eval_set(
    set_dirs: Sequence[str | os.PathLike],
    *,
    split: str = "test",
    test_fraction: float = 0.15,
    split_seed: int = 0,
    seed: int = 1234,
    per_pair: int = 8,
    ladders_per_pair: int = 2,
    size: int | None = None,
    methods: Sequence[str] | None = None,
    max_pairs: int | None = None,
    labels: str | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]], list[str]]:
    """Labelled synthetic samples and strength ladders from the held-out source pairs of ``set_dirs``.

    ``split``: ``test`` keeps the pairs the trainer held out (same ``test_fraction`` and
    ``split_seed``), ``all`` keeps every pair (for sets never trained on), ``train`` the pairs the
    trainer saw (to choose settings such as ``heatmap_blur`` without looking at held-out pairs). ``size`` None works
    at each pair's own resolution. ``labels``: "relative", "retention" or "targets" (see
    :data:`~evafusion_core.data.synthetic.LABELS`; None: the benchmark's, ``BENCHMARK_LABELS``).
    Returns (samples, ladders, pair keys).
    """
    from ..data.synthetic import (
        ARTIFACTS,
        BENCHMARK_LABELS,
        FUSION_BASELINES,
        PUBLISHED_METHODS,
        SyntheticConfig,
        SyntheticRewardData,
        is_test_pair,
        ladder,
        load_sources,
    )

    labels = labels or BENCHMARK_LABELS
    if split not in ("test", "all", "train"):
        raise ValueError(f"split must be 'test', 'all' or 'train', got {split!r}")
    pairs = load_sources(set_dirs, tuple(methods or FUSION_BASELINES + PUBLISHED_METHODS), size=size,
                         progress=progress)
    if split != "all":
        pairs = [p for p in pairs if is_test_pair(p.key, test_fraction, split_seed) == (split == "test")]
    pairs = pairs[: max_pairs or None]
    if not pairs:
        raise ValueError(f"no {split} pairs in " + ", ".join(str(d) for d in set_dirs))
    data = SyntheticRewardData(pairs, seed=seed, config=SyntheticConfig(labels=labels), length=per_pair * len(pairs))
    samples = [data.sample(i) for i in range(len(data))]
    ladders = []
    g = np.random.default_rng([seed, 7])
    for p in pairs:
        for name in g.choice(len(ARTIFACTS), size=min(ladders_per_pair, len(ARTIFACTS)), replace=False):
            method = sorted(p.fused)[int(g.integers(len(p.fused)))]
            seed_k, colour = int(g.integers(2**31)), bool(g.random() < 0.6)
            ladders.append(ladder(p, method, ARTIFACTS[int(name)], seed_k, colour=colour, labels=labels))
    return samples, ladders, [p.key for p in pairs]
