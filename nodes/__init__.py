"""EVAFusion ComfyUI nodes: thin adapters over evafusion_core, one module per domain.

V3 node classes are listed in NODE_CLASS_MAPPINGS directly (the hybrid registration
of COMFYUI.md 4.2) so tools that read only the mappings still see the pack. A group
whose optional dependency is missing is skipped with a warning naming it; the rest of
the pack, and ComfyUI, carry on.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

log = logging.getLogger("evafusion")

#: Node modules and the optional third-party packages each one needs.
GROUPS: dict[str, tuple[str, ...]] = {
    "fusion": (),
    "metrics": ("scipy",),
    "reward": ("timm",),
    "regions": ("segment_anything", "skimage"),
    "training": ("timm",),
    "feedback": ("filelock",),
}

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
SKIPPED: dict[str, str] = {}


def _missing(packages: tuple[str, ...]) -> list[str]:
    missing = []
    for name in packages:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


for _group, _deps in GROUPS.items():
    _absent = _missing(_deps)
    if _absent:
        SKIPPED[_group] = f"missing {', '.join(_absent)}"
        log.warning("EVAFusion: skipping the %s nodes: %s is not installed", _group, ", ".join(_absent))
        continue
    try:
        _module = importlib.import_module(f".{_group}", __name__)
    except ImportError as exc:
        SKIPPED[_group] = str(exc)
        log.warning("EVAFusion: skipping the %s nodes (%s)", _group, exc)
        continue
    for _cls in _module.NODES:
        _schema = _cls.define_schema()
        NODE_CLASS_MAPPINGS[_schema.node_id] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_schema.node_id] = _schema.display_name
