"""What a feedback folder holds: counts per annotator and dimension, and how far annotators agree.

Only the latest version of each (image, annotator) rating counts, so a re-rating replaces
the old opinion in every figure here while the old record stays on disk.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any

import numpy as np

from .store import DIMENSIONS, FeedbackStore


def _pearson(a: list[float], b: list[float]) -> float | None:
    """Pearson r for JSON: None on fewer than three pairs (two always give +-1) or on a constant."""
    from ..reward.evaluate import plcc

    r = plcc(a, b) if len(a) >= 3 else float("nan")
    return None if np.isnan(r) else r


def feedback_stats(store: FeedbackStore, skip_bad: bool = False) -> dict[str, Any]:
    """Counts, score distributions and inter-annotator agreement as a JSON-ready dict."""
    read = store.read(skip_bad)
    ratings = [r for r in read.records if r["kind"] == "rating"]
    prefs = [r for r in read.records if r["kind"] == "preference"]
    latest = store.ratings(skip_bad=skip_bad)
    latest_prefs = store.preferences(skip_bad=skip_bad)

    per_annotator: dict[str, dict[str, Any]] = defaultdict(lambda: {"ratings": 0, "versions": 0, "preferences": 0})
    for r in ratings:
        per_annotator[r["annotator"]]["versions"] += 1
    for r in latest:
        per_annotator[r["annotator"]]["ratings"] += 1
    for r in latest_prefs:
        per_annotator[r["annotator"]]["preferences"] += 1
    for name, entry in per_annotator.items():
        mine = [r for r in latest if r["annotator"] == name]
        entry["mean"] = {d: float(np.mean([r["scores"][d] for r in mine])) for d in DIMENSIONS} if mine else {}

    per_dimension = {}
    for d in DIMENSIONS:
        vals = [r["scores"][d] for r in latest]
        hist = {str(k): sum(1 for v in vals if round(v) == k) for k in range(1, 6)}
        per_dimension[d] = {"n": len(vals), "mean": float(np.mean(vals)) if vals else None,
                            "std": float(np.std(vals)) if vals else None, "histogram": hist}

    by_item: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in latest:
        by_item[r["item"]].append(r)
    shared = {k: v for k, v in by_item.items() if len(v) > 1}
    agreement: dict[str, Any] = {"images_with_several_annotators": len(shared), "dimensions": {}}
    for d in DIMENSIONS:
        xs, ys = [], []
        for group in shared.values():
            for p, q in combinations(group, 2):
                xs.append(p["scores"][d])
                ys.append(q["scores"][d])
        diffs = np.abs(np.subtract(xs, ys)) if xs else np.array([])
        agreement["dimensions"][d] = {
            "annotator_pairs": len(xs),
            "exact": float(np.mean(diffs == 0)) if xs else None,
            "within_one": float(np.mean(diffs <= 1)) if xs else None,
            "mean_abs_diff": float(diffs.mean()) if xs else None,
            "pearson": _pearson(xs, ys),
        }

    # Preferences over the same two images by several annotators: how often do they agree?
    votes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in latest_prefs:
        a, b = r["items"]["a"], r["items"]["b"]
        choice = r["choice"]
        if a > b:  # orient every vote the same way round
            a, b = b, a
            choice = {"A": "B", "B": "A"}.get(choice, choice)
        votes[(a, b)].append(choice)
    pairs = [(p, q) for v in votes.values() if len(v) > 1 for p, q in combinations(v, 2)]
    choices = {c: sum(1 for r in latest_prefs if r["choice"] == c) for c in ("A", "B", "tie")}
    return {
        "folder": str(store.root),
        "records": len(read.records),
        "skipped_lines": read.skipped,
        "interrupted_tail": read.interrupted_tail,
        "ratings": {"latest": len(latest), "all_versions": len(ratings), "images": len(by_item)},
        "preferences": {"latest": len(latest_prefs), "all_versions": len(prefs), "choices": choices,
                        "pairs_with_several_annotators": sum(1 for v in votes.values() if len(v) > 1),
                        "agreement": float(np.mean([p == q for p, q in pairs])) if pairs else None},
        "annotators": dict(sorted(per_annotator.items())),
        "dimensions": per_dimension,
        "agreement": agreement,
    }


def _f(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_stats(s: dict[str, Any]) -> str:
    """A plain-text report of :func:`feedback_stats` for the terminal and the ComfyUI node."""
    r, p = s["ratings"], s["preferences"]
    lines = [
        f"{s['folder']}: {r['latest']} ratings of {r['images']} images ({r['all_versions']} with earlier versions), "
        f"{p['latest']} preferences (A {p['choices']['A']}, B {p['choices']['B']}, tie {p['choices']['tie']})",
    ]
    if s["skipped_lines"]:
        lines.append(f"skipped {len(s['skipped_lines'])} bad line(s): " + "; ".join(s["skipped_lines"][:3]))
    if s["interrupted_tail"]:
        lines.append("the last line was cut short by a crash and is not counted")
    short = ("thermal", "texture", "artifacts", "sharpness", "overall")
    lines += ["", f"{'annotator':<16}{'ratings':>8}{'prefs':>6}  " + "".join(f"{x:>10}" for x in short)]
    for name, a in s["annotators"].items():
        means = "".join(f"{_f(a['mean'].get(d)):>10}" for d in DIMENSIONS)
        lines.append(f"{name[:15]:<16}{a['ratings']:>8}{a['preferences']:>6}  {means}")
    lines += ["", f"{'dimension':<22}{'n':>5}{'mean':>7}{'std':>7}   1/2/3/4/5"]
    for d, v in s["dimensions"].items():
        hist = "/".join(str(v["histogram"][k]) for k in "12345")
        lines.append(f"{d:<22}{v['n']:>5}{_f(v['mean']):>7}{_f(v['std']):>7}   {hist}")
    ag = s["agreement"]
    lines += ["", f"agreement on {ag['images_with_several_annotators']} images rated by several annotators:"]
    lines.append(f"{'dimension':<22}{'pairs':>6}{'exact':>7}{'±1':>7}{'|diff|':>8}{'pearson':>9}")
    for d, v in ag["dimensions"].items():
        lines.append(f"{d:<22}{v['annotator_pairs']:>6}{_f(v['exact']):>7}{_f(v['within_one']):>7}"
                     f"{_f(v['mean_abs_diff']):>8}{_f(v['pearson']):>9}")
    if p["pairs_with_several_annotators"]:
        n = p["pairs_with_several_annotators"]
        lines.append(f"preference agreement over {n} image pairs: {_f(p['agreement'])}")
    return "\n".join(lines)
