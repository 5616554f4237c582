"""Dataset evaluation: fuse every pair with several models, score them, and show examples.

``evafusion eval`` writes, under its output folder: ``<model>/<stem>.png`` fused
images, ``<model>.json`` metrics (the ``evafusion metrics`` JSON shape), a markdown
table of means (``results.md``) and a contact sheet PNG of a few pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from .io import atomic_write_bytes, find_pairs, load_pair, resize_to, save_image, side_by_side, to_uint8


def summarise(rows: dict[str, dict[str, float]], convention: str) -> dict:
    """The metrics JSON shape: ``{"convention", "images": {name: {metric: v}}, "mean": {metric: v}}``."""
    if not rows:
        raise ValueError("no images to summarise")
    names = list(next(iter(rows.values())))
    mean = {m: sum(r[m] for r in rows.values()) / len(rows) for m in names}
    return {"convention": convention, "images": rows, "mean": mean}


def warm_target_share(ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor) -> float:
    """How much of the IR image's contrast a fusion keeps on warm targets: mean(fused - vis) / mean(ir - vis)
    over the hottest 10% of IR pixels that are also over 0.1 brighter than the visible image (luma, 0..1).

    1 when the fusion shows the targets as the IR image does, 0 when it shows the visible image; NaN when
    the pair has no such pixels. The standard metrics do not single this out, and it is what ``light``
    loses on large frames (docs/RESULTS.md).
    """
    warmer = ir - vis
    mask = (ir >= torch.quantile(ir.flatten().float(), 0.9)) & (warmer > 0.1)
    if not mask.any():
        return float("nan")
    return float((fused - vis)[mask].mean() / warmer[mask].mean())


def markdown_table(results: dict[str, dict], title: str) -> str:
    """Means per model as a markdown table, the best value per metric in bold."""
    from .metrics import HIGHER_IS_BETTER

    models = list(results)
    names = list(next(iter(results.values()))["mean"])
    lines = [f"### {title}", "", "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    best = {}
    for m in names:
        vals = [results[k]["mean"][m] for k in models]
        best[m] = max(vals) if HIGHER_IS_BETTER.get(m, True) else min(vals)
    for k in models:
        cells = []
        for m in names:
            v = results[k]["mean"][m]
            cells.append(f"**{v:.4f}**" if v == best[m] and len(models) > 1 else f"{v:.4f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate_dataset(
    data: Path,
    models: list[str],
    out: Path,
    *,
    convention: str = "tang",
    device: str = "auto",
    tile: int | None = None,
    examples: int = 4,
) -> Path:
    """Fuse and score ``data/ir`` + ``data/vi`` with each model; returns the path of ``results.md``."""
    from .device import pick_device
    from .hub import load_fusion_model
    from .inference import fuse
    from .metrics import compute_metrics

    dev = pick_device(device)
    pairs = find_pairs(data / "ir", data / "vi")
    results: dict[str, dict] = {}
    sheet_rows: list[list[torch.Tensor]] = [[] for _ in range(min(examples, len(pairs)))]
    for source in models:
        model = load_fusion_model(source, device=dev)
        name = source.strip("/").replace("/", "_")  # a folder path becomes a flat label
        rows = {}
        for i, (stem, (a, b)) in enumerate(tqdm(pairs, desc=f"eval {source} on {data.name}", unit="pair")):
            ir, vis = load_pair(a, b, resize=True)
            fused = fuse(model, ir[None], vis[None], tile=tile)[0]
            save_image(fused, out / name / f"{stem}.png")
            u8 = lambda t: to_uint8(t).astype("float64")  # noqa: E731 - metrics read what was saved, as 8-bit
            rows[stem] = compute_metrics(u8(ir), u8(vis), u8(fused), convention=convention)
            if i < len(sheet_rows):
                if not sheet_rows[i]:
                    sheet_rows[i] += [ir, vis]
                sheet_rows[i].append(fused)
        results[name] = summarise(rows, convention)
        atomic_write_bytes(out / f"{name}.json", json.dumps(results[name], indent=2).encode())
    _contact_sheet(sheet_rows, ["IR", "visible", *results], out / "contact_sheet.png")
    report = out / "results.md"
    title = f"{data.name}: mean of {len(pairs)} pairs ({convention} convention)"
    atomic_write_bytes(report, markdown_table(results, title).encode())
    return report


def _contact_sheet(rows: list[list[torch.Tensor]], labels: list[str], path: Path, height: int = 200) -> None:
    """One row per example pair: IR, visible and each model's fusion, scaled to a common height."""
    if not rows or not rows[0]:
        return
    strips = []
    for row in rows:
        scaled = [resize_to(t, (height, max(1, round(t.shape[2] * height / t.shape[1])))).clamp(0, 1) for t in row]
        strips.append(side_by_side(scaled, labels))
    width = max(s.shape[2] for s in strips)
    canvas = torch.ones(3, len(strips) * (height + 8), width)
    for i, s in enumerate(strips):
        canvas[:, i * (height + 8) : i * (height + 8) + s.shape[1], : s.shape[2]] = s
    save_image(canvas, path)
