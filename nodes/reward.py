"""Reward nodes: load a reward model, score fused images, map their artifacts."""

from __future__ import annotations

import comfy.utils
import torch
from comfy_api.latest import io, ui

from ..evafusion_core.hub import bundled_names
from ..evafusion_core.reward import DIMENSIONS, load_reward_model
from ..evafusion_core.reward.evaluate import heatmap_overlay
from ._common import ModelHandle, load_handle, loader_inputs, model_choices, to_bchw, to_image, to_mask

RewardModelType = io.Custom("REWARD_MODEL")
CATEGORY = "EVAFusion/reward"


def _scoring_inputs() -> list:
    """What Score and Artifact Heatmap both read: the model and a fused batch with its sources."""
    return [
        RewardModelType.Input("reward_model", tooltip="From Reward Model Loader."),
        io.Image.Input("fused", tooltip="Fused batch [B,H,W,3]."),
        io.Image.Input("ir", tooltip="Infrared sources (one image or one per fused image)."),
        io.Image.Input("vis", tooltip="Visible sources (one image or one per fused image)."),
    ]


def _batched(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor):
    """IMAGE batches -> [B,C,H,W]; a single IR/visible image is shared by every fused image."""
    f, a, b = to_bchw(fused, "fused"), to_bchw(ir, "ir"), to_bchw(vis, "vis")
    n = f.shape[0]
    if a.shape[0] == 1 and n > 1:
        a = a.expand(n, -1, -1, -1)
    if b.shape[0] == 1 and n > 1:
        b = b.expand(n, -1, -1, -1)
    if a.shape[0] != n or b.shape[0] != n:
        raise ValueError(f"batch sizes differ: {n} fused, {a.shape[0]} IR, {b.shape[0]} visible images")
    return f, a, b


def _predict(handle: ModelHandle, fused, ir, vis) -> dict[str, torch.Tensor]:
    """Score a batch image by image (ProgressBar steps make Cancel work), on the handle's device."""
    f, a, b = _batched(fused, ir, vis)
    net = handle.acquire()
    bar = comfy.utils.ProgressBar(f.shape[0])
    outs = []
    try:
        device = next(net.parameters()).device
        for k in range(f.shape[0]):
            args = (f[k : k + 1].to(device), a[k : k + 1].to(device), b[k : k + 1].to(device))
            if handle.dtype != torch.float32 and device.type == "cuda":
                with torch.autocast("cuda", dtype=handle.dtype):
                    outs.append(net.predict(*args))
            else:
                outs.append(net.predict(*args))
            bar.update(1)
    finally:
        handle.release()
    return {key: torch.cat([o[key] for o in outs]) for key in outs[0]}


class RewardModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_RewardModelLoader",
            display_name="Reward Model Loader",
            category=CATEGORY,
            description="Load a reward model (scores + artifact heatmap): a bundled model, a folder in "
            "models/evafusion/, or a Hugging Face Hub repo id (the local cache is used first).",
            inputs=[
                io.Combo.Input("model", options=model_choices(sorted(set(bundled_names("reward")) | {"small"})),
                               default="small", tooltip="Bundled reward model or a models/evafusion/ folder."),
                *loader_inputs(),
            ],
            outputs=[RewardModelType.Output("reward_model", tooltip="The loaded reward model.")],
        )

    @classmethod
    def execute(cls, model, device, precision, keep_loaded, hub_repo_id=""):
        return io.NodeOutput(load_handle(load_reward_model, model, hub_repo_id, device, precision, keep_loaded))


class Score(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_Score",
            display_name="Reward Score",
            category=CATEGORY,
            description="Predicted human scores (1-5) of fused images given their sources: thermal retention, "
            "texture preservation, artifacts (5 = none), sharpness and overall; the mean over the batch.",
            is_output_node=True,
            inputs=[
                *_scoring_inputs(),
            ],
            outputs=[
                io.Float.Output("thermal_retention", tooltip="Thermal Retention, 1-5 (batch mean)."),
                io.Float.Output("texture_preservation", tooltip="Texture Preservation, 1-5 (batch mean)."),
                io.Float.Output("artifacts", tooltip="Artifacts, 1-5, higher = fewer artifacts (batch mean)."),
                io.Float.Output("sharpness", tooltip="Sharpness, 1-5 (batch mean)."),
                io.Float.Output("overall", tooltip="Overall, 1-5 (batch mean)."),
                io.String.Output("summary", tooltip="Scores per image and the mean, as a text table."),
            ],
        )

    @classmethod
    def execute(cls, reward_model: ModelHandle, fused, ir, vis):
        out = _predict(reward_model, fused, ir, vis)
        scores = out["scores"].float()
        mean = scores.mean(0)
        short = ("thermal", "texture", "artifacts", "sharpness", "overall")
        lines = ["image  " + "  ".join(f"{s:>9}" for s in short)]
        lines += [f"{k:>5}  " + "  ".join(f"{v:9.2f}" for v in row.tolist()) for k, row in enumerate(scores)]
        if scores.shape[0] > 1:
            lines.append(" mean  " + "  ".join(f"{v:9.2f}" for v in mean.tolist()))
        summary = "\n".join(lines)
        values = [float(mean[DIMENSIONS.index(d)]) for d in DIMENSIONS]
        return io.NodeOutput(*values, summary, ui=ui.PreviewText(summary))


class ArtifactHeatmap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_ArtifactHeatmap",
            display_name="Artifact Heatmap",
            category=CATEGORY,
            description="Where the reward model sees artifacts: a 0-1 MASK at the fused image's size and a "
            "colour overlay on the fused image (previewed on the node).",
            is_output_node=True,
            inputs=[
                *_scoring_inputs(),
                io.Float.Input("opacity", default=0.6, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="How strongly the heatmap colours the overlay where artifacts are."),
            ],
            outputs=[
                io.Mask.Output("heatmap", tooltip="Artifact heatmap [B,H,W] in 0..1 (1 = surely an artifact)."),
                io.Image.Output("overlay", tooltip="The heatmap in colour over the fused image."),
            ],
        )

    @classmethod
    def execute(cls, reward_model: ModelHandle, fused, ir, vis, opacity=0.6):
        out = _predict(reward_model, fused, ir, vis)
        heat = out["heatmap"].float().cpu()
        f = to_bchw(fused, "fused")
        overlay = torch.stack([heatmap_overlay(f[k], heat[k], alpha=opacity) for k in range(f.shape[0])])
        image = to_image(overlay)
        return io.NodeOutput(to_mask(heat), image, ui=ui.PreviewImage(image, cls=cls))


NODES = [RewardModelLoader, Score, ArtifactHeatmap]
