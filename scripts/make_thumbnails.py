"""Thumbnails for ComfyUI's template browser: run each example workflow, keep what it shows.

    .venv/bin/python scripts/make_thumbnails.py [NAME ...]

ComfyUI lists a pack's ``workflows/*.json`` under Workflow -> Browse Templates and shows
``workflows/<name>.jpg`` on its square card. Each thumbnail here is made of the pictures the
workflow itself saves or previews when it runs on the procedural demo inputs on the provisioned
ComfyUI (CPU), so the card shows what the workflow really gives.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evafusion_core.demo import WORKFLOWS_DIR, write_comfy_inputs  # noqa: E402
from evafusion_core.workflow import ComfyServer, run_prompt  # noqa: E402

SIDE = 384  # ComfyUI shows template thumbnails in square cards
BACKGROUND = (24, 24, 24)


def _pictures(outputs: dict, dirs: dict[str, Path]) -> list[Image.Image]:
    """The distinct pictures a run saved or previewed, in node order (a preview and a save of the same
    image count once)."""
    pics, seen = [], set()
    for nid in sorted(outputs, key=int):
        for img in outputs[nid].get("images", []):
            im = Image.open(dirs[img.get("type", "output")] / img.get("subfolder", "") / img["filename"]).convert("RGB")
            key = hashlib.sha1(im.tobytes()).hexdigest()
            if key not in seen:
                seen.add(key)
                pics.append(im)
    return pics


def thumbnail(pics: list[Image.Image]) -> Image.Image:
    """A square: one picture whole; two (or wide strips, up to three) in rows; else a 2x2 grid."""
    if not pics:
        raise ValueError("the workflow showed no pictures")
    if len(pics) == 1:
        cells = [(0, 0, SIDE, SIDE)]
    elif len(pics) == 2 or any(p.width > 2 * p.height for p in pics):
        n = min(len(pics), 3)
        cells = [(0, i * SIDE // n, SIDE, SIDE // n) for i in range(n)]
    else:
        half = SIDE // 2
        cells = [(x, y, half, half) for y in (0, half) for x in (0, half)]
    canvas = Image.new("RGB", (SIDE, SIDE), BACKGROUND)
    for pic, (x, y, w, h) in zip(pics, cells):
        fitted = ImageOps.contain(pic, (w - 4, h - 4), Image.Resampling.LANCZOS)
        canvas.paste(fitted, (x + (w - fitted.width) // 2, y + (h - fitted.height) // 2))
    return canvas


def main() -> int:
    names = sys.argv[1:] or sorted(p.stem for p in WORKFLOWS_DIR.glob("*.json"))
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {k: Path(tmp) / k for k in ("input", "output", "temp")}  # ComfyUI adds "temp" to --temp-directory
        write_comfy_inputs(dirs["input"])
        args = ["--input-directory", str(dirs["input"]), "--output-directory", str(dirs["output"]),
                "--temp-directory", tmp]
        with ComfyServer(args) as server:
            for name in names:
                api = json.loads((WORKFLOWS_DIR / "api" / f"{name}.json").read_text())
                pics = _pictures(run_prompt(server.url, api), dirs)
                out = WORKFLOWS_DIR / f"{name}.jpg"
                thumbnail(pics).save(out, quality=85, optimize=True)
                print(f"wrote {out.relative_to(ROOT)} from {len(pics)} picture(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
