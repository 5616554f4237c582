"""One loader for every model: a bundled name, a local folder or file, or a Hugging Face Hub id.

Folders follow the Hub layout that ``PyTorchModelHubMixin.save_pretrained`` writes
(``config.json`` + ``model.safetensors``); ``config.json`` names the architecture,
so one function serves all networks. Local sources are resolved before any network
call; Hub ids go through ``huggingface_hub`` and honour ``HF_HUB_OFFLINE`` and
``local_files_only``. Weights load strictly: a missing tensor is an error, never a
silently random layer.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .errors import ModelLoadError

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: Names an earlier release bundled, and what to use instead, so that an old workflow or script gets told.
RETIRED_NAMES = {"light_warm": "since 2026-11-28 the bundled 'light' is this network (the same weights); use 'light'"}


class RecordsArchitecture:
    """Mixin for networks saved with ``PyTorchModelHubMixin``: ``config.json`` also names the
    ``architecture``, so :func:`load_pretrained` knows which class to build from a folder or Hub id.
    List it before ``nn.Module`` and ``PyTorchModelHubMixin`` in the bases."""

    architecture: ClassVar[str] = ""

    def hub_config(self) -> dict[str, Any]:
        """The JSON config written next to the weights: the constructor arguments plus ``architecture``."""
        config = dict(getattr(self, "_hub_mixin_config", None) or {})
        config["architecture"] = self.architecture
        return config

    @classmethod
    def init_args(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The constructor arguments among a saved config's keys: the config also records values that are
        not arguments (``architecture``, the reward model's ``dimensions``), which the constructor refuses."""
        return {k: v for k, v in config.items() if k in cls._hub_mixin_init_parameters}

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> Any:
        kwargs.setdefault("config", self.hub_config())
        return super().save_pretrained(save_directory, **kwargs)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def bundled_names(kind: str = "fusion") -> list[str]:
    """Names of the weight folders shipped inside the package for ``kind`` (``fusion`` or ``reward``)."""
    root = WEIGHTS_DIR / kind
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read model config ({exc})") from exc


def _looks_like_repo_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def _from_folder(folder: Path, registry: dict[str, type[nn.Module]], **hub_kwargs: Any) -> nn.Module:
    config = _read_config(folder / "config.json")
    cls = _architecture(config, registry, folder / "config.json")
    try:
        return cls.from_pretrained(str(folder), strict=True, **hub_kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder}: weights do not fit architecture {config['architecture']!r}: {exc}") from exc


def _architecture(config: dict[str, Any], registry: dict[str, type[nn.Module]], where: Path | str) -> type[nn.Module]:
    arch = config.get("architecture")
    if arch not in registry:
        raise ModelLoadError(f"{where}: unknown architecture {arch!r}; this loader knows {', '.join(sorted(registry))}")
    return registry[arch]


def load_pretrained(
    source: str | os.PathLike,
    registry: dict[str, type[nn.Module]],
    *,
    kind: str = "fusion",
    revision: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> nn.Module:
    """Resolve ``source`` in this order: bundled name, bare architecture without weights
    (only for weight-free baselines), local folder, local ``.safetensors`` file (with its
    ``config.json`` beside it), Hub repo id. Returns the model in eval mode on the CPU.
    """
    text = str(source)
    bundled = WEIGHTS_DIR / kind / text
    if (bundled / "config.json").is_file():
        return _from_folder(bundled, registry).eval()
    if text in registry and not getattr(registry[text], "trainable", True):
        return registry[text]().eval()
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: folder has no config.json (expected the save_pretrained layout)")
        return _from_folder(path, registry).eval()
    if path.is_file():
        return _from_file(path, registry).eval()
    if _looks_like_repo_id(text):
        return _from_hub(text, registry, revision=revision, local_files_only=local_files_only, cache_dir=cache_dir)
    if text in RETIRED_NAMES:
        raise ModelLoadError(f"model {text!r} is no longer bundled: {RETIRED_NAMES[text]}")
    known = bundled_names(kind) + [n for n, c in registry.items() if not getattr(c, "trainable", True)]
    raise ModelLoadError(
        f"model {text!r} not found: it is not a bundled model ({', '.join(known)}), "
        "not an existing folder or file, and not a Hub repo id of the form org/name"
    )


def _from_file(path: Path, registry: dict[str, type[nn.Module]]) -> nn.Module:
    if path.suffix in (".pth", ".pt", ".ckpt") and "dcevo" in registry:
        # The original DCEvo release ships a pickled .pth with four state dicts.
        return registry["dcevo"].from_original_checkpoint(path)
    if path.suffix != ".safetensors":
        raise ModelLoadError(f"{path}: unsupported weight file; expected .safetensors (or an original DCEvo .pth)")
    config_path = path.with_name("config.json")
    if not config_path.is_file():
        raise ModelLoadError(f"{path}: no config.json beside the weights, so the architecture is unknown")
    config = _read_config(config_path)
    cls = _architecture(config, registry, config_path)
    model = cls(**cls.init_args(config))
    import safetensors.torch

    try:
        safetensors.torch.load_model(model, str(path), strict=True)
    except (RuntimeError, OSError) as exc:
        raise ModelLoadError(f"{path}: weights do not fit architecture {config['architecture']!r}: {exc}") from exc
    return model


def _from_hub(
    repo_id: str,
    registry: dict[str, type[nn.Module]],
    *,
    revision: str | None,
    local_files_only: bool | None,
    cache_dir: str | os.PathLike | None,
) -> nn.Module:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = constants.HF_HUB_OFFLINE if local_files_only is None else local_files_only
    kwargs: dict[str, Any] = {"revision": revision, "local_files_only": offline, "cache_dir": cache_dir}
    try:
        config_path = hf_hub_download(repo_id, "config.json", **kwargs)
        cls = _architecture(_read_config(Path(config_path)), registry, f"{repo_id}/config.json")
        model = cls.from_pretrained(repo_id, strict=True, **kwargs)
    except (LocalEntryNotFoundError, HfHubHTTPError, FileNotFoundError, OSError) as exc:
        where = cache_dir or constants.HF_HUB_CACHE
        mode = "offline: only the local cache was searched" if offline else "download failed"
        raise ModelLoadError(f"Hub model {repo_id!r} could not be loaded ({mode}; cache {where}): {exc}") from exc
    except RuntimeError as exc:
        raise ModelLoadError(f"Hub model {repo_id!r}: weights do not fit the architecture: {exc}") from exc
    log.info("loaded %s from the Hub cache", repo_id)
    return model.eval()


def load_fusion_model(
    source: str | os.PathLike = "light",
    *,
    device: str | torch.device = "cpu",
    work_size: int | None = None,
    **kwargs: Any,
):
    """The fusion network named by ``source`` (see :func:`load_pretrained`), moved to ``device``.

    ``work_size`` (``light`` networks only) fuses frames larger than that many pixels on the long side
    at that size and adds the full-resolution detail back, so warm targets survive on large frames;
    0 turns it off, None keeps the saved setting. See :mod:`evafusion_core.models.light`.
    """
    from .models import ARCHITECTURES

    if str(source) == "dcevo" and not (WEIGHTS_DIR / "fusion" / "dcevo").is_dir():
        raise ModelLoadError(
            "no DCEvo weights are bundled: pass the original checkpoint file (e.g. DCEvo_fusion.pth), "
            "a saved folder or a Hub repo id; or create_model('dcevo') for an untrained network"
        )
    model = load_pretrained(source, ARCHITECTURES, kind="fusion", **kwargs)
    if work_size is not None:
        if not hasattr(model, "set_work_size"):
            raise ModelLoadError(f"work_size applies to 'light' networks; {source} is {model.architecture!r}")
        try:
            model.set_work_size(work_size)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
    return model.to(device)
