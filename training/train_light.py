"""Train the ``light`` fusion network with unsupervised fusion losses.

    .venv/bin/python training/train_light.py --config training/configs/light.json [--resume]

Reads IR/visible pairs from the folders in the config (roadscene171 and msrs34
only: the other sets stay held out), trains on random crops, logs every step to
``<out>/log.jsonl``, checkpoints atomically every ``checkpoint_every`` steps
(weights, optimiser, RNG, step) so ``--resume`` continues a killed run (``--stop-after``
stops one on purpose), redraws ``<out>/plot.png`` (loss terms and learning rate) at each
checkpoint, and writes the final network with ``save_pretrained`` to ``<out>/final``. Copy that folder to
``evafusion_core/weights/fusion/light`` to ship it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evafusion_core.checkpoint import load_checkpoint, read_jsonl, save_checkpoint, truncate_jsonl  # noqa: E402
from evafusion_core.device import pick_device  # noqa: E402
from evafusion_core.io import find_pairs, load_pair, resize_to  # noqa: E402
from evafusion_core.losses import FusionLossWeights, fusion_loss  # noqa: E402
from evafusion_core.models import create_model  # noqa: E402
from evafusion_core.overrides import apply_overrides  # noqa: E402
from evafusion_core.plot import plot_panels, save_png  # noqa: E402

log = logging.getLogger("train_light")


def load_dataset(folders: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """All pairs as (ir, vis) luma tensors [1,H,W]; small enough to hold in memory."""
    from evafusion_core.colour import luma

    pairs = []
    for folder in folders:
        root = (ROOT / folder).resolve()
        if not root.is_dir():
            raise SystemExit(f"training data folder not found: {root}")
        for _, (ir_path, vis_path) in tqdm(find_pairs(root / "ir", root / "vi"), desc=f"loading {root.name}"):
            ir, vis = load_pair(ir_path, vis_path, resize=True)
            pairs.append((ir, luma(vis)))
    return pairs


def sample_batch(pairs, batch_size: int, crop: int, rng: random.Random,
                 scale_range: tuple[float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``crop`` x ``crop`` patches with horizontal flips.

    With ``scale_range`` each patch is taken at a scale drawn log-uniformly from that range, so the
    network sees targets spanning as many pixels as on larger cameras (M3FD's 1024x768) as well as on
    the 640x480-class training images. (What ``light`` keeps of each source depends on that scale;
    this augmentation alone did not change it, see docs/RESULTS.md.)
    """
    irs, viss = [], []
    for _ in range(batch_size):
        ir, vis = pairs[rng.randrange(len(pairs))]
        h, w = ir.shape[-2:]
        factor = 1.0
        if scale_range is not None:
            factor = math.exp(rng.uniform(math.log(scale_range[0]), math.log(scale_range[1])))
        # a window of crop/factor source pixels, resized to the crop: the same as resizing the image first
        c = min(round(crop / factor), h, w) // 8 * 8
        y, x = rng.randrange(h - c + 1), rng.randrange(w - c + 1)
        a, b = ir[:, y : y + c, x : x + c], vis[:, y : y + c, x : x + c]
        if rng.random() < 0.5:
            a, b = a.flip(-1), b.flip(-1)
        if c != crop:  # rescaled, or a small image: resize to the common crop so the batch stacks
            a, b = resize_to(a, (crop, crop)), resize_to(b, (crop, crop))
        irs.append(a)
        viss.append(b)
    return torch.stack(irs), torch.stack(viss)


def save_plot(out: Path) -> None:
    """``<out>/plot.png``: each logged loss term and the learning rate against the step."""
    records = read_jsonl(out / "log.jsonl")
    steps = [r["step"] for r in records]
    keys = [k for k in records[0] if k not in ("step", "sec")] if records else []
    panels = {k: {k: (steps, [r.get(k, float("nan")) for r in records])} for k in keys}
    save_png(plot_panels(panels, smooth=max(1, len(records) // 50)), out / "plot.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "training/configs/light.json"))
    ap.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    ap.add_argument("--steps", type=int, help="override the config's step count")
    ap.add_argument("--stop-after", type=int, help="stop this run at this step (checkpointed; resume later)")
    ap.add_argument("--out", help="override the config's output folder")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override a config value, e.g. --set loss.ssim=5 (repeatable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    cfg = json.loads(Path(args.config).read_text())
    if args.steps:
        cfg["steps"] = args.steps
    if args.out:
        cfg["out"] = args.out
    apply_overrides(cfg, args.set)
    device = pick_device(args.device)
    out = (ROOT / cfg["out"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))

    torch.manual_seed(cfg["seed"])
    rng = random.Random(cfg["seed"])
    model = create_model("light", **cfg["model"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["steps"], eta_min=cfg["lr"] * 0.02)
    weights = FusionLossWeights(**cfg["loss"])
    step = 0
    ckpt_path = out / "checkpoint.pt"
    if args.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, model=model, optimizer=opt, scheduler=sched)
        step = state["step"]
        rng.setstate(state["extra"]["py_rng"])
        truncate_jsonl(out / "log.jsonl", step)
        log.info("resumed from %s at step %d", ckpt_path, step)

    pairs = load_dataset(cfg["data"])
    scale_range = tuple(cfg["scale_range"]) if cfg.get("scale_range") else None
    log.info("%d training pairs, %d parameters", len(pairs), model.num_parameters())
    model.train()
    with open(out / "log.jsonl", "a") as logf, tqdm(total=cfg["steps"], initial=step, desc="train light") as bar:
        end = min(cfg["steps"], args.stop_after or cfg["steps"])
        while step < end:
            ir, vis = (t.to(device) for t in sample_batch(pairs, cfg["batch_size"], cfg["crop"], rng, scale_range))
            t0 = time.perf_counter()
            loss, parts = fusion_loss(model(ir, vis), ir, vis, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            rec = {"step": step, "loss": loss.item(), **parts, "lr": sched.get_last_lr()[0],
                   "sec": time.perf_counter() - t0}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % cfg["checkpoint_every"] == 0 or step == end:
                save_checkpoint(ckpt_path, model=model, optimizer=opt, scheduler=sched, step=step,
                                extra={"py_rng": rng.getstate()})
                save_plot(out)
    if step < cfg["steps"]:
        log.info("stopped at step %d of %d; continue with --resume", step, cfg["steps"])
        return 0
    model.eval().cpu()
    model.save_pretrained(out / "final")
    log.info("wrote %s", out / "final")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
