"""Does feedback teach the reward model? A scripted annotator, a short fine-tune, a before/after benchmark.

    .venv/bin/python training/feedback_experiment.py [--config CONFIG] [--steps 100] [--out runs/feedback_exp]

1. A scripted annotator prefers thermal emphasis: for RoadScene pairs (a reward *training*
   set) it sees three versions of the `light` fusion, pulled towards the IR image
   (t = +1), as fused (t = 0) and pulled towards the visible image (t = -1), rates them
   (Overall 5/4/3, Thermal Retention 5/5/4, the rest 5: the synthetic labels' view plus one
   taste) and prefers the IR-leaning one of each neighbouring pair. Everything is written
   through ``FeedbackStore``, the code path of the Rate Fusion and Compare Fusions nodes.
2. The bundled reward model is fine-tuned on that folder mixed with synthetic data
   (``--config``, by default ``training/configs/reward_feedback.json``, the config users fine-tune with).
3. Before and after, on held-out pairs (m3fd10 and fmb5: never used to train the reward
   model, `light`, or this feedback), it measures how the predicted Overall moves with t
   and how often it agrees with the annotator; and the PLCC on the synthetic held-out
   benchmark of ``evafusion eval-reward``, which may not fall by more than 0.02.
Writes ``<out>/results.json`` and ``<out>/results.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evafusion_core.colour import luma, recolour  # noqa: E402
from evafusion_core.feedback import FeedbackStore  # noqa: E402
from evafusion_core.hub import load_fusion_model  # noqa: E402
from evafusion_core.inference import fuse  # noqa: E402
from evafusion_core.io import find_pairs, load_pair, resize_to  # noqa: E402
from evafusion_core.reward import DIMENSIONS, load_reward_model  # noqa: E402
from evafusion_core.reward.evaluate import evaluate_reward, synthetic_eval_set  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ivif"
LEVELS = (-1.0, 0.0, 1.0)
PULL = 0.4  # how far t = +-1 moves the luma towards IR / visible
#: The scripted annotator's scores per level (Thermal, Texture, Artifacts, Sharpness, Overall). It agrees
#: with the synthetic labels wherever they speak (a clean fusion keeps full marks per dimension; pulling
#: towards the visible image loses some thermal retention) and adds one taste: more thermal emphasis
#: is better overall.
SCRIPT = {-1.0: [4, 5, 5, 5, 3], 0.0: [5, 5, 5, 5, 4], 1.0: [5, 5, 5, 5, 5]}


def variants(light, ir: torch.Tensor, vis: torch.Tensor) -> dict[float, torch.Tensor]:
    """The light fusion pulled towards IR (t > 0) or towards the visible luma (t < 0), visible colour kept."""
    base = luma(fuse(light, ir[None], vis[None]))
    out = {}
    for t in LEVELS:
        target = ir[None] if t > 0 else luma(vis[None])
        y = (base + abs(t) * PULL * (target - base)).clamp(0, 1)
        out[t] = recolour(y, vis[None])[0]
    return out


def load_set(name: str, every: int, width: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    pairs = find_pairs(DATA / name / "ir", DATA / name / "vi")[::every]
    out = []
    for stem, (a, b) in pairs:
        ir, vis = load_pair(a, b, resize=True)
        h = round(ir.shape[-2] * width / ir.shape[-1])
        out.append((f"{name}/{stem}", resize_to(ir, (h, width)), resize_to(vis.expand(3, -1, -1), (h, width))))
    return out


@torch.no_grad()
def direction(model, light, pairs) -> dict[str, float]:
    """Mean predicted Overall per level, its spread, and agreement with the annotator's order."""
    overall = {t: [] for t in LEVELS}
    for _, ir, vis in pairs:
        for t, f in variants(light, ir, vis).items():
            s = model.predict(f[None], ir[None], vis[None])["scores"][0]
            overall[t].append(float(s[DIMENSIONS.index("Overall")]))
    o = {t: np.array(v) for t, v in overall.items()}
    agree = np.concatenate([o[1.0] > o[0.0], o[0.0] > o[-1.0]])
    return {"overall_minus": float(o[-1.0].mean()), "overall_0": float(o[0.0].mean()),
            "overall_plus": float(o[1.0].mean()), "spread_plus_minus": float((o[1.0] - o[-1.0]).mean()),
            "agreement": float(agree.mean()), "n_pairs": len(pairs)}


def synthetic_plcc(model, samples, ladders) -> dict[str, float]:
    res = evaluate_reward(model, samples, None, ladders=ladders, progress=False)
    out = {d: res["scores"][d]["plcc"] for d in DIMENSIONS}
    out["pairwise"] = res["pairwise"]["accuracy"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/feedback_exp")
    ap.add_argument("--config", default="training/configs/reward_feedback.json",
                    help="the fine-tuning config (default: the one users fine-tune with)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--every", type=int, default=3, help="use every Nth RoadScene pair for the feedback")
    ap.add_argument("--width", type=int, default=320, help="width the rated images are stored at")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--feedback-weight", type=float, default=0.25, help="feedback's share next to synthetic (1)")
    ap.add_argument("--ranking", type=float, help="weight of the ranking loss (default: the config's)")
    ap.add_argument("--lr", type=float, help="learning rate (default: the config's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = (ROOT / args.out).resolve()
    t0 = time.time()
    light = load_fusion_model("light")
    before_model = load_reward_model("small")

    # 1. scripted feedback
    fb = out / "feedback"
    if fb.exists():
        shutil.rmtree(fb)
    store = FeedbackStore(fb)
    train_pairs = load_set("roadscene171", args.every, args.width)
    for k, (name, ir, vis) in enumerate(train_pairs):
        v = variants(light, ir, vis)
        for t in LEVELS:
            store.add_rating(v[t], ir, vis, SCRIPT[t], annotator="scripted-thermal", model=f"light t={t:+.0f}",
                             pair=name)
        for hi, lo in ((1.0, 0.0), (0.0, -1.0)):  # A/B order alternates so position means nothing
            a, b, choice = (v[hi], v[lo], "A") if k % 2 == 0 else (v[lo], v[hi], "B")
            store.add_preference(a, b, ir, vis, choice, annotator="scripted-thermal", reason="hot targets brighter",
                                 pair=name)
    print(f"recorded {len(store.ratings())} ratings and {len(store.preferences())} preferences in {fb} "
          f"({time.time() - t0:.0f} s)", flush=True)

    # 2. fine-tune the bundled model on feedback + synthetic
    from evafusion_core.reward.train import train

    cfg = json.loads((ROOT / args.config).read_text())
    cfg["sources"].append({"kind": "feedback", "path": str(fb), "weight": args.feedback_weight})
    cfg.update({"steps": args.steps, "threads": args.threads, "out": str(out / "reward")})
    if args.lr:
        cfg["lr"] = args.lr
    if args.ranking is not None:
        cfg["loss"]["ranking"] = args.ranking
    cache = ROOT / "runs" / "reward_small_ft" / "sources_224.pt"
    (out / "reward").mkdir(parents=True, exist_ok=True)
    if cache.is_file() and not (out / "reward" / cache.name).exists():
        shutil.copy(cache, out / "reward" / cache.name)  # the fused training sources, built once
    t1 = time.time()
    train(cfg, device="cpu", progress=True)
    train_sec = time.time() - t1
    after_model = load_reward_model(out / "reward" / "final")

    # 3. before / after
    held = load_set("m3fd10", 1, args.width) + load_set("fmb5", 1, args.width)
    samples, ladders, _ = synthetic_eval_set([DATA / "roadscene171", DATA / "msrs34"], size=224, progress=False)
    result = {"feedback": {"ratings": len(store.ratings()), "preferences": len(store.preferences()),
                           "pairs": len(train_pairs)},
              "steps": args.steps, "feedback_weight": args.feedback_weight, "lr": cfg["lr"],
              "ranking": cfg["loss"]["ranking"], "train_seconds": round(train_sec),
              "before": {"direction": direction(before_model, light, held),
                         "synthetic_plcc": synthetic_plcc(before_model, samples, ladders)},
              "after": {"direction": direction(after_model, light, held),
                        "synthetic_plcc": synthetic_plcc(after_model, samples, ladders)}}
    drops = {d: result["before"]["synthetic_plcc"][d] - result["after"]["synthetic_plcc"][d] for d in DIMENSIONS}
    result["plcc_drop"] = drops
    result["plcc_drop_ok"] = all(v <= 0.02 for v in drops.values())
    (out / "results.json").write_text(json.dumps(result, indent=2))
    b, a = result["before"], result["after"]
    lines = [
        f"Scripted feedback: {result['feedback']['ratings']} ratings, {result['feedback']['preferences']} "
        f"preferences on {result['feedback']['pairs']} RoadScene pairs; fine-tune {args.steps} steps, "
        f"feedback weight {args.feedback_weight} next to synthetic 1, lr {cfg['lr']}, ranking weight "
        f"{cfg['loss']['ranking']} ({train_sec:.0f} s).",
        "",
        "| held-out m3fd10+fmb5 | Overall t=-1 | t=0 | t=+1 | spread (+1 minus -1) | agreement |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in (("before", b["direction"]), ("after", a["direction"])):
        lines.append(f"| {label} | {r['overall_minus']:.4f} | {r['overall_0']:.4f} | {r['overall_plus']:.4f} | "
                     f"{r['spread_plus_minus']:+.4f} | {r['agreement']:.1%} |")
    lines += ["", "| synthetic held-out PLCC | " + " | ".join(DIMENSIONS) + " | pairwise |",
              "|---|" + "---|" * (len(DIMENSIONS) + 1)]
    for label, r in (("before", b["synthetic_plcc"]), ("after", a["synthetic_plcc"])):
        lines.append(f"| {label} | " + " | ".join(f"{r[d]:.4f}" for d in DIMENSIONS) + f" | {r['pairwise']:.1%} |")
    lines.append("| drop | " + " | ".join(f"{drops[d]:+.4f}" for d in DIMENSIONS) + " | |")
    lines.append(f"\nPLCC within 0.02 on every dimension: {result['plcc_drop_ok']}")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
