"""Reward fine-tuning of a fusion network: region GRPO, its global ablation, or the ReFL baseline.

    .venv/bin/python training/train_grpo.py --config training/configs/grpo_light.json [--resume]
    .venv/bin/python training/train_grpo.py --mode refl --out runs/refl_light --set grpo.lr=1e-4
    torchrun --nproc_per_node 2 training/train_grpo.py --set steps=100      # DDP (gloo on CPU, nccl on CUDA)
    .venv/bin/python training/train_grpo.py --time-step                     # one 256x256 step, G=8
    .venv/bin/python training/train_grpo.py --evaluate light,runs/grpo_light/final --eval-data DIR[,DIR]

Relative paths in the config (data, out) are resolved against the repository root. Every run
writes its folder as described in ``evafusion_core/grpo/run.py`` (checkpoint.pt, log.jsonl,
eval.jsonl, plot.png, best/, final/, summary.json); ``--resume`` continues a killed run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evafusion_core.grpo.config import MODES, run_config_from, to_dict  # noqa: E402

log = logging.getLogger("train_grpo")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="JSON run config (defaults: evafusion_core.grpo.config.RunConfig)")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    ap.add_argument("--mode", choices=MODES, help="override grpo.mode")
    ap.add_argument("--steps", type=int, help="override steps")
    ap.add_argument("--out", help="override the output folder")
    ap.add_argument("--data", help="override the training folders (comma separated)")
    ap.add_argument("--model", help="override the network to fine-tune")
    ap.add_argument("--reward", help="override the reward model (bundled name, folder or Hub id)")
    ap.add_argument("--device", help="auto, cpu or cuda")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override any config value, e.g. --set grpo.beta=0.1 (repeatable)")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    ap.add_argument("--time-step", action="store_true", help="time one step on a 256x256 crop (G=8) and exit")
    ap.add_argument("--evaluate", metavar="MODELS",
                    help="comma-separated networks to evaluate on --eval-data instead of training")
    ap.add_argument("--eval-data", default="../shared/data/ivif/msrs34,../shared/data/ivif/m3fd10,"
                    "../shared/data/ivif/fmb5", help="held-out folders for --evaluate")
    ap.add_argument("--eval-out", help="write the --evaluate results as JSON here")
    ap.add_argument("--eval-max-side", type=int, default=0, help="scale held-out images (0 = full size)")
    return ap


def resolved_config(args: argparse.Namespace):
    data = json.loads(Path(args.config).read_text()) if args.config else {}
    overrides = list(args.set)
    for key, value in (("grpo.mode", args.mode), ("steps", args.steps), ("out", args.out), ("model", args.model),
                       ("reward", args.reward), ("device", args.device)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    if args.data:
        overrides.append(f"data={json.dumps(args.data.split(','))}")
    return run_config_from(data, overrides)


def evaluate_models(models: list[str], folders: list[str], reward: str, max_side: int) -> dict:
    from evafusion_core.grpo import RewardWeights, evaluate_pairs, load_pairs, load_policy
    from evafusion_core.grpo.run import load_reward

    rm = load_reward(reward)
    results: dict = {}
    for folder in folders:
        root = (ROOT / folder).resolve() if not Path(folder).is_absolute() else Path(folder)
        pairs = load_pairs(root, max_side=max_side)
        for name in models:
            model = load_policy(name if Path(name).is_absolute() or not (ROOT / name).exists() else str(ROOT / name))
            res = evaluate_pairs(model, pairs, rm, reward_weights=RewardWeights().as_list(), per_image=True)
            results.setdefault(root.name, {})[name] = res
            m = res["mean"]
            print(f"{root.name:14s} {name:40s} Overall {m['Overall']:.4f} heat {m['heat_mass']:.4f} "
                  f"Qabf {m['Qabf']:.4f} VIF {m['VIF']:.4f} MI {m['MI']:.4f} SSIM {m['SSIM']:.4f}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = resolved_config(args)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    if args.time_step:
        from evafusion_core.grpo import time_one_step

        r = time_one_step(cfg.model, cfg.reward, size=256, group_size=8, mode=cfg.grpo.mode, device=cfg.device,
                          threads=cfg.threads)
        print(f"one {r['mode']} step, {r['size']}x{r['size']} crop, G={r['group_size']}, model {r['model']}, "
              f"reward {r['reward']}, {r['device']} ({r['threads']} threads): {r['sec']:.3f} s median of "
              f"{r['repeats']} (mean/reference forward {r['t_forward']:.3f} s, regions {r['t_regions']:.3f} s, "
              f"sampling+reward {r['t_reward']:.3f} s, update {r['t_update']:.3f} s)")
        return 0
    if args.evaluate:
        results = evaluate_models(args.evaluate.split(","), args.eval_data.split(","), cfg.reward, args.eval_max_side)
        if args.eval_out:
            from evafusion_core.io import atomic_write_bytes

            atomic_write_bytes(args.eval_out, json.dumps(results, indent=2).encode())
            print(f"wrote {args.eval_out}")
        return 0
    from evafusion_core.grpo import run_training

    out = run_training(cfg, resume=args.resume, base_dir=ROOT)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
