"""Images in, images out: loading IR/visible images and pairs, saving results safely.

Everything returns float32 tensors [C,H,W] in 0..1 (C = 1 for grey, 3 for colour),
the layout the inference code consumes. Thermal cameras often write 16-bit data whose
useful range is a sliver of 0..65535, so 16-bit input is normalised robustly
(percentiles by default) rather than divided by 65535.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import ImageLoadError, PairError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NORMALISATIONS = ("percentile", "minmax", "fixed")


@dataclass(frozen=True)
class HighBitDepth:
    """How to map >8-bit data to 0..1.

    ``percentile`` clips to the [low, high] percentiles (robust to hot pixels),
    ``minmax`` stretches min..max, ``fixed`` divides by the type's full range.
    """

    mode: str = "percentile"
    low: float = 0.5
    high: float = 99.5

    def __post_init__(self) -> None:
        if self.mode not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {self.mode!r}; choose one of {', '.join(NORMALISATIONS)}")
        if not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}")


def _normalise(a: np.ndarray, full_range: float, how: HighBitDepth) -> np.ndarray:
    a = a.astype(np.float64)
    if how.mode == "fixed":
        return a / full_range
    if how.mode == "minmax":
        lo, hi = float(a.min()), float(a.max())
    else:
        lo, hi = (float(v) for v in np.percentile(a, [how.low, how.high]))
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def _to_array(img: Image.Image, path: Path, how: HighBitDepth) -> np.ndarray:
    """PIL image -> float array [H,W] or [H,W,3] in 0..1."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.array(img)
        if a.dtype.kind == "i" and a.min() < 0:
            raise ImageLoadError(f"{path}: negative values in a {mode} image; expected unsigned 16-bit data")
        return _normalise(a, 65535.0, how)
    if mode == "F":
        a = np.array(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ImageLoadError(f"{path}: contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            return a
        return _normalise(a, 1.0, HighBitDepth("minmax") if how.mode == "fixed" else how)
    if mode in ("1", "L", "P", "LA", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGB", "RGBX"):
        if mode in ("L", "1", "LA"):
            img = img.convert("L")
        else:
            img = img.convert("RGB")  # drops alpha, expands palettes
        return np.asarray(img, dtype=np.float64) / 255.0
    raise ImageLoadError(f"{path}: unsupported image mode {mode!r}")


def load_image(path: str | os.PathLike, *, grey: bool = False, high_bit: HighBitDepth | None = None) -> torch.Tensor:
    """Load an image file as a float32 tensor [C,H,W] in 0..1.

    ``grey=True`` returns one channel (BT.601 luma for colour files), the form
    infrared images take; 3-channel grey files (common for IR) lose nothing by it.
    """
    from .colour import luma

    p = Path(path)
    if not p.is_file():
        raise ImageLoadError(f"{p}: file not found" if not p.exists() else f"{p}: not a file")
    try:
        with Image.open(p) as img:
            img.load()
            a = _to_array(img, p, high_bit or HighBitDepth())
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"{p}: cannot read image ({exc})") from exc
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    if grey and t.shape[0] == 3:
        t = luma(t)
    return t.contiguous()


def load_u8(path: str | os.PathLike) -> np.ndarray:
    """An image as a float64 array on the 0..255 grey-level scale ([H,W] or [H,W,3]), as metrics expect."""
    t = load_image(path)
    a = (t * 255.0).round().double().numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def check_finite(t: torch.Tensor, what: str) -> None:
    """Refuse NaN or infinite values early, naming the input, rather than fusing garbage."""
    # A sum is ~40x cheaper than an element-wise test and is non-finite exactly when some element is
    # (for image-range data, where overflow cannot happen).
    if not torch.isfinite(t.sum()):
        raise ImageLoadError(f"{what}: contains NaN or infinite values")


def resize_to(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of [C,H,W] or [B,C,H,W] to (H, W)."""
    batched = t.ndim == 4
    x = t if batched else t.unsqueeze(0)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x if batched else x[0]


def load_pair(
    ir_path: str | os.PathLike,
    vis_path: str | os.PathLike,
    *,
    resize: bool = False,
    high_bit: HighBitDepth | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an IR image (grey, [1,H,W]) and a visible image ([C,H,W]) that must have the same size.

    With ``resize=True`` the IR image is resized to the visible image's size instead
    of raising: the visible image carries the colour and usually the finer grid.
    """
    ir = load_image(ir_path, grey=True, high_bit=high_bit)
    vis = load_image(vis_path, high_bit=high_bit)
    if ir.shape[1:] != vis.shape[1:]:
        if not resize:
            raise PairError(
                f"size mismatch: IR {ir_path} is {ir.shape[2]}x{ir.shape[1]} but visible {vis_path} is "
                f"{vis.shape[2]}x{vis.shape[1]} (width x height); register the pair, or resize IR to the visible "
                "size (--resize on the command line, the resize switch on the node)"
            )
        ir = resize_to(ir, tuple(vis.shape[1:]))
    return ir, vis


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    d = Path(folder)
    if not d.is_dir():
        raise ImageLoadError(f"{d}: folder not found" if not d.exists() else f"{d}: not a folder")
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def find_pairs(*folders: str | os.PathLike) -> list[tuple[str, list[Path]]]:
    """Match files across folders by stem: ``[(stem, [path_in_folder_0, path_in_folder_1, ...])]``.

    Every stem must be present in every folder; otherwise the error lists the
    unmatched names per folder, so a user sees at once which files are missing.
    """
    listings = [list_images(f) for f in folders]
    for folder, files in zip(folders, listings):
        if not files:
            raise ImageLoadError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    by_stem = [{p.stem: p for p in files} for files in listings]
    common = set.intersection(*(set(m) for m in by_stem))
    problems = []
    for folder, m in zip(folders, by_stem):
        extra = sorted(set(m) - common)
        if extra:
            shown = ", ".join(extra[:10]) + (f" (+{len(extra) - 10} more)" if len(extra) > 10 else "")
            problems.append(f"{folder}: {shown}")
    if problems:
        raise PairError("files without a partner in every folder:\n  " + "\n  ".join(problems))
    return [(s, [m[s] for m in by_stem]) for s in sorted(common)]


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """[C,H,W] 0..1 -> uint8 [H,W] or [H,W,3], rounded."""
    a = t.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    return a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary name in the same folder, sync, then rename: never a half-written file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def save_image(t: torch.Tensor | np.ndarray, path: str | os.PathLike) -> Path:
    """Save [C,H,W] 0..1 (or a uint8 array) as an 8-bit image, atomically; the format follows the suffix."""
    import io as _io

    a = to_uint8(t) if isinstance(t, torch.Tensor) else np.asarray(t)
    buf = _io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}.get(
        Path(path).suffix.lower(), "PNG"
    )
    Image.fromarray(a).save(buf, format=fmt)
    return atomic_write_bytes(path, buf.getvalue())


def side_by_side(images: Sequence[torch.Tensor], labels: Sequence[str] | None = None, gap: int = 8) -> torch.Tensor:
    """Place [C,H,W] images of one height in a row (grey promoted to RGB), labels drawn on top-left."""
    from PIL import ImageDraw

    rgb = [im.expand(3, -1, -1) if im.shape[0] == 1 else im for im in images]
    h = max(im.shape[1] for im in rgb)
    w = sum(im.shape[2] for im in rgb) + gap * (len(rgb) - 1)
    canvas = torch.ones(3, h, w)
    x = 0
    for im in rgb:
        canvas[:, : im.shape[1], x : x + im.shape[2]] = im
        x += im.shape[2] + gap
    if not labels:
        return canvas
    pil = Image.fromarray(to_uint8(canvas))
    draw = ImageDraw.Draw(pil)
    x = 0
    for im, label in zip(rgb, labels):
        draw.rectangle([x, 0, x + 8 + 7 * len(label), 16], fill=(0, 0, 0))
        draw.text((x + 4, 2), label, fill=(255, 255, 0))
        x += im.shape[2] + gap
    return torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
