"""Average the weights of reward models fine-tuned from one another (a "model soup").

    .venv/bin/python training/soup_reward.py runs/a/final runs/b/final --out runs/soup/final

Runs fine-tuned from a common ancestor stay in one basin of the loss, so the mean of their weights
often scores at least as well as either of them (Wortsman et al. 2022, "Model soups"), at no cost when
scoring. Every folder must hold the same architecture with the same config; the soup is written with
``save_pretrained`` (config.json + model.safetensors) and keeps that config. An existing ``--out`` is
never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evafusion_core.errors import ModelLoadError  # noqa: E402
from evafusion_core.reward import RewardModel, load_reward_model  # noqa: E402


def soup(folders: list[Path]) -> RewardModel:
    """The first folder's model with every floating-point tensor replaced by the mean over all folders."""
    if len(folders) < 2:
        raise ValueError("a soup needs at least two model folders")
    models = [load_reward_model(str(f)) for f in folders]
    base, base_config = models[0], models[0].hub_config()
    for folder, m in zip(folders[1:], models[1:]):
        if m.hub_config() != base_config:
            raise ValueError(f"{folder}: config differs from {folders[0]}'s; only runs of one architecture mix")
    states = [m.state_dict() for m in models]
    mean = {}
    for name, tensor in states[0].items():
        if tensor.is_floating_point():
            value = torch.stack([s[name].float() for s in states]).mean(0).to(tensor.dtype)
            if not torch.isfinite(value).all():
                bad = [str(f) for f, s in zip(folders, states) if not torch.isfinite(s[name]).all()]
                raise ValueError(f"tensor {name} is not finite in {', '.join(bad) or 'the mean'}")
            mean[name] = value
        else:
            mean[name] = tensor
    base.load_state_dict(mean)
    return base


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="reward model folders (save_pretrained), two or more")
    p.add_argument("--out", type=Path, required=True, help="folder for the soup (must not exist yet)")
    args = p.parse_args(argv)
    if args.out.exists():
        p.error(f"{args.out} already exists; choose a new folder (nothing is overwritten)")
    try:
        model = soup(args.folders)
    except (ValueError, ModelLoadError) as exc:
        p.error(str(exc))
    model.save_pretrained(args.out)
    print(f"wrote the mean of {len(args.folders)} models to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
