"""Refit a reward model's score heads on frozen features (see ``evafusion_core/reward/refit.py``).

    .venv/bin/python training/refit_reward_heads.py --model small \\
        --config training/configs/reward_small320l_cpu.json --out runs/refit

Samples come from the training config's source pairs, generator and labels, at the model's input
size, from its *training* pairs only: a stable ``--val-fraction`` of them gives the validation
samples that choose each head's step; the pairs the config holds out for testing are never read.
Writes ``<out>/final`` (``save_pretrained``; the heatmap is unchanged, the config only by ``--head-pooling``),
``<out>/refit.json`` (settings, validation PLCC before and after, the curve), ``<out>/plot.png`` (the
curve: each head's validation PLCC per check) and ``<out>/features.pt`` (reused by a rerun with the
same model and samples).
"""

from __future__ import annotations

import argparse
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
from evafusion_core.reward.model import HEAD_POOLING  # noqa: E402
from evafusion_core.reward.refit import (  # noqa: E402
    fit_heads,
    pooled_features,
    refit_panels,
    split_by_pair,
    with_head_pooling,
)
from evafusion_core.reward.train import resolve_path  # noqa: E402


def _fingerprint(model: torch.nn.Module) -> str:
    """A digest of the weights, so cached features are reused only for the very same model."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="small", help="bundled name, local folder or Hub repo id")
    ap.add_argument("--config", required=True, help="the training config the model was trained with (data, "
                    "methods, split, synthetic)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--samples", type=int, default=4800, help="samples to fit on")
    ap.add_argument("--val-samples", type=int, default=960, help="samples from the validation pairs")
    ap.add_argument("--val-fraction", type=float, default=0.15, help="share of the training pairs held for validation")
    ap.add_argument("--seed", type=int, default=77, help="seed of the samples and of the validation split")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-4,
                    help="AdamW learning rate (1e-4 was best on the bundled model's validation pairs; 1e-3 overshoots)")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--sources-cache", help="a sources_<size>.pt the trainer wrote (default <out>/sources_<size>.pt)")
    ap.add_argument("--head-pooling", choices=HEAD_POOLING,
                    help="what the refit heads read (default: what the model's heads read); 'rich' widens them, "
                    "the new inputs starting at zero")
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
    size = model.image_size

    dirs = [resolve_path(d) for d in cfg["data"]]
    for d in dirs:
        if not d.is_dir():
            raise SystemExit(f"training data folder not found: {d}")
    cache = resolve_path(args.sources_cache) if args.sources_cache else out / f"sources_{size}.pt"
    pairs = load_sources(dirs, tuple(cfg.get("methods", FUSION_BASELINES + PUBLISHED_METHODS)), size=size, cache=cache)
    split = cfg.get("split", {"test_fraction": 0.15, "seed": 0})
    train = [p for p in pairs if not is_test_pair(p.key, split["test_fraction"], split["seed"])]
    fit_keys, val_keys = split_by_pair([p.key for p in train], args.val_fraction, args.seed)
    syn = SyntheticConfig.from_dict({**(cfg.get("synthetic") or {}), "paired": False})
    by_key = {p.key: p for p in train}
    fit_data = SyntheticRewardData([by_key[k] for k in fit_keys], seed=args.seed, config=syn)
    val_data = SyntheticRewardData([by_key[k] for k in val_keys], seed=args.seed + 1, config=syn)
    print(f"{len(fit_keys)} fit pairs, {len(val_keys)} validation pairs ({len(pairs) - len(train)} test pairs unused)")

    meta = {"model": str(args.model), "weights": _fingerprint(model), "config": str(config_path),
            "samples": args.samples, "val_samples": args.val_samples, "val_fraction": args.val_fraction,
            "seed": args.seed, "size": size, "head_pooling": model.head_pooling}
    feat_path = out / "features.pt"
    cached = torch.load(feat_path, weights_only=True) if feat_path.is_file() else None
    if cached is not None and cached.get("meta") == meta:
        fit, val = tuple(cached["fit"]), tuple(cached["val"])
        print(f"features from {feat_path}")
    else:
        fit = pooled_features(model, fit_data, args.samples)
        val = pooled_features(model, val_data, args.val_samples)
        tmp = feat_path.with_suffix(".tmp")
        torch.save({"meta": meta, "fit": list(fit), "val": list(val)}, tmp)
        tmp.replace(feat_path)

    heads, record = fit_heads(model.heads.cpu(), fit, val, steps=args.steps, lr=args.lr,
                              weight_decay=args.weight_decay, keep=[DIMENSIONS.index(d) for d in args.keep])
    print(f"{'dimension':<22} {'val PLCC before':>16} {'after':>8} {'step':>6}")
    for k, name in enumerate(DIMENSIONS):
        print(f"{name:<22} {record['val_plcc_before'][k]:>16.4f} {record['val_plcc_after'][k]:>8.4f} "
              f"{record['chosen_step'][k]:>6}")
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
