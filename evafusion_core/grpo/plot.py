"""The panels of a GRPO/ReFL run's training plot (drawn by :mod:`evafusion_core.plot`)."""

from __future__ import annotations

from ..plot import Series, plot_panels, save_png


def training_panels(records: list[dict], evals: list[dict] | None = None) -> dict[str, Series]:
    """The standard panels of a GRPO/ReFL log: rewards, KL, advantage spread, flat groups, held-out."""
    steps = [r["step"] for r in records]
    col = lambda k: [r.get(k, float("nan")) for r in records]  # noqa: E731
    panels: dict[str, Series] = {
        "reward (weighted, 0..1)": {"samples": (steps, col("reward")), "mean output": (steps, col("reward_mu"))},
        "Overall (1..5)": {"mean output": (steps, col("overall_mu"))},
        "gain over reference (same crop)": {"reward": (steps, col("reward_gain"))},
        "KL to reference": {"kl": (steps, col("kl"))},
        "advantage spread (mean |A|)": {"mean |A|": (steps, col("adv_abs"))},
        "reward std within groups": {"std": (steps, col("reward_std"))},
        "flat groups (reward std ~ 0)": {"fraction": (steps, col("flat_frac"))},
        "fidelity (fusion loss)": {"loss": (steps, col("fidelity"))},
        "heatmap mass": {"mean output": (steps, col("heat_mass_mu"))},
    }
    if evals:
        es = [e["step"] for e in evals]
        names = [k for k in evals[0].get("relative", {})]
        panels["held-out metrics / reference"] = {m: (es, [e["relative"][m] for e in evals]) for m in names}
        panels["held-out Overall (1..5)"] = {"overall": (es, [e["overall"] for e in evals])}
    return panels


def save_training_plot(path, records: list[dict], evals: list[dict] | None = None, smooth: int = 20) -> None:
    panels = training_panels(records, evals)
    save_png(plot_panels(panels, smooth=smooth, raw_panels=tuple(k for k in panels if k.startswith("held-out"))), path)
