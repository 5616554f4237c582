"""How much of the IR image's contrast a fusion keeps on warm targets, per pair and on average.

    .venv/bin/python scripts/warm_targets.py --data ../shared/data/ivif/m3fd10 [--work-size 0 640]

The measure is :func:`evafusion_core.evaluate.warm_target_share` (1 when the fusion shows warm
targets as the IR image does, 0 when it shows the visible image); each ``--work-size`` (0 = full
size) is one column.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evafusion_core.colour import luma  # noqa: E402
from evafusion_core.evaluate import warm_target_share  # noqa: E402
from evafusion_core.hub import load_fusion_model  # noqa: E402
from evafusion_core.inference import fuse_luma  # noqa: E402
from evafusion_core.io import find_pairs, load_pair  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a folder with ir/ and vi/")
    ap.add_argument("--model", default="light")
    ap.add_argument("--work-size", type=int, nargs="+", default=[0, 640])
    args = ap.parse_args()
    models = [load_fusion_model(args.model, work_size=w) for w in args.work_size]
    root = Path(args.data)
    rows = []
    print("| pair | size | " + " | ".join(f"work_size {w or 'off'}" for w in args.work_size) + " |")
    print("|---|---|" + "---|" * len(models))
    for stem, (a, b) in find_pairs(root / "ir", root / "vi"):
        ir, vis = load_pair(a, b, resize=True)
        ir_y, vis_y = luma(ir[None]), luma(vis[None])
        with torch.no_grad():
            row = [warm_target_share(ir_y, vis_y, fuse_luma(m, ir[None], vis[None])) for m in models]
        rows.append(row)
        print(f"| {stem} | {ir.shape[-1]}x{ir.shape[-2]} | " + " | ".join(f"{x:.3f}" for x in row) + " |")
    mean = torch.tensor(rows).nanmean(0).tolist()
    print(f"| mean of {len(rows)} | | " + " | ".join(f"{x:.3f}" for x in mean) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
