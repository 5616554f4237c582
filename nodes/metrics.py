"""Fusion Metrics node: objective scores of a fused batch against its sources."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..evafusion_core.io import to_uint8
from ..evafusion_core.metrics import CONVENTIONS, METRICS, compute_metrics
from ._common import to_bchw


class FusionMetrics(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_FusionMetrics",
            display_name="Fusion Metrics",
            category="EVAFusion/metrics",
            description="EN, SD, SF, AG, MI, SCD, VIF, Qabf, Nabf, SSIM, PSNR, CC and MSE of the fused images "
            "(mean over the batch), computed on 8-bit grey as the published toolkits do.",
            is_output_node=True,
            inputs=[
                io.Image.Input("fused", tooltip="Fused batch."),
                io.Image.Input("ir", tooltip="Infrared sources."),
                io.Image.Input("vis", tooltip="Visible sources."),
                io.Combo.Input("convention", options=list(CONVENTIONS), default="tang",
                               tooltip="tang: MATLAB toolkit (SeAFusion/DCEvo); cdd: CDDFuse's Python evaluator."),
                io.Combo.Input("metric", options=list(METRICS), default="Qabf",
                               tooltip="Which metric the FLOAT output carries."),
                io.String.Input("label", default="", optional=True, tooltip="A name shown in the table (e.g. model)."),
            ],
            outputs=[
                io.String.Output("table", tooltip="All metrics as a text table."),
                io.Float.Output("value", tooltip="The chosen metric's mean over the batch."),
            ],
        )

    @classmethod
    def execute(cls, fused, ir, vis, convention, metric, label=""):
        f, a, b = (to_bchw(t, n) for t, n in ((fused, "fused"), (ir, "ir"), (vis, "vis")))
        if not (f.shape == a.shape == b.shape):
            raise ValueError(f"fused {tuple(fused.shape)}, ir {tuple(ir.shape)} and vis {tuple(vis.shape)} must match")
        rows = [compute_metrics(to_uint8(a[i]), to_uint8(b[i]), to_uint8(f[i]), convention=convention)
                for i in range(f.shape[0])]
        names = [m for m in rows[0]]
        mean = {m: sum(r[m] for r in rows) / len(rows) for m in names}
        head = f"{label or 'fused'} ({convention}, mean of {len(rows)})"
        table = head + "\n" + "\n".join(f"{m:>5}: {mean[m]:.4f}" for m in names)
        if metric not in mean:
            raise ValueError(f"metric {metric} is not part of the {convention} convention: {', '.join(names)}")
        return io.NodeOutput(table, float(mean[metric]), ui=ui.PreviewText(table))


NODES = [FusionMetrics]
