"""Training nodes: GRPO / ReFL fine-tuning steps inside a graph, and saving the result.

The GRPO Step node follows core ComfyUI's TrainLoraNode pattern (COMFYUI.md 5): the whole loop runs
inside one ``execute`` under ``torch.inference_mode(False)``, on a deep copy of the incoming
network with cloned inputs (the input model is never touched, so cached upstream outputs stay
valid), with a ProgressBar step per optimisation step so Cancel works.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import re
import shutil
import tempfile

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..evafusion_core.grpo import MODES, GRPOConfig, GRPOTrainer, RegionConfig, plot_panels
from ..evafusion_core.plot import image_to_tensor
from ..evafusion_core.regions import SUPERPIXEL_METHODS, labels_from_mask_batch
from ._common import MODEL_FOLDER, ModelHandle, to_bchw, to_image
from .fusion import FusionModel

log = logging.getLogger("evafusion")

RewardModelType = io.Custom("REWARD_MODEL")
CATEGORY = "EVAFusion/training"


def trainable_copy(net: torch.nn.Module) -> torch.nn.Module:
    """A deep copy whose tensors are ordinary (not inference) tensors, so autograd can use them.
    Call inside ``torch.inference_mode(False)``."""
    new = copy.deepcopy(net)
    with torch.no_grad():
        for mod in new.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None and p.is_inference():
                    mod._parameters[name] = torch.nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
            for name, b in list(mod._buffers.items()):
                if b is not None and b.is_inference():
                    mod._buffers[name] = b.clone()
    return new


def _crop_batch(ir, vis, labels, crop: int, multiple: int, rng: random.Random):
    """One random square crop (same window for the whole batch and the region map), or everything."""
    h, w = ir.shape[-2:]
    if not crop or (crop >= h and crop >= w):
        hh, ww = h // multiple * multiple, w // multiple * multiple
        sl = (..., slice(0, hh), slice(0, ww))
        return ir[sl], vis[sl], None if labels is None else labels[:hh, :ww]
    c = max(multiple, min(crop, h, w) // multiple * multiple)
    y, x = rng.randrange(h - c + 1), rng.randrange(w - c + 1)
    sl = (..., slice(y, y + c), slice(x, x + c))
    return ir[sl], vis[sl], None if labels is None else labels[y : y + c, x : x + c]


class GRPOStep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_GRPOStep",
            display_name="GRPO Fine-Tune Steps",
            category=CATEGORY,
            description="Run K reward fine-tuning steps on a copy of the fusion model and return the new model "
            "(the input model is left untouched). grpo: group samples, region advantages from the reward "
            "model's scores and artifact heatmap; global: one advantage per image; refl: back-propagate the "
            "reward (the original release's recipe). Regions come from the mask input, else superpixels.",
            is_experimental=True,
            not_idempotent=True,
            inputs=[
                FusionModel.Input("model", tooltip="Fusion model to fine-tune (from Fusion Model Loader)."),
                RewardModelType.Input("reward_model", tooltip="Frozen reward model (from Reward Model Loader)."),
                io.Image.Input("ir", tooltip="Infrared training batch [B,H,W,3]."),
                io.Image.Input("vis", tooltip="Visible training batch [B,H,W,3], same size as IR."),
                io.Mask.Input("regions", optional=True,
                              tooltip="Region masks [N,H,W] (e.g. from Regions (SAM / Superpixels)), shared by "
                              "every pair in the batch; unconnected = superpixels per pair."),
                io.Combo.Input("mode", options=list(MODES), default="grpo",
                               tooltip="grpo (region advantages), global (ablation) or refl (differentiable reward)."),
                io.Int.Input("steps", default=10, min=1, max=100000, tooltip="Optimisation steps to run now."),
                io.Int.Input("group_size", default=8, min=2, max=64, tooltip="Samples per input (G)."),
                io.Float.Input("sigma", default=0.03, min=0.001, max=0.5, step=0.001,
                               tooltip="Policy noise on the 0..1 scale (y = mu + sigma * xi)."),
                io.Float.Input("lr", default=3e-4, min=0.0, max=1.0, step=1e-6, tooltip="Adam learning rate."),
                io.Float.Input("beta", default=0.04, min=0.0, max=100.0, step=0.001,
                               tooltip="Weight of the closed-form KL to the input model."),
                io.Float.Input("clip_eps", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="PPO ratio clipping."),
                io.Float.Input("fidelity", default=0.1, min=0.0, max=100.0, step=0.01,
                               tooltip="Weight of the fusion loss that guards against reward hacking."),
                io.Float.Input("heatmap_penalty", default=1.0, min=0.0, max=100.0, step=0.01,
                               tooltip="Weight of the artifact-heatmap mass in each region's reward."),
                io.Int.Input("crop", default=256, min=0, max=8192, step=8,
                             tooltip="Train on random square crops of this size (0 = whole images)."),
                io.Combo.Input("superpixel_method", options=list(SUPERPIXEL_METHODS), default="slic",
                               tooltip="Region proposer when no region masks are connected."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed for crops and policy noise."),
            ],
            outputs=[
                FusionModel.Output("fusion_model", display_name="model", tooltip="The fine-tuned copy."),
                io.String.Output("log", tooltip="One line per step (JSON), then a summary."),
                io.Image.Output("curve", tooltip="Reward, Overall, KL and advantage curves."),
            ],
        )

    @classmethod
    def execute(cls, model: ModelHandle, reward_model: ModelHandle, ir, vis, mode, steps, group_size, sigma, lr,
                beta, clip_eps, fidelity, heatmap_penalty, crop, superpixel_method, seed, regions=None):
        cfg = GRPOConfig(mode=mode, group_size=group_size, sigma=sigma, lr=lr, beta=beta, clip_eps=clip_eps,
                         fidelity=fidelity, heatmap_penalty=heatmap_penalty,
                         regions=RegionConfig(method="superpixels", superpixel_method=superpixel_method))
        device = model.patcher.load_device
        mm.load_models_gpu([model.patcher, reward_model.patcher])
        records: list[dict] = []
        with torch.inference_mode(False):
            policy = trainable_copy(model.patcher.model).to(device)
            reward = trainable_copy(reward_model.patcher.model).to(device)
            a = to_bchw(ir, "ir").clone()
            b = to_bchw(vis, "vis").clone()
            if a.shape[0] != b.shape[0] or a.shape[-2:] != b.shape[-2:]:
                raise ValueError(f"IR {tuple(ir.shape)} and visible {tuple(vis.shape)} batches must match")
            labels = None
            if regions is not None:
                labels = labels_from_mask_batch(regions.clone())
                if tuple(labels.shape) != tuple(a.shape[-2:]):
                    raise ValueError(f"region masks {tuple(regions.shape)} do not match the images {tuple(ir.shape)}")
            rng = random.Random(seed)
            multiple = getattr(policy, "pad_multiple", 1)
            trainer = GRPOTrainer(policy, reward, cfg, device=device, seed=seed)
            bar = comfy.utils.ProgressBar(steps)

            def batch(_i: int):
                x, y, lab = _crop_batch(a, b, labels, crop, multiple, rng)
                return (x, y) if lab is None else (x, y, [lab] * x.shape[0])

            def on_step(rec: dict) -> None:
                records.append(rec)
                bar.update(1)

            trainer.train(batch, steps, on_step=on_step, should_stop=lambda: mm.processing_interrupted())
            mm.throw_exception_if_processing_interrupted()
            policy.eval()
            for p in policy.parameters():
                p.requires_grad_(False)
        keys = ("step", "reward_mu", "overall_mu", "heat_mass_mu", "kl", "fidelity", "adv_abs", "flat_frac", "sec")
        lines = [json.dumps({k: round(r[k], 6) if isinstance(r.get(k), float) else r.get(k) for k in keys if k in r})
                 for r in records]
        first, last = records[0], records[-1]
        summary = (f"{mode}: {len(records)} steps, regions {trainer.region_desc}; reward of the mean output "
                   f"{first['reward_mu']:.4f} -> {last['reward_mu']:.4f}, Overall {first['overall_mu']:.3f} -> "
                   f"{last['overall_mu']:.3f}, KL {last['kl']:.3g}")
        log.info("EVAF_GRPOStep: %s", summary)
        xs = [r["step"] for r in records]
        panels = {
            "reward of the mean output": {"reward": (xs, [r["reward_mu"] for r in records])},
            "Overall (1..5)": {"overall": (xs, [r["overall_mu"] for r in records])},
            "KL to the input model": {"kl": (xs, [r["kl"] for r in records])},
        }
        if mode != "refl":
            panels["advantage spread"] = {"mean |A|": (xs, [r["adv_abs"] for r in records])}
        curve = to_image(image_to_tensor(plot_panels(panels, columns=2, smooth=max(1, len(records) // 20)))[None])
        handle = ModelHandle.wrap(policy, f"{model.name}+{mode}{len(records)}", device, model.dtype, model.keep_loaded)
        handle.info.update(model.info)
        handle.info["finetune"] = {"mode": mode, "steps": len(records), "seed": seed}
        return io.NodeOutput(handle, "\n".join(lines + [summary]), curve, ui=ui.PreviewImage(curve, cls=cls))


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SaveFusionModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EVAF_SaveFusionModel",
            display_name="Save Fusion Model",
            category=CATEGORY,
            description="Save a fusion model to models/evafusion/<name>/ (model.safetensors + config.json, the Hugging "
            "Face Hub layout), where Fusion Model Loader lists it. Refuses to overwrite unless asked.",
            is_output_node=True,
            inputs=[
                FusionModel.Input("model", tooltip="The fusion model to save (e.g. from GRPO Fine-Tune Steps)."),
                io.String.Input("name", default="light-grpo",
                                tooltip="Folder name under models/evafusion/ (letters, digits, . _ -)."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace an existing folder of that name."),
            ],
            outputs=[io.String.Output("path", tooltip="The folder written.")],
        )

    @classmethod
    def execute(cls, model: ModelHandle, name: str, overwrite: bool):
        name = name.strip()
        if not _NAME.match(name) or ".." in name:
            raise ValueError(f"model name {name!r}: use letters, digits, '.', '_' and '-' only (no folders)")
        root = folder_paths.get_folder_paths(MODEL_FOLDER)[0]
        target = os.path.join(root, name)
        if os.path.exists(target) and not overwrite:
            raise FileExistsError(f"{target} already exists; choose another name or enable 'overwrite'")
        os.makedirs(root, exist_ok=True)
        net = model.patcher.model
        tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=root)
        try:
            with torch.inference_mode(False):
                trainable_copy(net).to("cpu").save_pretrained(tmp)
            if os.path.exists(target):
                shutil.rmtree(target)
            os.replace(tmp, target)  # the folder appears complete or not at all
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("EVAF_SaveFusionModel: wrote %s", target)
        return io.NodeOutput(target, ui=ui.PreviewText(f"saved {model.name} to {target}"))


NODES = [GRPOStep, SaveFusionModel]
