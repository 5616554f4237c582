"""Refit a reward model's score heads on frozen features (see ``evafusion_core/reward/refit.py``).

    .venv/bin/python training/refit_reward_heads.py --model small \\
        --config training/configs/reward_small320l_cpu.json --out runs/refit

Samples come from the training config's source pairs, generator and labels, at the model's input
size (or shared equally among ``--sizes``: sources loaded smaller reach the model upsampled, as a small
input does), from its *training* pairs only: a stable ``--val-fraction`` of them gives the validation
samples that choose each head's step; the pairs the config holds out for testing are never read.
Writes ``<out>/final`` (``save_pretrained``; the heatmap is unchanged, the config only by ``--head-pooling``),
``<out>/refit.json`` (settings, validation PLCC before and after, the curve), ``<out>/plot.png`` (the
curve: each head's validation PLCC per check) and ``<out>/features.pt`` (reused by a rerun with the
same model and samples).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evafusion_core.data.synthetic import (  # noqa: E402
    FUSION_BASELINES,
    PUBLISHED_METHODS,
    SyntheticConfig,
    SyntheticRewardData,
    is_test_pair,
    load_sources,
)
from evafusion_core.device import pick_device  # noqa: E402
from evafusion_core.io import atomic_write_bytes  # noqa: E402
from evafusion_core.plot import plot_panels, save_png  # noqa: E402
from evafusion_core.reward import DIMENSIONS, load_reward_model  # noqa: E402
from evafusion_core.reward.cues import CUE_GROUPS  # noqa: E402
from evafusion_core.reward.model import HEAD_POOLING  # noqa: E402
from evafusion_core.reward.refit import (  # noqa: E402
    fit_heads,
    head_plcc,
    pooled_features,
    refit_panels,
    set_cue_scale,
    split_by_pair,
    with_cue_inputs,
    with_head_pooling,
)
from evafusion_core.reward.train import resolve_path, source_sizes  # noqa: E402


def _fingerprint(model: torch.nn.Module) -> str:
    """A digest of the weights, so cached features are reused only for the very same model."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _shares(n: int, k: int) -> list[int]:
    """``n`` samples shared as equally as possible among ``k`` source sizes."""
    return [n // k + (i < n % k) for i in range(k)]


def _features(model: torch.nn.Module, datasets: list[SyntheticRewardData], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples' head inputs and labels, in :func:`_shares` from ``datasets`` (one per source size)."""
    parts = [pooled_features(model, data, m) for data, m in zip(datasets, _shares(n, len(datasets))) if m]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def _plcc_by_size(heads: torch.nn.ModuleList, val: tuple[torch.Tensor, torch.Tensor],
                  sizes: list[int]) -> dict[str, list[float]]:
    """Each head's validation PLCC on each source size's share of the samples."""
    out, start = {}, 0
    for s, m in zip(sizes, _shares(len(val[0]), len(sizes))):
        out[str(s)] = head_plcc(heads, val[0][start:start + m], val[1][start:start + m])
        start += m
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="small", help="bundled name, local folder or Hub repo id")
    ap.add_argument("--config", required=True, help="the training config the model was trained with (data, "
                    "methods, split, synthetic)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--samples", type=int, default=4800, help="samples to fit on")
    ap.add_argument("--local-samples", type=int, default=0,
                    help="more samples to fit on, drawn as the config draws them but with no whole-image artifact "
                    "(whole_fraction 0): the config's whole-image share teaches the backbone fakes such as the IR "
                    "image alone, yet leaves the heads few samples where several local artifacts add up")
    ap.add_argument("--val-samples", type=int, default=960, help="samples from the validation pairs")
    ap.add_argument("--val-fraction", type=float, default=0.15, help="share of the training pairs held for validation")
    ap.add_argument("--seed", type=int, default=77, help="seed of the samples and of the validation split")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-4,
                    help="AdamW learning rate (1e-4 was best on the bundled model's validation pairs; 1e-3 overshoots)")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--sources-cache", help="a sources_<size>.pt the trainer wrote, at the model's input size "
                    "(default <out>/sources_<size>.pt)")
    ap.add_argument("--sizes", nargs="+", type=int, metavar="PX",
                    help="source sizes the samples are drawn at, in equal shares (default: the model's input size)")
    ap.add_argument("--head-pooling", choices=HEAD_POOLING,
                    help="what the refit heads read (default: what the model's heads read); 'rich' widens them, "
                    "the new inputs starting at zero")
    ap.add_argument("--cues", nargs="+", default=[], choices=list(CUE_GROUPS), metavar="GROUP",
                    help="cue groups the heads should also read (reward/cues.py: retention, quality), their weights "
                    "starting at zero; groups the model reads already are kept as they are")
    ap.add_argument("--keep", nargs="+", default=[], choices=DIMENSIONS, metavar="DIMENSION",
                    help="dimensions whose heads stay as trained (e.g. Overall, which alone sets the pairwise "
                    "accuracy and the rank check)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    config_path = resolve_path(args.config)
    if not config_path.is_file():
        raise SystemExit(f"training config not found: {config_path}")
    cfg = json.loads(config_path.read_text())
    out = resolve_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    model = load_reward_model(args.model, device=device)
    if args.head_pooling:
        model = with_head_pooling(model, args.head_pooling)
    new_cues = [g for g in args.cues if g not in model.cue_inputs]
    if new_cues:
        model = with_cue_inputs(model, new_cues)
    size = model.image_size
    try:
        sizes = source_sizes({"source_sizes": args.sizes}, size)  # the trainer's check of the same setting
    except ValueError as exc:
        raise SystemExit(f"--sizes: {exc}") from None

    dirs = [resolve_path(d) for d in cfg["data"]]
    for d in dirs:
        if not d.is_dir():
            raise SystemExit(f"training data folder not found: {d}")
    split = cfg.get("split", {"test_fraction": 0.15, "seed": 0})
    syn = SyntheticConfig.from_dict({**(cfg.get("synthetic") or {}), "paired": False})
    methods = tuple(cfg.get("methods", FUSION_BASELINES + PUBLISHED_METHODS))
    local = dataclasses.replace(syn, whole_fraction=0.0)
    fit_sets, val_sets, local_sets = [], [], []
    for i, s in enumerate(sizes):
        given = args.sources_cache and s == size
        cache = resolve_path(args.sources_cache) if given else out / f"sources_{s}.pt"
        pairs = load_sources(dirs, methods, size=s, cache=cache)
        train = [p for p in pairs if not is_test_pair(p.key, split["test_fraction"], split["seed"])]
        fit_keys, val_keys = split_by_pair([p.key for p in train], args.val_fraction, args.seed)
        by_key = {p.key: p for p in train}
        # The first size keeps the seeds a single-size refit uses, so its samples are the same.
        fit_sets.append(SyntheticRewardData([by_key[k] for k in fit_keys], seed=args.seed + 2 * i, config=syn))
        val_sets.append(SyntheticRewardData([by_key[k] for k in val_keys], seed=args.seed + 2 * i + 1, config=syn))
        local_sets.append(SyntheticRewardData([by_key[k] for k in fit_keys], seed=args.seed + 100 + i, config=local))
    print(f"{len(fit_keys)} fit pairs, {len(val_keys)} validation pairs ({len(pairs) - len(train)} test pairs unused)"
          f", at {', '.join(f'{s} px' for s in sizes)}")

    meta = {"model": str(args.model), "weights": _fingerprint(model), "config": str(config_path),
            "samples": args.samples, "local_samples": args.local_samples, "val_samples": args.val_samples,
            "val_fraction": args.val_fraction, "seed": args.seed, "size": size, "sizes": sizes,
            "head_pooling": model.head_pooling, "cue_inputs": list(model.cue_inputs)}
    feat_path = out / "features.pt"
    cached = torch.load(feat_path, weights_only=True) if feat_path.is_file() else None
    if cached is not None and cached.get("meta") == meta:
        fit, val = tuple(cached["fit"]), tuple(cached["val"])
        print(f"features from {feat_path}")
    else:
        fit = _features(model, fit_sets, args.samples)
        if args.local_samples:
            extra = _features(model, local_sets, args.local_samples)
            fit = (torch.cat([fit[0], extra[0]]), torch.cat([fit[1], extra[1]]))
        val = _features(model, val_sets, args.val_samples)
        tmp = feat_path.with_suffix(".tmp")
        torch.save({"meta": meta, "fit": list(fit), "val": list(val)}, tmp)
        tmp.replace(feat_path)

    if new_cues:  # features hold the new cues unscaled (and are cached so); standardise model and features alike
        fit, val = (fit[0].clone(), fit[1]), (val[0].clone(), val[1])
        for group in new_cues:
            set_cue_scale(model, group, fit[0], val[0])
    before = _plcc_by_size(model.heads.cpu(), val, sizes)
    heads, record = fit_heads(model.heads.cpu(), fit, val, steps=args.steps, lr=args.lr,
                              weight_decay=args.weight_decay, keep=[DIMENSIONS.index(d) for d in args.keep])
    record["val_plcc_by_size"] = {s: {"before": before[s], "after": after}
                                  for s, after in _plcc_by_size(heads, val, sizes).items()}
    print(f"{'dimension':<22} {'val PLCC before':>16} {'after':>8} {'step':>6}")
    for k, name in enumerate(DIMENSIONS):
        print(f"{name:<22} {record['val_plcc_before'][k]:>16.4f} {record['val_plcc_after'][k]:>8.4f} "
              f"{record['chosen_step'][k]:>6}")
    if len(sizes) > 1:
        for s, r in record["val_plcc_by_size"].items():
            print(f"at {s} px, val PLCC before / after: " + ", ".join(
                f"{name} {b:.4f} / {a:.4f}" for name, b, a in zip(DIMENSIONS, r["before"], r["after"])))
    model.heads = heads.to(device)
    model.save_pretrained(out / "final")
    atomic_write_bytes(out / "refit.json", json.dumps({"settings": {**meta, "steps": args.steps, "lr": args.lr,
                                                                    "weight_decay": args.weight_decay,
                                                                    "keep": args.keep},
                                                       **record}, indent=1).encode())
    save_png(plot_panels(refit_panels(record, DIMENSIONS), columns=2, raw_panels=("validation PLCC",)),
             out / "plot.png")
    print(f"wrote {out / 'final'}, {out / 'refit.json'} and {out / 'plot.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
