"""What every EVAFusion node shares: tensor layout conversion, the model folder, model handles.

ComfyUI's IMAGE is [B,H,W,3] float 0..1 on the CPU and MASK is [B,H,W]; the library
works in [B,C,H,W]. Conversions happen here only.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import comfy.model_management as mm
import folder_paths
import torch
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io

from ..evafusion_core.device import PRECISIONS, pick_dtype

log = logging.getLogger("evafusion")

MODEL_FOLDER = "evafusion"
if MODEL_FOLDER not in folder_paths.folder_names_and_paths:
    # Set only if absent, so an extra_model_paths.yaml entry for "evafusion" keeps working.
    folder_paths.add_model_folder_path(
        MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER), is_default=True
    )
folder_paths.folder_names_and_paths[MODEL_FOLDER][1].update({".json", ".safetensors", ".pth"})


def to_bchw(image: torch.Tensor, what: str) -> torch.Tensor:
    """IMAGE [B,H,W,C] -> [B,C,H,W] float32 (a copy: nodes never mutate their inputs)."""
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4:
        raise ValueError(f"{what}: expected an IMAGE [B,H,W,C], got shape {tuple(image.shape)}")
    if image.shape[-1] == 4:
        image = image[..., :3]  # RGBA from some loaders: drop alpha
    return image.movedim(-1, 1).float().clone()


def to_image(x: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] (C 1 or 3) -> IMAGE [B,H,W,3] on ComfyUI's intermediate device."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.movedim(1, -1).contiguous().clamp(0, 1).to(mm.intermediate_device(), torch.float32)


def to_mask(x: torch.Tensor) -> torch.Tensor:
    """Accept [H,W], [B,H,W] or [B,1,H,W]; return MASK [B,H,W]."""
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim == 4:
        x = x[:, 0]
    return x.float().contiguous().to(mm.intermediate_device())


def model_choices(extra: list[str]) -> list[str]:
    """Bundled/baseline names first, then saved folders and DCEvo checkpoints in models/evafusion/."""
    found = []
    for name in folder_paths.get_filename_list(MODEL_FOLDER):
        norm = name.replace("\\", "/")
        if norm.endswith("/config.json"):
            found.append(norm[: -len("/config.json")])
        elif norm.endswith(".pth"):
            found.append(norm)
    return extra + sorted(set(found) - set(extra))


def resolve_model_path(choice: str) -> str:
    """A choice from :func:`model_choices` -> something the library loader accepts."""
    if choice.endswith(".pth"):
        return folder_paths.get_full_path_or_raise(MODEL_FOLDER, choice)
    config = folder_paths.get_full_path(MODEL_FOLDER, f"{choice}/config.json")
    return os.path.dirname(config) if config else choice


@dataclass
class ModelHandle:
    """What flows along a model wire: the network wrapped for ComfyUI's memory manager.

    Wrapping in ModelPatcher lets "Free model and node cache" and ComfyUI's own
    memory pressure handling unload it like any core model.
    """

    patcher: ModelPatcher
    name: str
    dtype: torch.dtype
    keep_loaded: bool = True
    info: dict = field(default_factory=dict)

    @classmethod
    def wrap(cls, model: torch.nn.Module, name: str, device: torch.device, dtype: torch.dtype, keep_loaded: bool):
        offload = mm.unet_offload_device() if device.type == "cuda" else device
        patcher = ModelPatcher(model, load_device=device, offload_device=offload)
        return cls(patcher, name, dtype, keep_loaded)

    def acquire(self) -> torch.nn.Module:
        """Load onto the compute device through ComfyUI (evicting others if memory is short)."""
        mm.load_models_gpu([self.patcher])
        return self.patcher.model

    def release(self) -> None:
        if not self.keep_loaded:
            self.patcher.model.to(self.patcher.offload_device)
            mm.soft_empty_cache()


def loader_inputs(hub: bool = True, precision: bool = True) -> list:
    """The widgets every model loader shares: Hub repo id, device, precision, keep-loaded."""
    inputs = []
    if hub:
        inputs.append(io.String.Input("hub_repo_id", default="", optional=True,
                                      tooltip="org/name on the Hugging Face Hub; overrides 'model' when set."))
    inputs.append(io.Combo.Input("device", options=["auto", "cpu", "cuda"], default="auto",
                                 tooltip="auto follows ComfyUI's device choice."))
    if precision:
        inputs.append(io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                                     tooltip="fp16/bf16 need CUDA; auto picks bf16 where supported, fp32 on CPU."))
    inputs.append(io.Boolean.Input("keep_loaded", default=True,
                                   tooltip="Keep the model on the GPU between runs; off frees memory after each use."))
    return inputs


def load_handle(load, choice: str, hub_repo_id: str, device: str, precision: str, keep_loaded: bool) -> ModelHandle:
    """What every loader node does: resolve the choice (a Hub id wins), load on the CPU, wrap for ComfyUI."""
    hub = hub_repo_id.strip()
    dev = pick_device(device)
    net = load(hub or resolve_model_path(choice))
    return ModelHandle.wrap(net, hub or choice, dev, pick_dtype(precision, dev), keep_loaded)


def pick_device(name: str) -> torch.device:
    """``auto`` follows ComfyUI's own choice (respects --cpu and friends); otherwise the library's rule."""
    if name == "auto":
        return mm.get_torch_device()
    from ..evafusion_core.device import pick_device as core_pick

    return core_pick(name)
