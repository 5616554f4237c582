"""Choose a reward model's ``heatmap_blur`` on training source pairs, never on held-out ones.

    .venv/bin/python training/tune_heatmap_blur.py --model small [--json out/heatmap_blur.json]

Builds synthetic samples (benchmark labels) from the source pairs the trainer saw
(``synthetic_eval_set(split="train")``), runs the model once, then scores the heatmap smoothed
with each candidate sigma (a fraction of the image side, applied as ``predict`` applies it) with
the RichHF heatmap metrics. The choice is the sigma with the highest AUC-Judd among those whose
heatmap CC is at most ``--cc-tolerance`` below the unsmoothed map's. Prints a table and the choice;
it never changes the model (set ``heatmap_blur`` in its config.json to apply the choice).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evafusion_core.device import pick_device  # noqa: E402
from evafusion_core.io import atomic_write_bytes  # noqa: E402
from evafusion_core.reward import load_reward_model  # noqa: E402
from evafusion_core.reward.evaluate import heatmap_metrics, synthetic_eval_set  # noqa: E402
from evafusion_core.reward.model import promote_rgb  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ivif"
SIGMAS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05)


@torch.no_grad()
def decoder_heatmaps(model, samples: list[dict], batch_size: int = 8) -> list[torch.Tensor]:
    """Each sample's heatmap probabilities [1,1,h,w] at the decoder's resolution (mirrored scoring included)."""
    out: list[torch.Tensor] = []
    device = next(model.parameters()).device
    for k in tqdm(range(0, len(samples), batch_size), desc="heatmaps", unit="batch"):
        chunk = samples[k : k + batch_size]
        f, i, v = (torch.cat([promote_rgb(s[n][None]) for s in chunk]).to(device) for n in ("fused", "ir", "vis"))
        heat = model.probabilities(f, i, v)["heatmap"].cpu()
        out.extend(heat[j : j + 1] for j in range(len(chunk)))
    return out


def choose(table: dict[float, dict[str, float]], cc_tolerance: float) -> float:
    """The sigma with the highest AUC-Judd whose CC is within ``cc_tolerance`` of sigma 0's."""
    floor = table[0.0]["cc"] - cc_tolerance
    allowed = [s for s, m in table.items() if m["cc"] >= floor]
    return max(allowed, key=lambda s: (table[s]["auc_judd"], -s))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="small", help="bundled name, local folder or Hub repo id")
    ap.add_argument("--data", nargs="+", default=[str(DATA / "roadscene171"), str(DATA / "msrs34")],
                    help="the IVIF sets the model was trained on (their training pairs are used)")
    ap.add_argument("--size", type=int, default=224, help="work at SIZE x SIZE, as the benchmark does")
    ap.add_argument("--max-pairs", type=int, default=40, help="training source pairs to sample from")
    ap.add_argument("--per-pair", type=int, default=8, help="synthetic samples per source pair")
    ap.add_argument("--seed", type=int, default=4321, help="seed of the synthetic samples")
    ap.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    ap.add_argument("--cc-tolerance", type=float, default=0.02)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", help="also write the table and the choice here")
    args = ap.parse_args(argv)
    if 0.0 not in args.sigmas:
        ap.error("--sigmas must include 0 (the unsmoothed map is the reference)")
    for d in args.data:
        if not Path(d).is_dir():
            ap.error(f"data folder not found: {d}")

    model = load_reward_model(args.model, device=pick_device(args.device)).eval()
    samples, _, keys = synthetic_eval_set(args.data, split="train", seed=args.seed, per_pair=args.per_pair,
                                          ladders_per_pair=0, size=args.size, max_pairs=args.max_pairs)
    heats = decoder_heatmaps(model, samples)
    truths = [s["heatmap"] for s in samples]
    table = {}
    for sigma in args.sigmas:
        preds = [model.output_heatmap(h, t.shape[-2:], blur=sigma)[0] for h, t in zip(heats, truths)]
        table[sigma] = heatmap_metrics(preds, truths)
    best = choose(table, args.cc_tolerance)

    print(f"{len(samples)} samples from {len(keys)} training pairs; model {args.model} "
          f"(heatmap_blur now {model.heatmap_blur})")
    print("| sigma | CC | AUC-Judd | NSS | SIM | KLD | MSE |")
    print("|---|---|---|---|---|---|---|")
    for sigma, m in table.items():
        print(f"| {sigma:g} | {m['cc']:.4f} | {m['auc_judd']:.4f} | {m['nss']:.3f} | {m['sim']:.3f} | "
              f"{m['kld']:.3f} | {m['mse_all']:.4f} |")
    print(f"choice: heatmap_blur = {best:g} (highest AUC-Judd with CC at most {args.cc_tolerance} below sigma 0's)")
    if args.json:
        result = {"model": args.model, "pairs": keys, "n_samples": len(samples),
                  "table": {str(s): m for s, m in table.items()}, "choice": best}
        atomic_write_bytes(args.json, json.dumps(result, indent=2).encode())
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
