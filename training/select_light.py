"""Pick among trained ``light`` candidates using the TRAINING sets only (msrs34 and a RoadScene subset).

    .venv/bin/python training/select_light.py runs/A/final runs/B/final ... [--every 4]

Prints mean Qabf, VIF, MI and SSIM (tang), EN, SD and the warm-target share
(:func:`evafusion_core.evaluate.warm_target_share`, over pairs that have warm targets) per
candidate next to the ``average`` and ``laplacian`` baselines, so that the choice never looks at
the held-out sets. ``--scale 1.6`` resizes every pair first (MSRS's 640x480 becomes M3FD's
1024x768), to judge how a candidate copes with targets that span more pixels than in training.

The rule (docs/RESULTS.md, twenty-second session): a candidate must keep at least 0.8 of the warm-target
contrast at 1.6x; among those, the largest smallest relative margin over the better baseline on Qabf,
VIF, MI and SSIM, over both sizes, wins.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evafusion_core.colour import luma  # noqa: E402
from evafusion_core.evaluate import warm_target_share  # noqa: E402
from evafusion_core.hub import load_fusion_model  # noqa: E402
from evafusion_core.inference import fuse  # noqa: E402
from evafusion_core.io import find_pairs, load_pair, resize_to, to_uint8  # noqa: E402
from evafusion_core.metrics import compute_metrics  # noqa: E402

NAMES = ["Qabf", "VIF", "MI", "SSIM", "EN", "SD"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+")
    ap.add_argument("--every", type=int, default=4, help="use every Nth RoadScene pair")
    ap.add_argument("--scale", type=float, default=1.0, help="resize every pair by this factor first")
    args = ap.parse_args()
    data = ROOT.parent / "shared" / "data" / "ivif"
    pairs = find_pairs(data / "msrs34" / "ir", data / "msrs34" / "vi")
    pairs += find_pairs(data / "roadscene171" / "ir", data / "roadscene171" / "vi")[:: args.every]
    loaded = [load_pair(a, b, resize=True) for _, (a, b) in pairs]
    if args.scale != 1.0:
        loaded = [tuple(resize_to(t, (round(t.shape[-2] * args.scale), round(t.shape[-1] * args.scale)))
                        for t in pair) for pair in loaded]
    columns = [*NAMES, "warm"]
    print(f"{len(loaded)} training pairs at scale {args.scale}; | model | " + " | ".join(columns) + " |")
    for source in ["average", "laplacian", *args.candidates]:
        model = load_fusion_model(source)
        sums, warm = dict.fromkeys(NAMES, 0.0), []
        for ir, vis in loaded:
            f = fuse(model, ir[None], vis[None])[0]
            m = compute_metrics(to_uint8(ir), to_uint8(vis), to_uint8(f), names=NAMES)
            for k in NAMES:
                sums[k] += m[k] / len(loaded)
            share = warm_target_share(luma(ir), luma(vis), luma(f))
            if not math.isnan(share):  # NaN: the pair has no warm targets
                warm.append(share)
        sums["warm"] = sum(warm) / max(len(warm), 1)
        print(f"| {source} | " + " | ".join(f"{sums[k]:.4f}" for k in columns) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
