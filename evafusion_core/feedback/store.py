"""A folder of human feedback: ratings and pairwise preferences, written so that nothing is lost.

Layout of a feedback folder::

    feedback.jsonl    one JSON record per line, appended (the dataset)
    images/           PNGs named by their content hash (fused, IR, visible, artifact masks)
    .feedback.lock    taken while a record is appended (filelock: works across processes and OSes)

Why it cannot be left half-written:

* every image is written to a temporary name, synced and renamed (``io.atomic_write_bytes``);
  images are content-addressed, so the same source image rated twice is stored once;
* a record is appended only after every file it names exists, under the lock, as one
  ``write`` of the whole line followed by ``fsync``; so two writers (two ComfyUI queues,
  ComfyUI and the CLI) never interleave and the record count is exact;
* a line cut short by a crash (no final newline) is never read as a record: the reader
  ignores it, and the next writer moves it aside to ``feedback.jsonl.interrupted``;
* a line that is not a valid record is an error naming the file and line number, skipped
  only when the caller asks (``skip_bad``);
* re-rating the same image by the same annotator appends a new ``version``; nothing is
  overwritten, and readers take the latest version per (image, annotator).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io as _io
import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import EvaFusionError
from ..io import atomic_write_bytes, load_image, to_uint8

log = logging.getLogger(__name__)

RECORDS_FILE = "feedback.jsonl"
LOCK_FILE = ".feedback.lock"
IMAGES_DIR = "images"
FORMAT = 1
#: The five rated dimensions, in the reward model's order (1 = worst, 5 = best; Artifacts 5 = none).
DIMENSIONS: tuple[str, ...] = ("Thermal Retention", "Texture Preservation", "Artifacts", "Sharpness", "Overall")
CHOICES = ("A", "B", "tie")


class FeedbackError(EvaFusionError, ValueError):
    """A feedback folder, record or input is unusable; the message names which and why."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _u8(t: torch.Tensor | np.ndarray, what: str, channels: int) -> np.ndarray:
    """[C,H,W] 0..1 tensor (or uint8 array) -> uint8 [H,W] or [H,W,3] with ``channels`` channels."""
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t.astype(np.float32) / 255.0 if t.dtype == np.uint8 else t.astype(np.float32))
        t = t.permute(2, 0, 1) if t.ndim == 3 else t[None]
    if not isinstance(t, torch.Tensor):
        raise FeedbackError(f"{what}: expected an image tensor [C,H,W], got {type(t).__name__}")
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise FeedbackError(f"{what}: expected one image [C,H,W] with 1 or 3 channels, got shape {tuple(t.shape)}")
    t = t.detach().float().cpu()
    if not torch.isfinite(t).all():
        raise FeedbackError(f"{what}: contains NaN or infinite values")
    if channels == 1 and t.shape[0] == 3:
        from ..colour import luma

        t = luma(t)
    elif channels == 3 and t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return to_uint8(t)


def _content_hash(a: np.ndarray) -> str:
    """Hash of a uint8 image's shape and pixels (not of its PNG bytes, which depend on the encoder)."""
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()[:20]


def _png(a: np.ndarray) -> bytes:
    buf = _io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class _Encoded:
    """An image ready to store: its content hash, PNG bytes and size."""

    hash: str
    png: bytes
    size: tuple[int, int]


def _encode(t: Any, what: str, channels: int) -> _Encoded:
    a = _u8(t, what, channels)
    return _Encoded(_content_hash(a), _png(a), (a.shape[0], a.shape[1]))


def _join(*hashes: str) -> str:
    return hashlib.sha256(":".join(hashes).encode()).hexdigest()[:20]


def item_hash(fused: Any, ir: Any, vis: Any) -> str:
    """The identity of a rated image: the fused image together with its two sources (no PNG encoding, so
    nodes can ask cheaply on every queue)."""
    return _join(_content_hash(_u8(fused, "fused", 3)), _content_hash(_u8(ir, "ir", 1)),
                 _content_hash(_u8(vis, "vis", 3)))


def _scores(scores: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
    if isinstance(scores, Mapping):
        missing = [d for d in DIMENSIONS if d not in scores]
        if missing:
            raise FeedbackError(f"scores: missing {', '.join(missing)} (need all of {', '.join(DIMENSIONS)})")
        vals = [scores[d] for d in DIMENSIONS]
    else:
        vals = list(scores)
        if len(vals) != len(DIMENSIONS):
            raise FeedbackError(f"scores: need {len(DIMENSIONS)} values ({', '.join(DIMENSIONS)}), got {len(vals)}")
    out = {}
    for d, v in zip(DIMENSIONS, vals):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise FeedbackError(f"scores: {d} is {v!r}, not a number") from None
        if not 1.0 <= f <= 5.0:
            raise FeedbackError(f"scores: {d} is {f}, outside 1..5")
        out[d] = f
    return out


def _annotator(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise FeedbackError("annotator is empty: give the name of the person rating, so ratings can be told apart")
    if "\n" in name or len(name) > 100:
        raise FeedbackError(f"annotator {name[:40]!r}...: use one line of at most 100 characters")
    return name


@dataclass
class ReadResult:
    """Records read from a folder, plus what was skipped (only with ``skip_bad``) and why."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted_tail: bool = False


class FeedbackStore:
    """One feedback folder (created on first write). Safe for several writers at once."""

    def __init__(self, root: str | os.PathLike, lock_timeout: float = 60.0) -> None:
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise FeedbackError(f"feedback folder {self.root} is a file, not a folder")
        self.records_path = self.root / RECORDS_FILE
        self.lock_timeout = lock_timeout

    # -- writing -------------------------------------------------------------------------------
    def _lock(self):
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / LOCK_FILE), timeout=self.lock_timeout)

    def _store(self, enc: _Encoded) -> str:
        rel = f"{IMAGES_DIR}/{enc.hash}.png"
        path = self.root / rel
        if not path.is_file():  # content-addressed: an existing file already holds these pixels
            atomic_write_bytes(path, enc.png)
        return rel

    def _repair_tail(self) -> None:
        """Under the lock: move a line cut short by a crash aside, so the next record starts on its own line."""
        p = self.records_path
        if not p.is_file() or p.stat().st_size == 0:
            return
        with open(p, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            data = p.read_bytes()
            cut = data.rfind(b"\n") + 1
            with open(p.with_name(RECORDS_FILE + ".interrupted"), "ab") as side:
                side.write(data[cut:] + b"\n")
                side.flush()
                os.fsync(side.fileno())
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
        log.warning("%s: moved an interrupted last line to %s.interrupted", p, RECORDS_FILE)

    def _append(self, record: dict[str, Any], same: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """Give ``record`` its version and append it, all under the lock. With ``same`` (field names),
        nothing is written and None returned when the latest version already has those values."""
        key = _key(record)
        with self._lock():
            self._repair_tail()
            missing = [v for v in _files_of(record) if not (self.root / v).is_file()]
            if missing:
                raise FeedbackError(f"{self.root}: not recording, files missing: {', '.join(missing)}")
            earlier = [r for r in self.read(skip_bad=True).records if _key(r) == key]
            if same and earlier and all(earlier[-1].get(k) == record.get(k) for k in same):
                return None
            record["version"] = max((r.get("version", 1) for r in earlier), default=0) + 1
            line = (json.dumps(record, sort_keys=True) + "\n").encode()
            fd = os.open(self.records_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return record

    def add_rating(
        self,
        fused: Any,
        ir: Any,
        vis: Any,
        scores: Mapping[str, float] | Sequence[float],
        *,
        annotator: str,
        mask: Any = None,
        model: str = "",
        pair: str = "",
        note: str = "",
        only_if_changed: bool = False,
    ) -> dict[str, Any] | None:
        """Record scores (1-5 per dimension) for one fused image [C,H,W] and its sources; returns the record.

        ``mask`` ([H,W] or [1,H,W], 0..1; 1 = artifact) marks where the annotator saw artifacts;
        an empty mask is stored as none. ``only_if_changed`` writes nothing (and returns None)
        when this annotator's latest rating of the image has the same scores, mask and note."""
        annotator, vals = _annotator(annotator), _scores(scores)
        f, a, b = _encode(fused, "fused", 3), _encode(ir, "ir", 1), _encode(vis, "vis", 3)
        _same_size({"fused": f.size, "ir": a.size, "vis": b.size})
        m = None
        if mask is not None:
            mt = torch.as_tensor(mask).float()
            if mt.ndim > 2 and all(n == 1 for n in mt.shape[:-2]):
                mt = mt.reshape(mt.shape[-2:])  # [1,H,W] or [1,1,H,W]
            if mt.ndim != 2:
                raise FeedbackError(f"artifact mask: expected [H,W], got shape {tuple(mt.shape)}")
            if bool((mt > 0).any()):
                if tuple(mt.shape) != f.size:
                    raise FeedbackError(
                        f"artifact mask is {mt.shape[1]}x{mt.shape[0]} but the fused image is {f.size[1]}x{f.size[0]}: "
                        "draw the mask on the fused image itself"
                    )
                m = _encode(mt.clamp(0, 1)[None], "artifact mask", 1)
        record = {
            **_header("rating", annotator),
            "item": _join(f.hash, a.hash, b.hash),
            "source": _join(a.hash, b.hash),
            "pair": pair,
            "model": model,
            "images": {"fused": self._store(f), "ir": self._store(a), "vis": self._store(b)},
            "mask": self._store(m) if m else None,
            "scores": vals,
            "note": note,
        }
        return self._append(record, ("scores", "mask", "note") if only_if_changed else ())

    def add_preference(
        self,
        fused_a: Any,
        fused_b: Any,
        ir: Any,
        vis: Any,
        choice: str,
        *,
        annotator: str,
        reason: str = "",
        model_a: str = "",
        model_b: str = "",
        pair: str = "",
        only_if_changed: bool = False,
    ) -> dict[str, Any] | None:
        """Record which of two fusions of the same sources is better: ``choice`` is "A", "B" or "tie".
        ``only_if_changed`` as for :meth:`add_rating` (compares choice and reason)."""
        annotator = _annotator(annotator)
        if choice not in CHOICES:
            raise FeedbackError(f"choice {choice!r}: must be one of {', '.join(CHOICES)}")
        fa, fb = _encode(fused_a, "fused A", 3), _encode(fused_b, "fused B", 3)
        a, b = _encode(ir, "ir", 1), _encode(vis, "vis", 3)
        _same_size({"fused A": fa.size, "fused B": fb.size, "ir": a.size, "vis": b.size})
        record = {
            **_header("preference", annotator),
            "items": {"a": _join(fa.hash, a.hash, b.hash), "b": _join(fb.hash, a.hash, b.hash)},
            "source": _join(a.hash, b.hash),
            "pair": pair,
            "models": {"a": model_a, "b": model_b},
            "images": {"a": self._store(fa), "b": self._store(fb), "ir": self._store(a), "vis": self._store(b)},
            "choice": choice,
            "reason": reason.strip(),
        }
        return self._append(record, ("items", "choice", "reason") if only_if_changed else ())

    # -- reading -------------------------------------------------------------------------------
    def read(self, skip_bad: bool = False) -> ReadResult:
        """Every complete record, in order, each with ``line`` (1-based) added.

        A bad line raises :class:`FeedbackError` naming its line number unless ``skip_bad``; an
        unterminated last line (a write cut short by a crash) is never a record."""
        res = ReadResult()
        if not self.records_path.is_file():
            return res
        data = self.records_path.read_bytes()
        lines = data.split(b"\n")
        if lines and lines[-1]:
            res.interrupted_tail = True  # the crash case: no newline, so the record never finished
        for n, raw in enumerate(lines[:-1], start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                _check(rec)
                missing = [v for v in _files_of(rec) if not (self.root / v).is_file()]
                if missing:
                    raise FeedbackError(f"files missing: {', '.join(missing)}")
            except (ValueError, FeedbackError, KeyError, TypeError) as exc:
                msg = f"{self.records_path} line {n}: {exc}"
                if not skip_bad:
                    raise FeedbackError(msg + " (pass skip_bad / --skip-bad to skip bad lines)") from None
                log.warning("skipping %s", msg)
                res.skipped.append(msg)
                continue
            rec["line"] = n
            res.records.append(rec)
        return res

    def ratings(self, latest: bool = True, skip_bad: bool = False) -> list[dict[str, Any]]:
        """Rating records; with ``latest`` only the newest version per (image, annotator)."""
        return _latest([r for r in self.read(skip_bad).records if r["kind"] == "rating"], latest)

    def preferences(self, latest: bool = True, skip_bad: bool = False) -> list[dict[str, Any]]:
        """Preference records; with ``latest`` only the newest version per (image pair, annotator)."""
        return _latest([r for r in self.read(skip_bad).records if r["kind"] == "preference"], latest)

    def latest_rating(self, item: str, annotator: str) -> dict[str, Any] | None:
        """The newest rating of ``item`` by ``annotator`` (None when never rated)."""
        found = [r for r in self.ratings(skip_bad=True) if r["item"] == item and r["annotator"] == annotator]
        return found[-1] if found else None

    def image(self, rel: str, grey: bool = False) -> torch.Tensor:
        """Load a stored image [C,H,W] by its path in a record."""
        return load_image(self.root / rel, grey=grey)


def _header(kind: str, annotator: str) -> dict[str, Any]:
    """The fields every record starts with."""
    return {"kind": kind, "format": FORMAT, "id": uuid.uuid4().hex, "time": _now(), "annotator": annotator}


def _same_size(sizes: dict[str, tuple[int, int]]) -> None:
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{k} {w}x{h}" for k, (h, w) in sizes.items())
        raise FeedbackError(f"images differ in size ({listed}): a rating needs the fused image and its sources aligned")


def _files_of(rec: Mapping[str, Any]) -> list[str]:
    files = list(rec["images"].values())
    if rec.get("mask"):
        files.append(rec["mask"])
    return files


def _key(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    if rec["kind"] == "rating":
        return ("rating", rec["item"], rec["annotator"])
    return ("preference", *sorted(rec["items"].values()), rec["annotator"])


def _check(rec: Any) -> None:
    """Raise (ValueError/KeyError) when ``rec`` is not a record this format knows."""
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    kind = rec.get("kind")
    if kind not in ("rating", "preference"):
        raise ValueError(f"unknown kind {kind!r}")
    for k in ("id", "annotator", "images", "version"):
        if k not in rec:
            raise ValueError(f"{kind} record without {k!r}")
    if kind == "rating":
        _scores(rec["scores"])
        if set(rec["images"]) != {"fused", "ir", "vis"}:
            raise ValueError("a rating needs images fused, ir and vis")
    else:
        if rec.get("choice") not in CHOICES:
            raise ValueError(f"choice {rec.get('choice')!r} is not one of {', '.join(CHOICES)}")
        if set(rec["images"]) != {"a", "b", "ir", "vis"}:
            raise ValueError("a preference needs images a, b, ir and vis")


def _latest(records: list[dict[str, Any]], latest: bool) -> list[dict[str, Any]]:
    if not latest:
        return records
    newest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        k = _key(r)
        if k not in newest or r["version"] >= newest[k]["version"]:
            newest[k] = r
    return sorted(newest.values(), key=lambda r: r["line"])
